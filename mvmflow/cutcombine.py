"""Combining cutouts of neighbouring sky cells (hapcut's ``mvm_combine`` done right).

The reference (spec processing.md §5.4) stacks the cutouts of one position with astrocut's
``CutoutsCombiner``: SCI is the unweighted mean of the valid inputs, WHT is averaged rather
than summed, fine and coarse cutouts fall into one group, nothing is resampled and the rich
primary header is lost. Spec §8 item 9 asks for a weighted combine with summed weights, a
grouping that keeps the scales apart, slicing within a projection cell and resampling
across projection cells. This module does that, and also avoids the error a plain weighted
sum would make: neighbouring sky cells overlap by 512 fine pixels, and in that strip both
layers hold the *same* exposures, whose weight must be counted once, not twice.

Grouping
--------
Cutouts are grouped by their coordinate token and :attr:`mvmflow.names.CutoutName.group_key`
(instrument, detector, filter, scale, exposure-time class, year, ipppssoo), parsed from the
file name or, for a renamed file, from its ``FILENAME`` keyword. Fine and coarse never mix.
The coordinate token is part of the key (the reference and ``group_key`` alone would merge
cutouts of different positions under the first one's name). A group of one cutout is
reported and skipped; an unreadable or malformed file is reported and its group goes on
without it.

Output grid and placement
-------------------------
The output grid is the grid of the group's first cutout in sorted file-name order. An input
whose WCS differs from it by an integer pixel shift (same CTYPE, CRVAL and CD, CRPIX
difference integer within 1e-6) is placed by slicing, exactly. Any other input (coarse
cutouts of different sky cells, which are 1/3-pixel shifts of each other, or a cutout of
another projection cell) is resampled onto the output grid with ``drizzle`` (square kernel,
pixfrac 1, the input WHT as weight map, NaN and WHT <= 0 given weight 0; ``iscale`` the
ratio of the nominal pixel areas, 1 for one scale, as SCI is a surface brightness per
nominal pixel): its SCI becomes drizzle's WHT-weighted mean, its WHT drizzle's resampled
weight (which, by drizzle's convention, scales with the true pixel-area ratio of the two
planes: 0.2 % near a projection-cell edge). How each input was placed is recorded in
``PLACEnn`` and a ``HISTORY`` line.

``method='weighted'`` (default)
-------------------------------
``SCI = sum(w s) / sum(w)``, ``WHT = sum(w)`` over the inputs valid at the pixel (finite SCI,
WHT > 0), counting each exposure once. An input's *exposure set* at a pixel comes from its
``CTX`` bits mapped through its ``HDRTAB`` (``CTXBIT`` -> ``ROOTNAME``, or the ``FILENAME``
column without one, normalised to the ipppssoo, so the chips of one exposure and its FLT
and FLC share an entry). The sets are uint64
bitmasks over the group's union list of exposures, shape ``(nwords, ny, nx)``. The inputs are
accumulated in sorted order; at each pixel an input's set ``S`` is compared with the
accumulated set ``A``:

- ``S`` disjoint from ``A``: added (flux += w s, wht += w, A |= S);
- ``S`` equal to or a subset of ``A``: skipped (already counted);
- ``S`` a strict superset of ``A``: replaces the accumulation;
- partial overlap: whichever of the input and the accumulation has the larger WHT is
  kept; such pixels are counted in ``NPARTOVL``.

Fallbacks (recorded per input in ``EXPSETnn``): ``ctx`` is the rule above; a pixel with
WHT > 0 but an empty CTX takes all the exposures of the input's HDRTAB. ``hdrtab``: no usable
CTX (absent, not on the SCI grid, all zero where WHT > 0 as in the archive's products, or no
``CTXBIT`` column to map it) but an HDRTAB: every valid pixel holds all the exposures in the
HDRTAB. ``own``: neither: the input is its own unique exposure (weights add), with a warning
that overlapping inputs may be double-counted. A resampled input takes, at each output pixel,
the set of the input pixel nearest to the pixel centre.

Memory: cutouts are read whole. The weighted combine holds one placed input at a time besides
its running sums (flux and weight in float64, the bitmask of counted exposures); ``mean``
reads only SCI and WHT and stacks them, as astrocut does.

``method='mean'``
-----------------
The reference's astrocut ``CutoutsCombiner`` arithmetic: at each pixel, over the inputs whose
SCI is not NaN, ``SCI`` is their unweighted mean and ``WHT`` the mean (not the sum) of their
WHT. SCI is NaN and WHT 0 where no input is valid (astrocut gives the same on our cutouts,
whose WHT is 0 outside the source).

Output file
-----------
``hst_combined_skycells-<coords>_<instr>_<det>_<filter>[_<tag>][_<ipppssoo>].fits``
(:class:`mvmflow.names.CombinedName`, coordinates of the first cutout), written atomically:

- ``PRIMARY``: the first input's full primary header, except keywords whose value differs
  among the inputs (or that some lack): those are removed and written, for input ``i``
  (1-based) and varying keyword ``m`` (in first-seen order), as ``Fii_Kmm`` = keyword name,
  ``Fii_Vmm`` = value, ``Fii_Cmm`` = comment, as astrocut's ``_combine_headers``
  (``S_REGION``, ``CHECKSUM`` and ``DATASUM`` are dropped); then ``FILENAME`` (the combined
  name), ``NCOMBINE`` (inputs combined), ``COMBMETH``, ``NPARTOVL``, ``PLACEnn``,
  ``EXPSETnn`` (weighted) and one ``HISTORY`` line per input;
- ``SCI`` and ``WHT`` (float32) with the first cutout's SCI and WHT headers (the output WCS),
  without the stale ``S_REGION``, ``CHECKSUM``, ``DATASUM`` and ``NCOMBINE``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from mvmflow.names import CutoutName, ipppssoo_of
from mvmflow.workflow import atomic_path

__all__ = ["METHODS", "CombineReport", "combine_cutouts", "combine_group", "combine_headers",
           "run_combine"]

log = logging.getLogger(__name__)

METHODS = ("weighted", "mean")
"""Combine methods: WHT-weighted without double counting, or the reference's mean."""

