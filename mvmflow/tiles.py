"""The tiled reduce and the tile-by-tile writer: every layer product is made this way.

A layer frame can be far larger than memory (a whole sky cell is 21,954 x 21,954 pixels, a
custom mosaic several times that), so every layer product -- sky-cell layers, exposure-level
products and custom mosaics -- is reduced and written in tiles (docs/design.md, "One tiled
data path"); a small frame is the one-tile case of the same code:

- :func:`reduce_tile` reads, for each of the layer's inputs, only the part of its partial
  that reaches the tile (:meth:`mvmflow.partials.PartialFile.window`) and sums them with
  :func:`mvmflow.combine.combine_partials` (float64, in layer order, every input keeping its
  context bit whether or not it reaches the tile), so every pixel gets exactly the value it
  would get in an untiled reduce;
- :func:`write_tile` stores the tile's SCI, WHT and CTX and what the headers need from the
  rest (which inputs it used, the histograms of chips and exposure time per covered pixel),
  so a tile file holds 12 bytes per pixel (plus 4 per extra context plane);
- :func:`write_tiled_layer` writes the product: the headers first (from
  :func:`summarize_tiles`, which gets the footprint statistics and ``S_REGION`` from the
  tiles), then each extension's pixels tile by tile at their byte offsets in the file, then
  ``HDRTAB``. The statistics are computed from tile histograms in an order that does not
  depend on the tiling (the means are exact sums; the medians exact order statistics), so a
  product is the same file for any tile size;
- :func:`reduce_layer` does both in one job (the reduced strips set aside as
  :class:`SpillTile` files in a temporary directory beside the product, reduced by forked
  worker processes when the job has several cores): used where one job makes a whole
  product (sky-cell layers, exposure-level products).

Memory is bounded by a tile: ``(40 + 4 * planes)`` bytes per tile pixel in the reduce
(float64 sums, counts and the context planes) plus one input window at a time.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from astropy.io import fits

from mvmflow.combine import LayerArrays, combine_partials, context_planes
from mvmflow.filters import block_reduce
from mvmflow.grid import Frame
from mvmflow.integrity import FITS_BLOCK, seal, seal_cards, verify
from mvmflow.names import LayerName
from mvmflow.partials import PartialFile, empty_partial
from mvmflow.products import LayerSummary, layer_headers
from mvmflow.sregion import block_polygons, polygons_to_s_region
from mvmflow.workflow import atomic_path

__all__ = [
    "TILE_VERSION",
    "ArraysTile",
    "TileFile",
    "TileSummary",
    "reduce_layer",
    "reduce_tile",
    "summarize_tiles",
    "write_tile",
    "write_tiled_layer",
]

TILE_VERSION = 2
"""Layout version of tile files (primary keyword ``TILEVER``)."""

_MAX_BLOCKS = 1024  # as mvmflow.sregion.region_polygons


def reduce_tile(frame: Frame, members: Sequence[tuple[str, float]],
                partials: Mapping[str, str | os.PathLike],
                sky_offsets: Mapping[str, float] | None = None) -> LayerArrays:
    """Reduce one tile.

    Parameters
    ----------
    frame : Frame
        The tile (a window of the layer frame).
    members : sequence of (filename, exptime)
        Every input of the layer in layer order (context bit order).
    partials : mapping of filename to path
        The partial files of the members that reach the tile (others may be given too).
    sky_offsets : mapping, optional
        Sky offset per file, per pixel at the layer's scale.

    Returns
    -------
    LayerArrays
        Over ``frame``; memory: the tile's sums and one input window at a time.
    """
    def parts():
        for filename, exptime in members:
            path = partials.get(filename)
            yield (PartialFile.open(path).window(frame) if path is not None
                   else empty_partial(frame, filename, "", exptime))

    return combine_partials(parts(), frame, sky_offsets)


def _hist(values: np.ndarray) -> Counter:
    uniq, counts = np.unique(values, return_counts=True)
    return Counter(dict(zip(uniq.tolist(), counts.tolist(), strict=True)))


def _hist_table(name: str, hist: Mapping, fmt: str, dtype) -> fits.BinTableHDU:
    keys = sorted(hist)
    return fits.BinTableHDU.from_columns([
        fits.Column("VALUE", fmt, array=np.array(keys, dtype=dtype)),
        fits.Column("COUNT", "K", array=np.array([hist[k] for k in keys], dtype=np.int64)),
    ], name=name)


def _tile_histograms(arrays: LayerArrays) -> tuple[int, Counter, Counter]:
    covered = arrays.nchips > 0
    return (int(covered.sum()), _hist(arrays.nchips[covered].astype(np.int32)),
            _hist(arrays.exptime[covered].astype(np.float32)))


def write_tile(path: str | os.PathLike, arrays: LayerArrays, box: Sequence[int]) -> Path:
    """Write a reduced tile, atomically.

    Layout: PRIMARY (``MVMTYPE = 'TILE'``, ``TILEVER``, the box ``TILEX0 TILEY0 TILENX
    TILENY`` and ``NCOV``, the covered pixels), SCI (float32), WHT (float32), CTX (int32,
    with its planes), INPUTS (``FILE``, ``USED``: every input of the layer in layer order
    and whether it has weight in the tile), NEXPHIST and EXPTHIST (``VALUE``, ``COUNT``:
    histograms over the covered pixels of the chips and of the exposure time per pixel).
    The primary header's ``MVMSIZE`` and ``MVMCRC`` record the file's size and checksum
    (:mod:`mvmflow.integrity`); :class:`TileFile` checks them before the tile is used.
    """
    ncov, nexp_hist, expt_hist = _tile_histograms(arrays)
    primary = fits.PrimaryHDU()
    primary.header["MVMTYPE"] = ("TILE", "one tile of a tiled layer")
    primary.header["TILEVER"] = (TILE_VERSION, "tile file layout version")
    for key, v in zip(("TILEX0", "TILEY0", "TILENX", "TILENY"), box, strict=True):
        primary.header[key] = int(v)
    primary.header["NCOV"] = (ncov, "pixels covered by a chip footprint")
    primary.header.extend(seal_cards())  # size and checksum (mvmflow.integrity)
    used = fits.BinTableHDU.from_columns([
        fits.Column("FILE", "A200", array=np.array(arrays.files, dtype="U200")),
        fits.Column("USED", "L", array=np.array(arrays.used, dtype=bool)),
    ], name="INPUTS")
    hdul = fits.HDUList([
        primary,
        fits.ImageHDU(arrays.sci, name="SCI"), fits.ImageHDU(arrays.wht, name="WHT"),
        fits.ImageHDU(arrays.ctx, name="CTX"), used,
        _hist_table("NEXPHIST", nexp_hist, "J", np.int32),
        _hist_table("EXPTHIST", expt_hist, "E", np.float32),
    ])
    with atomic_path(Path(path)) as tmp:
        hdul.writeto(tmp, overwrite=True)
        seal(tmp)
    return Path(path)


class TileFile:
    """A tile written by :func:`write_tile` (read one part at a time)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        verify(self.path)  # damaged since written: refused and removed (mvmflow.integrity)
        header = fits.getheader(self.path, 0)
        if header.get("MVMTYPE") != "TILE" or header.get("TILEVER") != TILE_VERSION:
            raise ValueError(f"{self.path.name} is not an mvmflow tile of layout version "
                             f"{TILE_VERSION}")
        self.box = tuple(int(header[k]) for k in ("TILEX0", "TILEY0", "TILENX", "TILENY"))
        self.ncov = int(header["NCOV"])

    def array(self, name: str) -> np.ndarray:
        """The tile's ``SCI``, ``WHT`` or ``CTX`` array."""
        with fits.open(self.path, memmap=False) as hdul:
            return hdul[name].data

    def inputs(self) -> tuple[list[str], list[bool]]:
        """The layer's inputs (layer order) and whether each has weight in the tile."""
        with fits.open(self.path, memmap=False) as hdul:
            table = hdul["INPUTS"].data
            return ([str(f).strip() for f in table["FILE"]],
                    [bool(u) for u in table["USED"]])

    def histograms(self) -> tuple[int, Counter, Counter]:
        """Covered pixels, and histograms of chips and exposure time per covered pixel."""
        out = []
        with fits.open(self.path, memmap=False) as hdul:
            for name in ("NEXPHIST", "EXPTHIST"):
                t = hdul[name].data
                out.append(Counter() if t is None or len(t) == 0 else Counter(dict(zip(
                    t["VALUE"].tolist(), t["COUNT"].tolist(), strict=True))))
        return self.ncov, out[0], out[1]


