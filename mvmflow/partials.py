"""The *partial* file: one exposure drizzled onto one frame, written and read here only.

A partial (:class:`Partial`, made by :func:`mvmflow.resample.drizzle_exposure`) holds one
exposure's two drizzle sums over its bounding box in a frame: ``flux = sum(w d)`` (float32),
``weight = sum(w)`` (float32) and ``nchips`` (uint8, chips with weight in the pixel); see
:mod:`mvmflow.resample` for what they mean and docs/design.md ("Drizzle as map and reduce")
for why the drizzle is split into these maps. This module is the one owner of the file
(docs/conventions.md, "One owner per file type"): :func:`write_partial` writes it and
:class:`PartialFile` reads it, whole (:meth:`PartialFile.read`), on another frame
(:meth:`PartialFile.window`), by rows (:meth:`PartialFile.rows`) or by any strided region
(:meth:`PartialFile.read_arrays`), always reading only the rows asked for.

**What is stored.** A chip rotated on the sky covers about half of its bounding box in the
frame (a full-frame ACS/WFC exposure at 40 degrees: 25.6 of 51.3 Mpx), so only the
*covered* pixels are stored: per box row, one span from the first to the last pixel whose
flux, weight or nchips is non-zero (compared bit for bit, so -0.0 and NaN are kept too and a
round trip is exact); the pixels outside the spans are 0. The values of the spans, row after
row, make one 1-D stream per array.

**Byte planes.** Each stream is stored as its big-endian byte planes (plane 0 holds the most
significant byte of every value: sign and exponent). The high planes of drizzled data are
nearly constant and compress to a few percent with zlib at level 1, fast; the low planes are
noise (zlib gains 1-10 % on them, 23 % on WEIGHT's third plane, at 0.5-0.6 s per plane of a
full frame). So the planes in
:data:`ZLIB_PLANES` (flux: 0; weight: 0 and 1; nchips: 0) are zlib-compressed in chunks of
:data:`CHUNK_VALUES` values (a chunk that would not shrink is stored raw), and every other
plane is stored raw as one contiguous stream, read with plain ``pread`` at the value offset.

**Layout** (FITS, ``PARTVER = 2``):

- PRIMARY (no data): ``MVMTYPE='PARTIAL'``, ``PARTVER``, ``FILENAME``, ``IPPPSSOO``,
  ``EXPTIME``, the frame (:meth:`mvmflow.grid.Frame.header_cards`), the box ``BOXX0 BOXY0
  BOXNX BOXNY`` in the frame, ``ABSOLUTE`` and ``PLANEX0 PLANEY0`` (the box origin on the
  projection-cell plane, when the frame sits at an integer offset on it), the drizzle
  settings (``KERNEL PIXFRAC FINLBITS RESETBIT STATMASK STATSIG WHTTYPE OUTUNITS PIXSTEP``),
  per chip ``C<i>EXTV C<i>DRIZ C<i>UNIT C<i>SKY C<i>ISCL C<i>NGOD C<i>NSTA`` (and
  ``C<i>SCUT``, the static mask's cut as ``float.hex`` text, when one was computed),
  ``NCHIPIN``,
  ``NVALUES`` (values per stream), ``CHUNKLEN`` (values per compressed chunk), ``PARAMS``
  (JSON), ``MVMVER``, ``DRIZVER``;
- SPANS: int64 image ``(BOXNY, 3)``: per box row the first covered column (box
  coordinates), the number of covered columns and the offset of the row's first value in the
  streams (the running sum of the counts);
- CHUNKS: int64 image ``(n, 6)``, one row per stored piece: array (0 flux, 1 weight,
  2 nchips), byte plane, chunk (-1: a whole raw plane), byte offset in the array's HDU data,
  bytes, codec (0 raw, 1 zlib);
- FLUX, WEIGHT, NCHIPS: uint8 1-D images, the pieces of each array's stream.

**Patches** (:class:`PartialPatch`, written by the same :func:`write_partial`): a partial
that differs from another partial file (its *base*) in a few stored pixels, such as an
exposure's final drizzle without its cosmic rays against its separate drizzle
(:mod:`mvmflow.crsubtract`), is stored as those pixels alone: PRIMARY (the partial's own
header, as above, plus ``PATCHOF``, the base's path relative to the patch's directory, and
``BASESIZE`` and ``BASECRC``, the base's seal), then INDEX (int64: the changed values'
positions in the streams, increasing) and PFLUX, PWEIGHT, PNCHIPS (their new values).
:meth:`PartialFile.open` of a patch opens and checks its base too, refuses a base that is
not the one the patch was made against, and every read returns the base's pixels with the
patch applied: to a reader a patch is the partial it stands for. The base must outlive its
patches (the workflow lists it as an input of every job that reads them). A full-frame
exposure's final partial is 6.7-6.9 MB instead of 134 MB, written in 0.02 s instead of
0.75 s (docs/speed.md, "The cosmic-ray path (stop 28)").

No date is written, so two writes of one partial are the same bytes (zlib's output
depends only on its input, level and library version). The primary header's ``MVMSIZE`` and
``MVMCRC`` record the file's size and CRC-32 (:mod:`mvmflow.integrity`, which depend on the
content only): :meth:`PartialFile.open` checks them once per process and file, so a partial
damaged after it was written is refused (and removed, to be made again), never summed.

**Measured** (``.venv/bin/python benchmarks/partials.py``: one simulated full-frame ACS/WFC
F814W exposure, 2 x 2048 x 4096 = 16.8 Mpx, position angle 40 degrees, drizzled onto sky
cell p0081x14y14 at 0.04" in 6.5 s; its box is 6883 x 7453 px, 49.9 % covered; 2 busy cores,
local disk; wall times, best of 3-5):

======================  ========  ================  =========  ==============  ===========
layout                  MB        bytes / input px  write s    read s (warm)   read s (disk)
======================  ========  ================  =========  ==============  ===========
1: three box images     440       27.5              0.2        0.2-0.4         0.78
spans, raw planes       223       13.9              0.45       0.2             -
spans, zlib high planes 126       7.9               0.45-0.7   0.3             0.32
======================  ========  ================  =========  ==============  ===========

The spans halve the file for 0.1 s more CPU to write and none to read; compressing the high
byte planes removes another 43 % for 0.1 s more CPU to write and 0.05 s more to read, and a
read from the disk is 2.4 times faster than layout 1's. Compressing WEIGHT's third plane too
would save 6 MB more (5 %) for 0.6 s; astropy's tile compression (``GZIP_1``,
``quantize_level=0``) took 12 s for 30 % on 36 Mpx: neither is kept. A 1024 x 1024 window
reads in 0.05-0.06 s, a 256-row strip of FLUX and WEIGHT (the median's read) in 0.015-0.02
s.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
import zlib
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from mvmflow.grid import Frame
from mvmflow.integrity import (
    FITS_BLOCK,
    SIZE_KEY,
    SUM_KEY,
    DamagedFile,
    seal,
    seal_cards,
    verify,
)
from mvmflow.workflow import atomic_path

__all__ = [
    "ARRAYS",
    "CHUNK_VALUES",
    "PARTIAL_VERSION",
    "ZLIB_PLANES",
    "Box",
    "Partial",
    "PartialFile",
    "PartialPatch",
    "bytes_per_input_pixel",
    "empty_partial",
    "write_partial",
]

PARTIAL_VERSION = 2
"""Layout version of partial files (primary keyword ``PARTVER``)."""

ARRAYS = ("flux", "weight", "nchips")
"""The arrays of a partial, in file order."""

_DTYPES = {"flux": np.dtype(np.float32), "weight": np.dtype(np.float32),
           "nchips": np.dtype(np.uint8)}
_EXTNAMES = {"flux": "FLUX", "weight": "WEIGHT", "nchips": "NCHIPS"}
_UNITS = {"flux": "ELECTRONS/S*WEIGHT", "weight": "WEIGHT", "nchips": "CHIPS"}

ZLIB_PLANES = {"flux": (0,), "weight": (0, 1), "nchips": (0,)}
"""Byte planes (0 = most significant) stored zlib-compressed; the others are stored raw.
Chosen by measurement (module notes): only these planes compress well and fast."""

CHUNK_VALUES = 1 << 17
"""Values per compressed chunk (a windowed read decompresses the chunks it touches)."""

_ZLIB_LEVEL = 1
_BLOCK_VALUES = 1 << 20  # values fetched per read block (bounds a read's buffers)
# How a block of rows of a window is read: whole (one read per raw plane, the values between
# the rows' parts included), or each row's part on its own (about 30 us of calls per row
# and array). Whole when the values read for nothing are few: at most _DENSE_FACTOR - 1
# times the needed ones (a narrow window reads only its columns) and at most _ROW_VALUES
# per row of the block (about what a row's own reads cost in time, from the page cache):
# the full-frame layer's tiles, which need a third to a half of each row, are read by
# blocks, the sky step's sub-grids (every 7th row and column) row by row (docs/speed.md,
# "Layer jobs").
_DENSE_FACTOR = 8
_ROW_VALUES = 8192


def _read_whole(extra: int, needed: int, rows: int) -> bool:
    """Whether a block of ``rows`` rows needing ``needed`` stream values is read whole
    (``extra`` more values) rather than row by row."""
    return extra <= 65536 + min((_DENSE_FACTOR - 1) * needed, _ROW_VALUES * rows)


_PLANE_TOL = 1e-6
_LITTLE = sys.byteorder == "little"
_HDUS = ("PRIMARY", "SPANS", "CHUNKS", "FLUX", "WEIGHT", "NCHIPS")
_PATCH_HDUS = ("PRIMARY", "INDEX", "PFLUX", "PWEIGHT", "PNCHIPS")
_PATCH_EXTNAMES = {"flux": "PFLUX", "weight": "PWEIGHT", "nchips": "PNCHIPS"}


# --------------------------------------------------------------------------------------
# In memory


def _plane_offset(frame: Frame) -> tuple[int, int] | None:
    """The frame's integer pixel offset on its projection-cell plane, or None."""
    x0, y0 = frame.x0, frame.y0
    ix, iy = round(x0), round(y0)
    if abs(x0 - ix) > _PLANE_TOL or abs(y0 - iy) > _PLANE_TOL:
        return None
    return int(ix), int(iy)


