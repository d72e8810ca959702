"""Point-source catalogues of one exposure, for alignment (the ``catalogs`` step).

One job per exposure: :func:`make_catalog` reads an ``_flt``/``_flc`` file, finds the point
sources of every chip and writes them as an ECSV table (:func:`write_catalog`).

Per chip (:func:`find_sources`):

1. **Bad pixels**: a pixel is bad when its DQ has any flag outside ``benign_bits`` (default
   :data:`BENIGN_BITS`: hot and warm pixels, which are dark-subtracted, CTE tails and, for
   WFC3/IR, the up-the-ramp cosmic-ray flag 8192 whose pixel value the ramp fit recovered) or
   its value is not finite. Flagged cosmic rays (4096) are bad pixels.
2. **Background**: :class:`photutils.background.Background2D` (sigma-clipped median in boxes
   of ``box_size`` px, 3x3 median filter), bad pixels masked; its RMS map sets the threshold.
3. **Detection**: :class:`photutils.detection.DAOStarFinder` with the detector's PSF width
   (:data:`DETECTOR_FWHM`), ``threshold = nsigma x RMS``, its sharpness and roundness cuts,
   bad pixels masked.
4. **Centroids**: the Gaussian-windowed centroid (SExtractor's ``XWIN``, window
   ``window_sigma`` = 2 px), iterated from DAOFind's position (:func:`windowed_centroids`).
   It is the estimator that defines a simulated star's position, and an unbiased one for a
   symmetric PSF.
5. **Screening** (point sources only, no cosmic rays): a source is dropped when a bad pixel
   lies within ``core_radius`` (``max(2, FWHM)`` px) of it (saturated cores, flagged cosmic
   rays, bad columns; farther bad pixels count as background in the centroid window), when
   it is closer than the window to the chip edge, when the centroid does not converge or
   moves more than 1 px from the detection, when its windowed FWHM is outside ``fwhm_range``
   times the chip's median (cosmic rays are sharper, galaxies broader), or
   when its peak is a single pixel (the mean of the 4 neighbours below ``single_pixel`` times
   what the PSF width predicts: an unflagged cosmic-ray hit), or, on CCDs, when it has sharp
   edges: its L.A.Cosmic positive-Laplacian flux fraction is above ``cr_laplacian`` (1.3)
   times the chip's median (:func:`laplacian_fraction`; stars show 0.38-0.60 on ACS/WFC,
   unflagged simulated cosmic rays 0.6-1.2).
6. Sky positions through the chip's full WCS (SIP + NPOL + D2IM), :meth:`Exposure.chip_wcs`.

Catalogue file (ECSV; no dates, so a rerun writes identical bytes): one row per source,
columns ``id`` (1..N), ``chip`` (SCI EXTVER), ``x``, ``y`` (0-based pixels), ``ra``, ``dec``
(deg, header WCS), ``pos_err`` (estimated centroid error, px), ``flux`` (aperture sum of
radius ``1.5 x FWHM``, in the SCI unit), ``snr``, ``peak``, ``sharpness``, ``roundness1``,
``roundness2`` (DAOFind), ``fwhm`` (px) and ``ellipticity`` (from the windowed second
moments; :func:`windowed_centroids`); metadata ``file``, ``rootname``, ``instrument``,
``detector``, ``filter``, ``expstart``, ``expend``, ``exptime``, ``epoch_mjd`` (mid-exposure
MJD), ``wcsname``, the chips' shapes and the parameters used.

Accuracy on simulated exposures (tests/test_catalogs.py): isolated stars with S/N > 50 are
recovered to a median of 0.015-0.02 px; no detection lies away from a true source, with
cosmic rays flagged or not. Time: under 0.1 s for a 512x512 subarray, 1.6-1.8 s for a full
ACS/WFC chip (the background, DAOFind's convolution and measurements, the centroids; its peak
search is :mod:`mvmflow.peaks`'s).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvmflow.peaks import daofind_peaks
from mvmflow.workflow import atomic_path

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = [
    "BENIGN_BITS",
    "CATALOG_VERSION",
    "DETECTOR_FWHM",
    "CatalogParams",
    "exposure_catalog",
    "find_sources",
    "laplacian_fraction",
    "make_catalog",
    "read_catalog",
    "windowed_centroids",
    "write_catalog",
]

log = logging.getLogger(__name__)

CATALOG_VERSION = 1
"""Layout version of the catalogue files (metadata ``catalog_version``)."""

DETECTOR_FWHM = {
    "acs_wfc": 2.1,
    "acs_hrc": 2.2,
    "acs_sbc": 2.0,
    "wfc3_uvis": 1.8,
    "wfc3_ir": 1.2,
}
"""Typical PSF FWHM in the detector's own pixels (the DAOFind kernel width)."""

