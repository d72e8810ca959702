"""Matching and fitting of source lists on a common tangent plane (used by :mod:`mvmflow.align`).

- :class:`Plane`: a gnomonic tangent plane in arcseconds (``x`` east, ``y`` north) about a
  point; the frame in which every alignment transform is defined. :meth:`Plane.corrector`
  gives the same plane as a ``tweakwcs`` WCS corrector, for :func:`correct_wcs`.
- :class:`Affine`: ``p -> M p + s`` on the plane (arcsec).
- :func:`estimate_offset`: the offset between two source lists from the peak of a 2-D
  histogram of all pair differences within a search radius (pooled over several list pairs,
  e.g. one per exposure, each against the reference at its own epoch).
- :func:`match_nearest`: one-to-one matching, mutual nearest neighbours within a tolerance.
- :func:`fit_pairs`: ``tweakwcs.linearfit.iter_linear_fit`` (sigma-clipped, weighted) with
  the geometry chosen by the number of matches (:data:`DEFAULT_MIN_MATCHES`) and, when a fit
  fails its quality criteria (:class:`FitCriteria`), the next simpler geometry
  (``general -> rscale -> rshift -> shift``); the notes record every step.
- :func:`correct_wcs`: a chip's WCS with a plane transform applied, through
  ``tweakwcs.correctors.FITSWCSCorrector``, which changes ``CRVAL`` and ``CD`` only and
  keeps SIP and the NPOL/D2IM lookup tables.

Why our own matcher: ``tweakwcs.XYXYMatch`` (``stsci.stimage.xyxymatch``) drops sources
closer than its ``separation`` within a list, matches one list pair at a time and estimates
the offset per pair; alignment here pools the histogram over a visit's exposures (each with
the reference propagated to its own epoch), which a simple KD-tree matcher does directly.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS, FITSFixedWarning
from scipy.spatial import cKDTree

__all__ = [
    "DEFAULT_MIN_MATCHES",
    "GEOMETRIES",
    "Affine",
    "FitCriteria",
    "FitResult",
    "Plane",
    "correct_wcs",
    "estimate_offset",
    "fit_pairs",
    "match_nearest",
]

log = logging.getLogger(__name__)

GEOMETRIES = ("general", "rscale", "rshift", "shift")
"""Fit geometries, most general first (the fallback order)."""

DEFAULT_MIN_MATCHES = {"general": 25, "rscale": 12, "rshift": 8, "shift": 6}
"""Minimum matched sources per geometry (the reference's MVM rule is ``rscale: 12,
general: 25``; ``rshift`` and ``shift`` are the fallbacks)."""


# --------------------------------------------------------------------------------------
# plane and transforms


class Plane:
    """A gnomonic tangent plane about ``(ra, dec)`` in arcseconds, ``x`` east, ``y`` north."""

    def __init__(self, ra: float, dec: float):
        self.ra = float(ra) % 360.0
        self.dec = float(dec)
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [self.ra, self.dec]
        wcs.wcs.crpix = [1.0, 1.0]
        wcs.wcs.cd = np.diag([1.0 / 3600.0, 1.0 / 3600.0])
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.set()
        wcs.pixel_shape = (2, 2)
        self.wcs = wcs

    def __repr__(self) -> str:
        return f"Plane({self.ra!r}, {self.dec!r})"

    @classmethod
    def around(cls, ra, dec) -> Plane:
        """The plane about the centre of the bounding box of the points (deg)."""
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        first = cls(float(ra.flat[0]), float(dec.flat[0]))
        x, y = first.to_plane(ra, dec)
        cra, cdec = first.to_world(0.5 * (x.min() + x.max()), 0.5 * (y.min() + y.max()))
        return cls(float(cra), float(cdec))

    def to_plane(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """Plane coordinates (arcsec) of sky positions (deg)."""
        x, y = self.wcs.wcs_world2pix(np.asarray(ra, np.float64), np.asarray(dec, np.float64), 0)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def to_world(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Sky positions (deg) of plane coordinates (arcsec)."""
        ra, dec = self.wcs.wcs_pix2world(np.asarray(x, np.float64), np.asarray(y, np.float64), 0)
        return np.mod(np.asarray(ra, dtype=np.float64), 360.0), np.asarray(dec, np.float64)

    def corrector(self):
        """The plane as a ``tweakwcs`` FITS WCS corrector (its tangent-plane units: arcsec)."""
        from tweakwcs.correctors import FITSWCSCorrector

        return FITSWCSCorrector(self.wcs.deepcopy())


