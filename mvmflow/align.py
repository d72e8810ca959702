"""Relative and absolute alignment of a group of exposures (the ``align`` step).

One job aligns a *group*: the exposures of a sky cell, or better an overlap-connected group
across sky cells (:func:`mvmflow.groups.overlap_groups`), so that neighbouring sky cells share one
solution. Inputs are the exposures and their point-source catalogues
(:mod:`mvmflow.catalogs`); outputs are one solution file per exposure
(:mod:`mvmflow.solution`) and an optional report, both carrying the group's name
(:func:`mvmflow.groups.group_name`, the one naming of groups).

Method (every transform is an affine map on one tangent plane of the group, arcsec; matching
and fitting in :mod:`mvmflow.fitting`, fits by ``tweakwcs``):

1. Sources are projected through their chip's full header WCS (SIP + NPOL + D2IM).
   Exposures are grouped by visit (``group_by="visit"``, default: the exposures of a visit
   share the guide stars and move together) or kept apart (``"exposure"``).
2. **Relative**: the visit with the most sources is the reference; the others are aligned
   one at a time, the one with the strongest offset peak against the growing reference
   first (:func:`mvmflow.fitting.estimate_offset`), and their unmatched sources are added to
   the reference. Each alignment: offset from the pooled 2-D histogram (search radius
   ``searchrad``), matching within ``tolerance``, a fit whose geometry follows the number of
   matches and falls back when it fails its criteria (:func:`mvmflow.fitting.fit_pairs`), then
   two refinements (re-match within ``3 x RMS``, refit). A visit that cannot be aligned
   keeps its WCS and is flagged.
3. **Absolute** (a reference catalogue is given): the catalogue is propagated with its proper
   motions to *each exposure's own epoch*; the relatively aligned group is matched and
   fitted to it as one (pooled over every exposure), then each visit is refined on its own
   when it has enough catalogue matches (``absolute``; else it keeps the group solution,
   ``absolute-group``). Visits that failed the relative step try the catalogue directly.
   A failed group fit leaves the relative solution (flagged); a failed catalogue query
   too (recorded in the notes). Nothing raises for a bad fit.
4. **Every exposure checked** (:func:`_verify_members`): a visit's solution is right for
   its exposures only if they kept their relative pointing (guide-star reacquisitions can
   move one by tenths of an arcsecond). Each exposure's own sources, moved by its visit's
   solution, are matched to the catalogue at its epoch (else, relative only or with too few
   catalogue stars of its own, to the group's other exposures that agree with theirs); with
   fewer than ``member_min_matches`` matches or a median offset beyond
   ``member_max_offset_mas`` it is fitted on its own, to the catalogue (``absolute-own``,
   ``FIT_IMG_<CAT>``) or to those exposures (``relative-own``), and when that fails too it
   keeps its header WCS (``unaligned``, flagged); both are logged as warnings. So no
   exposure says ``absolute`` or ``FIT_MVM_*`` without matches of its own (only the lone
   exposure of a relative-only group, its own reference, has none).
5. The chip WCSs are corrected through ``tweakwcs``' FITS WCS corrector (``CRVAL`` and
   ``CD`` only; distortion kept) and written as solution files, with per-exposure figures:
   sources matched to the reference after the solution and their RMS along RA and Dec.

Entry points: :func:`align_group` (paths in, files out; the rule step) and
:func:`align_exposures` (in memory, returns the solutions).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from mvmflow.fitting import (
    IDENTITY,
    Affine,
    FitCriteria,
    FitResult,
    Plane,
    correct_wcs,
    estimate_offset,
    fit_pairs,
    match_nearest,
)
from mvmflow.groups import group_name
from mvmflow.refcat import GAIA_TAP_URL, catalog_label, load_refcat, mjd_to_jyear, positions_at
from mvmflow.solution import SOLUTION_FORMAT, SOLUTION_VERSION, write_report, write_solution

__all__ = [
    "AlignParams",
    "align_exposures",
    "align_group",
    "base_wcsname",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignParams:
    """Alignment parameters.

    Attributes
    ----------
    fitgeom : str
        Most general fit geometry (``general``, ``rscale``, ``rshift``, ``shift``).
    criteria : FitCriteria
        Minimum matches per geometry and accepted fit figures.
    searchrad : float
        Largest offset searched for (arcsec), relative and absolute.
    binsize : float
        Offset histogram bin (arcsec).
    tolerance : float
        First matching radius after the offset (arcsec).
    refine_sigma : float
        Refinement matching radius in units of the fit RMS ...
    refine_floor : float
        ... but at least this (arcsec).
    nclip, sigma : int, float
        Sigma clipping of the fits.
    min_snr : float
        Catalogue sources below this signal-to-noise ratio are not used.
    max_ellipticity_excess : float or None
        Nor are sources whose ellipticity exceeds their chip's median by more than this
        (blends: in crowded fields they dominate the scatter of WFC3/IR positions); None
        keeps them.
    group_by : str
        ``visit`` (one transform per visit) or ``exposure``.
    error_floor_mas : float
        Added in quadrature to every position error for the fit weights.
    margin_arcsec : float
        Margin of the Gaia cone and of the catalogue selection around the exposures.
    member_min_matches : int
        The check of every exposure against its visit's solution: fewest matches of the
        exposure's own sources (to the catalogue, else to the group's verified exposures)
        with which it agrees ...
    member_max_offset_mas : float
        ... and largest median offset of those matches (mas; at least three times the
        offset's own uncertainty, ``RMS / sqrt(n)``). An exposure failing the check is
        fitted on its own, or left unaligned and flagged.
    """

    fitgeom: str = "general"
    criteria: FitCriteria = field(default_factory=FitCriteria)
    searchrad: float = 3.0
    binsize: float = 0.05
    tolerance: float = 0.25
    refine_sigma: float = 3.0
    refine_floor: float = 0.03
    nclip: int = 3
    sigma: float = 3.0
    min_snr: float = 10.0
    max_ellipticity_excess: float | None = 0.03
    group_by: str = "visit"
    error_floor_mas: float = 2.0
    margin_arcsec: float = 30.0
    member_min_matches: int = 3
    member_max_offset_mas: float = 10.0

    @classmethod
    def from_dict(cls, values: dict | None) -> AlignParams:
        """Parameters from a (config) dict; ``min_matches`` and the ``max_*`` criteria keys
        may be given at the top level or under ``criteria``."""
        values = dict(values or {})
        crit = dict(values.pop("criteria", {}) or {})
        for key in ("min_matches", "max_rms_mas", "max_rotation_deg", "max_scale_dev",
                    "max_skew_deg", "max_shift_arcsec"):
            if key in values:
                crit[key] = values.pop(key)
        if "min_matches" in crit:
            from mvmflow.fitting import DEFAULT_MIN_MATCHES

            crit["min_matches"] = {**DEFAULT_MIN_MATCHES, **dict(crit["min_matches"])}
        unknown = set(values) - {f.name for f in cls.__dataclass_fields__.values()}
        if unknown:
            raise ValueError(f"unknown alignment parameters: {', '.join(sorted(unknown))}")
        return cls(criteria=FitCriteria(**crit), **values)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "criteria"}
        out["criteria"] = {k: getattr(self.criteria, k)
                           for k in self.criteria.__dataclass_fields__}
        return out


def base_wcsname(wcsname: str) -> str:
    """The a-priori part of a WCSNAME (``IDC_xxx-FIT_SVM_GAIADR3`` -> ``IDC_xxx``)."""
    text = (wcsname or "").strip()
    pos = text.upper().find("-FIT")
    if pos > 0:
        return text[:pos]
    if text.upper().startswith("FIT"):
        return ""
    return text


# --------------------------------------------------------------------------------------
# inputs


@dataclass
class _Exposure:
    path: Path
    name: str
    rootname: str
    visit: str
    epoch_mjd: float
    wcsname: str
    wcs: dict  # extver -> WCS
    chip_ids: np.ndarray  # per source
    xpix: np.ndarray
    ypix: np.ndarray
    sigma: np.ndarray  # arcsec, per axis
    px: np.ndarray = None  # plane arcsec through the header WCS
    py: np.ndarray = None
    notes: list = field(default_factory=list)

    @property
    def jyear(self) -> float:
        return float(mjd_to_jyear(self.epoch_mjd))

    @property
    def xy(self) -> np.ndarray:
        return np.column_stack([self.px, self.py])


def _load(exposure_path, catalog, params: AlignParams) -> _Exposure:
    from mvmflow.catalogs import read_catalog
    from mvmflow.exposure import Exposure

    exposure = Exposure.open(exposure_path)
    table = catalog if isinstance(catalog, Table) else read_catalog(catalog)
    meta_file = table.meta.get("file")
    if meta_file and meta_file != exposure.filename:
        raise ValueError(f"catalogue is for {meta_file}, not {exposure.filename}")
    if len(table):
        table = table[_usable(table, params)]
    wcs = {extver: exposure.chip_wcs(extver) for extver in exposure.extvers}
    chips = np.asarray(table["chip"], dtype=int) if len(table) else np.zeros(0, int)
    scale = np.ones(len(table))
    for extver, w in wcs.items():
        pscale = math.sqrt(abs(np.linalg.det(w.celestial.pixel_scale_matrix))) * 3600.0
        scale[chips == extver] = pscale
    pos_err = np.asarray(table["pos_err"], dtype=np.float64) if len(table) else np.zeros(0)
    epoch = table.meta.get("epoch_mjd")
    if epoch is None:
        epoch = 0.5 * (exposure.expstart + exposure.expend)
    name = exposure.filename
    return _Exposure(
        path=Path(exposure_path), name=name, rootname=exposure.rootname,
        visit=exposure.rootname[:6], epoch_mjd=float(epoch), wcsname=exposure.wcsname, wcs=wcs,
        chip_ids=chips,
        xpix=np.asarray(table["x"], dtype=np.float64) if len(table) else np.zeros(0),
        ypix=np.asarray(table["y"], dtype=np.float64) if len(table) else np.zeros(0),
        sigma=pos_err * scale)


def _usable(table: Table, params: AlignParams) -> np.ndarray:
    """Sources good enough to align with: signal-to-noise ratio of at least ``min_snr`` and,
    per chip, an ellipticity at most ``max_ellipticity_excess`` above the chip's median (a
    more elongated source is most likely a blend, whose centroid its neighbour pulls)."""
    keep = np.asarray(table["snr"], dtype=np.float64) >= params.min_snr
    if params.max_ellipticity_excess is None or "ellipticity" not in table.colnames:
        return keep
    ell = np.asarray(table["ellipticity"], dtype=np.float64)
    chips = np.asarray(table["chip"])
    for chip in np.unique(chips):
        sel = (chips == chip) & keep & np.isfinite(ell)
        if sel.sum() >= 5:
            limit = float(np.median(ell[sel])) + params.max_ellipticity_excess
            keep &= ~((chips == chip) & ~(ell <= limit))
    return keep


def _project(exp: _Exposure, plane: Plane) -> None:
    px = np.zeros(exp.xpix.size)
    py = np.zeros(exp.xpix.size)
    for extver, w in exp.wcs.items():
        sel = exp.chip_ids == extver
        if sel.any():
            ra, dec = w.all_pix2world(exp.xpix[sel], exp.ypix[sel], 0)
            px[sel], py[sel] = plane.to_plane(ra, dec)
    exp.px, exp.py = px, py


def _footprint_world(exp: _Exposure) -> np.ndarray:
    from mvmflow.exposure import edge_pixels

    pts = []
    for w in exp.wcs.values():
        nx, ny = w.pixel_shape
        pts.append(w.all_pix2world(edge_pixels((ny, nx), 4), 0))
    return np.concatenate(pts)


# --------------------------------------------------------------------------------------
# matching + fitting of a set of (image, reference) list pairs


@dataclass
class _Set:
    """One exposure's sources (plane, already transformed) against a reference list."""

    img: np.ndarray
    img_sigma: np.ndarray
    ref: np.ndarray
    ref_sigma: np.ndarray