#: Primary-header keywords astrocut's ``_combine_headers`` leaves out.
_SKIP = ("S_REGION", "CHECKSUM", "DATASUM")
#: Extension-header keywords that would be stale in the combined file.
_STALE_EXT = ("S_REGION", "CHECKSUM", "DATASUM", "NCOMBINE", "BSCALE", "BZERO", "BLANK")
_COMMENTARY = ("HISTORY", "COMMENT", "")
_SHIFT_TOL = 1e-6
_CTX_BITS = 32
_MISSING = object()


# ------------------------------------------------------------------------------------------
# reading


@dataclass
class _Cutout:
    """One input cutout, read whole (cutouts are small)."""

    path: Path
    name: CutoutName
    primary: fits.Header
    sci_header: fits.Header
    wht_header: fits.Header
    wcs: WCS
    sci: np.ndarray
    wht: np.ndarray
    ctx: np.ndarray | None = None  # (nplanes, ny, nx) uint32, or None
    bit_exposures: dict[int, set[str]] = field(default_factory=dict)  # CTXBIT -> exposures
    exposures: tuple[str, ...] = ()  # every exposure of the HDRTAB

    @property
    def valid(self) -> np.ndarray:
        """Pixels that count in the weighted combine: finite SCI and WHT > 0."""
        return np.isfinite(self.sci) & np.isfinite(self.wht) & (self.wht > 0)


def _cutout_name(path: str | os.PathLike) -> CutoutName:
    """The :class:`CutoutName` of ``path``: its file name, else its ``FILENAME`` keyword.

    Raises
    ------
    ValueError
        When neither is a cutout name.
    """
    path = Path(path)
    try:
        return CutoutName.parse(path.name)
    except ValueError as err:
        first = err
    with fits.open(path) as hdul:
        filename = hdul[0].header.get("FILENAME")
    if not filename:
        raise ValueError(f"{first}; and it has no FILENAME keyword")
    return CutoutName.parse(str(filename))


def _exposure_id(value) -> str:
    """An exposure's identity: the ipppssoo of a rootname or file name, else the text."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    text = text.strip()
    try:
        return ipppssoo_of(text)
    except ValueError:
        return text.lower()


def _read_hdrtab(table) -> tuple[dict[int, set[str]], tuple[str, ...]]:
    """(CTXBIT -> exposures, all exposures) of an HDRTAB's rows."""
    names = [n.upper() for n in table.columns.names]
    column = next((c for c in ("ROOTNAME", "FILENAME") if c in names), None)
    if column is None or len(table) == 0:
        return {}, ()
    ids = [_exposure_id(v) for v in table.field(names.index(column))]
    by_bit: dict[int, set[str]] = {}
    if "CTXBIT" in names:
        for bit, exp in zip(table.field(names.index("CTXBIT")), ids, strict=True):
            bit = _as_bit(bit)
            if exp and bit is not None:
                by_bit.setdefault(bit, set()).add(exp)
    return by_bit, tuple(sorted({e for e in ids if e}))


