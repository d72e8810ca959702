"""Visit against visit: the same stars measured in different visits of one layer.

The reference's overlap cross-match compares the single-visit catalogues of the visits that
overlap in a sky cell (docs/design.md, "Quality files and layer catalogues"). This
workflow makes no single-visit products, so a
visit's catalogue is built here from its exposures' own source catalogues
(:mod:`mvmflow.catalogs`, the alignment's input), each source put on the sky through the
exposure's final WCS (the aligned one where there is a solution, :mod:`mvmflow.solution`):
exactly the positions the drizzle used.

- **A visit's catalogue** (:func:`visit_catalog`): sources with S/N of at least
  ``min_snr`` and ellipticity below ``max_ellipticity`` of every exposure of the visit;
  detections of one star in several exposures (within ``VISIT_TOLERANCE``) are averaged,
  weighted by their centroid errors; where the visit has two or more exposures, a star must
  be seen in two (a cosmic ray is seen once). Its epoch is the exposure-time weighted mean
  epoch of the exposures.
- **Motion.** Stars move between visits years apart: 13 years of the LMC's 1.9 mas/yr are
  25 mas. Where a reference catalogue with proper motions is given (the alignment's), each
  visit star matched to a reference star (:data:`REF_TOLERANCE`) is carried to the
  reference epoch with that star's proper motion before the visits are matched, and the
  *motion-corrected* difference of a pair is the measured difference less the reference's
  predicted motion. That difference is what alignment errors make (plus centroid noise).
  The raw difference (no correction) is reported too.
- **A pair of visits** (:func:`visit_pairs`): mutual nearest neighbours within
  ``tolerance`` of the two catalogues, restricted by the caller to the layer (stars where
  the layer has weight), with the reference's statistics blocks of the differences in layer
  pixels and arcsec and a median and clipped scatter in mas.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

__all__ = [
    "REF_TOLERANCE",
    "VISIT_TOLERANCE",
    "VisitCatalog",
    "clipped_median",
    "exposure_sources",
    "mutual_nearest",
    "pair_statistics",
    "sky_plane",
    "visit_catalog",
    "visit_catalogs",
    "visit_of",
]

VISIT_TOLERANCE = 0.05
"""Largest separation (arcsec) of two detections of one star in exposures of one visit."""
REF_TOLERANCE = 0.05
"""Largest separation (arcsec) of a visit star from its reference star (at the visit's
epoch)."""


def visit_of(key: str) -> str:
    """The visit (``ipppss``) of an input key or file name (``ipppssoot_flc``)."""
    return os.path.basename(str(key))[:6].lower()


@dataclass
class VisitCatalog:
    """The sources of one visit on the sky.

    Attributes
    ----------
    visit : str
        ``ipppss``.
    epoch : float
        Julian year (exposure-time weighted mean of the exposures' mid-times).
    exposures : list of str
        The exposures' file names.
    ra, dec : numpy.ndarray
        Mean positions (deg) at the visit's epoch.
    err : numpy.ndarray
        Position error per axis (mas) of the mean.
    mag : numpy.ndarray
        Instrumental magnitude, ``-2.5 log10(flux / exptime)`` averaged over detections.
    ndet : numpy.ndarray
        Detections averaged.
    """

    visit: str
    epoch: float
    exposures: list = field(default_factory=list)
    ra: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dec: np.ndarray = field(default_factory=lambda: np.zeros(0))
    err: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mag: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ndet: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def __len__(self) -> int:
        return int(self.ra.size)

    def select(self, keep) -> VisitCatalog:
        """The catalogue restricted to the rows ``keep`` (mask or indices)."""
        return VisitCatalog(self.visit, self.epoch, list(self.exposures), self.ra[keep],
                            self.dec[keep], self.err[keep], self.mag[keep], self.ndet[keep])


def exposure_sources(exposure_path: str | os.PathLike, catalog: str | os.PathLike | Table,
                     solution=None, *, min_snr: float = 10.0,
                     max_ellipticity: float = 0.3) -> Table:
    """One exposure's good sources on the sky through its final WCS.

    Parameters
    ----------
    exposure_path : path-like
        The exposure (for its chip WCSs, distortion included).
    catalog : path-like or Table
        Its catalogue (:func:`mvmflow.catalogs.read_catalog`).
    solution : dict, path or None
        Its alignment solution; None keeps the header WCS.
    min_snr, max_ellipticity : float
        Source selection.

    Returns
    -------
    astropy.table.Table
        ``ra``, ``dec`` (deg), ``err`` (mas per axis), ``mag`` (instrumental, per second);
        metadata ``epoch`` (Julian year), ``exptime`` and ``file``.
    """
    from mvmflow.catalogs import read_catalog
    from mvmflow.exposure import Exposure
    from mvmflow.refcat import mjd_to_jyear
    from mvmflow.solution import corrected_chip_wcs

    cat = catalog if isinstance(catalog, Table) else read_catalog(catalog)
    exptime = float(cat.meta.get("exptime") or 0.0)
    good = ((np.asarray(cat["snr"], dtype=np.float64) >= min_snr)
            & (np.nan_to_num(np.asarray(cat["ellipticity"], dtype=np.float64), nan=1.0)
               < max_ellipticity)
            & (np.asarray(cat["flux"], dtype=np.float64) > 0)) if len(cat) else np.zeros(0, bool)
    cat = cat[good]
    ra = np.zeros(len(cat))
    dec = np.zeros(len(cat))
    err = np.zeros(len(cat))
    exposure = Exposure(exposure_path)
    chips = np.asarray(cat["chip"]) if len(cat) else np.zeros(0, int)
    for extver in np.unique(chips):
        rows = chips == extver
        wcs = corrected_chip_wcs(exposure, solution, int(extver))
        r, d = wcs.all_pix2world(np.asarray(cat["x"])[rows], np.asarray(cat["y"])[rows], 0)
        ra[rows], dec[rows] = r, d
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3.6e6
        err[rows] = np.asarray(cat["pos_err"], dtype=np.float64)[rows] * scale
    flux = np.asarray(cat["flux"], dtype=np.float64) / (exptime if exptime > 0 else 1.0)
    out = Table({"ra": np.mod(ra, 360.0), "dec": dec, "err": np.maximum(err, 0.1),
                 "mag": -2.5 * np.log10(flux)})
    epoch = cat.meta.get("epoch_mjd")
    out.meta.update(epoch=float(mjd_to_jyear(epoch)) if epoch is not None else float("nan"),
                    exptime=exptime, file=str(cat.meta.get("file", os.path.basename(
                        str(exposure_path)))))
    return out


def sky_plane(ra, dec, ra0: float, dec0: float) -> np.ndarray:
    """Offsets (arcsec) on a local plane at (ra0, dec0), RA wrapped."""
    dra = (np.asarray(ra, dtype=np.float64) - ra0 + 180.0) % 360.0 - 180.0
    return np.column_stack([dra * np.cos(np.radians(dec0)),
                            np.asarray(dec, dtype=np.float64) - dec0]) * 3600.0


def mutual_nearest(a: np.ndarray, b: np.ndarray, tolerance: float):
    """Mutual nearest neighbours (rows of ``a``, rows of ``b``) within ``tolerance``."""
    from scipy.spatial import cKDTree

    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d1, j = cKDTree(b).query(a, distance_upper_bound=tolerance)
    _, i = cKDTree(a).query(b, distance_upper_bound=tolerance)
    ia = np.flatnonzero(np.isfinite(d1))
    ia = ia[i[j[ia]] == ia]
    return ia, j[ia]


def visit_catalog(visit: str, sources: Sequence[Table],
                  tolerance: float = VISIT_TOLERANCE) -> VisitCatalog:
    """Combine the sources of a visit's exposures (:func:`exposure_sources`).

    Detections are matched to the growing list of stars (mutual nearest within
    ``tolerance`` arcsec) one exposure at a time and averaged with weights ``1/err**2``;
    where two or more exposures are given, stars seen once are dropped.
    """
    sources = [s for s in sources if s is not None]
    exptimes = np.array([float(s.meta.get("exptime") or 0.0) for s in sources])
    epochs = np.array([float(s.meta.get("epoch", np.nan)) for s in sources])
    ok = np.isfinite(epochs)
    weights = np.where(exptimes[ok] > 0, exptimes[ok], 1.0)
    epoch = float(np.average(epochs[ok], weights=weights)) if ok.any() else float("nan")
    names = [str(s.meta.get("file", "")) for s in sources]
    rows = [s for s in sources if len(s)]
    if not rows:
        return VisitCatalog(visit, epoch, names)
    ra0 = float(rows[0]["ra"][0])
    dec0 = float(np.median(np.concatenate([np.asarray(s["dec"]) for s in rows])))
    sw = np.zeros((0, 2))  # sum of w * position (plane arcsec)
    wsum = np.zeros(0)
    msum = np.zeros(0)
    n = np.zeros(0, int)
    for s in rows:
        p = sky_plane(s["ra"], s["dec"], ra0, dec0)
        w = 1.0 / np.asarray(s["err"], dtype=np.float64) ** 2
        mean = sw / wsum[:, None] if wsum.size else np.zeros((0, 2))
        ia, ib = mutual_nearest(mean, p, tolerance)
        new = np.setdiff1d(np.arange(len(p)), ib)
        sw[ia] += w[ib, None] * p[ib]
        wsum[ia] += w[ib]
        msum[ia] += np.asarray(s["mag"])[ib]
        n[ia] += 1
        sw = np.vstack([sw, w[new, None] * p[new]])
        wsum = np.concatenate([wsum, w[new]])
        msum = np.concatenate([msum, np.asarray(s["mag"])[new]])
        n = np.concatenate([n, np.ones(new.size, int)])
    keep = n >= (2 if len(sources) >= 2 else 1)
    mean = sw[keep] / wsum[keep, None]
    dec = dec0 + mean[:, 1] / 3600.0
    ra = np.mod(ra0 + mean[:, 0] / 3600.0 / np.cos(np.radians(dec0)), 360.0)
    return VisitCatalog(visit, epoch, names, ra, dec, 1.0 / np.sqrt(wsum[keep]),
                        msum[keep] / n[keep], n[keep])


def visit_catalogs(members: Sequence[tuple], *, min_snr: float = 10.0,
                   max_ellipticity: float = 0.3) -> list[VisitCatalog]:
    """One :class:`VisitCatalog` per visit of ``members``.

    Parameters
    ----------
    members : sequence of (key, exposure path, catalogue path, solution or None)
        The layer's inputs.
    """
    by_visit: dict[str, list] = {}
    for key, exposure, catalog, solution in members:
        by_visit.setdefault(visit_of(key), []).append(
            exposure_sources(exposure, catalog, solution, min_snr=min_snr,
                             max_ellipticity=max_ellipticity))
    return [visit_catalog(v, by_visit[v]) for v in sorted(by_visit)]


def _reference_motion(cat: VisitCatalog, refcat: Table | None):
    """Per star of ``cat``: the index of its reference star (-1: none) and the reference's
    positions of those stars at the visit's epoch."""
    from mvmflow.refcat import positions_at

    index = np.full(len(cat), -1)
    if refcat is None or len(refcat) == 0 or len(cat) == 0 or not np.isfinite(cat.epoch):
        return index
    rra, rdec, _ = positions_at(refcat, cat.epoch)
    dec0 = float(np.median(cat.dec))
    ra0 = float(cat.ra[0])
    ia, ib = mutual_nearest(sky_plane(cat.ra, cat.dec, ra0, dec0),
                            sky_plane(rra, rdec, ra0, dec0),
                     REF_TOLERANCE)
    index[ia] = ib
    return index


def clipped_median(values) -> tuple[float | None, float | None]:
    """3-sigma, 3-iteration clipped median and standard deviation (None when empty)."""
    from astropy.stats import sigma_clipped_stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, med, sd = sigma_clipped_stats(v, sigma=3, maxiters=3)
    return round(float(med), 4), round(float(sd), 4)


def pair_statistics(a: VisitCatalog, b: VisitCatalog, refcat: Table | None = None,
                    tolerance: float = 0.1,
                    to_pixels: Callable | None = None) -> dict:
    """Match two visits' catalogues and describe the differences ``b - a``.

    Parameters
    ----------
    a, b : VisitCatalog
        The visits (already restricted to the layer by the caller).
    refcat : Table, optional
        A normalised reference catalogue (:func:`mvmflow.refcat.read_refcat`) with proper
        motions: stars found in it are carried to its epoch before matching, and their
        motion-corrected differences are reported.
    tolerance : float
        Match radius (arcsec) after the motion correction.
    to_pixels : callable, optional
        ``(ra, dec) -> (x, y)`` in layer pixels, for the reference's X/Y statistics blocks.

    Returns
    -------
    dict
        ``matched``, ``with reference motion``, the differences (mas) ``dra``/``ddec``
        (raw, all pairs) and ``dra_pm``/``ddec_pm`` (motion-corrected, pairs whose stars
        both matched the same reference star), ``dx``/``dy`` (layer pixels,
        motion-corrected where known, else raw), ``dmag``, and the summary figures.
    """
    from mvmflow.refcat import positions_at

    ia_ref = _reference_motion(a, refcat)
    ib_ref = _reference_motion(b, refcat)
    ra0 = float(a.ra[0]) if len(a) else 0.0
    dec0 = float(np.median(a.dec)) if len(a) else 0.0
    pa = sky_plane(a.ra, a.dec, ra0, dec0)
    pb = sky_plane(b.ra, b.dec, ra0, dec0)
    shift_a = np.zeros_like(pa)
    shift_b = np.zeros_like(pb)
    if refcat is not None and len(refcat):
        ref_epoch = float(np.median(np.asarray(refcat["epoch"], dtype=np.float64)))
        r0 = sky_plane(*positions_at(refcat, ref_epoch)[:2], ra0, dec0)
        for cat, idx, shift in ((a, ia_ref, shift_a), (b, ib_ref, shift_b)):
            has = idx >= 0
            if has.any() and np.isfinite(cat.epoch):
                rt = sky_plane(*positions_at(refcat[idx[has]], cat.epoch)[:2], ra0, dec0)
                shift[has] = rt - r0[idx[has]]  # the reference's motion epoch -> visit
    ia, ib = mutual_nearest(pa - shift_a, pb - shift_b, tolerance)
    d_raw = (pb[ib] - pa[ia]) * 1000.0
    both = (ia_ref[ia] >= 0) & (ia_ref[ia] == ib_ref[ib])
    d_pm = ((pb[ib] - shift_b[ib]) - (pa[ia] - shift_a[ia]))[both] * 1000.0
    d_cor = ((pb[ib] - shift_b[ib]) - (pa[ia] - shift_a[ia])) * 1000.0
    out = {"matched": int(ia.size), "with reference motion": int(both.sum()),
           "ia": ia, "ib": ib,
           "dra": d_raw[:, 0], "ddec": d_raw[:, 1],
           "dra_pm": d_pm[:, 0], "ddec_pm": d_pm[:, 1],
           "dmag": b.mag[ib] - a.mag[ia]}
    if to_pixels is not None and ia.size:
        # the motion-corrected (where known) position of b's star, back on a's epoch
        cor = pa[ia] + d_cor / 1000.0
        dec_c = dec0 + cor[:, 1] / 3600.0
        ra_c = ra0 + cor[:, 0] / 3600.0 / np.cos(np.radians(dec0))
        xa, ya = to_pixels(a.ra[ia], a.dec[ia])
        xb, yb = to_pixels(np.mod(ra_c, 360.0), dec_c)
        out["x"], out["y"] = np.asarray(xa), np.asarray(ya)
        out["dx"] = np.asarray(xb) - np.asarray(xa)
        out["dy"] = np.asarray(yb) - np.asarray(ya)
    mra, sra = clipped_median(out["dra_pm"])
    mde, sde = clipped_median(out["ddec_pm"])
    rra, rsra = clipped_median(out["dra"])
    rde, rsde = clipped_median(out["ddec"])
    mmag, smag = clipped_median(out["dmag"])
    out["summary"] = {
        "visits": [a.visit, b.visit],
        "epochs [yr]": [round(a.epoch, 4), round(b.epoch, 4)],
        "baseline [yr]": round(b.epoch - a.epoch, 4),
        "stars": [len(a), len(b)], "matched": out["matched"],
        "matched with reference motion": out["with reference motion"],
        "median dRA cos(dec) [mas]": mra, "scatter dRA cos(dec) [mas]": sra,
        "median dDec [mas]": mde, "scatter dDec [mas]": sde,
        "raw median dRA cos(dec) [mas]": rra, "raw scatter dRA cos(dec) [mas]": rsra,
        "raw median dDec [mas]": rde, "raw scatter dDec [mas]": rsde,
        "median dmag": mmag, "scatter dmag": smag,
    }
    return out