@dataclass(frozen=True)
class Box:
    """Integer box ``[x0, x0 + nx) x [y0, y0 + ny)`` in a frame's pixels."""

    x0: int
    y0: int
    nx: int
    ny: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """numpy slices ``(rows, columns)`` of the box in its frame's arrays."""
        return slice(self.y0, self.y0 + self.ny), slice(self.x0, self.x0 + self.nx)

    def union(self, other: Box) -> Box:
        """The smallest box holding both."""
        x0, y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        x1 = max(self.x0 + self.nx, other.x0 + other.nx)
        y1 = max(self.y0 + self.ny, other.y0 + other.ny)
        return Box(x0, y0, x1 - x0, y1 - y0)


@dataclass(eq=False)
class Partial:
    """One exposure drizzled onto one frame: weighted-flux and weight sums over its box.

    Attributes
    ----------
    flux : numpy.ndarray
        float32 ``(ny, nx)``: ``sum(w * d)`` with ``d`` in e-/s (per output pixel, see
        :mod:`mvmflow.resample`), 0 where the weight is 0.
    weight : numpy.ndarray
        float32 ``(ny, nx)``: ``sum(w)``, drizzle's WHT for this exposure.
    nchips : numpy.ndarray
        uint8 ``(ny, nx)``: how many of this exposure's chips have weight > 0 in the pixel.
    frame : Frame
        The frame drizzled onto.
    box_x0, box_y0 : int
        Origin of the box in ``frame`` pixels.
    filename, ipppssoo : str
        The exposure.
    exptime : float
        Seconds.
    params : dict
        The drizzle parameters used.
    chips : list of dict
        Per chip: ``extver``, ``drizzled`` (reaches the frame), ``in_units``, ``sky``,
        ``iscale``, ``ngood`` (input pixels with weight > 0), ``nstatic`` (pixels removed by
        the static mask) and, when a static mask was computed, ``static_cut``
        (:func:`mvmflow.masks.static_cut`, reused by the cosmic-ray subtraction).
    """

    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray
    frame: Frame
    box_x0: int
    box_y0: int
    filename: str
    ipppssoo: str
    exptime: float
    params: dict = field(default_factory=dict)
    chips: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the box."""
        return tuple(self.flux.shape)

    @property
    def empty(self) -> bool:
        """True when no chip reaches the frame."""
        return self.flux.size == 0

    @property
    def absolute(self) -> bool:
        """True when the frame sits at an integer offset on its projection-cell plane, so
        :attr:`x0`, :attr:`y0` are plane offsets (every fine frame)."""
        return _plane_offset(self.frame) is not None

    @property
    def x0(self) -> int:
        """Box origin along x: on the projection-cell plane at the frame's scale when
        :attr:`absolute`, else in the frame (:attr:`box_x0`)."""
        plane = _plane_offset(self.frame)
        return self.box_x0 + (plane[0] if plane else 0)

    @property
    def y0(self) -> int:
        """As :attr:`x0`, along y."""
        plane = _plane_offset(self.frame)
        return self.box_y0 + (plane[1] if plane else 0)

    @property
    def window(self) -> Frame:
        """The box as a :class:`Frame` (a window of :attr:`frame`)."""
        ny, nx = self.shape
        return self.frame.window(self.box_x0, self.box_y0, max(nx, 1), max(ny, 1))

    def sci(self) -> np.ndarray:
        """The exposure's drizzled image ``flux / weight`` (float32, NaN where weight = 0)."""
        out = np.full(self.shape, np.nan, dtype=np.float32)
        good = self.weight > 0
        out[good] = (self.flux[good].astype(np.float64) / self.weight[good]).astype(np.float32)
        return out


