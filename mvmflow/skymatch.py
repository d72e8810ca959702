"""Relative sky offsets that equalise the overlaps of a layer's exposures ("match").

This is the reference's sky step (AstroDrizzle ``skymethod='match'``, stsci.skypac
skymatch; spec processing.md 1.7 and 2.1), done on the MAP outputs instead of the input
chips: each exposure's partial, normalised (``flux / weight``), is its image on the layer's
pixel grid, so two exposures overlap where both partials have weight > 0 and finite data.

For every overlapping pair (i, j) the clipped statistic (median by default) of each image
over their common good pixels gives ``m_i`` and ``m_j``; the offsets ``s`` minimise

    sum over pairs of  W_ij**2 * (s_i - s_j - (m_i - m_j))**2

with ``W_ij`` the mean number of pixels the two clipped statistics kept (skypac scales each
equation by that weight; pass ``weighted=False`` for unit weights). The clipping follows
stsci.imagestats as skypac uses it: values below ``lower`` (and above ``upper``) are
ignored, then ``nclip`` times the range is reset to mean -/+ ``lsigma``/``usigma`` standard
deviations; the statistic is taken over the final range.

Fixing the solution (documented choice)
---------------------------------------
Offsets are relative: adding a constant to every offset of a connected overlap group
changes nothing in the fit. skypac takes the minimum-norm solution of all images together
and then subtracts the minimum over all of them ("match down"), so the darkest image gets 0
and groups that do not overlap each other get arbitrary relative levels. Here each
**connected overlap group is solved and fixed on its own: its lowest offset is 0** (every
other offset of the group is >= 0). An exposure that overlaps no other gets 0. So no
exposure is ever made darker than the darkest member of its group, and groups that do not
touch are not levelled against each other (spec 8.6: no absolute sky is removed).

The offsets are in the partials' data units (count rate); :func:`mvmflow.combine.combine_partials`
subtracts them (``flux - s * weight``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mvmflow.combine import input_name, overlap_slices
from mvmflow.grid import Frame
from mvmflow.groups import connected_components

__all__ = ["PairStat", "SkyMatch", "clipped_stat", "match_sky", "sky_match"]

STATS = ("median", "mean", "mode")


def clipped_stat(
    values: np.ndarray,
    stat: str = "median",
    *,
    lower: float | None = -100.0,
    upper: float | None = None,
    nclip: int = 5,
    lsigma: float = 4.0,
    usigma: float = 4.0,
    binwidth: float = 0.1,
) -> tuple[float, int]:
    """Sigma-clipped statistic of ``values`` (the reference's ``skystat`` settings).

    Parameters
    ----------
    values : ndarray
        Finite values (1-D or any shape).
    stat : {'median', 'mean', 'mode'}
        ``mode`` is the peak of a histogram with bins ``binwidth`` standard deviations wide,
        refined by the neighbouring bins (as stsci.imagestats).
    lower, upper : float or None
        Values outside ``[lower, upper]`` are never used (None: no limit).
    nclip : int
        Clipping iterations.
    lsigma, usigma : float
        Clipping limits in standard deviations below and above the mean.
    binwidth : float
        Histogram bin width for ``mode``, in standard deviations.

    Returns
    -------
    (value, npix) : (float, int)
        The statistic and the number of values it used; ``(nan, 0)`` if none is left.
    """
    if stat not in STATS:
        raise ValueError(f"sky statistic must be one of {STATS}, got {stat!r}")
    if nclip < 0 or lsigma <= 0 or usigma <= 0:
        raise ValueError("nclip must be >= 0 and lsigma, usigma > 0")
    v = np.asarray(values, dtype=np.float64).ravel()
    lo = -np.inf if lower is None else float(lower)
    hi = np.inf if upper is None else float(upper)
    lo_lim, hi_lim = lo, hi
    sel = v[(v >= lo_lim) & (v <= hi_lim)]
    for _ in range(nclip):
        if sel.size == 0:
            break
        mean, std = float(sel.mean()), float(sel.std())
        lo_lim, hi_lim = max(lo, mean - lsigma * std), min(hi, mean + usigma * std)
        sel = v[(v >= lo_lim) & (v <= hi_lim)]
    if sel.size == 0:
        return float("nan"), 0
    if stat == "median":
        return float(np.median(sel)), int(sel.size)
    if stat == "mean":
        return float(sel.mean()), int(sel.size)
    return _histogram_mode(sel, binwidth), int(sel.size)


def _histogram_mode(v: np.ndarray, binwidth: float) -> float:
    vmin, vmax = float(v.min()), float(v.max())
    width = binwidth * float(v.std())
    tiny = 10.0 * float(np.finfo(np.float32).eps)
    if width < tiny or vmax - vmin < tiny or width > vmax - vmin:
        return vmin + 0.5 * width
    nbins = int((vmax - vmin) / width) + 1
    idx = np.minimum(((v - vmin) / width).astype(np.int64), nbins - 1)
    bins = np.bincount(idx, minlength=nbins)
    peak = int(np.argmax(bins))
    if peak == 0 or peak == nbins - 1:
        return vmin + (peak + 0.5) * width
    dh1 = int(bins[peak] - bins[peak - 1])
    dh2 = int(bins[peak] - bins[peak + 1])
    if dh1 + dh2 == 0:
        return vmin + (peak + 0.5) * width
    return vmin + (peak + 0.5 + 0.5 * (dh1 - dh2) / (dh1 + dh2)) * width


@dataclass(frozen=True)
class PairStat:
    """The statistics of one overlapping pair (i < j, layer order)."""

    i: int
    j: int
    npix: int  # common good pixels
    m_i: float
    m_j: float
    n_i: int  # pixels kept by the clipped statistic of image i
    n_j: int

    @property
    def weight(self) -> float:
        """skypac's equation weight: the mean number of pixels kept."""
        return 0.5 * (self.n_i + self.n_j)


@dataclass
class SkyMatch:
    """Result of :func:`sky_match`.

    Attributes
    ----------
    files : tuple of str
        Input files, layer order.
    offsets : dict of str to float
        Sky offset per file (insertion order = layer order).
    groups : list of list of int
        Connected overlap groups (indices into ``files``), each sorted, ordered by first
        member; every exposure is in exactly one group.
    pairs : list of PairStat
        The overlaps used.
    """

    files: tuple[str, ...]
    offsets: dict[str, float]
    groups: list[list[int]]
    pairs: list[PairStat] = field(default_factory=list)
    stat: str = "median"

    def lines(self) -> list[str]:
        """Human-readable report for the trailer."""
        out = [
            f"sky matching ('match', {self.stat}): {len(self.files)} exposure(s), "
            f"{len(self.pairs)} overlap(s), {len(self.groups)} group(s); "
            "the lowest offset of each group is 0"
        ]
        for p in self.pairs:
            out.append(
                f"  overlap {self.files[p.i]} x {self.files[p.j]}: {p.npix} px, "
                f"{self.stat} {p.m_i:.6g} / {p.m_j:.6g} (kept {p.n_i} / {p.n_j})"
            )
        for g, members in enumerate(self.groups):
            for k in members:
                out.append(f"  group {g + 1}: {self.files[k]} sky offset {self.offsets[self.files[k]]:.6g}")
        return out


def _normalised(partial, ps) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(partial, "read"):  # read on demand (mvmflow.skygroup.LazyMergedPartial)
        f, w = (np.asarray(a, dtype=np.float64) for a in partial.read(ps))
    else:
        w = np.asarray(partial.weight[ps], dtype=np.float64)
        f = np.asarray(partial.flux[ps], dtype=np.float64)
    good = w > 0
    d = np.zeros_like(f)
    np.divide(f, w, out=d, where=good)
    good &= np.isfinite(d)
    return d, good


def _pair(pa, pb, sa, sb, stat, min_overlap, max_pixels, kwargs):
    """Statistics over the common good pixels of two placed partials, or None."""
    (fa, pa_sl), (fb, pb_sl) = sa, sb
    y_lo, y_hi = max(fa[0].start, fb[0].start), min(fa[0].stop, fb[0].stop)
    x_lo, x_hi = max(fa[1].start, fb[1].start), min(fa[1].stop, fb[1].stop)
    if y_lo >= y_hi or x_lo >= x_hi:
        return None
    # a regular sub-grid of large overlaps (deterministic): pixel counts are scaled back
    area = (y_hi - y_lo) * (x_hi - x_lo)
    step = max(1, math.ceil(math.sqrt(area / max_pixels))) if max_pixels else 1

    def sub(f_sl, p_sl):
        dy, dx = p_sl[0].start - f_sl[0].start, p_sl[1].start - f_sl[1].start
        return (slice(y_lo + dy, y_hi + dy, step), slice(x_lo + dx, x_hi + dx, step))

    da, ga = _normalised(pa, sub(fa, pa_sl))
    db, gb = _normalised(pb, sub(fb, pb_sl))
    good = ga & gb
    nsample = int(np.count_nonzero(good))
    if step == 1 and nsample < max(1, min_overlap):
        return None
    if nsample == 0:
        return None
    m_a, n_a = clipped_stat(da[good], stat, **kwargs)
    m_b, n_b = clipped_stat(db[good], stat, **kwargs)
    if n_a == 0 or n_b == 0:
        return None
    scale = step * step
    npix = nsample * scale
    if npix < max(1, min_overlap):
        return None
    return npix, m_a, m_b, n_a * scale, n_b * scale


def _groups(n: int, pairs: list[PairStat]) -> list[list[int]]:
    return connected_components(n, [(p.i, p.j) for p in pairs])


def _solve(members: list[int], pairs: list[PairStat], weighted: bool) -> dict[int, float]:
    if len(members) == 1:
        return {members[0]: 0.0}
    col = {k: c for c, k in enumerate(members)}
    rows = [p for p in pairs if p.i in col]
    a = np.zeros((len(rows), len(members)))
    b = np.zeros(len(rows))
    for r, p in enumerate(rows):
        w = p.weight if weighted else 1.0
        a[r, col[p.i]] = w
        a[r, col[p.j]] = -w
        b[r] = w * (p.m_i - p.m_j)
    # minimum-norm least squares (SVD), then the group's lowest offset is set to 0
    s = np.linalg.lstsq(a, b, rcond=None)[0]
    s = s - s.min()
    return {k: float(s[col[k]]) for k in members}


def sky_match(
    partials: Sequence,
    frame: Frame,
    stat: str = "median",
    *,
    lower: float | None = -100.0,
    upper: float | None = None,
    nclip: int = 5,
    lsigma: float = 4.0,
    usigma: float = 4.0,
    binwidth: float = 0.1,
    min_overlap: int = 1,
    max_pixels: int | None = 1_000_000,
    weighted: bool = True,
) -> SkyMatch:
    """Solve for relative sky offsets of a layer's exposures from their overlaps.

    Parameters
    ----------
    partials : sequence of Partial
        The layer's partials (see :mod:`mvmflow.combine`), layer order. Held in memory
        together; each is small (one exposure's footprint).
    frame : Frame
        The layer frame; only the parts of partials inside it are compared.
    stat : {'median', 'mean', 'mode'}
        The reference's ``skystat``.
    lower, upper, nclip, lsigma, usigma, binwidth
        Clipping as :func:`clipped_stat`; the defaults are the reference's MVM settings
        (``skylower=-100``, ``skyclip=5``, ``skylsigma=skyusigma=4``, ``skywidth=0.1``).
    min_overlap : int
        Fewest common good pixels for a pair to count as overlapping.
    max_pixels : int or None
        Larger overlaps are sampled on a regular sub-grid (every ``k``-th pixel along each
        axis, ``k = ceil(sqrt(area / max_pixels))``) to bound the cost; pixel counts are
        scaled back by ``k**2``. None uses every pixel (as the reference).
    weighted : bool
        Scale each pair's equation by the mean kept pixel count (skypac) or not.

    Returns
    -------
    SkyMatch
    """
    if stat not in STATS:
        raise ValueError(f"sky statistic must be one of {STATS}, got {stat!r}")
    kwargs = dict(lower=lower, upper=upper, nclip=nclip, lsigma=lsigma, usigma=usigma,
                  binwidth=binwidth)
    partials = list(partials)
    files = tuple(input_name(p) for p in partials)
    if len(set(files)) != len(files):
        raise ValueError("an input file appears twice in the layer's partials")
    placed = [overlap_slices(p, frame) for p in partials]
    pairs: list[PairStat] = []
    for i in range(len(partials)):
        if placed[i] is None:
            continue
        for j in range(i + 1, len(partials)):
            if placed[j] is None:
                continue
            res = _pair(partials[i], partials[j], placed[i], placed[j], stat, min_overlap,
                        max_pixels, kwargs)
            if res is not None:
                pairs.append(PairStat(i, j, *res))
    groups = _groups(len(files), pairs)
    solution: dict[int, float] = {}
    for members in groups:
        solution.update(_solve(members, pairs, weighted))
    offsets = {files[k]: solution[k] for k in range(len(files))}
    return SkyMatch(files=files, offsets=offsets, groups=groups, pairs=pairs, stat=stat)


def match_sky(partials: Sequence, frame: Frame, stat: str = "median", **kwargs) -> dict[str, float]:
    """Relative sky offset per input file; see :func:`sky_match` for the parameters.

    Returns
    -------
    dict of str to float
        ``{file: offset}`` in layer order; the lowest offset of each connected overlap
        group is 0, and an exposure overlapping no other gets 0.
    """
    return sky_match(partials, frame, stat, **kwargs).offsets