BENIGN_BITS = {
    "acs_wfc": 16 | 32 | 64,
    "acs_hrc": 16 | 32 | 64,
    "acs_sbc": 16 | 32 | 64,
    "wfc3_uvis": 16 | 32 | 64,
    "wfc3_ir": 16 | 32 | 64 | 8192,
}
"""DQ flags that do not make a pixel bad for source finding, per detector."""

_DEFAULT_BENIGN = 16 | 32 | 64
CCD_DETECTORS = ("acs_wfc", "acs_hrc", "wfc3_uvis")
"""Detectors whose images contain cosmic rays (the others remove them or have none)."""
_NOMINAL_TO_WINDOWED = 1.4  # windowed-moment FWHM / nominal FWHM of HST PSFs (1.3-1.7)


@dataclass(frozen=True)
class CatalogParams:
    """Source-finding parameters (defaults suit ACS and WFC3 FLT/FLC images).

    Attributes
    ----------
    nsigma : float
        Detection threshold in units of the background RMS.
    fwhm : float or None
        DAOFind kernel FWHM (px); None: :data:`DETECTOR_FWHM` of the detector.
    box_size : int or None
        Background box (px); None: 64 (32 for WFC3/IR and chips under 256 px).
    benign_bits : int or None
        DQ flags that leave a pixel good; None: :data:`BENIGN_BITS` of the detector.
    window_sigma : float
        Width (px) of the Gaussian window of the centroid.
    core_radius : float or None
        A bad pixel within this radius (px) drops the source; None: ``max(2, fwhm)``.
    sharpness_range, roundness_range : tuple of float
        DAOFind's cuts.
    fwhm_range : tuple of float
        Accepted windowed FWHM, in units of the chip's median windowed FWHM (of the nominal
        width times 1.4 with fewer than 5 sources).
    single_pixel : float
        A source whose 4-neighbour mean over its peak is below this fraction of the ratio
        its PSF width predicts is a single-pixel event (cosmic ray, hot pixel).
    cr_laplacian : float or None
        CCDs only: a source whose positive-Laplacian fraction
        (:func:`laplacian_fraction` over its aperture flux) exceeds this factor times the
        chip's median is a cosmic ray; None: no such test.
    max_sources : int or None
        Keep at most this many sources per chip (the highest signal-to-noise ones).
    """

    nsigma: float = 5.0
    fwhm: float | None = None
    box_size: int | None = None
    benign_bits: int | None = None
    window_sigma: float = 2.0
    core_radius: float | None = None
    sharpness_range: tuple[float, float] = (0.2, 1.0)
    roundness_range: tuple[float, float] = (-1.0, 1.0)
    fwhm_range: tuple[float, float] = (0.5, 2.0)
    single_pixel: float = 0.35
    cr_laplacian: float | None = 1.3
    max_sources: int | None = 5000

    def for_detector(self, detkey: str, shape: tuple[int, int]) -> CatalogParams:
        """These parameters with every ``None`` resolved for a detector and chip shape."""
        fwhm = self.fwhm if self.fwhm is not None else DETECTOR_FWHM.get(detkey, 2.0)
        box = self.box_size
        if box is None:
            box = 32 if (detkey == "wfc3_ir" or min(shape) < 256) else 64
        benign = self.benign_bits
        if benign is None:
            benign = BENIGN_BITS.get(detkey, _DEFAULT_BENIGN)
        core = self.core_radius if self.core_radius is not None else max(2.0, 1.0 * fwhm)
        return replace(self, fwhm=float(fwhm), box_size=int(box), benign_bits=int(benign),
                       core_radius=float(core))


# --------------------------------------------------------------------------------------
# centroids