class ArraysTile:
    """Reduced arrays in memory as a tile source of :func:`write_tiled_layer` (the
    one-tile case used by :func:`mvmflow.products.write_layer`)."""

    def __init__(self, arrays: LayerArrays, box: Sequence[int] | None = None):
        self.arrays = arrays
        self.box = tuple(box) if box is not None else (0, 0, arrays.frame.nx,
                                                       arrays.frame.ny)

    def array(self, name: str) -> np.ndarray:
        return {"SCI": self.arrays.sci, "WHT": self.arrays.wht, "CTX": self.arrays.ctx}[name]

    def inputs(self) -> tuple[list[str], list[bool]]:
        return list(self.arrays.files), [bool(u) for u in self.arrays.used]

    def histograms(self) -> tuple[int, Counter, Counter]:
        return _tile_histograms(self.arrays)


class SpillTile:
    """A reduced tile that :func:`reduce_layer` sets aside on disk for its own writer.

    The arrays are ``.npy`` files, read back by memory map; which inputs it used and its
    histograms stay in memory (the object is small, so a worker process returns it). It is
    not sealed (mvmflow.integrity): the job that writes it reads it and removes it, so no
    later process can meet it damaged (docs/speed.md, "Layer jobs").
    """

    def __init__(self, directory: str | os.PathLike, index: int, arrays: LayerArrays,
                 box: Sequence[int]):
        self.box = tuple(int(v) for v in box)
        self.paths = {}
        for name, array in (("SCI", arrays.sci), ("WHT", arrays.wht), ("CTX", arrays.ctx)):
            self.paths[name] = Path(directory) / f"t{index:04d}.{name.lower()}.npy"
            np.save(self.paths[name], array, allow_pickle=False)
        self._inputs = (list(arrays.files), [bool(u) for u in arrays.used])
        self._histograms = _tile_histograms(arrays)

    def array(self, name: str) -> np.ndarray:
        return np.load(self.paths[name], mmap_mode="r", allow_pickle=False)

    def inputs(self) -> tuple[list[str], list[bool]]:
        return self._inputs

    def histograms(self) -> tuple[int, Counter, Counter]:
        return self._histograms