def empty_partial(frame: Frame, filename: str, ipppssoo: str, exptime: float,
                  params: dict | None = None, chips: list | None = None) -> Partial:
    """An exposure that reaches nothing of ``frame``: a 0 x 0 :class:`Partial` (it keeps its
    context bit in a reduce)."""
    empty = np.zeros((0, 0), dtype=np.float32)
    return Partial(empty, empty.copy(), np.zeros((0, 0), np.uint8), frame, 0, 0, filename,
                   ipppssoo, float(exptime), dict(params or {}), list(chips or []))


@dataclass(eq=False)
class PartialPatch:
    """A partial given as a partial file (its base) with some stored pixels replaced
    (module notes, "Patches"); :func:`write_partial` writes it.

    Attributes
    ----------
    base : PartialFile
        The base (same frame, box and stored pixels).
    rows, cols : numpy.ndarray
        Box coordinates of the pixels replaced (each within the base's stored spans).
    flux, weight, nchips : numpy.ndarray
        Their new values (float32, float32, uint8).
    chips : list of dict
        The partial's per-chip records (as :attr:`Partial.chips`).
    params : dict
        The partial's drizzle parameters.
    """

    base: PartialFile
    rows: np.ndarray
    cols: np.ndarray
    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray
    chips: list = field(default_factory=list)
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Writing


def _versions() -> tuple[str, str]:
    """mvmflow's and the drizzle package's versions (drizzle's from its metadata: this
    module does not import the resampling code)."""
    from importlib.metadata import PackageNotFoundError, version

    import mvmflow

    try:
        driz = version("drizzle")
    except PackageNotFoundError:
        driz = "unknown"
    return mvmflow.__version__, driz


def _settings_cards(params: dict) -> list[tuple]:
    """The drizzle settings as cards, with the defaults :mod:`mvmflow.resample` applies
    (informative: the parameters themselves are recorded as ``PARAMS``)."""
    from mvmflow.masks import parse_bits

    return [
        ("KERNEL", str(params.get("kernel", "square")).lower(), "drizzle kernel"),
        ("PIXFRAC", float(params.get("pixfrac", 1.0)), "drizzle pixfrac"),
        ("FINLBITS", str(params.get("final_bits", 0)), "DQ flags counted as good"),
        ("RESETBIT", int(parse_bits(params.get("resetbits", 0)) or 0),
         "DQ flags cleared before masking"),
        ("STATMASK", bool(params.get("static_mask", False)), "static mask applied"),
        ("STATSIG", float(params.get("static_sig", 4.0)), "static mask sigma"),
        ("WHTTYPE", "EXP", "input weight: EXPTIME x good-pixel mask"),
        ("OUTUNITS", "cps", "flux/weight is a count rate (e-/s)"),
        ("PIXSTEP", int(params.get("stepsize", 10)), "pixel-map grid step (chip pixels)"),
    ]


def _primary_header(p: Partial, nvalues: int) -> fits.Header:
    mvm_version, driz_version = _versions()
    ny, nx = p.shape
    cards = [
        ("MVMTYPE", "PARTIAL", "one exposure drizzled onto one frame"),
        ("PARTVER", PARTIAL_VERSION, "partial file layout version"),
        ("FILENAME", p.filename, "exposure file"),
        ("IPPPSSOO", p.ipppssoo, "exposure ipppssoo"),
        ("EXPTIME", float(p.exptime), "[s] exposure time (EXP weight)"),
        *p.frame.header_cards(),
        ("BOXX0", int(p.box_x0), "box origin in the frame, x (0-based)"),
        ("BOXY0", int(p.box_y0), "box origin in the frame, y (0-based)"),
        ("BOXNX", nx, "box size along x"),
        ("BOXNY", ny, "box size along y"),
        ("ABSOLUTE", p.absolute, "frame is at an integer offset on its plane"),
    ]
    if p.absolute:
        cards += [("PLANEX0", p.x0, "box origin on the projection-cell plane, x"),
                  ("PLANEY0", p.y0, "box origin on the projection-cell plane, y")]
    cards += _settings_cards(p.params)
    cards += [
        ("NCHIPIN", len(p.chips), "chips in the exposure"),
        ("NVALUES", int(nvalues), "values stored per array (the row spans)"),
        ("CHUNKLEN", CHUNK_VALUES, "values per compressed chunk"),
        ("MVMVER", mvm_version, "mvmflow version"),
        ("DRIZVER", driz_version, "drizzle package version"),
    ]
    for i, c in enumerate(p.chips, start=1):
        cards += [
            (f"C{i}EXTV", c["extver"], f"chip {i}: SCI EXTVER"),
            (f"C{i}DRIZ", bool(c.get("drizzled", False)), f"chip {i}: reaches the frame"),
            (f"C{i}UNIT", c["in_units"], f"chip {i}: drizzle in_units"),
            (f"C{i}SKY", c["sky"], f"chip {i}: sky subtracted (BUNIT)"),
            (f"C{i}ISCL", c["iscale"], f"chip {i}: (scale / nominal scale)**2"),
            (f"C{i}NGOD", c["ngood"], f"chip {i}: input pixels with weight > 0"),
            (f"C{i}NSTA", c["nstatic"], f"chip {i}: pixels removed by the static mask"),
        ]
        if c.get("static_cut") is not None:  # exact: float.hex (a float card is rounded)
            cards.append((f"C{i}SCUT", float(c["static_cut"]).hex(),
                          f"chip {i}: static mask cut (float.hex)"))
    header = fits.Header(cards)
    header["PARAMS"] = json.dumps(p.params, sort_keys=True, default=str)
    return header


def _checked_arrays(p: Partial) -> list[np.ndarray]:
    """flux, weight (float32) and nchips (uint8), native order, of one 2-D shape."""
    arrays = [np.asarray(getattr(p, name), dtype=_DTYPES[name]) for name in ARRAYS]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(f"partial of {p.filename}: flux, weight and nchips must be 2-D "
                         f"arrays of one shape, got {[a.shape for a in arrays]}")
    return arrays


def _spans(arrays: Sequence[np.ndarray], rows_per_block: int = 512) -> np.ndarray:
    """``(ny, 3)`` int64: first covered column, covered columns, offset of each row.

    Covered: any array non-zero, bit for bit (so -0.0 and NaN count as non-zero).
    """
    ny, nx = arrays[0].shape
    spans = np.zeros((ny, 3), dtype=np.int64)
    if nx == 0:
        return spans
    for r0 in range(0, ny, rows_per_block):
        r1 = min(r0 + rows_per_block, ny)
        covered = np.zeros((r1 - r0, nx), dtype=bool)
        for a in arrays:
            block = a[r0:r1]
            bits = block.view(np.uint32) if block.dtype.itemsize == 4 else block
            covered |= bits != 0
        has = covered.any(axis=1)
        first = np.argmax(covered, axis=1)
        last = nx - np.argmax(covered[:, ::-1], axis=1)
        spans[r0:r1, 0] = np.where(has, first, 0)
        spans[r0:r1, 1] = np.where(has, last - first, 0)
    spans[1:, 2] = np.cumsum(spans[:-1, 1])
    return spans