def _as_bit(value) -> int | None:
    """A CTXBIT cell as a context bit, or None when empty or not a non-negative integer."""
    try:
        bit = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        return None
    return int(bit) if math.isfinite(bit) and bit >= 0 and bit == int(bit) else None


def _read_ctx(hdul: fits.HDUList, shape: tuple[int, int]) -> np.ndarray | None:
    """The CTX planes ``(nplanes, ny, nx)`` as native uint32, or None if not on the grid."""
    if "CTX" not in hdul or hdul["CTX"].data is None:
        return None
    data = np.asarray(hdul["CTX"].data)
    if data.ndim not in (2, 3) or data.shape[-2:] != tuple(shape) or data.dtype.kind not in "iu":
        return None
    data = data.astype(np.int64).astype(np.uint32)  # native order, bit pattern kept
    return data[None] if data.ndim == 2 else data


def _read_cutout(path: str | os.PathLike, context: bool = True) -> _Cutout:
    """Read one cutout: name, headers, SCI, WHT and, with ``context``, CTX and HDRTAB.

    Raises
    ------
    ValueError, OSError, KeyError
        For a badly named, unreadable or malformed cutout.
    """
    path = Path(path)
    name = _cutout_name(path)
    with fits.open(path) as hdul:
        sci, wht = hdul["SCI"], hdul["WHT"]
        if sci.data is None or sci.data.ndim != 2 or wht.data is None or sci.shape != wht.shape:
            raise ValueError(f"{path.name}: SCI and WHT are not one 2-d grid")
        cut = _Cutout(
            path, name, hdul[0].header.copy(), sci.header.copy(), wht.header.copy(),
            WCS(sci.header), np.asarray(sci.data, dtype=np.float32),
            np.asarray(wht.data, dtype=np.float32),
            _read_ctx(hdul, sci.shape) if context else None,
        )
        if context and "HDRTAB" in hdul:
            cut.bit_exposures, cut.exposures = _read_hdrtab(hdul["HDRTAB"].data)
    return cut


# ------------------------------------------------------------------------------------------
# exposure sets


def _own_id(cut: _Cutout) -> str:
    return f"file:{cut.path.name}"


def _set_mode(cut: _Cutout, valid: np.ndarray) -> str:
    """How an input's exposure sets are known: ``ctx``, ``hdrtab`` or ``own``."""
    if not cut.exposures:
        return "own"
    if cut.ctx is None or not cut.bit_exposures:
        return "hdrtab"
    return "ctx" if np.any(_any(cut.ctx) & valid) else "hdrtab"