@dataclass(frozen=True)
class Affine:
    """``p -> matrix @ p + shift`` on a plane (arcsec)."""

    matrix: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 0.0), (0.0, 1.0))
    shift: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_arrays(cls, matrix, shift) -> Affine:
        m = np.asarray(matrix, dtype=np.float64)
        s = np.asarray(shift, dtype=np.float64)
        return cls(((float(m[0, 0]), float(m[0, 1])), (float(m[1, 0]), float(m[1, 1]))),
                   (float(s[0]), float(s[1])))

    @property
    def m(self) -> np.ndarray:
        return np.array(self.matrix, dtype=np.float64)

    @property
    def s(self) -> np.ndarray:
        return np.array(self.shift, dtype=np.float64)

    @property
    def is_identity(self) -> bool:
        return self.matrix == ((1.0, 0.0), (0.0, 1.0)) and self.shift == (0.0, 0.0)

    def __call__(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.m, self.s
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return m[0, 0] * x + m[0, 1] * y + s[0], m[1, 0] * x + m[1, 1] * y + s[1]

    def then(self, other: Affine) -> Affine:
        """``other`` applied after ``self``."""
        m = other.m @ self.m
        s = other.m @ self.s + other.s
        return Affine.from_arrays(m, s)

    @property
    def rotation_deg(self) -> float:
        """Proper rotation angle (deg): the rotation part of the conformal component."""
        m = self.m
        return math.degrees(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1]))

    @property
    def scale(self) -> float:
        return math.sqrt(abs(float(np.linalg.det(self.m))))

    def as_dict(self) -> dict:
        return {"matrix": [list(r) for r in self.matrix], "shift": list(self.shift)}


IDENTITY = Affine()


# --------------------------------------------------------------------------------------
# matching


def estimate_offset(pairs, searchrad: float, binsize: float = 0.05) -> tuple[float, float, int]:
    """Offset ``d`` with ``ref ~ img + d`` from a 2-D histogram of pair differences.

    Parameters
    ----------
    pairs : iterable of (img_xy, ref_xy)
        ``(N, 2)`` and ``(M, 2)`` arrays (arcsec); the differences of every pair set within
        ``searchrad`` are pooled.
    searchrad : float
        Largest offset considered (arcsec).
    binsize : float
        Histogram bin (arcsec).

    Returns
    -------
    dx, dy : float
        The offset: the mean difference of the pairs within 1.5 bins of the histogram's peak
        (3x3-bin sums; ties go to the first bin in row-major order).
    npeak : int
        Pairs within 1.5 bins of the peak (about the number of true matches).
    """
    diffs = []
    for img_xy, ref_xy in pairs:
        img_xy = np.asarray(img_xy, dtype=np.float64).reshape(-1, 2)
        ref_xy = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2)
        if len(img_xy) == 0 or len(ref_xy) == 0:
            continue
        tree = cKDTree(ref_xy)
        hits = tree.query_ball_point(img_xy, searchrad * math.sqrt(2.0))
        for i, js in enumerate(hits):
            if js:
                diffs.append(ref_xy[np.sort(np.asarray(js))] - img_xy[i])
    if not diffs:
        return 0.0, 0.0, 0
    d = np.concatenate(diffs)
    d = d[(np.abs(d[:, 0]) <= searchrad) & (np.abs(d[:, 1]) <= searchrad)]
    if len(d) == 0:
        return 0.0, 0.0, 0
    nb = max(1, int(math.ceil(searchrad / binsize)))
    edges = np.linspace(-nb * binsize, nb * binsize, 2 * nb + 1)
    hist, _, _ = np.histogram2d(d[:, 0], d[:, 1], bins=[edges, edges])
    padded = np.pad(hist, 1)
    smooth = sum(padded[1 + i:1 + i + hist.shape[0], 1 + j:1 + j + hist.shape[1]]
                 for i in (-1, 0, 1) for j in (-1, 0, 1))
    ix, iy = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    cx = 0.5 * (edges[ix] + edges[ix + 1])
    cy = 0.5 * (edges[iy] + edges[iy + 1])
    for _ in range(3):
        near = (np.abs(d[:, 0] - cx) <= 1.5 * binsize) & (np.abs(d[:, 1] - cy) <= 1.5 * binsize)
        if not near.any():
            break
        cx, cy = (float(v) for v in np.median(d[near], axis=0))
    near = (np.abs(d[:, 0] - cx) <= 1.5 * binsize) & (np.abs(d[:, 1] - cy) <= 1.5 * binsize)
    return float(cx), float(cy), int(np.count_nonzero(near))