def _stream(a: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """The values of the spans, row after row, as big-endian bytes ``(n, itemsize)``."""
    n = int(spans[:, 1].sum())
    out = np.empty(n, dtype=a.dtype.newbyteorder(">"))
    for r in np.flatnonzero(spans[:, 1]):
        x0, nx, off = (int(v) for v in spans[r])
        out[off:off + nx] = a[r, x0:x0 + nx]
    return out.view(np.uint8).reshape(n, a.dtype.itemsize)


def _encode(aid: int, name: str, planes: np.ndarray) -> tuple[list, list[tuple]]:
    """One array's HDU data, as pieces in file order, and its CHUNKS rows (module notes).

    A piece is ``bytes`` (a compressed chunk, or one stored raw) or an ``int``: a raw byte
    plane, taken from ``planes`` only when it is written (no copy of every plane at once).
    """
    n, itemsize = planes.shape
    pieces, rows, offset = [], [], 0
    for p in range(itemsize):
        if p in ZLIB_PLANES[name]:
            plane = np.ascontiguousarray(planes[:, p])
            for c, c0 in enumerate(range(0, n, CHUNK_VALUES)):
                raw = plane[c0:c0 + CHUNK_VALUES]
                packed = zlib.compress(raw, _ZLIB_LEVEL)
                piece, codec = (packed, 1) if len(packed) < raw.size else (raw.tobytes(), 0)
                rows.append((aid, p, c, offset, len(piece), codec))
                pieces.append(piece)
                offset += len(piece)
            del plane
        else:
            rows.append((aid, p, -1, offset, n, 0))
            pieces.append(p)
            offset += n
    return pieces, rows


def write_partial(partial: Partial | PartialPatch, path: str | os.PathLike) -> Path:
    """Write a partial file (layout in the module notes), atomically.

    A :class:`PartialPatch` is written as a patch of its base (module notes, "Patches").

    Only the row spans of covered pixels are stored; reading the file back gives the same
    arrays bit for bit. Two writes of one partial give the same bytes.

    The HDUs are written one after the other as each array is encoded (the CHUNKS table,
    which precedes the data, is filled in last), so only one array's encoded bytes are
    held at a time; the bytes are those of astropy's ``HDUList.writeto`` of the same HDUs
    (tests/test_partials.py).

    Parameters
    ----------
    partial : Partial
        float32 flux and weight, uint8 nchips, one shape (possibly ``(0, 0)``).
    path : str or os.PathLike
        The file (written through a temporary file beside it, docs/conventions.md).

    Returns
    -------
    Path
    """
    path = Path(path)
    if isinstance(partial, PartialPatch):
        return _write_patch(partial, path)
    arrays = _checked_arrays(partial)
    spans = _spans(arrays)
    nvalues = int(spans[:, 1].sum())
    primary = _primary_header(partial, nvalues)
    primary.extend(seal_cards())  # size and checksum, filled in by seal (mvmflow.integrity)
    nrows = sum(_piece_count(name, nvalues) for name in ARRAYS)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            head = fits.PrimaryHDU(header=primary).header
            head.set("EXTEND", True, after="NAXIS")  # as HDUList.writeto adds it
            _write_hdu(f, head, None)
            _write_hdu(f, _image_header("SPANS", spans if spans.size else None),
                       spans if spans.size else None)
            table_header = _image_header("CHUNKS", np.zeros((nrows, 6), np.int64)
                                         if nrows else None)
            table_at = _write_hdu(f, table_header, np.zeros(nrows * 6, ">i8"))
            chunk_rows = []
            for aid, (name, a) in enumerate(zip(ARRAYS, arrays, strict=True)):
                planes = _stream(a, spans)
                pieces, rows = _encode(aid, name, planes)
                chunk_rows += rows
                size = sum(len(p) if isinstance(p, bytes) else len(planes) for p in pieces)
                header = _image_header(_EXTNAMES[name],
                                       np.zeros(1, np.uint8) if size else None, size)
                header["DTYPE"] = (_DTYPES[name].name, "value type (stored big-endian)")
                header["VALUNIT"] = (_UNITS[name], "unit of the values")
                header["ZPLANES"] = (",".join(map(str, ZLIB_PLANES[name])),
                                     "byte planes compressed (zlib chunks)")
                f.write(header.tostring().encode("ascii"))
                for piece in pieces:
                    f.write(piece if isinstance(piece, bytes)
                            else np.ascontiguousarray(planes[:, piece]).data)
                if -size % FITS_BLOCK:
                    f.write(bytes(-size % FITS_BLOCK))
                del planes, pieces
            if len(chunk_rows) != nrows:
                raise RuntimeError("partial writer: CHUNKS rows miscounted")  # a bug
            if nrows:
                f.seek(table_at)
                f.write(np.array(chunk_rows, dtype=">i8").tobytes())
        seal(tmp)
    return path


def _write_patch(patch: PartialPatch, path: Path) -> Path:
    """Write a :class:`PartialPatch` (module notes, "Patches")."""
    base = patch.base
    index = base.stream_index(patch.rows, patch.cols)
    values = {name: np.asarray(getattr(patch, name), dtype=_DTYPES[name]).ravel()
              for name in ARRAYS}
    if any(v.shape != index.shape for v in values.values()):
        raise ValueError(f"patch of {base.filename}: one flux, weight and nchips per pixel")
    order = np.argsort(index, kind="stable")
    index = index[order]
    if index.size and (np.diff(index) <= 0).any():
        raise ValueError(f"patch of {base.filename}: a pixel given twice")
    shape = base.shape
    meta = Partial(np.broadcast_to(np.float32(0), shape), np.broadcast_to(np.float32(0), shape),
                   np.broadcast_to(np.uint8(0), shape), base.frame, base.box.x0, base.box.y0,
                   base.filename, base.ipppssoo, base.exptime, dict(patch.params),
                   [dict(c) for c in patch.chips])
    primary = _primary_header(meta, base.nvalues)
    # no comment: a long path leaves no room for one
    primary["PATCHOF"] = os.path.relpath(base.path, path.parent)
    primary["BASESIZE"] = (int(base.header[SIZE_KEY]), "base partial: size in bytes")
    primary["BASECRC"] = (str(base.header[SUM_KEY]), "base partial: CRC-32")
    primary.extend(seal_cards())
    hdus = [fits.PrimaryHDU(header=primary), fits.ImageHDU(index.astype(np.int64), name="INDEX")]
    hdus += [fits.ImageHDU(values[name][order], name=_PATCH_EXTNAMES[name]) for name in ARRAYS]
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp, output_verify="exception")
        seal(tmp)
    return path


