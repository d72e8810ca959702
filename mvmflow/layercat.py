"""Point-source catalogues of layer products: ``<layer rootname>_point-cat.ecsv``.

One catalogue per fine sky-cell layer (written with ``quality_testing`` on,
docs/design.md, "Quality files and layer catalogues"): positions and aperture photometry of
the layer's point sources, with AB and ST magnitudes from the layer's ``PHOTFLAM`` /
``PHOTPLAM``, errors from its ``WHT`` and flags.

**Memory.** The layer is read tile by tile (:attr:`LayerCatParams.tile` pixels a side plus a
margin that holds the widest aperture), through ``astropy.io.fits`` sections of the file
opened without memmap: only the tile's rows and columns are read, and a tile without
``WHT > 0`` is skipped after reading its weights. Peak memory is that of one tile, whatever
the layer's size: 130 MB above the imports for a 6000 x 6000 layer (two 144 MB arrays), 180
MB for the demo's 2400 x 2400 WFC3/IR layer (900 sources).

**Finding.** Per tile, :func:`mvmflow.catalogs.find_sources` (photutils ``Background2D`` and
``DAOStarFinder``, Gaussian-windowed centroids, the same screening as the exposure
catalogues) with the detector's PSF width converted to layer pixels
(:func:`layer_fwhm`); pixels without weight (``SCI`` NaN) are masked. A source belongs to the
tile whose core holds its centroid, so tiles never share a source. The background is
estimated per tile, so another tile size can change the faintest detections (not the bright
sources, their positions or their photometry).

**Photometry.** A circular aperture of radius :attr:`LayerCatParams.aperture` arcsec (exact
overlap, photutils), the sky from the sigma-clipped median of an annulus; the aperture
flux is made total with an aperture correction measured on the layer itself: the median
ratio of the flux within :attr:`LayerCatParams.apcorr_radius` (1.5"; sky from an annulus
2.0-2.6") to the aperture flux, over bright isolated stars (S/N > 30, no other source
brighter than 1 % of the star within 1.5" plus 3 FWHM; with fewer than three such stars,
those above S/N 10; with fewer still, :data:`DEFAULT_APCORR`, meta ``apcorr_source``). A
larger radius gives too few isolated stars in crowded fields. The flux outside 1.5" (1-3 %
for HST PSFs) is then added from the detector's model PSF
(:func:`mvmflow.psfmodel.encircled_energy`, meta ``ee_model`` and ``ee_apcorr_radius``;
``LayerCatParams.total``). ``flux`` is that total count rate (the ``SCI`` unit, e-/s); ``mag_st = -2.5 log10(flux PHOTFLAM) - 21.10`` and
``mag_ab = -2.5 log10(flux PHOTFLAM) - 5 log10(PHOTPLAM) - 2.408``.

**Errors.** With EXP weights a layer pixel is ``SCI = sum(w_i d_i) / sum(w_i)``, ``d_i`` the
input's count rate and ``w_i`` its exposure time times the drop's overlap: the Poisson
variance of a source's signal ``S`` (e-/s) in it is ``sum(w_i^2 S / t_i) / WHT^2 = S / WHT``
when ``w_i`` is proportional to ``t_i`` (each input's counts ``S t_i`` are Poisson). The
sky, dark and read-noise part is measured instead (the clipped RMS ``sigma`` of the annulus:
the sky level was subtracted, so ``WHT`` alone cannot give it). Drizzling correlates
neighbouring pixels, so a sum over ``N`` pixels has ``R^2`` times the variance the pixel
RMS predicts, ``R`` from Casertano et al. (2000, AJ 120, 2747) with ``r = pixfrac / s``,
``s`` the output/input pixel ratio: ``R = r / (1 - 1/(3r))`` for ``r >= 1``, else
``1 / (1 - r/3)``. Hence::

    var(aperture) = R^2 [ sum_ap max(SCI - sky, 0) / WHT + N sigma^2 (1 + N / N_annulus) ]

times the aperture correction squared.

**Flags** (bits, 0 = clean; meta ``flag_bits``):

- 1 ``edge``: the aperture or its sky annulus reaches pixels without weight or the edge of
  the array;
- 2 ``low_weight``: ``WHT`` at the centre is below :attr:`LayerCatParams.low_weight` times
  the layer's median ``WHT`` (``MEDWHT``): fewer or shorter inputs than most of the layer;
- 4 ``masked_core``: ``WHT`` at the centre is below :attr:`LayerCatParams.core_deficit`
  times the median ``WHT`` of the sky annulus: input pixels were left out at the core.
  Layers carry no DQ, and this is where saturation shows: a saturated pixel is DQ-flagged in
  its input (256) and, in layers of two or more inputs, not drizzled (``final_bits`` excludes
  it), so a saturated star leaves a weight hole at its centre (so does a cosmic-ray hit or a
  bad pixel of one input there). A single-input layer drizzles every pixel
  (``final_bits=65535``): its saturated stars are not flagged.

Columns: ``id`` (1..N, by row then column), ``x``, ``y`` (0-based layer pixels), ``ra``,
``dec`` (deg, the layer's WCS), ``flux``, ``flux_err`` (e-/s, total), ``flux_aper`` (e-/s in
the aperture, sky subtracted), ``sky`` (e-/s per pixel), ``snr``, ``mag_ab``,
``mag_st``, ``mag_err``, ``fwhm`` (px, windowed), ``sharpness``, ``roundness``, ``wht``
(at the centre), ``flags``. No dates: a rerun writes identical bytes.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvmflow.catalogs import DETECTOR_FWHM, CatalogParams, find_sources
from mvmflow.psfmodel import encircled_energy, model_psf_name
from mvmflow.workflow import atomic_path

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = [
    "DEFAULT_APCORR",
    "DETECTOR_PIXEL",
    "FLAG_EDGE",
    "FLAG_LOW_WEIGHT",
    "FLAG_MASKED_CORE",
    "LAYERCAT_VERSION",
    "LayerCatParams",
    "correlated_noise_factor",
    "layer_catalog",
    "layer_fwhm",
    "magnitudes",
    "make_layer_catalog",
    "read_layer_catalog",
    "write_layer_catalog",
]

log = logging.getLogger(__name__)

LAYERCAT_VERSION = 2
"""Layout version of the layer catalogues (metadata ``layercat_version``)."""

DETECTOR_PIXEL = {
    "acs_wfc": 0.05,
    "acs_hrc": 0.025,
    "acs_sbc": 0.032,
    "wfc3_uvis": 0.0396,
    "wfc3_ir": 0.1283,
}
"""Detector pixel size (arcsec), to turn :data:`mvmflow.catalogs.DETECTOR_FWHM` into arcsec."""

FLAG_EDGE = 1
FLAG_LOW_WEIGHT = 2
FLAG_MASKED_CORE = 4
_FLAG_TEXT = {
    FLAG_EDGE: "edge: aperture or sky annulus reaches pixels without weight or the array edge",
    FLAG_LOW_WEIGHT: "low_weight: WHT at the centre below low_weight x the layer's MEDWHT",
    FLAG_MASKED_CORE: "masked_core: WHT at the centre below core_deficit x the annulus "
                      "median (input pixels left out there: saturation, cosmic ray, bad pixel)",
}
_APCORR_MIN_SNR = 10.0
DEFAULT_APCORR = {"acs_wfc": 1.19, "wfc3_uvis": 1.22, "wfc3_ir": 1.31}
"""Aperture corrections (default aperture to 1.5") used when a layer has fewer than three
isolated stars to measure its own: the medians measured on the simulated demo's layers
(14-44 stars each), within 0.02 of what the instruments' encircled energies give."""
_AB_OFFSET = -2.408
_ST_ZEROPOINT = -21.10


@dataclass(frozen=True)
class LayerCatParams:
    """Parameters of the layer catalogues.

    Attributes
    ----------
    nsigma : float
        Detection threshold (background RMS units).
    tile : int
        Core side (px) of the tiles the layer is read in.
    aperture : float or None
        Aperture radius (arcsec); None: ``max(0.15, 1.5 FWHM)``.
    annulus : tuple of float
        Sky annulus radii in units of the aperture radius.
    apcorr_radius : float
        Radius (arcsec) the aperture correction extrapolates to.
    total : bool
        Add the light beyond ``apcorr_radius`` from the detector's model PSF
        (:func:`mvmflow.psfmodel.encircled_energy`); False keeps the flux within it.
    apcorr_annulus : tuple of float
        Sky annulus (arcsec) of the aperture-correction measurement.
    apcorr_snr : float
        Least S/N of a star used for the aperture correction.
    low_weight, core_deficit : float
        Thresholds of the ``low_weight`` and ``masked_core`` flags.
    """

    nsigma: float = 5.0
    tile: int = 1024
    aperture: float | None = None
    annulus: tuple[float, float] = (3.0, 5.0)
    apcorr_radius: float = 1.5
    total: bool = True
    apcorr_annulus: tuple[float, float] = (2.0, 2.6)
    apcorr_snr: float = 30.0
    low_weight: float = 0.5
    core_deficit: float = 0.7


def layer_fwhm(detkey: str, scale: float) -> float:
    """The PSF FWHM (layer pixels) of detector ``detkey`` on a layer of ``scale`` arcsec/px."""
    fwhm = DETECTOR_FWHM.get(detkey, 2.0) * DETECTOR_PIXEL.get(detkey, 0.05)
    return max(1.5, fwhm / scale)


def correlated_noise_factor(pixfrac: float, scale_ratio: float) -> float:
    """Casertano et al. (2000) noise factor ``R`` of sums of drizzled pixels.

    Parameters
    ----------
    pixfrac : float
        Drop size (input pixels).
    scale_ratio : float
        Output pixel size over input pixel size.
    """
    if not (pixfrac > 0 and scale_ratio > 0):
        return 1.0
    r = pixfrac / scale_ratio
    return r / (1.0 - 1.0 / (3.0 * r)) if r >= 1.0 else 1.0 / (1.0 - r / 3.0)


def magnitudes(flux, photflam: float, photplam: float) -> tuple[np.ndarray, np.ndarray]:
    """AB and ST magnitudes of count rates ``flux`` (NaN where not positive)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(flux > 0, flux * photflam, np.nan)
        st = -2.5 * np.log10(f) + _ST_ZEROPOINT
        ab = -2.5 * np.log10(f) - 5.0 * np.log10(photplam) + _AB_OFFSET
    return ab, st


def _card(headers, key, default=None):
    for h in headers:
        if key in h:
            return h[key]
    return default


def _annulus_stats(data, x, y, r_in, r_out):
    """Sigma-clipped median, RMS, pixel count and finite fraction of annuli."""
    from astropy.stats import SigmaClip
    from photutils.aperture import ApertureStats, CircularAnnulus

    ann = CircularAnnulus(np.column_stack([x, y]), r_in, r_out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = ApertureStats(data, ann, mask=~np.isfinite(data),
                              sigma_clip=SigmaClip(sigma=3.0, maxiters=5))
        med = np.atleast_1d(np.asarray(stats.median, dtype=np.float64))
        std = np.atleast_1d(np.asarray(stats.std, dtype=np.float64))
        npix = np.atleast_1d(np.asarray(stats.sum_aper_area.value, dtype=np.float64))
    return med, std, npix


def _aperture_sums(arrays, x, y, radius):
    """Exact-overlap sums of each array in circles, and the circles' areas (px)."""
    from photutils.aperture import CircularAperture, aperture_photometry

    ap = CircularAperture(np.column_stack([x, y]), radius)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in arrays:
            t = aperture_photometry(np.nan_to_num(a, nan=0.0), ap, method="exact")
            out.append(np.asarray(t["aperture_sum"], dtype=np.float64))
    return out, float(ap.area)


def _tile_boxes(shape, tile):
    ny, nx = shape
    return [(x0, y0, min(x0 + tile, nx), min(y0 + tile, ny))
            for y0 in range(0, ny, tile) for x0 in range(0, nx, tile)]


def _measure_tile(sci, wht, core, origin, p, fwhm, r_ap, ann, r_big, ann_big, medwht, rfac,
                  detkey):
    """Sources of one tile (core box in tile coordinates) and the aperture-correction ratios
    of its bright isolated stars."""
    cparams = CatalogParams(nsigma=p.nsigma, fwhm=fwhm, window_sigma=max(1.5, 0.95 * fwhm),
                            max_sources=None)
    found = find_sources(sci, params=cparams, detkey=detkey)
    if len(found) == 0:
        return None, []
    xa, ya = np.asarray(found["x"]), np.asarray(found["y"])
    cx0, cy0, cx1, cy1 = core
    ny, nx = sci.shape
    valid = np.isfinite(sci) & (wht > 0)
    data = np.where(valid, sci, np.nan)
    sky, sigma, n_ann = _annulus_stats(data, xa, ya, ann[0], ann[1])
    sky = np.nan_to_num(sky)
    (fsum, psum, vsum), area = _aperture_sums(
        [data, valid.astype(float), np.where(valid, 1.0 / np.where(wht > 0, wht, 1.0), 0.0)
         * np.maximum(np.nan_to_num(data), 0.0)], xa, ya, r_ap)
    flux_ap = fsum - sky * psum
    # the source's Poisson term: sum(max(SCI - sky, 0) / WHT) ~ sum(max(SCI, 0)/WHT) - sky
    # sum(1/WHT); the second term is small next to the measured sky noise, and dropping it
    # keeps the variance positive
    var = rfac**2 * (np.maximum(vsum, 0.0) + psum * np.nan_to_num(sigma) ** 2
                     * (1.0 + psum / np.maximum(n_ann, 1.0)))
    err = np.sqrt(var)

    # flags
    flags = np.zeros(xa.size, dtype=np.int32)
    (_, reach), _ = _aperture_sums([np.zeros_like(sci), (~valid).astype(float)], xa, ya,
                                   ann[1])
    off = (xa - ann[1] < 0) | (ya - ann[1] < 0) | (xa + ann[1] > nx - 1) | (ya + ann[1] > ny - 1)
    flags[(reach > 0) | off | (psum < area - 1e-6)] |= FLAG_EDGE
    ix = np.clip(np.floor(xa + 0.5).astype(int), 0, nx - 1)
    iy = np.clip(np.floor(ya + 0.5).astype(int), 0, ny - 1)
    wc = wht[iy, ix].astype(np.float64)
    if medwht and medwht > 0:
        flags[wc < p.low_weight * medwht] |= FLAG_LOW_WEIGHT
    wann, _, _ = _annulus_stats(np.where(valid, wht, np.nan).astype(np.float64), xa, ya,
                                ann[0], ann[1])
    flags[np.isfinite(wann) & (wc < p.core_deficit * wann)] |= FLAG_MASKED_CORE

    # aperture correction: bright stars, no brighter-than-1% neighbour within the annulus
    ratios = []
    snr = np.where(err > 0, flux_ap / err, 0.0)
    bright = np.flatnonzero((snr > _APCORR_MIN_SNR) & (flags == 0)
                            & (xa >= ann_big[1]) & (ya >= ann_big[1])
                            & (xa <= nx - 1 - ann_big[1]) & (ya <= ny - 1 - ann_big[1]))
    if bright.size:
        iso = []
        for i in bright:
            d = np.hypot(xa - xa[i], ya - ya[i])
            near = (d > 0) & (d < r_big + 3 * fwhm) & (flux_ap > 0.01 * flux_ap[i])
            if not near.any():
                iso.append(i)
        if iso:
            iso = np.array(iso)
            bsky, _, _ = _annulus_stats(data, xa[iso], ya[iso], ann_big[0], ann_big[1])
            (bsum, bpix), barea = _aperture_sums([data, valid.astype(float)], xa[iso],
                                                 ya[iso], r_big)
            whole = bpix > barea - 1e-6
            big = bsum - np.nan_to_num(bsky) * bpix
            ok = whole & np.isfinite(big) & (flux_ap[iso] > 0)
            ratios = list(zip(big[ok] / flux_ap[iso][ok], snr[iso][ok], strict=True))

    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    mine = (xa >= cx0) & (xa < cx1) & (ya >= cy0) & (ya < cy1)
    t = Table()
    t["x"] = xa[mine] + origin[0]
    t["y"] = ya[mine] + origin[1]
    t["flux_aper"] = flux_ap[mine]
    t["flux_aper_err"] = err[mine]
    t["sky"] = sky[mine]
    t["fwhm"] = np.asarray(found["fwhm"])[mine]
    t["sharpness"] = np.asarray(found["sharpness"])[mine]
    t["roundness"] = np.asarray(found["roundness1"])[mine]
    t["wht"] = wc[mine]
    t["flags"] = flags[mine]
    return t, ratios


def layer_catalog(path: str | os.PathLike, params: LayerCatParams | None = None) -> Table:
    """The point-source catalogue of a layer product (see the module notes).

    Parameters
    ----------
    path : path-like
        A layer product (``PRIMARY``, ``SCI``, ``WHT``).
    params : LayerCatParams, optional

    Returns
    -------
    astropy.table.Table
        The catalogue, with its metadata.
    """
    from astropy.io import fits  # lazy (docs/speed.md, "Job start-up")
    from astropy.table import Table, vstack
    from astropy.wcs import WCS, FITSFixedWarning

    p = params or LayerCatParams()
    path = Path(path)
    # no memmap: sections are read with seeks, so the mapped file never counts as the job's
    # memory (it would, page by page, as the tiles touch it)
    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        prim, sh = hdul[0].header, hdul["SCI"].header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(sh)
        scale = float(abs(sh["CD2_2"]) * 3600.0) if "CD2_2" in sh else 0.04
        instrument = str(prim.get("INSTRUME", "")).strip().lower()
        detector = str(prim.get("DETECTOR", "")).strip().lower()
        detkey = f"{instrument}_{detector}"
        fwhm = layer_fwhm(detkey, scale)
        r_ap_arc = p.aperture if p.aperture is not None else max(0.15, 1.5 * fwhm * scale)
        r_ap = r_ap_arc / scale
        ann = (p.annulus[0] * r_ap, p.annulus[1] * r_ap)
        r_big = p.apcorr_radius / scale
        ann_big = (p.apcorr_annulus[0] / scale, p.apcorr_annulus[1] / scale)
        margin = int(math.ceil(max(ann[1], ann_big[1]))) + 4
        photflam = float(_card((sh, prim), "PHOTFLAM", float("nan")))
        photplam = float(_card((sh, prim), "PHOTPLAM", float("nan")))
        medwht = float(prim.get("MEDWHT", 0.0) or 0.0)
        pixfrac = float(prim.get("D001PIXF", 1.0))
        in_scale = float(prim.get("D001ISCL", DETECTOR_PIXEL.get(detkey, scale)) or scale)
        rfac = correlated_noise_factor(pixfrac, scale / in_scale)
        ny, nx = hdul["SCI"].shape
        pieces, ratios = [], []
        for x0, y0, x1, y1 in _tile_boxes((ny, nx), p.tile):
            ex0, ey0 = max(0, x0 - margin), max(0, y0 - margin)
            ex1, ey1 = min(nx, x1 + margin), min(ny, y1 + margin)
            wht = np.asarray(hdul["WHT"].section[ey0:ey1, ex0:ex1], dtype=np.float32)
            if not (wht[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0] > 0).any():
                continue
            sci = np.asarray(hdul["SCI"].section[ey0:ey1, ex0:ex1], dtype=np.float64)
            sci[~(wht > 0)] = np.nan
            core = (x0 - ex0, y0 - ey0, x1 - ex0, y1 - ey0)
            t, r = _measure_tile(sci, wht, core, (ex0, ey0), p, fwhm, r_ap, ann, r_big,
                                 ann_big, medwht, rfac, detkey)
            ratios += r
            if t is not None and len(t):
                pieces.append(t)
    table = vstack(pieces, metadata_conflicts="silent") if pieces else _empty()
    pairs = np.asarray(ratios, dtype=np.float64).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    ratios = pairs[pairs[:, 1] > p.apcorr_snr, 0]
    if ratios.size < 3:  # few bright stars: fainter ones
        ratios = pairs[:, 0]
    apcorr_source = "measured"
    if ratios.size >= 3:
        from astropy.stats import sigma_clipped_stats

        _, apcorr, apsd = sigma_clipped_stats(ratios, sigma=3.0, maxiters=5)
        apcorr = float(apcorr)
        apcorr_err = float(1.2533 * apsd / math.sqrt(ratios.size))
    else:
        apcorr, apcorr_err = DEFAULT_APCORR.get(detkey, 1.0), float("nan")
        apcorr_source = "default" if detkey in DEFAULT_APCORR else "none"
        log.warning("%s: %d isolated stars to measure the aperture correction: the %s "
                    "value %.3f is used", path.name, ratios.size, apcorr_source, apcorr)
    order = np.lexsort((np.asarray(table["x"]), np.floor(np.asarray(table["y"]))))
    table = table[order]
    out = Table()
    out["id"] = np.arange(1, len(table) + 1, dtype=np.int64)
    out["x"] = np.asarray(table["x"], dtype=np.float64)
    out["y"] = np.asarray(table["y"], dtype=np.float64)
    ra, dec = wcs.pixel_to_world_values(out["x"], out["y"]) if len(table) else ([], [])
    out["ra"] = np.asarray(ra, dtype=np.float64)
    out["dec"] = np.asarray(dec, dtype=np.float64)
    filt = str(prim.get("FILTER", prim.get("FILTER1", ""))).strip()
    ee_model = (model_psf_name(instrument, detector, filt, photplam) if p.total else None)
    ee = encircled_energy(ee_model, p.apcorr_radius) if ee_model else 1.0
    if p.total and ee_model is None:
        log.warning("%s: no model PSF for %s %s %s: fluxes are those within %.1f arcsec",
                    path.name, instrument, detector, filt, p.apcorr_radius)
    flux = np.asarray(table["flux_aper"], dtype=np.float64) * apcorr / ee
    flux_err = np.asarray(table["flux_aper_err"], dtype=np.float64) * apcorr / ee
    out["flux"] = flux
    out["flux_err"] = flux_err
    out["flux_aper"] = np.asarray(table["flux_aper"], dtype=np.float64)
    out["sky"] = np.asarray(table["sky"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["snr"] = np.where(flux_err > 0, flux / flux_err, 0.0)
        mag_err = np.where(flux > 0, 2.5 / np.log(10) * flux_err / flux, np.nan)
    ab, st = magnitudes(flux, photflam, photplam)
    out["mag_ab"] = ab
    out["mag_st"] = st
    out["mag_err"] = mag_err
    out["fwhm"] = np.asarray(table["fwhm"], dtype=np.float64)
    out["sharpness"] = np.asarray(table["sharpness"], dtype=np.float64)
    out["roundness"] = np.asarray(table["roundness"], dtype=np.float64)
    out["wht"] = np.asarray(table["wht"], dtype=np.float64)
    out["flags"] = np.asarray(table["flags"], dtype=np.int32)
    _describe(out, str(sh.get("BUNIT", "ELECTRONS/S")))
    out.meta.update({
        "layercat_version": LAYERCAT_VERSION,
        "layer": path.name,
        "instrument": instrument,
        "detector": detector,
        "filter": filt,
        "scale_arcsec": round(scale, 6),
        "photflam": photflam,
        "photplam": photplam,
        "zeropoint_st": _ST_ZEROPOINT,
        "zeropoint_ab": float(-2.5 * np.log10(photflam) - 5 * np.log10(photplam)
                              + _AB_OFFSET) if photflam > 0 and photplam > 0 else None,
        "fwhm_px": round(fwhm, 4),
        "aperture_arcsec": round(r_ap_arc, 4),
        "annulus_arcsec": [round(a * scale, 4) for a in ann],
        "apcorr": round(apcorr, 6),
        "apcorr_radius_arcsec": p.apcorr_radius,
        "apcorr_err": round(apcorr_err, 6) if math.isfinite(apcorr_err) else None,
        "apcorr_nstars": int(ratios.size),
        "apcorr_source": apcorr_source,
        "ee_model": ee_model or "",
        "ee_apcorr_radius": round(ee, 6),
        "noise_factor": round(rfac, 6),
        "medwht": medwht,
        "flag_bits": {str(k): v for k, v in _FLAG_TEXT.items()},
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(p).items()},
    })
    return out


def _empty() -> Table:
    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    names = ("x", "y", "flux_aper", "flux_aper_err", "sky", "fwhm", "sharpness", "roundness",
             "wht")
    t = Table({n: np.zeros(0) for n in names})
    t["flags"] = np.zeros(0, dtype=np.int32)
    return t


_UNITS = {"x": "pix", "y": "pix", "ra": "deg", "dec": "deg", "mag_ab": "mag", "mag_st": "mag",
          "mag_err": "mag", "fwhm": "pix"}
_DESCRIPTIONS = {
    "id": "source number", "x": "x, 0-based layer pixel", "y": "y, 0-based layer pixel",
    "ra": "right ascension (layer WCS)", "dec": "declination (layer WCS)",
    "flux": "total count rate (aperture corrected)", "flux_err": "error of flux",
    "flux_aper": "count rate in the aperture, sky subtracted",
    "sky": "sky per pixel (annulus clipped median)", "snr": "flux / flux_err",
    "mag_ab": "AB magnitude of flux", "mag_st": "ST magnitude of flux",
    "mag_err": "magnitude error", "fwhm": "windowed FWHM", "sharpness": "DAOFind sharpness",
    "roundness": "DAOFind roundness1", "wht": "WHT at the centre",
    "flags": "1 edge, 2 low weight, 4 masked core (saturation)",
}


def _describe(table: Table, bunit: str) -> None:
    for name in table.colnames:
        table[name].description = _DESCRIPTIONS.get(name, "")
        unit = _UNITS.get(name)
        if name in ("flux", "flux_err", "flux_aper", "sky"):
            unit = "electron / s" if "/S" in bunit.upper() else "electron"
        if unit:
            table[name].unit = unit


def write_layer_catalog(table: Table, path: str | os.PathLike) -> Path:
    """Write a layer catalogue atomically (ECSV, no dates)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def read_layer_catalog(path: str | os.PathLike) -> Table:
    """Read a layer catalogue."""
    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    return Table.read(path, format="ascii.ecsv")


def make_layer_catalog(layer_path: str | os.PathLike, out_path: str | os.PathLike,
                       params: LayerCatParams | dict | None = None) -> Table:
    """Catalogue a layer product and write it to ``out_path``; returns the table."""
    if isinstance(params, dict):
        params = LayerCatParams(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in params.items()})
    table = layer_catalog(layer_path, params)
    write_layer_catalog(table, out_path)
    log.info("%s: %d sources (aperture %.3f\", correction %.4f from %d stars) -> %s",
             Path(layer_path).name, len(table), table.meta["aperture_arcsec"],
             table.meta["apcorr"], table.meta["apcorr_nstars"], Path(out_path).name)
    return table