def _source(box, tile):
    if isinstance(tile, TileFile | ArraysTile | SpillTile):
        source = tile
    else:
        source = TileFile(tile)
    if list(source.box) != [int(v) for v in box]:
        raise ValueError(f"tile {getattr(source, 'path', 'in memory')}: box {list(source.box)}"
                         f", expected {list(box)}")
    return source


# ------------------------------------------------------------------------------------------
# statistics independent of the tiling


_EXACT_CHUNK = 1 << 28  # values per bincount in _ExactSum.of (sums below 2**52)


@dataclass
class _ExactSum:
    """An exact sum of non-negative float32 values: integer mantissa sums per exponent."""

    parts: Counter

    @classmethod
    def of(cls, values: np.ndarray) -> _ExactSum:
        m, e = np.frexp(np.asarray(values, dtype=np.float32))
        out = Counter()
        if m.size == 0:
            return cls(out)
        # the mantissas as integers below 2**24, summed per exponent by one bincount: the
        # float64 sums are exact while they stay below 2**53 (fewer than 2**29 values), not
        # one pass over the values per exponent (docs/speed.md, "Layer jobs")
        for i in range(0, m.size, _EXACT_CHUNK):
            mant = m[i:i + _EXACT_CHUNK].astype(np.float64) * (1 << 24)
            exp = e[i:i + _EXACT_CHUNK]
            low = int(exp.min())
            sums = np.bincount(exp - low, weights=mant)
            for k in np.flatnonzero(sums):
                out[low + int(k)] += int(sums[k])
        return cls(out)

    def add(self, other: _ExactSum) -> None:
        self.parts.update(other.parts)

    def value(self) -> Fraction:
        return sum((Fraction(v) * Fraction(2) ** (e - 24) for e, v in self.parts.items()),
                   Fraction(0))