def _window_rows(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray, inv2s2: float,
                 powers: int) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian window's row factor ``wy`` (n, size) and each stamp's rows contracted
    with the column factor times ``dx**k`` for ``k < powers`` (n, size, powers): the window
    is separable, so ``sum(wy wx dx**k I) = wy . (I (wx dx**k))`` (batched matrix products,
    not a full window per stamp; docs/speed.md, "Catalogues")."""
    wx = np.exp(-dx * dx * inv2s2)
    columns = [wx]
    for _ in range(1, powers):
        columns.append(columns[-1] * dx)
    return np.exp(-dy * dy * inv2s2), np.matmul(stamps, np.stack(columns, axis=2))


def windowed_centroids(image: np.ndarray, x, y, sigma: float = 2.0, max_iter: int = 50,
                       tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids (SExtractor ``XWIN``) of many sources at once.

    Iterates ``x <- x + 2 sum(w I (X - x)) / sum(w I)`` with ``w`` a Gaussian of width
    ``sigma`` centred on the current estimate, over a cutout of +-6 sigma (zero outside the
    image). ``image`` must be background-subtracted.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted image.
    x, y : array_like
        Starting positions (0-based pixels).
    sigma : float
        Window width (px).
    max_iter : int
        Iteration limit.
    tol : float
        Convergence: the last step is below ``tol`` px on both axes.

    Returns
    -------
    xc, yc : numpy.ndarray
        Centroids.
    converged : numpy.ndarray of bool
    fwhm : numpy.ndarray
        FWHM (px) of the Gaussian with the same windowed second moment (window deconvolved:
        ``s^2 = m w^2 / (w^2 - m)`` for windowed moment ``m`` and window ``w``), NaN when
        undefined.
    ellipticity : numpy.ndarray
        ``sqrt((Mxx - Myy)^2 + 4 Mxy^2) / (Mxx + Myy)`` of the windowed second moments: the
        PSF's own asymmetry for an isolated star (0.05-0.15 on HST detectors), more for a
        blend with a neighbour (whose light also pulls the centroid).
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64)).copy()
    y = np.atleast_1d(np.asarray(y, dtype=np.float64)).copy()
    n = x.size
    half = int(np.ceil(6 * sigma))
    size = 2 * half + 1
    ny, nx = image.shape
    padded = np.zeros((ny + 2 * size, nx + 2 * size), dtype=np.float64)
    padded[size:size + ny, size:size + nx] = image
    ix0 = np.floor(x + 0.5).astype(int) - half
    iy0 = np.floor(y + 0.5).astype(int) - half
    offs = np.arange(size)
    rows = (iy0[:, None] + size + offs[None, :])
    cols = (ix0[:, None] + size + offs[None, :])
    rows = np.clip(rows, 0, padded.shape[0] - 1)
    cols = np.clip(cols, 0, padded.shape[1] - 1)
    stamps = padded[rows[:, :, None], cols[:, None, :]]  # (n, size, size)
    gx = (ix0[:, None] + offs[None, :]).astype(np.float64)  # pixel x of stamp columns
    gy = (iy0[:, None] + offs[None, :]).astype(np.float64)
    converged = np.zeros(n, dtype=bool)
    active = np.ones(n, dtype=bool)
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    for _ in range(max_iter):
        if not active.any():
            break
        a = np.flatnonzero(active)
        dx = gx[a] - x[a, None]
        dy = gy[a] - y[a, None]
        # the Gaussian window is separable: sum(wy wx I) = wy . (I wx), so each stamp is
        # contracted with two small vectors (batched matrix products), not multiplied by a
        # full window (docs/speed.md, "Catalogues")
        wy, rows = _window_rows(stamps[a], dx, dy, inv2s2, 2)
        total = np.einsum("ny,ny->n", wy, rows[:, :, 0])
        ok = total > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            sx = 2.0 * np.einsum("ny,ny->n", wy, rows[:, :, 1]) / total
            sy = 2.0 * np.einsum("ny,ny->n", wy * dy, rows[:, :, 0]) / total
        bad = ~ok | ~np.isfinite(sx) | ~np.isfinite(sy) | (np.abs(sx) > 2) | (np.abs(sy) > 2)
        sx[bad] = 0.0
        sy[bad] = 0.0
        x[a] += sx
        y[a] += sy
        done = (np.abs(sx) < tol) & (np.abs(sy) < tol) & ~bad
        converged[a[done]] = True
        active[a[done | bad]] = False
    # windowed second moment about the centroid
    dx = gx - x[:, None]
    dy = gy - y[:, None]
    wy, rows = _window_rows(stamps, dx, dy, inv2s2, 3)
    total = np.einsum("ny,ny->n", wy, rows[:, :, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        mxx = np.einsum("ny,ny->n", wy, rows[:, :, 2]) / total
        myy = np.einsum("ny,ny->n", wy * dy * dy, rows[:, :, 0]) / total
        mxy = np.einsum("ny,ny->n", wy * dy, rows[:, :, 1]) / total
        m = 0.5 * (mxx + myy)
        s2 = m * sigma**2 / (sigma**2 - m)
        fwhm = np.where((m > 0) & (s2 > 0), 2.0 * np.sqrt(2.0 * np.log(2.0) * s2), np.nan)
        ellipticity = np.where(m > 0, np.hypot(mxx - myy, 2.0 * mxy) / (mxx + myy), np.nan)
    return x, y, converged, fwhm, ellipticity


# --------------------------------------------------------------------------------------
# one chip


def _neighbour_ratio(fwhm: float) -> float:
    """Mean of the 4 neighbours over the peak for a pixel-integrated Gaussian at a pixel
    centre (what a star of this FWHM shows at best centring)."""
    from scipy.special import erf

    s = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    def frac(a, b):
        return 0.5 * (erf(b / (np.sqrt(2) * s)) - erf(a / (np.sqrt(2) * s)))

    centre = frac(-0.5, 0.5)
    side = frac(0.5, 1.5)
    return float(side / centre)


def laplacian_fraction(image: np.ndarray, x, y) -> np.ndarray:
    """Positive Laplacian summed over the 3x3 pixels around each source (L.A.Cosmic style).

    The image is subsampled 2x, convolved with the Laplacian kernel, clipped at zero and
    block-averaged back (van Dokkum 2001), in a 5x5 stamp per source. Divided by the source
    flux this measures how sharp its edges are: a cosmic ray (deposited without the optics'
    blur) has about twice the fraction of a star.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    ny, nx = image.shape
    ix = np.floor(np.asarray(x) + 0.5).astype(int)
    iy = np.floor(np.asarray(y) + 0.5).astype(int)
    off = np.arange(-2, 3)
    rows = np.clip(iy[:, None] + off[None, :], 0, ny - 1)
    cols = np.clip(ix[:, None] + off[None, :], 0, nx - 1)
    stamps = image[rows[:, :, None], cols[:, None, :]]  # (n, 5, 5)
    fine = np.repeat(np.repeat(stamps, 2, axis=1), 2, axis=2)  # (n, 10, 10)
    kernel = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
    lap = ndimage.convolve(fine, kernel[None, :, :], mode="nearest")
    lap = np.clip(lap, 0.0, None)
    block = lap.reshape(-1, 5, 2, 5, 2).mean(axis=(2, 4))
    return block[:, 1:4, 1:4].sum(axis=(1, 2))