def _piece_count(name: str, nvalues: int) -> int:
    """CHUNKS rows of one array: a row per compressed chunk, one per raw plane."""
    chunks = -(-nvalues // CHUNK_VALUES)
    zplanes = len(ZLIB_PLANES[name])
    return zplanes * chunks + (_DTYPES[name].itemsize - zplanes)


def _image_header(name: str, data: np.ndarray | None, length: int | None = None):
    """The header of an image extension holding ``data`` (or, given ``length``, a 1-D byte
    stream of that length, ``data`` a sample of its type)."""
    header = fits.ImageHDU(data, name=name).header
    if length is not None and data is not None:
        header["NAXIS1"] = int(length)
    return header


def _write_hdu(f, header: fits.Header, data: np.ndarray | None) -> int:
    """Write a header, its data (big-endian) and the FITS padding; return the data's file
    offset."""
    f.write(header.tostring().encode("ascii"))
    at = f.tell()
    if data is not None:
        raw = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">"))
        f.write(memoryview(raw).cast("B"))
        pad = -raw.nbytes % FITS_BLOCK
        if pad:
            f.write(bytes(pad))
    return at


def bytes_per_input_pixel(path: str | os.PathLike, input_pixels: int) -> float:
    """Size of a file per input (exposure) pixel: what an intermediate costs per pixel
    drizzled (the benchmark's figure of merit, module notes)."""
    if input_pixels <= 0:
        raise ValueError(f"input_pixels must be positive, got {input_pixels}")
    return os.path.getsize(path) / float(input_pixels)


# --------------------------------------------------------------------------------------
# Reading


@dataclass
class _ArrayInfo:
    name: str
    dtype: np.dtype
    data_at: int  # byte offset of the HDU's data in the file
    nbytes: int  # bytes of the HDU's data (unpadded)
    raw: dict  # plane -> byte offset of the raw plane in the data
    chunks: dict  # plane -> list of (offset, nbytes, codec) per chunk


def _as_slice_range(key, n: int) -> range:
    if key is None:
        key = slice(None)
    if not isinstance(key, slice):
        raise TypeError(f"expected a slice, got {key!r}")
    start, stop, step = key.indices(n)
    if step <= 0:
        raise ValueError("only positive slice steps are supported")
    return range(start, stop, step)