def match_nearest(img_xy, ref_xy, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours closer than ``tolerance`` (arcsec).

    Returns
    -------
    img_idx, ref_idx : numpy.ndarray of int
        Matched indices, in increasing ``img_idx``.
    """
    img_xy = np.asarray(img_xy, dtype=np.float64).reshape(-1, 2)
    ref_xy = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2)
    empty = np.zeros(0, dtype=int)
    if len(img_xy) == 0 or len(ref_xy) == 0:
        return empty, empty
    d_ir, j_ir = cKDTree(ref_xy).query(img_xy, distance_upper_bound=tolerance)
    _, j_ri = cKDTree(img_xy).query(ref_xy, distance_upper_bound=tolerance)
    ok = np.isfinite(d_ir)
    i = np.flatnonzero(ok)
    j = j_ir[ok]
    mutual = j_ri[j] == i
    return i[mutual].astype(int), j[mutual].astype(int)


# --------------------------------------------------------------------------------------
# fitting


@dataclass(frozen=True)
class FitCriteria:
    """What an accepted fit must satisfy.

    Attributes
    ----------
    min_matches : dict
        Minimum matches (after clipping) per geometry.
    max_rms_mas : float
        Largest accepted RMS of the residuals (both axes together, mas).
    max_rotation_deg : float
        Largest accepted rotation.
    max_scale_dev : float
        Largest accepted ``|scale - 1|`` (and, for ``general``, ``|sx / sy - 1|``).
    max_skew_deg : float
        Largest accepted skew (``general``).
    max_shift_arcsec : float
        Largest accepted shift at the plane's origin.
    """

    min_matches: dict = field(default_factory=lambda: dict(DEFAULT_MIN_MATCHES))
    max_rms_mas: float = 50.0
    max_rotation_deg: float = 0.5
    max_scale_dev: float = 2e-3
    max_skew_deg: float = 0.1
    max_shift_arcsec: float = 10.0

    def minimum(self, geometry: str) -> int:
        return int(self.min_matches.get(geometry, DEFAULT_MIN_MATCHES[geometry]))


@dataclass
class FitResult:
    """Outcome of :func:`fit_pairs`.

    ``transform`` maps image plane positions onto the reference; ``rms_x``/``rms_y`` are
    the RMS residuals along x (east, RA) and y (north, Dec) in mas over the ``nmatches``
    pairs kept by the clipping; ``notes`` tell why geometries were skipped or rejected.
    """

    ok: bool
    geometry: str = "none"
    transform: Affine = IDENTITY
    nmatches: int = 0
    rms_x: float = float("nan")
    rms_y: float = float("nan")
    notes: list = field(default_factory=list)
    fitmask: np.ndarray | None = None

    @property
    def rms(self) -> float:
        """Total RMS (both axes, mas)."""
        return math.hypot(self.rms_x, self.rms_y)


def _one_fit(img, ref, weights, geometry, nclip, sigma):
    from tweakwcs.linearfit import iter_linear_fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("tweakwcs").disabled = True
        try:
            fit = iter_linear_fit(ref, img, wxy=None, wuv=weights, fitgeom=geometry,
                                  nclip=nclip, sigma=(sigma, "rmse"))
        finally:
            logging.getLogger("tweakwcs").disabled = False
    m = np.asarray(fit["matrix"], dtype=np.float64)
    c = np.asarray(fit["center"], dtype=np.float64)
    s0 = np.asarray(fit["shift"], dtype=np.float64) + c - m @ c
    return fit, Affine.from_arrays(m, s0)


def _check(fit: dict, aff: Affine, n: int, rms: float, geometry: str,
           crit: FitCriteria) -> str | None:
    """The reason a fit is rejected, or None."""
    if n < crit.minimum(geometry):
        return f"{n} matches after clipping < {crit.minimum(geometry)}"
    if not np.isfinite(rms) or rms > crit.max_rms_mas:
        return f"RMS {rms:.1f} mas > {crit.max_rms_mas:g}"
    if not fit.get("proper", True):
        return "improper (mirrored) transform"
    if abs(aff.rotation_deg) > crit.max_rotation_deg:
        return f"rotation {aff.rotation_deg:.4f} deg beyond {crit.max_rotation_deg:g}"
    if abs(aff.scale - 1.0) > crit.max_scale_dev:
        return f"scale {aff.scale:.6f} beyond 1 +- {crit.max_scale_dev:g}"
    if geometry == "general":
        sx, sy = fit.get("scale", (1.0, 1.0))
        if abs(sx / sy - 1.0) > crit.max_scale_dev:
            return f"axis scales {sx:.6f}/{sy:.6f} differ by more than {crit.max_scale_dev:g}"
        if abs(fit.get("skew", 0.0)) > crit.max_skew_deg:
            return f"skew {fit.get('skew', 0.0):.4f} deg beyond {crit.max_skew_deg:g}"
    if float(np.hypot(*aff.s)) > crit.max_shift_arcsec:
        return f"shift {float(np.hypot(*aff.s)):.3f} arcsec beyond {crit.max_shift_arcsec:g}"
    return None


def fit_pairs(img_xy, ref_xy, weights=None, fitgeom: str = "general",
              criteria: FitCriteria | None = None, nclip: int = 3,
              sigma: float = 3.0) -> FitResult:
    """Fit ``ref ~ T(img)`` with the most general acceptable geometry.

    The first geometry tried is the most general one not beyond ``fitgeom`` whose minimum
    number of matches is met; when a fit fails :class:`FitCriteria` the next simpler geometry
    is tried (``general -> rscale -> rshift -> shift``). No geometry accepted: ``ok=False``.

    Parameters
    ----------
    img_xy, ref_xy : numpy.ndarray
        ``(N, 2)`` matched positions (arcsec on one plane).
    weights : numpy.ndarray, optional
        Per-pair weights (``1 / sigma**2``).
    fitgeom : str
        The most general geometry allowed.
    criteria : FitCriteria, optional
    nclip : int
        Sigma-clipping iterations.
    sigma : float
        Clipping threshold, in units of the fit RMS.
    """
    crit = criteria or FitCriteria()
    fitgeom = fitgeom.lower()
    if fitgeom not in GEOMETRIES:
        raise ValueError(f"fitgeom must be one of {GEOMETRIES}, not {fitgeom!r}")
    img = np.asarray(img_xy, dtype=np.float64).reshape(-1, 2)
    ref = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2)
    n = len(img)
    notes = []
    chain = list(GEOMETRIES[GEOMETRIES.index(fitgeom):])
    for geometry in chain:
        if n < crit.minimum(geometry):
            notes.append(f"{geometry}: {n} matches < {crit.minimum(geometry)}")
            continue
        try:
            fit, aff = _one_fit(img, ref, weights, geometry, nclip, sigma)
        except Exception as exc:  # noqa: BLE001 - singular matrices, too few points
            notes.append(f"{geometry}: fit failed ({exc})")
            continue
        mask = np.asarray(fit["fitmask"], dtype=bool)
        tx, ty = aff(img[mask, 0], img[mask, 1])
        rx = (ref[mask, 0] - tx) * 1000.0
        ry = (ref[mask, 1] - ty) * 1000.0
        nfit = int(mask.sum())
        rms_x = float(np.sqrt(np.mean(rx**2))) if nfit else float("nan")
        rms_y = float(np.sqrt(np.mean(ry**2))) if nfit else float("nan")
        reason = _check(fit, aff, nfit, math.hypot(rms_x, rms_y), geometry, crit)
        if reason is None:
            return FitResult(True, geometry, aff, nfit, rms_x, rms_y, notes, mask)
        notes.append(f"{geometry}: rejected, {reason}")
    return FitResult(False, "none", IDENTITY, 0, float("nan"), float("nan"), notes, None)


# --------------------------------------------------------------------------------------
# WCS correction


def correct_wcs(wcs: WCS, transform: Affine, plane: Plane) -> WCS:
    """A copy of a chip's WCS whose sky positions are moved by ``transform`` on ``plane``.

    ``tweakwcs.correctors.FITSWCSCorrector.set_correction`` updates ``CRVAL`` and ``CD`` (the
    linear part, linearised at ``CRPIX``); SIP and the lookup tables are kept, so the result
    is exact to second order in the correction (< 0.01 mas for arcsecond shifts and
    arcminute chips; tests/test_align.py checks it).
    """
    from tweakwcs.correctors import FITSWCSCorrector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        copy = wcs.deepcopy()
    if transform.is_identity:
        return copy
    corrector = FITSWCSCorrector(copy)
    corrector.set_correction(matrix=transform.m, shift=transform.s,
                             ref_tpwcs=plane.corrector())
    out = corrector.wcs
    out.pixel_shape = wcs.pixel_shape
    return out