def _hist_kth(hist: Mapping, k: int) -> float:
    """The ``k``-th smallest (0-based) value of a histogram."""
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen > k:
            return float(value)
    raise IndexError(k)


def _hist_mean_median(hist: Mapping) -> tuple[float, float]:
    n = sum(hist.values())
    if n == 0:
        return 0.0, 0.0
    total = sum((Fraction(float(v)) * c for v, c in hist.items()), Fraction(0))
    lo, hi = _hist_kth(hist, (n - 1) // 2), _hist_kth(hist, n // 2)
    return float(total / n), float(np.mean([lo, hi]))


def _bits(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint32 keys of non-negative float32 values."""
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


@dataclass
class TileSummary:
    """Statistics of a tiled layer gathered tile by tile.

    Built by :func:`summarize_tiles`; :meth:`layer_summary` turns it into the
    :class:`mvmflow.products.LayerSummary` the headers need.
    """

    frame: Frame
    files: tuple
    used: list
    ncov: int
    nexp_hist: Counter
    expt_hist: Counter
    wht_sum: _ExactSum
    wht_n: int
    wht_median: float
    blocks: np.ndarray
    factor: int
    nplanes: int

    def layer_summary(self, exptimes: Sequence[float], sky: Sequence[float],
                      npix_total: int | None = None) -> LayerSummary:
        total = int(npix_total) if npix_total is not None else self.frame.nx * self.frame.ny
        stats = {"NPIXFRAC": self.ncov / total}
        stats["MEANEXPT"], stats["MEDEXPT"] = _hist_mean_median(self.expt_hist)
        stats["MEANNEXP"], stats["MEDNEXP"] = _hist_mean_median(self.nexp_hist)
        stats["MEANWHT"] = float(self.wht_sum.value() / self.wht_n) if self.wht_n else 0.0
        stats["MEDWHT"] = self.wht_median
        polys = block_polygons(self.blocks, self.factor, self.frame.nx, self.frame.ny)
        return LayerSummary(tuple(self.files), tuple(float(t) for t in exptimes),
                            tuple(float(s) for s in sky), tuple(self.used), stats,
                            polygons_to_s_region(polys, self.frame), self.nplanes)


def _block_starts(origin: int, n: int, factor: int) -> np.ndarray:
    """Local indices where a new global block of ``factor`` begins, from ``origin``."""
    first = (-origin) % factor
    return np.unique(np.r_[0, np.arange(first, n, factor)]).astype(np.intp)


def _or_blocks(blocks: np.ndarray, valid: np.ndarray, x0: int, y0: int, factor: int) -> None:
    ry, rx = _block_starts(y0, valid.shape[0], factor), _block_starts(x0, valid.shape[1], factor)
    low = block_reduce(valid, ry, rx, np.logical_or)
    blocks[np.ix_((y0 + ry) // factor, (x0 + rx) // factor)] |= low


def _kth_wht(sources: Sequence, k: int, hi_bucket: int | None = None) -> int:
    """Bits of the ``k``-th smallest WHT > 0 over the tiles (two 16-bit radix passes)."""
    counts = np.zeros(1 << 16, dtype=np.int64)
    for source in sources:
        w = source.array("WHT")
        b = _bits(w[w > 0])
        if hi_bucket is None:
            counts += np.bincount(b >> 16, minlength=1 << 16)
        else:
            counts += np.bincount(b[(b >> 16) == hi_bucket] & 0xFFFF, minlength=1 << 16)
    cum = np.cumsum(counts)
    bucket = int(np.searchsorted(cum, k, side="right"))
    if hi_bucket is None:
        below = int(cum[bucket - 1]) if bucket else 0
        return _kth_wht(sources, k - below, bucket)
    return (hi_bucket << 16) | bucket


def summarize_tiles(frame: Frame, tiles: Sequence[tuple[Sequence[int], object]],
                    files: Sequence[str]) -> TileSummary:
    """Gather a tiled layer's statistics from its tiles.

    Parameters
    ----------
    frame : Frame
        The layer frame.
    tiles : sequence of (box, tile)
        Each tile's ``[x0, y0, nx, ny]`` in the frame and its file (:func:`write_tile`) or
        an :class:`ArraysTile`.
    files : sequence of str
        The layer's inputs in layer order.
    """
    factor = max(1, math.ceil(max(frame.ny, frame.nx) / _MAX_BLOCKS))
    blocks = np.zeros((-(-frame.ny // factor), -(-frame.nx // factor)), dtype=bool)
    used = [False] * len(files)
    ncov, wht_n = 0, 0
    nexp_hist, expt_hist = Counter(), Counter()
    wht_sum = _ExactSum(Counter())
    sources = [_source(box, tile) for box, tile in tiles]
    for source in sources:
        x0, y0 = source.box[:2]
        names, tile_used = source.inputs()
        if names != [str(f) for f in files]:
            raise ValueError(f"{getattr(source, 'path', 'tile')}: inputs differ from the "
                             "layer's")
        used = [a or b for a, b in zip(used, tile_used, strict=True)]
        n, nexp, expt = source.histograms()
        ncov += n
        nexp_hist.update(nexp)
        expt_hist.update(expt)
        wht = source.array("WHT")
        good = wht > 0
        wht_n += int(good.sum())
        wht_sum.add(_ExactSum.of(wht[good]))
        del wht, good
        _or_blocks(blocks, np.isfinite(source.array("SCI")), x0, y0, factor)
    median = 0.0
    if wht_n:
        lo = _kth_wht(sources, (wht_n - 1) // 2)
        hi = lo if wht_n % 2 else _kth_wht(sources, wht_n // 2)
        vals = np.array([lo, hi], dtype=np.uint32).view(np.float32).astype(np.float64)
        median = float(np.mean(vals))
    return TileSummary(frame, tuple(files), used, ncov, nexp_hist, expt_hist, wht_sum, wht_n,
                       median, blocks, factor, context_planes(len(files)))


# ------------------------------------------------------------------------------------------
# writing


def _image_header(cards: fits.Header, dtype, shape: tuple, name: str) -> fits.Header:
    """The full extension header astropy writes for ``ImageHDU(data, cards, name)``."""
    hdu = fits.ImageHDU(np.zeros((1,) * len(shape), dtype=dtype), header=cards, name=name,
                        ver=1)
    hdu.update_header()
    header = hdu.header.copy()
    for i, n in enumerate(reversed(shape), start=1):
        header[f"NAXIS{i}"] = n
    return header


def _padded(nbytes: int) -> int:
    return -(-nbytes // FITS_BLOCK) * FITS_BLOCK


def _write_pixels(f, start: int, shape: tuple, box: Sequence[int], data: np.ndarray,
                  dtype: str) -> None:
    """Write ``data`` (a tile, possibly with planes) into an image at byte ``start``."""
    x0, y0, _, _ = box
    ny, nx = shape[-2:]
    item = np.dtype(dtype).itemsize
    data = data.reshape((-1,) + data.shape[-2:])
    for plane, arr in enumerate(data):
        big = np.ascontiguousarray(arr, dtype=dtype)
        h, w = big.shape
        base = start + (plane * ny * nx) * item
        if x0 == 0 and w == nx:
            f.seek(base + y0 * nx * item)
            f.write(big.tobytes())
            continue
        for r in range(h):
            f.seek(base + ((y0 + r) * nx + x0) * item)
            f.write(big[r].tobytes())


def _tile_rows(sources, nx: int) -> list[list]:
    """The tiles grouped by rows of tiles that span the frame's width side by side (sorted
    by column), each alone otherwise."""
    groups: dict[tuple[int, int], list] = {}
    for box, source in sources:
        groups.setdefault((int(box[1]), int(box[3])), []).append((box, source))
    out = []
    for group in groups.values():
        group.sort(key=lambda item: int(item[0][0]))
        edges = [int(box[0]) for box, _ in group] + [nx]
        if len(group) > 1 and edges[0] == 0 and all(
                int(box[0]) + int(box[2]) == edges[i + 1] for i, (box, _) in enumerate(group)):
            out.append(group)
        else:
            out.extend([item] for item in group)
    return out


_BAND_BYTES = 32 << 20  # a band of whole rows assembled in memory per write


def _write_band(f, start: int, shape: tuple, row: list, name: str, dtype: str) -> None:
    """Write a row of tiles spanning the frame's width: whole image rows, a band at a time
    (one write per band, not one per row of each tile; docs/speed.md, "Layer jobs")."""
    ny, nx = shape[-2:]
    item = np.dtype(dtype).itemsize
    y0, h = int(row[0][0][1]), int(row[0][0][3])
    arrays = [source.array(name) for _, source in row]
    arrays = [a.reshape((-1,) + a.shape[-2:]) for a in arrays]
    step = max(1, _BAND_BYTES // (nx * item))
    for plane in range(arrays[0].shape[0]):
        base = start + (plane * ny * nx) * item
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            band = np.empty((r1 - r0, nx), dtype=dtype)
            for (box, _), a in zip(row, arrays, strict=True):
                x0, w = int(box[0]), int(box[2])
                band[:, x0:x0 + w] = a[plane, r0:r1]
            f.seek(base + (y0 + r0) * nx * item)
            f.write(band.tobytes())


def write_tiled_layer(path: str | os.PathLike, frame: Frame,
                      tiles: Sequence[tuple[Sequence[int], object]],
                      layer_name, records: Iterable, params: Mapping,
                      exptimes: Sequence[float], sky: Sequence[float], files: Sequence[str],
                      provenance=None, *, input_headers=None,
                      npix_total: int | None = None) -> Path:
    """Write a layer product from its tiles, atomically, with memory bounded by a tile.

    Parameters
    ----------
    path : path-like
        The product (its name must be the layer's name).
    frame : Frame
        The layer frame; the tiles must cover it exactly.
    tiles : sequence of (box, tile)
        The tile boxes ``[x0, y0, nx, ny]`` and their files (:func:`write_tile`) or
        :class:`ArraysTile` objects.
    layer_name, records, params, provenance, input_headers, npix_total
        As :func:`mvmflow.products.write_layer`.
    exptimes, sky, files : sequence
        The inputs' exposure times, sky offsets and file names in layer order.
    """
    path = Path(path)
    layer = layer_name if isinstance(layer_name, LayerName) else LayerName.parse(layer_name)
    if path.name != layer.filename:
        raise ValueError(f"product path {path.name!r} is not the layer name {layer.filename!r}")
    if sum(b[2] * b[3] for b, _ in tiles) != frame.nx * frame.ny:
        raise ValueError("the tiles do not cover the layer frame exactly")
    sources = [(box, _source(box, tile)) for box, tile in tiles]
    summary = summarize_tiles(frame, sources, files).layer_summary(exptimes, sky, npix_total)
    h = layer_headers(summary, frame, layer, records, params, provenance,
                      input_headers=input_headers)
    primary = fits.PrimaryHDU(header=h.primary)
    primary.update_header()
    shape2 = (frame.ny, frame.nx)
    ctx_shape = shape2 if summary.nplanes == 1 else (summary.nplanes, *shape2)
    exts = [("SCI", h.sci, ">f4", shape2), ("WHT", h.wht, ">f4", shape2),
            ("CTX", h.ctx, ">i4", ctx_shape)]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(primary.header.tostring().encode("ascii"))
        for name, cards, dtype, shape in exts:
            header = _image_header(cards, np.dtype(dtype).newbyteorder("="), shape, name)
            f.write(header.tostring().encode("ascii"))
            start = f.tell()
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            f.truncate(start + _padded(nbytes))
            for row in _tile_rows(sources, frame.nx):
                if len(row) == 1:
                    box, source = row[0]
                    _write_pixels(f, start, shape, box, source.array(name), dtype)
                else:
                    _write_band(f, start, shape, row, name, dtype)
            f.seek(start + _padded(nbytes))
        f.write(h.hdrtab)
    return path


def _row_strips(box: Sequence[int], n: int) -> list[list[int]]:
    """``box`` ``[x0, y0, nx, ny]`` cut into up to ``n`` strips of whole rows, in order."""
    x0, y0, nx, ny = (int(v) for v in box)
    n = max(1, min(n, ny))
    edges = [y0 + (ny * k) // n for k in range(n + 1)]
    return [[x0, a, nx, b - a] for a, b in zip(edges[:-1], edges[1:], strict=True)]


def reduce_layer(path: str | os.PathLike, frame: Frame, tiles: Sequence[Sequence[int]],
                 members: Sequence[tuple[str, float]],
                 partials: Mapping[str, str | os.PathLike], layer_name, records: Iterable,
                 params: Mapping, sky_offsets: Mapping[str, float] | None = None,
                 provenance=None, *, input_headers=None, threads: int = 1) -> Path:
    """Reduce and write a whole layer product in this process, tile by tile.

    The tiles are written to a temporary directory beside ``path`` (removed afterwards), so
    memory is bounded by a tile and the product is the same file as with tile jobs. A layer
    of one tile reduced in one strip skips the tile file: its arrays (less than the reduce's
    own peak) are written from memory.

    Parameters
    ----------
    path : path-like
        The product.
    frame : Frame
        The layer frame.
    tiles : sequence of [x0, y0, nx, ny]
        Tiles covering the frame, row by row (the plan's tile boxes).
    members, partials, sky_offsets
        As :func:`reduce_tile`.
    layer_name, records, params, provenance, input_headers
        As :func:`write_tiled_layer`.
    threads : int
        Cores: each tile is cut into ``threads`` strips of rows, reduced at once by as many
        worker processes (forked; the sums hold the interpreter lock too often for threads
        to pay: docs/speed.md, "Layer jobs"), so memory stays that of one tile. The product
        does not depend on it.
    """
    path = Path(path)
    sky_offsets = dict(sky_offsets or {})
    files = [name for name, _ in members]
    threads = max(1, int(threads))
    strips = list(enumerate(strip for box in tiles for strip in _row_strips(box, threads)))

    def write(written):
        return write_tiled_layer(path, frame, written, layer_name, records, params,
                                 [t for _, t in members],
                                 [sky_offsets.get(f, 0.0) for f in files], files, provenance,
                                 input_headers=input_headers)

    if len(strips) == 1:
        # one tile in one strip: its arrays are written from memory, not through a tile
        # file (the same bytes: ArraysTile; docs/speed.md, "Layer jobs")
        box = strips[0][1]
        arrays = reduce_tile(frame.window(*box), members, partials, sky_offsets)
        return write([(list(box), ArraysTile(arrays, box))])
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.tiles-", dir=path.parent))
    work = [(tmpdir, i, box, frame, list(members), dict(partials), sky_offsets)
            for i, box in strips]
    try:
        if threads == 1:
            spilled = [_reduce_spill(item) for item in work]
        else:
            with _workers(min(threads, len(work))) as pool:
                spilled = list(pool.map(_reduce_spill, work))
        return write([(list(tile.box), tile) for tile in spilled])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _reduce_spill(item) -> SpillTile:
    """One strip of :func:`reduce_layer`, reduced and set aside (in a worker process)."""
    tmpdir, index, box, frame, members, partials, sky_offsets = item
    arrays = reduce_tile(frame.window(*box), members, partials, sky_offsets)
    return SpillTile(tmpdir, index, arrays, box)


def _workers(n: int):
    """A pool of ``n`` forked worker processes that end with the job (a job killed by the
    workflow leaves none running)."""
    from mvmflow.runner import die_with_parent, fork_pool

    return fork_pool(n, initializer=die_with_parent)