class PartialFile:
    """A partial file opened for reading: its header now, its pixels on demand.

    :meth:`open` reads and checks the headers only (no pixels); every read method opens the
    file, reads only the rows it needs (the row-span index locates them) and closes it, so
    no file handle is kept and memory is bounded by what was asked for.

    Attributes
    ----------
    path : Path
    header : astropy.io.fits.Header
        The primary header.
    filename, ipppssoo : str
        The exposure.
    exptime : float
    frame : Frame
        The frame the exposure was drizzled onto.
    box : Box
        The partial's box in :attr:`frame` (``nx = ny = 0`` when empty).
    params : dict
        The drizzle parameters.
    chips : list of dict
        The per-chip records (as :attr:`Partial.chips`).
    nvalues : int
        Values stored per array (covered pixels of the spans).
    bytes_read : int
        Bytes read from the file so far by this object's pixel reads (the row-span index
        and pixel data; the headers read by :meth:`open` excluded).
    base : PartialFile or None
        For a patch (module notes, "Patches"), its base, whose file the pixels are read
        from; else None.
    """

    def __init__(self, path: Path, header: fits.Header, arrays: dict, spans_at: int,
                 chunks_at: int, nchunk_rows: int, stat: tuple, *,
                 base: PartialFile | None = None, patch: dict | None = None):
        self.path = path
        self.header = header
        self.filename = str(header["FILENAME"])
        self.ipppssoo = str(header["IPPPSSOO"])
        self.exptime = float(header["EXPTIME"])
        self.frame = Frame.from_header(header)
        self.box = Box(int(header["BOXX0"]), int(header["BOXY0"]), int(header["BOXNX"]),
                       int(header["BOXNY"]))
        self.params = json.loads(header["PARAMS"])
        self.chips = [{
            "extver": header[f"C{i}EXTV"], "drizzled": header[f"C{i}DRIZ"],
            "in_units": header[f"C{i}UNIT"], "sky": header[f"C{i}SKY"],
            "iscale": header[f"C{i}ISCL"], "ngood": header[f"C{i}NGOD"],
            "nstatic": header[f"C{i}NSTA"],
        } for i in range(1, int(header["NCHIPIN"]) + 1)]
        for i, chip in enumerate(self.chips, start=1):
            if f"C{i}SCUT" in header:
                chip["static_cut"] = _float_hex(path, header, f"C{i}SCUT")
        self.nvalues = int(header["NVALUES"])
        self.chunk_values = int(header["CHUNKLEN"])
        self.bytes_read = 0
        self._arrays = arrays
        self._spans_at = spans_at
        self._chunks_at = chunks_at
        self._nchunk_rows = nchunk_rows
        self._spans: np.ndarray | None = None
        self._cache: dict = {}
        self._stat = stat
        # a patch (module notes, "Patches"): pixels read from the base's file, then patched
        self.base = base
        self._data_path = base.path if base is not None else path
        self._patch = patch

    def __repr__(self) -> str:
        return f"PartialFile({str(self.path)!r})"

    # -- opening

    @classmethod
    def open(cls, path: str | os.PathLike) -> PartialFile:
        """Read and check a partial file's headers (no pixels).

        Raises
        ------
        ValueError
            Naming the file, if it is not an mvmflow partial, has another layout version, or
            is truncated or corrupt; or if its size or checksum differs from the ones
            recorded when it was written (the file is then removed, so that the next run
            makes it again).
        """
        path = Path(path)
        try:
            stat = _identity(path.stat())  # before reading: a file replaced later is refused
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # astropy warns about truncated files
                with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                    header = hdul[0].header.copy()
                    _check_primary(path, header)
                    if "PATCHOF" in header:
                        return cls._open_patch(path, header, hdul, stat)
                    infos = []
                    for k, extname in enumerate(_HDUS[1:], start=1):
                        hdu = hdul[k]
                        if hdu.name != extname:
                            raise ValueError(f"HDU {k} is {hdu.name!r}, expected {extname!r}")
                        info = hdu.fileinfo()
                        infos.append((hdu.header.copy(), int(info["datLoc"]),
                                      int(info["datSpan"])))
                    if len(hdul) != len(_HDUS):
                        raise ValueError(f"{len(hdul)} HDUs, expected {len(_HDUS)}")
            pf = cls._from_headers(path, header, infos, stat)
            verify(path)  # once per process and file version (mvmflow.integrity)
            return pf
        except FileNotFoundError:
            raise
        except DamagedFile as exc:
            raise ValueError(f"{path.name}: corrupt partial file: {exc}") from None
        except ValueError as exc:
            if str(exc).startswith(path.name):
                raise ValueError(f"{exc}{_damage(path)}") from exc
            raise ValueError(f"{path.name} is not a readable mvmflow partial: {exc}"
                             f"{_damage(path)}") from exc
        except (OSError, KeyError, IndexError, TypeError, Warning, fits.VerifyError) as exc:
            raise ValueError(f"{path.name} is not a readable mvmflow partial: {exc}"
                             f"{_damage(path)}") from exc

    @classmethod
    def _from_headers(cls, path: Path, header: fits.Header, infos, stat) -> PartialFile:
        def bad(why: str):
            return ValueError(f"{path.name}: corrupt partial file: {why}")

        nx, ny, nvalues = int(header["BOXNX"]), int(header["BOXNY"]), int(header["NVALUES"])
        (spans_h, spans_at, _), (chunks_h, chunks_at, _) = infos[0], infos[1]
        spans_shape = _image_shape(spans_h)
        if spans_shape != ((ny, 3) if nx * ny else ()) or (spans_shape and
                                                         spans_h["BITPIX"] != 64):
            raise bad(f"SPANS is {spans_shape}, expected ({ny}, 3) int64")
        chunk_shape = _image_shape(chunks_h)
        if chunk_shape and (len(chunk_shape) != 2 or chunk_shape[1] != 6
                            or chunks_h["BITPIX"] != 64):
            raise bad(f"CHUNKS is {chunk_shape}, expected (n, 6) int64")
        arrays = {}
        for name, (h, at, _) in zip(ARRAYS, infos[2:], strict=True):
            shape = _image_shape(h)
            if shape and (len(shape) != 1 or h["BITPIX"] != 8):
                raise bad(f"{_EXTNAMES[name]} is not a 1-D byte stream")
            arrays[name] = _ArrayInfo(name, _DTYPES[name], at, shape[0] if shape else 0, {}, {})
        _, last_at, last_span = infos[-1]
        size = stat[2]
        if size < last_at + last_span:
            raise bad(f"truncated: {size} bytes, the layout needs {last_at + last_span}")
        if nvalues < 0 or (nvalues and not nx * ny) or int(header["CHUNKLEN"]) <= 0:
            raise bad("NVALUES or CHUNKLEN out of range")
        pf = cls(path, header, arrays, spans_at, chunks_at,
                 chunk_shape[0] if chunk_shape else 0, stat)
        pf._load_chunks()
        return pf

    @classmethod
    def _open_patch(cls, path: Path, header: fits.Header, hdul, stat) -> PartialFile:
        """A patch (module notes, "Patches"): its base opened and checked, its pixels read."""
        verify(path)
        if [h.name for h in hdul] != list(_PATCH_HDUS):
            raise ValueError(f"HDUs {[h.name for h in hdul]}, expected {list(_PATCH_HDUS)}")
        base_path = Path(os.path.normpath(path.parent / str(header["PATCHOF"])))
        try:
            base = cls.open(base_path)
        except FileNotFoundError:
            raise ValueError(f"{path.name}: its base partial {header['PATCHOF']} is "
                             "missing") from None
        except ValueError as exc:
            raise ValueError(f"{path.name}: its base partial: {exc}") from None
        if base.base is not None:
            raise ValueError(f"{path.name}: its base {base.path.name} is a patch itself")
        if (str(base.header.get(SUM_KEY)) != str(header["BASECRC"])
                or int(base.header.get(SIZE_KEY, -1)) != int(header["BASESIZE"])):
            path.unlink(missing_ok=True)
            raise ValueError(f"{path.name}: made against another version of {base.path.name} "
                             "(its size or checksum differs); removed: run again to make it "
                             "anew")
        data = {}
        for extname in _PATCH_HDUS[1:]:
            raw = hdul[extname].data
            data[extname] = np.zeros(0) if raw is None else np.asarray(raw).ravel()
        index = data["INDEX"].astype(np.int64)
        patch = {"index": index}
        for name in ARRAYS:
            values = data[_PATCH_EXTNAMES[name]]
            if values.shape != index.shape:
                raise ValueError(f"{path.name}: corrupt partial file: {_PATCH_EXTNAMES[name]} "
                                 f"holds {values.size} values for {index.size} pixels")
            patch[name] = values.astype(_DTYPES[name])
        if index.size and (index[0] < 0 or index[-1] >= base.nvalues
                           or (np.diff(index) <= 0).any()):
            raise ValueError(f"{path.name}: corrupt partial file: INDEX is not increasing "
                             f"within the base's {base.nvalues} values")
        return cls(path, header, base._arrays, base._spans_at, base._chunks_at,
                   base._nchunk_rows, base._stat, base=base, patch=patch)

    def _load_chunks(self) -> None:
        """Read and check the CHUNKS table (small: a few rows per chunk of 128 Ki values)."""
        table = np.zeros((0, 6), dtype=np.int64)
        if self._nchunk_rows:
            with open(self.path, "rb") as f:
                f.seek(self._chunks_at)
                raw = f.read(self._nchunk_rows * 6 * 8)
            if len(raw) != self._nchunk_rows * 6 * 8:
                raise self._corrupt("truncated CHUNKS")
            table = np.frombuffer(raw, dtype=">i8").reshape(-1, 6).astype(np.int64)
        n, c = self.nvalues, self.chunk_values
        nchunks = -(-n // c)
        for aid, name in enumerate(ARRAYS):
            info = self._arrays[name]
            rows = table[table[:, 0] == aid]
            for plane in range(info.dtype.itemsize):
                mine = rows[rows[:, 1] == plane]
                if len(mine) == 1 and mine[0, 2] == -1:
                    off, nbytes, codec = (int(v) for v in mine[0, 3:])
                    if nbytes != n or codec != 0:
                        raise self._corrupt(f"{name} plane {plane}: raw stream of {nbytes} "
                                            f"bytes for {n} values")
                    info.raw[plane] = off
                    pieces = [(off, nbytes)]
                else:
                    mine = mine[np.argsort(mine[:, 2], kind="stable")]
                    if list(mine[:, 2]) != list(range(nchunks)):
                        raise self._corrupt(f"{name} plane {plane}: chunks "
                                            f"{list(mine[:, 2])}, expected {nchunks}")
                    info.chunks[plane] = [tuple(int(v) for v in r[3:]) for r in mine]
                    pieces = [(r[0], r[1]) for r in info.chunks[plane]]
                for off, nbytes in pieces:
                    if off < 0 or nbytes < 0 or off + nbytes > info.nbytes:
                        raise self._corrupt(f"{name} plane {plane}: piece outside the data")

    def _corrupt(self, why: str) -> ValueError:
        return ValueError(f"{self._data_path.name}: corrupt partial file: {why}")

    # -- what the header says

    @property
    def empty(self) -> bool:
        """True when no chip reaches the frame (a ``0 x 0`` box)."""
        return self.box.nx == 0 or self.box.ny == 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the box."""
        return (self.box.ny, self.box.nx)

    @property
    def box_x0(self) -> int:
        """The box's origin in :attr:`frame`, x (as :attr:`Partial.box_x0`)."""
        return self.box.x0

    @property
    def box_y0(self) -> int:
        """The box's origin in :attr:`frame`, y."""
        return self.box.y0

    def placement(self, frame: Frame) -> tuple[int, int]:
        """Integer position of the box's pixel (0, 0) in ``frame``.

        As :func:`mvmflow.combine.placement` for a partial with ``frame`` and a box origin:
        ``frame.integer_offset_of(self.frame) + (box.x0, box.y0)``.

        Raises
        ------
        ValueError
            If ``frame`` is on another projection cell or scale, or not pixel-aligned.
        """
        dx, dy = frame.integer_offset_of(self.frame)
        return dx + self.box.x0, dy + self.box.y0

    # -- pixels

    def read(self) -> Partial:
        """The whole partial (box-sized arrays, zeros outside the spans)."""
        if self.empty:
            return empty_partial(self.frame, self.filename, self.ipppssoo, self.exptime,
                                  self.params, self.chips)
        arrays = self.read_arrays(ARRAYS)
        return Partial(arrays["flux"], arrays["weight"], arrays["nchips"], self.frame,
                       self.box.x0, self.box.y0, self.filename, self.ipppssoo, self.exptime,
                       self.params, self.chips)

    def window(self, frame: Frame) -> Partial:
        """The part of the partial that falls on ``frame``; only its rows are read.

        The returned partial keeps the file's frame with its box moved to the part read, so
        it is placed (:func:`mvmflow.combine.placement`) exactly where the whole partial
        would be. It is empty (``0 x 0``, on ``frame``) when nothing reaches ``frame``.

        Raises
        ------
        ValueError
            If ``frame`` is not pixel-aligned with the partial's frame.
        """
        def nothing() -> Partial:
            return empty_partial(frame, self.filename, self.ipppssoo, self.exptime,
                                  self.params, self.chips)

        if self.empty:
            return nothing()
        ox, oy = self.placement(frame)  # the box's pixel (0, 0) in frame
        nx, ny = self.box.nx, self.box.ny
        x_lo, x_hi = max(ox, 0), min(ox + nx, frame.nx)
        y_lo, y_hi = max(oy, 0), min(oy + ny, frame.ny)
        if x_lo >= x_hi or y_lo >= y_hi:
            return nothing()
        px, py = x_lo - ox, y_lo - oy  # in the box
        arrays = self.read_arrays(ARRAYS, slice(py, py + y_hi - y_lo),
                                  slice(px, px + x_hi - x_lo))
        return Partial(arrays["flux"], arrays["weight"], arrays["nchips"], self.frame,
                       self.box.x0 + px, self.box.y0 + py, self.filename, self.ipppssoo,
                       self.exptime, self.params, self.chips)

    def rows(self, y0: int, y1: int, names: Iterable[str] = ARRAYS) -> dict[str, np.ndarray]:
        """Box rows ``y0:y1`` (whole box width) of the named arrays."""
        return self.read_arrays(names, slice(y0, y1))

    def read_arrays(self, names: Iterable[str] = ARRAYS, rows: slice | None = None,
                    cols: slice | None = None) -> dict[str, np.ndarray]:
        """The named arrays over a region of the box: ``array[rows, cols]``.

        Parameters
        ----------
        names : iterable of str
            Some of ``flux``, ``weight``, ``nchips``.
        rows, cols : slice, optional
            In box coordinates, with numpy's meaning (clipped to the box; positive steps).
            Default: the whole box.

        Returns
        -------
        dict of str to numpy.ndarray
            Native-order float32 / uint8 arrays of the region's shape, 0 outside the spans.
            Only the selected rows are read, in blocks of at most 1 Mi values per array.
        """
        names = list(names)
        for name in names:
            if name not in _DTYPES:
                raise ValueError(f"unknown partial array {name!r}: use {ARRAYS}")
        ys = _as_slice_range(rows, self.box.ny)
        xs = _as_slice_range(cols, self.box.nx)
        out = {name: np.zeros((len(ys), len(xs)), dtype=_DTYPES[name]) for name in names}
        if not len(ys) or not len(xs) or not self.nvalues or not names:
            return out
        with self._data() as fd:
            self._read_into(fd, out, ys, xs)
        return out

    @contextmanager
    def _data(self):
        """The file holding the pixels (a patch's base), open, as a descriptor."""
        with open(self._data_path, "rb") as f:
            fd = f.fileno()
            if _identity(os.fstat(fd)) != self._stat:
                raise ValueError(f"{self._data_path.name} changed since it was opened")
            yield fd

    def stream_index(self, rows, cols) -> np.ndarray:
        """Positions in the streams of stored pixels (box coordinates).

        Raises
        ------
        ValueError
            If a pixel is outside the box or not stored (outside its row's span).
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError("stream_index: one column per row")
        if (rows < 0).any() or (rows >= self.box.ny).any():
            raise ValueError(f"{self.path.name}: a row outside the box")
        with self._data() as fd:
            index, stored = self._positions(fd, rows, cols)
        if not stored.all():
            raise ValueError(f"{self.path.name}: a pixel outside the stored spans")
        return index

    def _positions(self, fd: int, rows: np.ndarray, cols: np.ndarray):
        """Stream positions of pixels in the box's rows, and whether each is stored (within
        its row's span; the position is meaningless where not)."""
        spans = self._index(fd) if rows.size else np.zeros((0, 3), dtype=np.int64)
        x0, n, off = spans[rows, 0], spans[rows, 1], spans[rows, 2]
        return off + cols - x0, (cols >= x0) & (cols < x0 + n)

    def read_points(self, rows, cols, names: Iterable[str] = ARRAYS) -> dict[str, np.ndarray]:
        """The named arrays at some pixels (box coordinates; 0 where not stored).

        The stream blocks that hold the pixels are read, each once.
        """
        names = list(names)
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        out = {name: np.zeros(rows.size, dtype=_DTYPES[name]) for name in names}
        inside = (rows >= 0) & (rows < self.box.ny) & (cols >= 0) & (cols < self.box.nx)
        if not self.nvalues or not inside.any() or not names:
            return out
        with self._data() as fd:
            index, stored = self._positions(fd, rows[inside], cols[inside])
            where = np.flatnonzero(inside)[stored]
            index = index[stored]
            order = np.argsort(index, kind="stable")
            where, index = where[order], index[order]
            self._cache.clear()
            starts = np.flatnonzero(np.r_[True, np.diff(index // _BLOCK_VALUES) > 0])
            for i, j in zip(starts, np.r_[starts[1:], index.size], strict=True):
                a, b = int(index[i]), int(index[j - 1]) + 1
                for name in names:
                    out[name][where[i:j]] = self._values(fd, name, a, b, at=index[i:j])
        return out

    def _read_into(self, fd: int, out: dict, ys: range, xs: range) -> None:
        spans = self._index(fd)
        # per selected row: first output column, count, and the stream index of its value
        sel = spans[ys.start:ys.stop:ys.step]
        lo = np.maximum(sel[:, 0], xs.start)
        hi = np.minimum(sel[:, 0] + sel[:, 1], xs.stop)
        k0 = -(-(lo - xs.start) // xs.step)
        k1 = np.maximum(-(-(hi - xs.start) // xs.step), k0)
        count = np.where(hi > lo, k1 - k0, 0)
        first = sel[:, 2] + xs.start + k0 * xs.step - sel[:, 0]  # stream index of value k0
        end = first + np.maximum(count - 1, 0) * xs.step + 1  # one past the last value
        todo = np.flatnonzero(count > 0)
        self._cache.clear()
        for block in _blocks(todo, first, end):
            a, b = int(first[block[0]]), int(end[block[-1]])
            needed = int((end[block] - first[block]).sum())
            dense = _read_whole(b - a - needed, needed, len(block))
            for name, dst in out.items():
                if dense:
                    values = self._values(fd, name, a, b)
                for i in block:
                    s, e, k, c = int(first[i]), int(end[i]), int(k0[i]), int(count[i])
                    v = values[s - a:e - a] if dense else self._values(fd, name, s, e)
                    dst[i, k:k + c] = v[::xs.step]

    def _index(self, fd: int) -> np.ndarray:
        """The row-span index ``(ny, 3)``, read and checked once."""
        if self._spans is None:
            ny, nx = self.box.ny, self.box.nx
            raw = self._pread(fd, self._spans_at, ny * 3 * 8)
            spans = np.frombuffer(raw, dtype=">i8").reshape(ny, 3).astype(np.int64)
            x0, n, off = spans[:, 0], spans[:, 1], spans[:, 2]
            expected = np.concatenate([[0], np.cumsum(n)[:-1]])
            if ((x0 < 0) | (n < 0) | (x0 + n > nx)).any() or not np.array_equal(off, expected) \
                    or int(n.sum()) != self.nvalues:
                raise self._corrupt("the row spans do not fit the box and NVALUES")
            self._spans = spans
        return self._spans

    def _pread(self, fd: int, offset: int, nbytes: int) -> bytes:
        data = os.pread(fd, nbytes, offset)
        if len(data) != nbytes:
            raise self._corrupt(f"truncated data at byte {offset}")
        self.bytes_read += nbytes
        return data

    def _chunk(self, fd: int, info: _ArrayInfo, plane: int, c: int) -> np.ndarray:
        """Decompressed chunk ``c`` of a compressed plane (the last one is kept)."""
        key = (info.name, plane)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == c:
            return cached[1]
        offset, nbytes, codec = info.chunks[plane][c]
        data = self._pread(fd, info.data_at + offset, nbytes)
        length = min(self.chunk_values, self.nvalues - c * self.chunk_values)
        if codec == 1:
            try:
                data = zlib.decompress(data)
            except zlib.error as exc:
                raise self._corrupt(f"{info.name} plane {plane} chunk {c}: {exc}") from None
        elif codec != 0:
            raise self._corrupt(f"unknown codec {codec}")
        if len(data) != length:
            raise self._corrupt(f"{info.name} plane {plane} chunk {c}: {len(data)} bytes, "
                                f"expected {length}")
        chunk = np.frombuffer(data, dtype=np.uint8)
        self._cache[key] = (c, chunk)
        return chunk

    def _values(self, fd: int, name: str, a: int, b: int,
                at: np.ndarray | None = None) -> np.ndarray:
        """Stream values ``a:b`` of an array, native order; with ``at`` (increasing stream
        positions in ``a:b``), the values at those positions alone (the blocks' planes are
        read, but only those values put together)."""
        info = self._arrays[name]
        size = info.dtype.itemsize
        # each byte plane goes straight to its place in the native value (plane 0, the most
        # significant byte, is the last byte of a little-endian value): no byte swap after
        planes = np.empty((b - a if at is None else at.size, size), dtype=np.uint8)
        for p in range(size):
            col = size - 1 - p if _LITTLE else p
            if p in info.raw:
                raw = np.frombuffer(self._pread(fd, info.data_at + info.raw[p] + a, b - a),
                                    dtype=np.uint8)
                planes[:, col] = raw if at is None else raw[at - a]
                continue
            cv = self.chunk_values
            for c in range(a // cv, (b - 1) // cv + 1):
                lo, hi = max(a, c * cv), min(b, (c + 1) * cv)
                chunk = self._chunk(fd, info, p, c)
                if at is None:
                    planes[lo - a:hi - a, col] = chunk[lo - c * cv:hi - c * cv]
                else:
                    i, j = np.searchsorted(at, (lo, hi))
                    planes[i:j, col] = chunk[at[i:j] - c * cv]
        values = planes.view(info.dtype).reshape(len(planes))
        if self._patch is not None:
            index = self._patch["index"]
            lo, hi = np.searchsorted(index, (a, b))
            if at is None:
                values[index[lo:hi] - a] = self._patch[name][lo:hi]
            elif hi > lo:
                k = np.minimum(np.searchsorted(index[lo:hi], at), hi - lo - 1)
                hit = index[lo:hi][k] == at
                values[hit] = self._patch[name][lo:hi][k[hit]]
        return values


def _damage(path: Path) -> str:
    """For an unreadable file: ``'; <why>'`` if its seal says it was damaged after it was
    written (the file is then removed, to be made again), else ``''``."""
    try:
        verify(path)
    except DamagedFile as exc:
        return f"; {exc}"
    except (OSError, ValueError):
        pass
    return ""


def _blocks(todo: np.ndarray, first: np.ndarray, end: np.ndarray):
    """Consecutive selected rows grouped so that a group spans at most ``_BLOCK_VALUES``
    stream values (a single longer row is a group of its own)."""
    block: list[int] = []
    start = 0
    for i in todo:
        i = int(i)
        if block and int(end[i]) - start > _BLOCK_VALUES:
            yield block
            block = []
        if not block:
            start = int(first[i])
        block.append(i)
    if block:
        yield block


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _float_hex(path: Path, header: fits.Header, key: str) -> float:
    try:
        return float.fromhex(str(header[key]))
    except ValueError:
        raise ValueError(f"{path.name}: corrupt partial file: {key} = {header[key]!r} "
                         "is not a float.hex number") from None


def _image_shape(header: fits.Header) -> tuple[int, ...]:
    naxis = int(header.get("NAXIS", 0))
    return tuple(int(header[f"NAXIS{k}"]) for k in range(naxis, 0, -1))


def _check_primary(path: Path, header: fits.Header) -> None:
    if header.get("MVMTYPE") != "PARTIAL":
        raise ValueError(f"{path.name} is not an mvmflow partial (MVMTYPE "
                         f"{header.get('MVMTYPE')!r})")
    if header.get("PARTVER") != PARTIAL_VERSION:
        raise ValueError(f"{path.name}: partial layout version {header.get('PARTVER')}, "
                         f"expected {PARTIAL_VERSION} (remake it)")
    missing = [k for k in ("FILENAME", "IPPPSSOO", "EXPTIME", "PCELL", "PSCALE", "FRCRPIX1",
                           "FRCRPIX2", "FRNAXIS1", "FRNAXIS2", "BOXX0", "BOXY0", "BOXNX",
                           "BOXNY", "NCHIPIN", "NVALUES", "CHUNKLEN", "PARAMS")
               if k not in header]
    if missing:
        raise ValueError(f"{path.name}: partial header lacks {', '.join(missing)}")
    try:
        json.loads(header["PARAMS"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path.name}: partial PARAMS is not JSON: {exc}") from None
    if not math.isfinite(float(header["EXPTIME"])):
        raise ValueError(f"{path.name}: partial EXPTIME is not finite")