def _pairs(sets: list[_Set], transform: Affine, tol: float, floor: float):
    img_all, ref_all, w_all, counts = [], [], [], []
    for s in sets:
        if len(s.img) == 0 or len(s.ref) == 0:
            counts.append(0)
            continue
        tx, ty = transform(s.img[:, 0], s.img[:, 1])
        moved = np.column_stack([tx, ty])
        i, j = match_nearest(moved, s.ref, tol)
        counts.append(len(i))
        img_all.append(s.img[i])
        ref_all.append(s.ref[j])
        var = s.img_sigma[i] ** 2 + s.ref_sigma[j] ** 2 + floor**2
        w_all.append(1.0 / var)
    if not img_all:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), counts
    return np.concatenate(img_all), np.concatenate(ref_all), np.concatenate(w_all), counts


def _match_and_fit(sets: list[_Set], params: AlignParams, start: Affine = IDENTITY,
                   search: bool = True, tolerance: float | None = None) -> FitResult:
    """Offset search (optional), matching and fitting with two refinements.

    The returned transform maps the sets' image positions onto their references.
    """
    floor = params.error_floor_mas / 1000.0
    notes = []
    transform = start
    if search:
        pooled = []
        for s in sets:
            tx, ty = start(s.img[:, 0], s.img[:, 1]) if len(s.img) else (np.zeros(0),) * 2
            pooled.append((np.column_stack([tx, ty]), s.ref))
        dx, dy, npeak = estimate_offset(pooled, params.searchrad, params.binsize)
        notes.append(f"offset search: ({dx:+.3f}, {dy:+.3f}) arcsec, {npeak} pairs at the peak")
        transform = start.then(Affine(shift=(dx, dy)))
    tol = params.tolerance if tolerance is None else tolerance
    img, ref, w, _ = _pairs(sets, transform, tol, floor)
    # fit the residual transform from the (start + offset) positions
    tx, ty = transform(img[:, 0], img[:, 1]) if len(img) else (np.zeros(0), np.zeros(0))
    result = fit_pairs(np.column_stack([tx, ty]), ref, w, params.fitgeom, params.criteria,
                       params.nclip, params.sigma)
    if not result.ok:
        result.notes = notes + [f"{len(img)} matches within {tol:g} arcsec"] + result.notes
        return result
    best = FitResult(True, result.geometry, transform.then(result.transform), result.nmatches,
                     result.rms_x, result.rms_y, notes + result.notes)
    for _ in range(2):
        tol = max(params.refine_sigma * best.rms / 1000.0, params.refine_floor)
        img, ref, w, _ = _pairs(sets, best.transform, tol, floor)
        tx, ty = transform(img[:, 0], img[:, 1]) if len(img) else (np.zeros(0), np.zeros(0))
        again = fit_pairs(np.column_stack([tx, ty]), ref, w, params.fitgeom, params.criteria,
                          params.nclip, params.sigma)
        if not again.ok:
            best.notes.append(f"refinement within {tol:.3f} arcsec failed; kept the previous "
                              "fit")
            break
        best = FitResult(True, again.geometry, transform.then(again.transform),
                         again.nmatches, again.rms_x, again.rms_y, best.notes + again.notes)
    return best