def _words(indices: Iterable[int], nwords: int) -> np.ndarray:
    """A ``(nwords,)`` uint64 bitmask with the given bits set."""
    out = np.zeros(nwords, dtype=np.uint64)
    for i in indices:
        out[i // 64] |= np.uint64(1) << np.uint64(i % 64)
    return out


def _exposure_sets(cut: _Cutout, index: dict[str, int], nwords: int) -> tuple[np.ndarray, str]:
    """Per-pixel exposure sets of ``cut`` on its own grid, and the mode used.

    Parameters
    ----------
    cut : _Cutout
        The input.
    index : dict
        Position of every exposure of the group in the union list.
    nwords : int
        uint64 words per pixel.

    Returns
    -------
    (sets, mode)
        ``sets`` is ``(nwords, ny, nx)`` uint64, empty where the input is not valid;
        ``mode`` is ``ctx``, ``hdrtab`` or ``own`` (see the module docstring).
    """
    valid = cut.valid
    mode = _set_mode(cut, valid)
    full = _words((index[e] for e in (cut.exposures or (_own_id(cut),))), nwords)
    sets = np.zeros((nwords, *cut.sci.shape), dtype=np.uint64)
    if mode == "ctx":
        unknown = 0
        for plane_no, plane in enumerate(cut.ctx):
            sets |= _plane_sets(plane, plane_no, cut.bit_exposures, index, nwords)
            unknown |= _unknown_bits(plane[valid], plane_no, cut.bit_exposures)
        if unknown:
            log.warning("%s: CTX bits %s are not in HDRTAB; ignored", cut.path.name,
                        sorted(k for k in range(unknown.bit_length()) if unknown >> k & 1))
        np.copyto(sets, np.uint64(0), where=~valid)
        np.copyto(sets, full[:, None, None], where=valid & ~_any(sets))
    else:
        np.copyto(sets, full[:, None, None], where=valid)
    return sets, mode


def _plane_sets(plane: np.ndarray, plane_no: int, bit_exposures: dict[int, set[str]],
                index: dict[str, int], nwords: int) -> np.ndarray:
    """Exposure sets of one uint32 context plane (inputs ``32 plane_no`` ... ``+ 31``).

    Each 16-bit half of the plane is translated through a lookup table of its
    ``2**m`` possible values (``m`` = highest bit present + 1): one gather per half.
    """
    sets = np.zeros((nwords, *plane.shape), dtype=np.uint64)
    seen = int(np.bitwise_or.reduce(plane, axis=None, initial=0))
    for half in (0, 1):
        bits = seen >> (16 * half) & 0xFFFF
        if not bits:
            continue
        first = plane_no * _CTX_BITS + 16 * half
        masks = [_words((index[e] for e in bit_exposures.get(first + b, ())), nwords)
                 for b in range(bits.bit_length())]
        table = np.zeros((nwords, 1), dtype=np.uint64)
        for mask in masks:  # values with bit b set: the table so far OR the bit's set
            table = np.concatenate([table, table | mask[:, None]], axis=1)
        values = (plane >> np.uint32(16 * half)) & np.uint32(0xFFFF)
        sets |= np.take(table, values.astype(np.intp), axis=1)
    return sets


def _unknown_bits(values: np.ndarray, plane_no: int, bit_exposures: dict[int, set[str]]) -> int:
    """Bits (as an int over all planes) set in ``values`` but absent from HDRTAB."""
    seen = int(np.bitwise_or.reduce(values, initial=0))
    known = sum(1 << b for b in range(_CTX_BITS) if plane_no * _CTX_BITS + b in bit_exposures)
    return (seen & ~known) << (plane_no * _CTX_BITS)


# ------------------------------------------------------------------------------------------
# placement onto the output grid


def _integer_shift(wcs_in: WCS, wcs_out: WCS, tol: float = _SHIFT_TOL) -> tuple[int, int] | None:
    """Output pixel of the input's pixel (0, 0) when the grids differ by an integer shift.

    Returns None unless both are plain celestial WCSs with the same CTYPE, CRVAL and CD
    (PC x CDELT) and a CRPIX difference within ``tol`` of integers.
    """
    a, b = wcs_in.wcs, wcs_out.wcs
    if wcs_in.has_distortion or wcs_out.has_distortion or list(a.ctype) != list(b.ctype):
        return None
    if not np.allclose(a.crval, b.crval, rtol=0, atol=1e-12):
        return None
    if not np.allclose(wcs_in.pixel_scale_matrix, wcs_out.pixel_scale_matrix, rtol=1e-12, atol=0):
        return None
    d = np.asarray(b.crpix, dtype=float) - np.asarray(a.crpix, dtype=float)
    r = np.round(d)
    if np.any(np.abs(d - r) > tol):
        return None
    return int(r[0]), int(r[1])


def _shift(arr: np.ndarray, dx: int, dy: int, shape: tuple[int, int], fill) -> np.ndarray:
    """``arr`` (last two axes y, x) placed with its pixel (0, 0) at (dx, dy) of ``shape``."""
    ny, nx = arr.shape[-2:]
    if (dx, dy) == (0, 0) and (ny, nx) == tuple(shape):
        return arr
    out = np.full((*arr.shape[:-2], *shape), fill, dtype=arr.dtype)
    xa, xb = max(dx, 0), min(dx + nx, shape[1])
    ya, yb = max(dy, 0), min(dy + ny, shape[0])
    if xa < xb and ya < yb:
        out[..., ya:yb, xa:xb] = arr[..., ya - dy:yb - dy, xa - dx:xb - dx]
    return out


def _iscale(wcs_in: WCS, wcs_out: WCS) -> float:
    """Nominal output/input pixel-area ratio (1 for frames of one scale).

    Layer SCI is a surface brightness in units of the frame's *nominal* pixel area (drizzle
    with ``iscale = (s_out / s_in)**2``, :mod:`mvmflow.resample`), so this is the factor
    that keeps it so; the small true-area changes across a TAN plane are not applied.
    """
    return float(proj_plane_pixel_area(wcs_out) / proj_plane_pixel_area(wcs_in))


def _resample(cut: _Cutout, wcs_out: WCS, shape: tuple[int, int],
              sets: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Drizzle ``cut`` onto ``wcs_out`` (square kernel, pixfrac 1, WHT as weight map).

    Returns
    -------
    (sci, wht, sets)
        The WHT-weighted SCI (NaN where no weight), the resampled WHT, and (when ``sets``
        is given) per output pixel the exposure set of the input pixel nearest to its
        centre (the input's whole set where that pixel is not valid but the output pixel
        has weight).
    """
    from drizzle.resample import Drizzle
    from drizzle.utils import calc_pixmap

    wcs_in = cut.wcs
    good = cut.valid
    data = np.where(good, cut.sci, 0).astype(np.float32)
    weight = np.where(good, cut.wht, 0).astype(np.float32)
    pixmap = calc_pixmap(wcs_in, wcs_out, shape=cut.sci.shape)
    driz = Drizzle(kernel="square", out_shape=shape, disable_ctx=True)
    driz.add_image(data, exptime=1.0, pixmap=pixmap, weight_map=weight, pixfrac=1.0,
                   in_units="cps", iscale=_iscale(wcs_in, wcs_out))
    sci = np.asarray(driz.out_img, dtype=np.float32)
    wht = np.asarray(driz.out_wht, dtype=np.float32)
    valid = np.isfinite(sci) & (wht > 0)
    sci[~valid] = np.nan
    wht[~valid] = 0
    if sets is None:
        return sci, wht, None

    back = calc_pixmap(wcs_out, wcs_in, shape=shape)
    with np.errstate(invalid="ignore"):
        ix = np.floor(back[..., 0] + 0.5)
        iy = np.floor(back[..., 1] + 0.5)
    ny_in, nx_in = cut.sci.shape
    inside = (ix >= 0) & (ix < nx_in) & (iy >= 0) & (iy < ny_in) & valid
    out_sets = np.zeros((sets.shape[0], *shape), dtype=np.uint64)
    out_sets[:, inside] = sets[:, iy[inside].astype(np.intp), ix[inside].astype(np.intp)]
    bare = valid & ~np.any(out_sets, axis=0)
    if bare.any():
        union = np.bitwise_or.reduce(sets.reshape(sets.shape[0], -1), axis=1)
        out_sets[:, bare] = union[:, None]
    return sci, wht, out_sets


@dataclass
class _Placed:
    """An input on the output grid."""

    sci: np.ndarray
    wht: np.ndarray
    sets: np.ndarray | None
    how: str


def _place(cut: _Cutout, wcs_out: WCS, shape: tuple[int, int],
           sets: np.ndarray | None = None) -> _Placed:
    """``cut`` (and its exposure sets, if given) on the output grid: by slicing or drizzle."""
    shift = _integer_shift(cut.wcs, wcs_out)
    if shift is None:
        return _Placed(*_resample(cut, wcs_out, shape, sets), "drizzle")
    dx, dy = shift
    return _Placed(_shift(cut.sci, dx, dy, shape, np.nan), _shift(cut.wht, dx, dy, shape, 0),
                   None if sets is None else _shift(sets, dx, dy, shape, 0),
                   f"slice {dx:+d} {dy:+d}")


# ------------------------------------------------------------------------------------------
# the two combine rules


class _WeightedSum:
    """The running weighted combine: flux, weight and counted exposures per pixel.

    Inputs are added one at a time (:meth:`add`), so only one placed input is held at once.
    """

    def __init__(self, shape: tuple[int, int], nwords: int):
        self.flux = np.zeros(shape)
        self.wht = np.zeros(shape)
        self.counted = np.zeros((nwords, *shape), dtype=np.uint64)
        self.partial = np.zeros(shape, dtype=bool)
        self.empty = True

    def add(self, p: _Placed) -> None:
        """Add one placed input by the disjoint/subset/superset/partial rule."""
        valid = np.isfinite(p.sci) & (p.wht > 0) & (p.wht < np.inf)
        w = np.where(valid, p.wht, np.float32(0)).astype(np.float64)
        ws = w * np.where(valid, p.sci, np.float32(0))
        if self.empty:  # the first input: everything it has is added
            self.flux, self.wht, self.empty = ws, w, False
            np.copyto(self.counted, p.sets, where=valid)
            return
        acc = self.counted
        both = p.sets & acc
        meet = _any(both)
        extra = _any(p.sets ^ both)  # S not within A
        lacks = _any(acc ^ both)  # A not within S
        add = valid & ~meet
        clash = valid & meet & extra & lacks
        take = (valid & meet & extra & ~lacks) | (clash & (w > self.wht))
        self.partial |= clash
        # masked ufuncs and copies: boolean fancy indexing is several times slower
        np.add(self.flux, ws, out=self.flux, where=add)
        np.add(self.wht, w, out=self.wht, where=add)
        np.bitwise_or(acc, p.sets, out=acc, where=add)
        np.copyto(self.flux, ws, where=take)
        np.copyto(self.wht, w, where=take)
        np.copyto(acc, p.sets, where=take)

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        """float32 ``(sci, wht)`` (SCI NaN and WHT 0 where nothing is valid) and the number
        of pixels where exposure sets partly overlapped."""
        covered = self.wht > 0
        sci = np.full(self.wht.shape, np.nan, dtype=np.float32)
        sci[covered] = self.flux[covered] / self.wht[covered]
        return sci, self.wht.astype(np.float32), int(self.partial.sum())


def _any(words: np.ndarray) -> np.ndarray:
    """Per pixel, whether any bit of the ``(nwords, ny, nx)`` bitmask (or CTX) is set."""
    return words[0] != 0 if words.shape[0] == 1 else np.any(words, axis=0)


def _combine_mean(placed: Sequence[_Placed]) -> tuple[np.ndarray, np.ndarray]:
    """astrocut's ``CutoutsCombiner`` arithmetic: means over the inputs with SCI not NaN.

    The same float64 operations in the same order as astrocut's
    ``sum(templates * images, axis=0)`` (so the same bits), accumulated input by input
    instead of on stacked copies. Returns float32 ``(sci, wht)``: SCI NaN and WHT 0 where no
    input has data.
    """
    count = np.zeros(placed[0].sci.shape)
    for p in placed:
        count += ~np.isnan(p.sci)
    mult = np.divide(1.0, count, out=np.zeros_like(count), where=count != 0)
    sci, wht = np.zeros_like(count), np.zeros_like(count)
    for p in placed:
        template = ~np.isnan(p.sci) * mult
        sci += template * np.nan_to_num(p.sci, nan=0.0, posinf=np.inf, neginf=-np.inf)
        wht += template * np.nan_to_num(p.wht, nan=0.0, posinf=np.inf, neginf=-np.inf)
    sci[count == 0] = np.nan
    return sci.astype(np.float32), wht.astype(np.float32)


# ------------------------------------------------------------------------------------------
# headers


def combine_headers(headers: Sequence[fits.Header]) -> fits.Header:
    """Keywords common to all ``headers``, plus ``Fii_Kmm/Vmm/Cmm`` for those that vary.

    As astrocut's ``_combine_headers``: a keyword with one value in every header keeps the
    first header's card; for the ``m``-th varying keyword (first-seen order) and each header
    ``i`` (1-based) that has it, ``Fii_Kmm`` = name, ``Fii_Vmm`` = value and ``Fii_Cmm`` =
    comment, after the common cards. ``S_REGION``, ``CHECKSUM`` and ``DATASUM`` are left out.
    Unlike astrocut, a keyword some headers lack counts as varying (astrocut raises
    KeyError) and keywords only later headers have are included; commentary cards
    (``HISTORY``, ``COMMENT``) come from the first header.
    """
    if len(headers) == 1:
        return headers[0].copy()
    keys: list[str] = []
    for hdr in headers:
        keys += [k for k in hdr.keys() if k not in keys and k not in _SKIP]
    common, varying, nvary = [], [], 0
    for key in keys:
        if key in _COMMENTARY:
            common += [c for c in headers[0].cards if c.keyword == key]
            continue
        values = [hdr.get(key, _MISSING) for hdr in headers]
        if _MISSING not in values and all(_same(v, values[0]) for v in values[1:]):
            common.append(headers[0].cards[key])
            continue
        nvary += 1
        for i, hdr in enumerate(headers, start=1):
            if key in hdr:
                varying += [(f"F{i:02}_K{nvary:02}", key, "Keyword"),
                            (f"F{i:02}_V{nvary:02}", hdr[key], "Value"),
                            (f"F{i:02}_C{nvary:02}", hdr.comments[key], "Comment")]
    out = fits.Header(common)
    for key, value, comment in varying:
        out.append(_card(key, value, comment), end=True)
    return out


def _card(key: str, value, comment: str) -> fits.Card:
    """A card, without its comment when the comment would not fit (no truncation warning)."""
    bare = fits.Card(key, value).image
    if len(bare) > 80 or len(bare.rstrip()) + 3 + len(comment) <= 80:
        return fits.Card(key, value, comment)  # a long string's CONTINUE cards hold it
    return fits.Card(key, value)


def _same(a, b) -> bool:
    """FITS-value equality: ``T`` is not ``1``; incomparable values differ."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _ext_header(header: fits.Header) -> fits.Header:
    hdr = header.copy()
    for key in _STALE_EXT:
        hdr.remove(key, ignore_missing=True, remove_all=True)
    return hdr


def _primary_header(cuts: Sequence[_Cutout], method: str, hows: Sequence[str],
                    modes: Sequence[str], npartial: int) -> fits.Header:
    """The combined primary header: the inputs' common cards, provenance, method, placement."""
    first = cuts[0]
    hdr = combine_headers([c.primary for c in cuts])
    for key in ("RA_OBJ", "DEC_OBJ"):
        if key not in hdr and key in first.primary:
            hdr[key] = (first.primary[key], first.primary.comments[key])
    if "NEXTEND" in hdr:
        hdr["NEXTEND"] = 2
    card = _card("FILENAME", first.name.combined().filename, "name of this file")
    hdr.set(card.keyword, card.value, card.comment)
    hdr["NCOMBINE"] = (len(cuts), "number of cutouts combined")
    hdr["COMBMETH"] = (method, "combine method: weighted or mean")
    hdr["NPARTOVL"] = (npartial, "pixels where exposure sets partly overlapped")
    for i, (cut, how) in enumerate(zip(cuts, hows, strict=True), start=1):
        hdr[f"PLACE{i:02}"] = (how, f"placement of input {i} on the output grid")
        line = f"input {i}: {cut.path.name} placed by {how}"
        if modes:
            hdr[f"EXPSET{i:02}"] = (modes[i - 1], f"exposure sets of input {i}: ctx|hdrtab|own")
            line += f", exposures from {modes[i - 1]}"
        hdr.add_history(line)
    return hdr


# ------------------------------------------------------------------------------------------
# one group


def _sort_key(cut: _Cutout) -> tuple[str, str]:
    return cut.name.filename, str(cut.path)


def _group_key(name: CutoutName) -> tuple:
    return (name.coords, *name.group_key)


def _exposure_index(cuts: Sequence[_Cutout]) -> dict[str, int]:
    """Position of every exposure of the group (HDRTAB rootnames, or own ids) in the union."""
    union = sorted({e for c in cuts for e in (c.exposures or (_own_id(c),))})
    return {e: i for i, e in enumerate(union)}


def _combine_loaded(cuts: Sequence[_Cutout], method: str = "weighted") -> fits.HDUList:
    """Combine cutouts already read (:func:`_read_cutout`) of one group; see the module doc."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if not cuts:
        raise ValueError("no cutouts to combine")
    cuts = sorted(cuts, key=_sort_key)
    keys = {_group_key(c.name) for c in cuts}
    if len(keys) > 1:
        raise ValueError(f"cutouts of different groups: {sorted(map(str, keys))}")
    wcs_out, shape = cuts[0].wcs, cuts[0].sci.shape
    hows, modes, placed = [], [], []
    if method == "weighted":
        index = _exposure_index(cuts)
        nwords = max(1, math.ceil(len(index) / 64))
        total = _WeightedSum(shape, nwords)
        for cut in cuts:
            sets, mode = _exposure_sets(cut, index, nwords)
            if mode == "own":
                log.warning("%s has neither CTX nor HDRTAB: treated as its own exposure, so "
                            "overlapping inputs may be double-counted", cut.path.name)
            p = _place(cut, wcs_out, shape, sets)
            total.add(p)
            hows.append(p.how)
            modes.append(mode)
        sci, wht, npartial = total.result()
    else:
        placed = [_place(cut, wcs_out, shape) for cut in cuts]
        hows = [p.how for p in placed]
        (sci, wht), npartial = _combine_mean(placed), 0
    return fits.HDUList([
        fits.PrimaryHDU(header=_primary_header(cuts, method, hows, modes, npartial)),
        fits.ImageHDU(sci, header=_ext_header(cuts[0].sci_header), name="SCI"),
        fits.ImageHDU(wht, header=_ext_header(cuts[0].wht_header), name="WHT"),
    ])


def combine_group(paths: Sequence[str | os.PathLike], method: str = "weighted") -> fits.HDUList:
    """Combine the cutouts ``paths`` of one group (same position, instrument, detector,
    filter, scale, ...) into an HDUList: PRIMARY, SCI, WHT.

    Parameters
    ----------
    paths : sequence of path
        Cutouts written by :func:`mvmflow.cutouts.cut_product` (or the reference's).
    method : {'weighted', 'mean'}
        See the module docstring.

    Raises
    ------
    ValueError, OSError, KeyError
        For an unreadable or malformed cutout, or cutouts of different groups.
    """
    return _combine_loaded([_read_cutout(p, method == "weighted") for p in paths], method)


# ------------------------------------------------------------------------------------------
# many groups


@dataclass
class CombineReport:
    """What :func:`run_combine` did.

    Attributes
    ----------
    written : list of Path
        Combined files.
    skipped : list of (str, str)
        ``(combined name, reason)`` of groups with fewer than two (readable) cutouts.
    failed : list of (str, str)
        ``(file or combined name, reason)`` of unreadable files and failed groups.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _fail(report: CombineReport, item: str, what: str, exc: Exception) -> None:
    log.warning("cannot %s %s: %s", what, item, _reason(exc))
    report.failed.append((item, _reason(exc)))


def _group_paths(paths: Iterable[str | os.PathLike],
                 report: CombineReport) -> list[list[tuple[CutoutName, Path]]]:
    """Distinct paths grouped by name (no data read), each group and the groups sorted.

    A path whose name is no cutout name (nor its FILENAME keyword) goes to ``report.failed``.
    """
    groups: dict[tuple, list[tuple[CutoutName, Path]]] = {}
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            name = _cutout_name(path)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            _fail(report, str(path), "read cutout", exc)
            continue
        groups.setdefault(_group_key(name), []).append((name, path))
    members = [sorted(g, key=lambda m: (m[0].filename, str(m[1]))) for g in groups.values()]
    return sorted(members, key=lambda g: (g[0][0].filename, str(g[0][1])))


def _combine_one(members: list[tuple[CutoutName, Path]], out_dir: Path, method: str,
                 report: CombineReport) -> None:
    """Read, combine and write one group, recording the outcome in ``report``."""
    label = members[0][0].combined().filename
    cuts = []
    for _, path in members:
        try:
            cuts.append(_read_cutout(path, context=method == "weighted"))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            _fail(report, str(path), "read cutout", exc)
    if len(cuts) < 2:
        what = f"{cuts[0].path.name}" if cuts else "none readable"
        reason = f"only one cutout ({what})" if len(members) == 1 else \
            f"fewer than two readable cutouts ({what})"
        log.warning("not combining %s: %s", label, reason)
        report.skipped.append((label, reason))
        return
    try:
        hdul = _combine_loaded(cuts, method)
        target = out_dir / label
        with atomic_path(target) as tmp:
            hdul.writeto(tmp, overwrite=True)
    except Exception as exc:  # noqa: BLE001 - one bad group must not stop the rest
        _fail(report, label, "combine", exc)
        return
    report.written.append(target)


def run_combine(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike = ".",
                method: str = "weighted") -> CombineReport:
    """Group ``paths``, combine each group of two or more and write it into ``out_dir``.

    Groups are formed from the names alone, then read and combined one at a time, so only
    one group's cutouts are in memory at once.

    Returns
    -------
    CombineReport
        Written files, skipped groups (fewer than two cutouts) and failures (unreadable
        files, failed groups), each with its reason.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    report = CombineReport()
    for members in _group_paths(paths, report):
        _combine_one(members, Path(out_dir), method, report)
    return report


def combine_cutouts(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike = ".",
                    method: str = "weighted") -> tuple[list[Path], list[tuple[str, str]]]:
    """Combine cutouts of one position from neighbouring sky cells, group by group.

    Parameters
    ----------
    paths : iterable of path
        Cutouts (``hst_cutout_skycell-…fits``); any mix of positions, filters and scales.
    out_dir : path
        Where the ``hst_combined_skycells-…fits`` files go.
    method : {'weighted', 'mean'}
        ``weighted`` (default): WHT-weighted mean with summed WHT, each exposure counted
        once; ``mean``: the reference's unweighted mean. See the module docstring.

    Returns
    -------
    (written, skipped)
        The combined files, and ``(group or file, reason)`` for every group of one cutout,
        unreadable file and failed group (:func:`run_combine` keeps these apart).
    """
    report = run_combine(paths, out_dir, method)
    return report.written, report.skipped + report.failed