def _empty_sources() -> Table:
    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    names = ("x", "y", "pos_err", "flux", "snr", "peak", "sharpness", "roundness1",
             "roundness2", "fwhm", "ellipticity")
    return Table({n: np.zeros(0, dtype=np.float64) for n in names})


def find_sources(data: np.ndarray, dq: np.ndarray | None = None, err: np.ndarray | None = None,
                 params: CatalogParams | None = None, detkey: str = "acs_wfc") -> Table:
    """Point sources of one chip, in pixel coordinates.

    Parameters
    ----------
    data : numpy.ndarray
        The SCI array.
    dq : numpy.ndarray, optional
        The DQ array (None: every pixel good).
    err : numpy.ndarray, optional
        The ERR array, for the signal-to-noise ratio (None: from the background RMS).
    params : CatalogParams, optional
        Parameters (resolved with :meth:`CatalogParams.for_detector`).
    detkey : str
        ``<instrument>_<detector>`` (``acs_wfc``...), for the defaults.

    Returns
    -------
    astropy.table.Table
        Columns ``x y pos_err flux snr peak sharpness roundness1 roundness2 fwhm
        ellipticity``, sorted by
        decreasing signal-to-noise ratio (ties by position).
    """
    from photutils.background import Background2D, BkgZoomInterpolator, MedianBackground
    from photutils.detection import DAOStarFinder

    data = np.asarray(data, dtype=np.float64)
    shape = data.shape
    p = (params or CatalogParams()).for_detector(detkey, shape)
    bad = ~np.isfinite(data)
    if dq is not None:
        dq = np.asarray(dq).astype(np.int64)
        bad |= (dq & ~np.int64(p.benign_bits)) != 0
    if bad.all():
        return _empty_sources()
    box = int(min(p.box_size, max(8, min(shape) // 2)))
    # The background and the detection run in float32 (photutils keeps the input's type):
    # about twice as fast on a full chip, with the same sources; the centroids, apertures
    # and signal-to-noise ratios below are computed in float64 (docs/speed.md,
    # "Catalogues").
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # bilinear, not bicubic, between the mesh points: half the cost, within 6 % of
            # the background RMS of the bicubic surface (docs/speed.md, "Catalogues")
            bkg = Background2D(np.where(bad, 0.0, data).astype(np.float32), box, mask=bad,
                               filter_size=(3, 3), bkg_estimator=MedianBackground(),
                               exclude_percentile=50.0,
                               interpolator=BkgZoomInterpolator(order=1))
        except ValueError as exc:
            log.warning("background estimation failed (%s): no sources", exc)
            return _empty_sources()
        background = np.asarray(bkg.background, dtype=np.float64)
        rms = np.asarray(bkg.background_rms, dtype=np.float64)
    sub = data - background
    sub[bad] = 0.0
    usable = np.isfinite(rms) & (rms > 0)
    if not usable.all():  # the floor (a median of 8 M values, 0.5 s) only where it is used
        rms_floor = float(np.nanmedian(rms[~bad])) if (~bad).any() else 1.0
        rms = np.where(usable, rms, rms_floor)
    options = dict(threshold=(p.nsigma * rms).astype(np.float32), fwhm=p.fwhm,
                   exclude_border=True, sharpness_range=tuple(p.sharpness_range),
                   roundness_range=tuple(p.roundness_range))
    sub32 = sub.astype(np.float32)
    # DAOFind's peaks found where they can be, then handed to it: the same catalogue as its
    # own search, which checks ~10^5 noise pixels one by one (mvmflow.peaks; docs/speed.md,
    # "Catalogues, rings and medians")
    peaks = daofind_peaks(DAOStarFinder(**options), sub32, bad)
    if peaks is None:
        return _empty_sources()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = DAOStarFinder(**options, xycoords=peaks).find_stars(sub32, mask=bad)
    del sub32
    if found is None or len(found) == 0:
        return _empty_sources()
    x0 = np.asarray(found["x_centroid"], dtype=np.float64)
    y0 = np.asarray(found["y_centroid"], dtype=np.float64)
    xc, yc, conv, fwhm, ell = windowed_centroids(sub, x0, y0, sigma=p.window_sigma)
    ny, nx = shape
    edge = max(3.0, 2.0 * p.window_sigma)
    keep = conv & np.isfinite(xc) & np.isfinite(yc)
    keep &= (np.hypot(xc - x0, yc - y0) < 1.0)
    keep &= (xc >= edge) & (xc <= nx - 1 - edge) & (yc >= edge) & (yc <= ny - 1 - edge)
    keep &= np.isfinite(fwhm)
    # the windowed FWHM of a star includes pixelation and PSF wings: compare with the
    # chip's typical value when there are enough sources, else with the nominal width
    typical = fwhm[keep]
    ref = float(np.median(typical)) if typical.size >= 5 else _NOMINAL_TO_WINDOWED * p.fwhm
    keep &= (fwhm >= p.fwhm_range[0] * ref) & (fwhm <= p.fwhm_range[1] * ref)
    # bad pixels near the core
    if bad.any():
        from scipy import ndimage

        r = p.core_radius
        k = int(np.ceil(r))
        yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
        near_bad = ndimage.binary_dilation(bad, structure=(xx**2 + yy**2) <= r * r)
        ix = np.clip(np.floor(xc + 0.5).astype(int), 0, nx - 1)
        iy = np.clip(np.floor(yc + 0.5).astype(int), 0, ny - 1)
        keep &= ~near_bad[iy, ix]
    # single-pixel events
    ix = np.clip(np.floor(xc + 0.5).astype(int), 1, nx - 2)
    iy = np.clip(np.floor(yc + 0.5).astype(int), 1, ny - 2)
    peak = sub[iy, ix]
    neigh = 0.25 * (sub[iy - 1, ix] + sub[iy + 1, ix] + sub[iy, ix - 1] + sub[iy, ix + 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(peak > 0, neigh / peak, 0.0)
    keep &= ratio >= p.single_pixel * _neighbour_ratio(p.fwhm)
    # cosmic rays: more Laplacian (sharp-edge) flux than the chip's stars
    if p.cr_laplacian and detkey in CCD_DETECTORS and keep.any():
        q = np.full(xc.size, np.nan)
        cand = np.flatnonzero(keep)
        flux_c, _ = _aperture(sub, err, rms, xc[cand], yc[cand], 1.5 * p.fwhm)
        q[cand] = laplacian_fraction(data, xc[cand], yc[cand]) / np.where(
            flux_c > 0, flux_c, np.nan)
        typical = q[cand][np.isfinite(q[cand])]
        if typical.size >= 5:
            keep &= np.isfinite(q) & (q <= p.cr_laplacian * float(np.median(typical)))
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return _empty_sources()
    flux, snr = _aperture(sub, err, rms, xc[idx], yc[idx], 1.5 * p.fwhm)
    good = np.isfinite(flux) & (snr > 0)
    idx, flux, snr = idx[good], flux[good], snr[good]
    pos_err = np.hypot(p.fwhm / (2.3548 * snr), 0.01)
    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    table = Table()
    table["x"] = xc[idx]
    table["y"] = yc[idx]
    table["pos_err"] = pos_err
    table["flux"] = flux
    table["snr"] = snr
    table["peak"] = np.asarray(found["peak"], dtype=np.float64)[idx]
    table["sharpness"] = np.asarray(found["sharpness"], dtype=np.float64)[idx]
    table["roundness1"] = np.asarray(found["roundness1"], dtype=np.float64)[idx]
    table["roundness2"] = np.asarray(found["roundness2"], dtype=np.float64)[idx]
    table["fwhm"] = fwhm[idx]
    table["ellipticity"] = ell[idx]
    order = np.lexsort((table["x"], table["y"], -table["snr"]))
    table = table[order]
    if p.max_sources is not None and len(table) > p.max_sources:
        table = table[:p.max_sources]
    return table


def _aperture(sub, err, rms, x, y, radius):
    """Circular-aperture sum and signal-to-noise ratio (pixel-centre inclusion)."""
    ny, nx = sub.shape
    k = int(np.ceil(radius))
    oy, ox = np.mgrid[-k:k + 1, -k:k + 1]
    ixc = np.floor(x + 0.5).astype(int)
    iyc = np.floor(y + 0.5).astype(int)
    px = ixc[:, None, None] + ox[None]
    py = iyc[:, None, None] + oy[None]
    inside = ((px - x[:, None, None]) ** 2 + (py - y[:, None, None]) ** 2 <= radius**2)
    inside &= (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    pxc = np.clip(px, 0, nx - 1)
    pyc = np.clip(py, 0, ny - 1)
    values = np.where(inside, sub[pyc, pxc], 0.0)
    flux = values.sum(axis=(1, 2))
    if err is not None:
        e = np.asarray(err, dtype=np.float64)
        var = np.where(inside, e[pyc, pxc] ** 2, 0.0).sum(axis=(1, 2))
    else:
        var = np.where(inside, rms[pyc, pxc] ** 2 + np.maximum(sub[pyc, pxc], 0), 0.0).sum(
            axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(var > 0, flux / np.sqrt(var), 0.0)
    return flux, snr


# --------------------------------------------------------------------------------------
# one exposure


def exposure_catalog(path: str | os.PathLike, params: CatalogParams | None = None) -> Table:
    """The point-source catalogue of every chip of an exposure (see the module notes).

    Parameters
    ----------
    path : str or os.PathLike
        The ``_flt.fits`` / ``_flc.fits`` file (never modified).
    params : CatalogParams, optional
        Source-finding parameters.

    Returns
    -------
    astropy.table.Table
        One row per source, columns and metadata as in the module notes.
    """
    from mvmflow.exposure import Exposure

    exposure = Exposure.open(path)
    params = params or CatalogParams()
    detkey = exposure.detkey
    tables = []
    chips_meta = []
    for extver in exposure.extvers:
        data = np.asarray(exposure.data(extver), dtype=np.float64)
        try:
            dq = exposure.dq(extver)
        except KeyError:
            dq = None
        try:
            err = exposure.err(extver)
        except KeyError:
            err = None
        sources = find_sources(data, dq, err, params, detkey)
        wcs = exposure.chip_wcs(extver)
        if len(sources):
            ra, dec = wcs.all_pix2world(np.asarray(sources["x"]), np.asarray(sources["y"]), 0)
        else:
            ra = dec = np.zeros(0)
        sources["ra"] = np.mod(np.asarray(ra, dtype=np.float64), 360.0)
        sources["dec"] = np.asarray(dec, dtype=np.float64)
        sources["chip"] = np.full(len(sources), extver, dtype=np.int32)
        tables.append(sources)
        ny, nx = exposure.chip_shape(extver)
        chips_meta.append({"extver": int(extver), "nx": int(nx), "ny": int(ny),
                           "nsources": len(sources)})
        log.info("%s[SCI,%d]: %d point sources", exposure.filename, extver, len(sources))
    from astropy.table import vstack

    table = vstack(tables, metadata_conflicts="silent") if tables else _empty_sources()
    if "chip" not in table.colnames:
        table["chip"] = np.zeros(0, dtype=np.int32)
        table["ra"] = np.zeros(0)
        table["dec"] = np.zeros(0)
    table["id"] = np.arange(1, len(table) + 1, dtype=np.int64)
    order = ["id", "chip", "x", "y", "ra", "dec", "pos_err", "flux", "snr", "peak",
             "sharpness", "roundness1", "roundness2", "fwhm", "ellipticity"]
    table = table[order]
    _describe(table, exposure.bunit)
    resolved = params.for_detector(detkey, exposure.chip_shape(exposure.extvers[0]))
    settings = asdict(resolved)
    settings["sharpness_range"] = list(settings["sharpness_range"])
    settings["roundness_range"] = list(settings["roundness_range"])
    settings["fwhm_range"] = list(settings["fwhm_range"])
    expstart = exposure.expstart
    expend = exposure.expend
    table.meta.clear()
    table.meta.update({
        "catalog_version": CATALOG_VERSION,
        "file": exposure.filename,
        "rootname": exposure.rootname,
        "instrument": exposure.instrument,
        "detector": exposure.detector,
        "filter": exposure.filter,
        "expstart": float(expstart),
        "expend": float(expend),
        "exptime": float(exposure.exptime),
        "epoch_mjd": 0.5 * (float(expstart) + float(expend)),
        "wcsname": exposure.wcsname,
        "chips": chips_meta,
        "params": settings,
    })
    return table


def _describe(table: Table, bunit: str) -> None:
    units = {"x": "pix", "y": "pix", "ra": "deg", "dec": "deg", "pos_err": "pix",
             "fwhm": "pix"}
    for name, unit in units.items():
        table[name].unit = unit
    text = {
        "chip": "SCI extension (EXTVER)",
        "x": "windowed centroid, 0-based column",
        "y": "windowed centroid, 0-based row",
        "ra": "RA through the header WCS (full distortion)",
        "dec": "Dec through the header WCS (full distortion)",
        "pos_err": "estimated centroid error per axis",
        "flux": f"aperture sum (r = 1.5 FWHM), {bunit or 'SCI units'}",
        "snr": "aperture signal-to-noise ratio",
        "fwhm": "FWHM from the windowed second moment",
        "ellipticity": "ellipticity of the windowed second moments (blends show more)",
    }
    for name, desc in text.items():
        table[name].description = desc


def write_catalog(table: Table, path: str | os.PathLike) -> Path:
    """Write a catalogue as ECSV, atomically (deterministic: no dates)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def read_catalog(path: str | os.PathLike) -> Table:
    """Read a catalogue written by :func:`write_catalog`."""
    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    table = Table.read(path, format="ascii.ecsv")
    if "catalog_version" not in table.meta:
        raise ValueError(f"{Path(path).name} is not an mvmflow source catalogue")
    return table


def make_catalog(exposure_path: str | os.PathLike, out_path: str | os.PathLike,
                 params: CatalogParams | dict | None = None) -> Path:
    """The ``catalogs`` rule step: find an exposure's point sources, write the ECSV.

    Parameters
    ----------
    exposure_path : str or os.PathLike
        The exposure.
    out_path : str or os.PathLike
        The catalogue to write (``<rootname>_<flt|flc>_cat.ecsv`` by convention).
    params : CatalogParams or dict, optional
        Parameters (a dict of :class:`CatalogParams` fields, e.g. from the config).

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    if isinstance(params, dict):
        params = CatalogParams(**{k: (tuple(v) if isinstance(v, list) else v)
                                  for k, v in params.items()})
    return write_catalog(exposure_catalog(exposure_path, params), out_path)