def _merge(xys: list[np.ndarray], sigmas: list[np.ndarray], radius: float = 0.08):
    """Merge several source lists (one per exposure of a visit) into unique sources: the
    mean position of mutual nearest neighbours within ``radius`` arcsec."""
    sum_xy = np.zeros((0, 2))
    count = np.zeros(0)
    sig = np.zeros(0)
    for xy, s in zip(xys, sigmas, strict=True):
        if len(xy) == 0:
            continue
        if len(sum_xy) == 0:
            sum_xy, count, sig = xy.copy(), np.ones(len(xy)), s.copy()
            continue
        mean = sum_xy / count[:, None]
        i, j = match_nearest(xy, mean, radius)
        sum_xy[j] += xy[i]
        count[j] += 1
        sig[j] = np.minimum(sig[j], s[i])
        new = np.setdiff1d(np.arange(len(xy)), i)
        sum_xy = np.concatenate([sum_xy, xy[new]])
        count = np.concatenate([count, np.ones(len(new))])
        sig = np.concatenate([sig, s[new]])
    if len(sum_xy) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    return sum_xy / count[:, None], sig / np.sqrt(count)


def _fit_record(result: FitResult | None) -> dict | None:
    if result is None:
        return None
    return {"ok": result.ok, "geometry": result.geometry, "nmatches": result.nmatches,
            "rms_x": result.rms_x, "rms_y": result.rms_y, "notes": list(result.notes),
            "transform": result.transform.as_dict()}


# --------------------------------------------------------------------------------------
# the group


@dataclass
class _Unit:
    """What moves as one: a visit (or an exposure)."""

    key: str
    exposures: list
    transform: Affine = IDENTITY
    status: str = "unaligned"
    geometry: str = "none"
    relative: FitResult | None = None
    absolute: FitResult | None = None
    notes: list = field(default_factory=list)
    in_catalog: bool = False  # relative-own: fitted to exposures tied to the catalogue

    def transformed(self, transform: Affine | None = None):
        t = self.transform if transform is None else transform
        out = []
        for e in self.exposures:
            tx, ty = t(e.px, e.py)
            out.append(np.column_stack([tx, ty]))
        return out

    def merged(self, transform: Affine | None = None):
        return _merge(self.transformed(transform), [e.sigma for e in self.exposures])


def _relative(units: list[_Unit], params: AlignParams) -> None:
    live = [u for u in units if sum(len(e.px) for e in u.exposures) > 0]
    for u in units:
        if u not in live:
            u.notes.append("no catalogue sources")
    if not live:
        return
    sizes = [len(u.merged()[0]) for u in live]
    ref_unit = live[int(np.argmax(sizes))]
    ref_unit.status = "reference"
    ref_xy, ref_sig = ref_unit.merged()
    pending = [u for u in live if u is not ref_unit]
    while pending:
        peaks = []
        for u in pending:
            pooled = [(xy, ref_xy) for xy in u.transformed()]
            peaks.append(estimate_offset(pooled, params.searchrad, params.binsize)[2])
        u = pending.pop(int(np.argmax(peaks)))
        sets = [_Set(np.column_stack([e.px, e.py]), e.sigma, ref_xy, ref_sig)
                for e in u.exposures]
        result = _match_and_fit(sets, params)
        u.relative = result
        if not result.ok:
            u.notes.append(f"relative alignment to {ref_unit.key} failed")
            log.warning("%s: relative alignment failed: %s", u.key, "; ".join(result.notes))
            continue
        u.transform = result.transform
        u.status = "relative"
        u.geometry = result.geometry
        log.info("%s: relative %s fit, %d matches, RMS %.1f mas", u.key, result.geometry,
                 result.nmatches, result.rms)
        xy, sig = u.merged()
        i, _ = match_nearest(xy, ref_xy, max(params.refine_floor, 3 * result.rms / 1000.0))
        new = np.setdiff1d(np.arange(len(xy)), i)
        ref_xy = np.concatenate([ref_xy, xy[new]])
        ref_sig = np.concatenate([ref_sig, sig[new]])


def _catalog_ref(e: _Exposure, refcat: Table, plane: Plane, cache: dict):
    """The reference catalogue at the exposure's epoch on the plane: (xy, sigma) arcsec."""
    if e.name not in cache:
        ra, dec, sigma = positions_at(refcat, e.jyear)
        rx, ry = plane.to_plane(ra, dec)
        cache[e.name] = (np.column_stack([rx, ry]), sigma / 1000.0)
    return cache[e.name]


def _refcat_sets(unit: _Unit, transform: Affine, refcat: Table, plane: Plane,
                 cache: dict) -> list[_Set]:
    sets = []
    for e, xy in zip(unit.exposures, unit.transformed(transform), strict=True):
        ref, rsig = _catalog_ref(e, refcat, plane, cache)
        sets.append(_Set(xy, e.sigma, ref, rsig))
    return sets


def _absolute(units: list[_Unit], refcat: Table, plane: Plane, params: AlignParams,
              group_label: str = "group") -> None:
    cache: dict = {}
    aligned = [u for u in units if u.status in ("reference", "relative")]
    group = None
    if aligned:
        sets = []
        for u in aligned:
            sets += _refcat_sets(u, u.transform, refcat, plane, cache)
        # fit the residual of the relatively aligned positions
        group = _match_and_fit(sets, params)
        if group.ok:
            log.info("%s: absolute %s fit, %d matches, RMS %.1f mas", group_label,
                     group.geometry, group.nmatches, group.rms)
        else:
            log.warning("%s: absolute fit failed: %s", group_label, "; ".join(group.notes))
    for u in aligned:
        if group is None or not group.ok:
            u.absolute = group
            u.notes.append("absolute fit of the group failed: relative solution kept")
            continue
        through_group = u.transform.then(group.transform)
        sets = _refcat_sets(u, through_group, refcat, plane, cache)
        tol = max(params.refine_sigma * group.rms / 1000.0, params.refine_floor, 0.05)
        own = _match_and_fit(sets, params, search=False, tolerance=tol)
        if own.ok:
            u.transform = through_group.then(own.transform)
            u.absolute = own
            u.geometry = own.geometry
            u.status = "absolute"
        else:
            u.transform = through_group
            u.absolute = group
            u.geometry = group.geometry
            u.status = "absolute-group"
            u.notes.append("too few catalogue matches for a fit of its own: group solution ("
                           + "; ".join(own.notes[-2:]) + ")")
    for u in units:
        if u.status != "unaligned" or not any(len(e.px) for e in u.exposures):
            continue
        sets = _refcat_sets(u, IDENTITY, refcat, plane, cache)
        own = _match_and_fit(sets, params)
        u.absolute = own
        if own.ok:
            u.transform = own.transform
            u.geometry = own.geometry
            u.status = "absolute"
            u.notes.append("aligned to the catalogue directly")
        else:
            u.notes.append("absolute fit failed")


def _clip(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Residuals kept by an iterative 3-sigma clip of their distance from zero."""
    keep = np.ones(dx.size, dtype=bool)
    for _ in range(5):
        if keep.sum() < 2:
            break
        r = np.hypot(dx, dy)
        limit = 3.0 * math.sqrt(np.mean(r[keep] ** 2))
        new = r <= max(limit, 1e-3)
        if (new == keep).all():
            break
        keep = new
    return keep


def _clipped_rms(dx: np.ndarray, dy: np.ndarray) -> tuple[int, float, float]:
    keep = _clip(dx, dy)
    n = int(keep.sum())
    if n == 0:
        return 0, float("nan"), float("nan")
    return n, float(np.sqrt(np.mean(dx[keep] ** 2))), float(np.sqrt(np.mean(dy[keep] ** 2)))


# --------------------------------------------------------------------------------------
# every exposure checked against its visit's solution


@dataclass(frozen=True)
class _Check:
    """An exposure's own sources, through a solution, against a reference (mas)."""

    n: int
    dx: float
    dy: float
    scatter: float

    @property
    def offset(self) -> float:
        return math.hypot(self.dx, self.dy)

    def agrees(self, params: AlignParams) -> bool:
        """Enough matches, and their median offset within the tolerance."""
        if self.n < max(1, params.member_min_matches):
            return False
        limit = max(params.member_max_offset_mas, 3.0 * self.scatter / math.sqrt(self.n))
        return self.offset <= limit

    def describe(self) -> str:
        if self.n == 0:
            return "0 matches"
        return f"{self.n} match{'es' if self.n != 1 else ''}, median offset {self.offset:.1f} mas"


def _check(xy: np.ndarray, ref: np.ndarray, tol: float) -> _Check:
    i, j = match_nearest(xy, ref, tol)
    if len(i) == 0:
        return _Check(0, float("nan"), float("nan"), float("nan"))
    d = (ref[j] - xy[i]) * 1000.0
    keep = _clip(d[:, 0] - np.median(d[:, 0]), d[:, 1] - np.median(d[:, 1]))
    d = d[keep]
    mx, my = (float(v) for v in np.median(d, axis=0))
    scatter = float(np.hypot(np.std(d[:, 0]), np.std(d[:, 1]))) if len(d) > 1 else 0.0
    return _Check(len(d), mx, my, scatter)


def _fit_tolerance(fit: FitResult | None, params: AlignParams) -> float:
    """Matching radius after a solution (arcsec): that of the refinements, at least 0.05."""
    rms = fit.rms if (fit is not None and fit.ok) else 50.0
    return max(params.refine_sigma * rms / 1000.0, params.refine_floor, 0.05)


def _unit_fit(u: _Unit) -> FitResult | None:
    return u.absolute if u.status.startswith("absolute") else u.relative


def _moved(e: _Exposure, transform: Affine) -> np.ndarray:
    return np.column_stack(transform(e.px, e.py))


def _verify_members(units: list[_Unit], refcat: Table | None, plane: Plane,
                    params: AlignParams, cache: dict) -> tuple[list[_Unit], set]:
    """Check every exposure of an aligned unit against the unit's solution.

    Each exposure's own sources, moved by its unit's transform, are matched to the reference
    catalogue at its epoch (units tied to the catalogue) or to the other exposures of the
    group that agree with their solutions (relative units, and exposures with too few
    catalogue stars of their own). An exposure that does not agree (too few matches, or a
    median offset beyond the tolerance, :meth:`_Check.agrees`) is fitted on its own: to the
    catalogue (``absolute-own``), else to the agreeing exposures (``relative-own``); when both
    fail it is left on its header WCS (``unaligned``, flagged). Such exposures leave their
    unit for a unit of their own.

    Returns
    -------
    units : list of _Unit
        The units, with the exposures that were split off as units of their own.
    relative_checked : set of str
        Exposures whose figures are matches to the other exposures, not to the catalogue.
    """
    aligned = [u for u in units if u.status != "unaligned" and u.exposures]
    members = [(u, e) for u in aligned for e in u.exposures]
    if not members:
        return units, set()
    placed: dict[str, tuple[_Exposure, Affine, bool]] = {}  # agreeing: (e, transform, tied)
    pending: list[tuple[_Unit, _Exposure, _Check | None]] = []
    for u, e in members:
        if refcat is not None and u.status.startswith("absolute"):
            ref, _ = _catalog_ref(e, refcat, plane, cache)
            check = _check(_moved(e, u.transform), ref, _fit_tolerance(u.absolute, params))
            if check.agrees(params):
                placed[e.name] = (e, u.transform, True)
                continue
            pending.append((u, e, check))
        else:
            pending.append((u, e, None))
    relative_checked: set = set()
    # relative units: each exposure against every other aligned exposure (majority rule)
    first = []
    for u, e, check in pending:
        if check is None:
            others = [(f, v.transform) for v, f in members if f is not e]
            rel = _relative_check(e, u.transform, others, _fit_tolerance(u.relative, params))
            if rel.agrees(params):
                placed[e.name] = (e, u.transform, False)
                relative_checked.add(e.name)
                continue
        first.append((u, e, check))
    if not placed and first:
        # nothing agrees with anything: the reference unit's richest exposure anchors
        u, e, _ = max(first, key=lambda t: (t[0].status == "reference", len(t[1].px)))
        placed[e.name] = (e, u.transform, u.status.startswith("absolute"))
        relative_checked.add(e.name)
        first = [t for t in first if t[1] is not e]
    out = list(units)
    for u, e, check in sorted(first, key=lambda t: -len(t[1].px)):
        if len(e.px) < max(1, params.member_min_matches):
            # nothing can check it (nor fit it): its visit's solution is the best estimate of
            # its WCS, applied but never reported as aligned (status inherited, flagged)
            reason = (f"too few sources of its own ({len(e.px)}) to check the solution of "
                      f"{u.key}: that solution is applied, unverified")
            _split(out, u, e, "inherited", None, reason)
            log.warning("%s: UNVERIFIED: %s", e.name, reason)
            continue
        why = f"its own sources disagree with the solution of {u.key} ("
        if check is not None:
            why += f"catalogue: {check.describe()}; "
        if refcat is not None and u.status.startswith("absolute"):
            ref, rsig = _catalog_ref(e, refcat, plane, cache)
            own = _match_and_fit([_Set(e.xy, e.sigma, ref, rsig)], params, start=u.transform)
            if own.ok:
                placed[e.name] = (e, own.transform, True)
                why = why.rstrip("; ") + "): fitted on its own to the catalogue"
                _split(out, u, e, "absolute-own", own, why)
                log.warning("%s: %s, %s fit, %d matches, RMS %.1f mas", e.name, why,
                            own.geometry, own.nmatches, own.rms)
                continue
        others = [(f, t) for f, t, _ in placed.values() if f is not e]
        tied = bool(others) and all(placed[f.name][2] for f, _ in others)
        rel = _relative_check(e, u.transform, others, _fit_tolerance(_unit_fit(u), params))
        if rel.agrees(params):
            placed[e.name] = (e, u.transform, tied)
            relative_checked.add(e.name)
            if check is not None:
                u.notes.append(f"{e.name}: too few catalogue matches of its own "
                               f"({check.describe()}); agrees with the group's other "
                               f"exposures ({rel.describe()})")
            continue
        why += f"other exposures: {rel.describe()})"
        own = FitResult(False, notes=["no agreeing exposure to fit to"])
        if others:
            ref, rsig = _merge([_moved(f, t) for f, t in others], [f.sigma for f, _ in others])
            own = _match_and_fit([_Set(e.xy, e.sigma, ref, rsig)], params, start=u.transform)
        if own.ok:
            placed[e.name] = (e, own.transform, tied)
            relative_checked.add(e.name)
            why += ": fitted on its own to the group's other exposures"
            new = _split(out, u, e, "relative-own", own, why)
            new.in_catalog = tied
            log.warning("%s: %s, %s fit, %d matches, RMS %.1f mas", e.name, why,
                        own.geometry, own.nmatches, own.rms)
            continue
        reason = (f"{why} and its own fit failed ({'; '.join(own.notes[-2:])}): "
                  "left on its header WCS")
        _split(out, u, e, "unaligned", None, reason)
        log.warning("%s: UNALIGNED: %s", e.name, reason)
    return [u for u in out if u.exposures], relative_checked


def _relative_check(e: _Exposure, transform: Affine, others, tol: float) -> _Check:
    """``e`` through ``transform`` against the ``(exposure, transform)`` pairs ``others``.

    Their positions are pooled, not merged: a star seen in several of them has several
    entries, of which mutual nearest-neighbour matching takes one (and pooling is linear in
    the number of exposures, where merging is not).
    """
    if not others:
        return _Check(0, float("nan"), float("nan"), float("nan"))
    ref = np.concatenate([_moved(f, t) for f, t in others])
    return _check(_moved(e, transform), ref, tol)


def _split(units: list[_Unit], u: _Unit, e: _Exposure, status: str, fit: FitResult | None,
           reason: str) -> _Unit:
    """Move ``e`` out of ``u`` into a unit of its own."""
    u.exposures.remove(e)
    new = _Unit(e.rootname, [e], relative=u.relative, absolute=u.absolute, status=status,
                notes=[reason])
    if status == "inherited":
        new.transform, new.geometry = u.transform, u.geometry
        new.in_catalog = u.status.startswith("absolute") or u.in_catalog
    elif status == "absolute-own":
        new.transform, new.absolute, new.geometry = fit.transform, fit, fit.geometry
    elif status == "relative-own":
        new.transform, new.relative, new.geometry = fit.transform, fit, fit.geometry
    units.append(new)
    return new


def _relative_figures(units: list[_Unit], names: set, params: AlignParams) -> dict:
    """Figures of ``names``: their matches to the group's other aligned exposures."""
    live = [(u, e) for u in units if u.status != "unaligned" for e in u.exposures]
    figures = {}
    for u, e in live:
        if e.name not in names:
            continue
        others = [(f, v.transform) for v, f in live if f is not e]
        if not others:
            figures[e.name] = (0, float("nan"), float("nan"))
            continue
        ref, _ = _merge([_moved(f, t) for f, t in others], [f.sigma for f, _ in others])
        xy = _moved(e, u.transform)
        i, j = match_nearest(xy, ref, _fit_tolerance(_unit_fit(u), params))
        d = (ref[j] - xy[i]) * 1000.0
        figures[e.name] = _clipped_rms(d[:, 0], d[:, 1]) if len(i) else (
            0, float("nan"), float("nan"))
    return figures


def _exposure_figures(units, refcat, plane, params, cache) -> dict:
    """Per exposure: matches to the reference after the solution and their RMS (mas)."""
    figures = {}
    for u in units:
        fit = u.absolute if u.status.startswith("absolute") else u.relative
        rms = fit.rms if (fit is not None and fit.ok) else 50.0
        tol = max(params.refine_sigma * rms / 1000.0, params.refine_floor, 0.05)
        if u.status.startswith("absolute"):
            sets = _refcat_sets(u, u.transform, refcat, plane, cache)
        elif u.status in ("relative", "reference"):
            others = [v for v in units if v is not u and v.status in ("relative", "reference")]
            ref_xy, ref_sig = _merge([xy for v in others for xy in v.transformed()],
                                     [e.sigma for v in others for e in v.exposures])
            sets = [_Set(xy, e.sigma, ref_xy, ref_sig)
                    for e, xy in zip(u.exposures, u.transformed(), strict=True)]
        else:
            for e in u.exposures:
                figures[e.name] = (0, float("nan"), float("nan"))
            continue
        for e, s in zip(u.exposures, sets, strict=True):
            i, j = match_nearest(s.img, s.ref, tol)
            d = (s.ref[j] - s.img[i]) * 1000.0
            figures[e.name] = _clipped_rms(d[:, 0], d[:, 1]) if len(i) else (
                0, float("nan"), float("nan"))
    return figures


def align_exposures(exposure_paths: Sequence, catalogs: Sequence, refcat=None,
                    params: AlignParams | dict | None = None, *,
                    gaia_url: str = GAIA_TAP_URL, group: str | None = None) -> list[dict]:
    """Align a group of exposures; return one solution dict per exposure (input order).

    Parameters
    ----------
    exposure_paths : sequence of path
        The exposures (never modified).
    catalogs : sequence of path or Table
        Their catalogues (:func:`mvmflow.catalogs.make_catalog`), in the same order.
    refcat : None, "none", "gaia", path or Table
        The reference catalogue (:func:`mvmflow.refcat.load_refcat`).
    params : AlignParams or dict, optional
    gaia_url : str
        The Gaia archive (only for ``refcat="gaia"``).
    group : str, optional
        The group's name, written into every solution; by default
        :func:`mvmflow.groups.group_name` of the exposures (the name the workflow gives it).

    Returns
    -------
    list of dict
        Solutions (the format of :mod:`mvmflow.solution`).
    """
    if not isinstance(params, AlignParams):
        params = AlignParams.from_dict(params)
    if len(exposure_paths) != len(catalogs):
        raise ValueError(f"{len(exposure_paths)} exposures but {len(catalogs)} catalogues")
    if not exposure_paths:
        return []
    exposures = [_load(p, c, params) for p, c in zip(exposure_paths, catalogs, strict=True)]
    if group is None:
        group = group_name([e.name for e in exposures])
    plane = Plane.around(*np.concatenate([_footprint_world(e) for e in exposures]).T)
    for e in exposures:
        _project(e, plane)
    label = catalog_label(refcat)
    group_notes = []
    table = None
    if label != "NONE":
        try:
            table = load_refcat(refcat, exposure_paths, gaia_url=gaia_url,
                                margin_arcsec=params.margin_arcsec)
            if table is not None:
                label = catalog_label(table)
        except (RuntimeError, OSError, ValueError) as exc:
            group_notes.append(f"reference catalogue unavailable ({exc}): relative only")
            log.warning("reference catalogue unavailable: %s", exc)
            table = None
    if table is not None and len(table) == 0:
        group_notes.append("reference catalogue is empty: relative only")
        table = None
    keyfunc = (lambda e: e.visit) if params.group_by == "visit" else (lambda e: e.rootname)
    if params.group_by not in ("visit", "exposure"):
        raise ValueError(f"group_by must be 'visit' or 'exposure', not {params.group_by!r}")
    units: dict[str, _Unit] = {}
    for e in exposures:
        units.setdefault(keyfunc(e), _Unit(keyfunc(e), []))
        units[keyfunc(e)].exposures.append(e)
    unit_list = list(units.values())
    _relative(unit_list, params)
    if table is not None:
        _absolute(unit_list, table, plane, params, group)
    cache: dict = {}
    unit_list, relative_checked = _verify_members(unit_list, table, plane, params, cache)
    figures = _exposure_figures(unit_list, table, plane, params, cache)
    figures.update(_relative_figures(unit_list, relative_checked, params))
    unit_of = {e.name: u for u in unit_list for e in u.exposures}
    solutions = []
    for e in exposures:
        u = unit_of[e.name]
        solutions.append(_solution(e, u, label != "NONE", label, plane, group,
                                   figures[e.name], group_notes))
    return solutions


def _solution(e: _Exposure, u: _Unit, absolute_requested: bool, label: str, plane: Plane,
              group: str, figures, group_notes) -> dict:
    applied = u.status != "unaligned"  # the WCS carries a solution
    aligned = applied and u.status != "inherited"  # ... that this exposure's sources confirm
    base = base_wcsname(e.wcsname)
    tied = u.status.startswith("absolute") or (u.status in ("relative-own", "inherited")
                                               and u.in_catalog)
    refcat = label if (tied and absolute_requested) else "NONE"
    suffix = {"absolute": f"FIT_MVM_{label}", "absolute-group": f"FIT_MVM_{label}",
              "absolute-own": f"FIT_IMG_{label}", "relative-own": f"FIT_REL_{refcat}",
              "relative": "FIT_REL_NONE", "reference": "FIT_REL_NONE",
              "inherited": f"VISIT_{refcat}"}.get(u.status)
    wcsname = (f"{base}-{suffix}" if base else suffix) if suffix else e.wcsname
    flagged = (not aligned) or (absolute_requested and refcat == "NONE")
    chips = []
    for extver, w in e.wcs.items():
        corrected = correct_wcs(w, u.transform, plane) if applied else w
        chips.append({
            "extver": int(extver),
            "crpix": [float(v) for v in w.wcs.crpix],
            "crval": [float(v) for v in corrected.wcs.crval],
            "cd": [[float(v) for v in row] for row in corrected.wcs.cd],
            "original_crval": [float(v) for v in w.wcs.crval],
            "original_cd": [[float(v) for v in row] for row in w.wcs.cd],
        })
    n, rms_x, rms_y = figures
    return {
        "format": SOLUTION_FORMAT,
        "version": SOLUTION_VERSION,
        "file": e.name,
        "rootname": e.rootname,
        "visit": e.visit,
        "group": group,
        "refcat": refcat,
        "refcat_requested": label,
        "status": u.status,
        "aligned": aligned,
        "flagged": flagged,
        "wcsname": wcsname,
        "original_wcsname": e.wcsname,
        "fitgeom": u.geometry if applied else "none",
        "nmatches": int(n),
        "rms_ra": rms_x,
        "rms_dec": rms_y,
        "transform": {**u.transform.as_dict(), "plane": {"ra": plane.ra, "dec": plane.dec}},
        "fits": {"relative": _fit_record(u.relative), "absolute": _fit_record(u.absolute)},
        "notes": list(group_notes) + list(u.notes),
        "epoch_mjd": e.epoch_mjd,
        "chips": chips,
    }


def align_group(exposure_paths: Sequence, catalog_paths: Sequence,
                solution_paths: Sequence, refcat="none", report_path=None,
                params: AlignParams | dict | None = None, *,
                gaia_url: str = GAIA_TAP_URL, group: str | None = None) -> list[dict]:
    """The ``align`` rule step: align a group and write one solution file per exposure.

    Parameters
    ----------
    exposure_paths, catalog_paths, solution_paths : sequence of path
        The group's exposures, their catalogues and the solution files to write (same
        order).
    refcat : str, path or None
        ``"none"``, ``"gaia"`` or a catalogue file (ECSV/CSV).
    report_path : path, optional
        Also write the group's alignment report (ECSV, or JSON for ``.json``).
    params : AlignParams or dict, optional
    gaia_url : str
        Gaia archive base URL.
    group : str, optional
        The group's name (default: :func:`mvmflow.groups.group_name` of the exposures).

    Returns
    -------
    list of dict
        The solutions written.
    """
    if len(solution_paths) != len(exposure_paths):
        raise ValueError(f"{len(exposure_paths)} exposures but {len(solution_paths)} "
                         "solution paths")
    solutions = align_exposures(exposure_paths, catalog_paths, refcat, params,
                                gaia_url=gaia_url, group=group)
    for solution, path in zip(solutions, solution_paths, strict=True):
        write_solution(solution, path)
    if report_path is not None:
        name = solutions[0]["group"] if solutions else (group or "")
        write_report(solutions, report_path, meta={"group": name})
    return solutions
