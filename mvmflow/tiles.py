"""Tiled layers: reduce a large frame tile by tile and write it as one FITS file.

A custom mosaic (:mod:`mvmflow.mosaic`) can be far larger than memory. Its layer frame is
cut into tiles; for each tile:

- :func:`read_partial_window` reads only the part of each exposure's partial that reaches
  the tile (``HDU.section``), and :func:`reduce_tile` sums them with
  :func:`mvmflow.combine.combine_partials` (float64, in layer order, every input keeping its
  context bit whether or not it reaches the tile), so every pixel gets exactly the value
  it would get in an untiled reduce;
- :func:`write_tile` stores the tile's SCI, WHT, CTX, NCHIPS and EXPTIME arrays and which
  inputs it used.

:func:`write_tiled_layer` then writes the product: the headers first (from
:func:`summarize_tiles`, which gets the footprint statistics and ``S_REGION`` from the
tiles), then each extension's pixels tile by tile at their byte offsets in the file, then
``HDRTAB``. The file is byte-identical to what :func:`mvmflow.products.write_layer` writes
for the same arrays, except that the statistics are computed from tile histograms in an
order that does not depend on the tiling (the means are exact sums; the medians exact
order statistics), so a mosaic is the same file for any tile size. Memory is bounded by a
tile.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from astropy.io import fits

from mvmflow.combine import LayerArrays, combine_partials, context_planes
from mvmflow.grid import Frame
from mvmflow.names import LayerName
from mvmflow.products import LayerSummary, layer_headers
from mvmflow.resample import Partial, _frame_from_header, read_partial_header
from mvmflow.sregion import block_polygons, polygons_to_s_region
from mvmflow.workflow import atomic_path

__all__ = [
    "TileSummary",
    "read_partial_window",
    "reduce_tile",
    "summarize_tiles",
    "write_tile",
    "write_tiled_layer",
]

_MAX_BLOCKS = 1024  # as mvmflow.sregion.region_polygons
_FITS_BLOCK = 2880


def _empty_partial(filename: str, exptime: float, frame: Frame) -> Partial:
    empty = np.zeros((0, 0), dtype=np.float32)
    return Partial(empty, empty.copy(), np.zeros((0, 0), np.uint8), frame, 0, 0, filename, "",
                   float(exptime))


def read_partial_window(path: str | os.PathLike, frame: Frame) -> Partial:
    """The part of a partial file that falls on ``frame`` (only those pixels are read).

    The returned partial keeps the file's frame with its box moved to the part read, so it
    is placed exactly where the whole partial would be. It is empty (0 x 0) when nothing
    reaches ``frame``.
    """
    header = read_partial_header(path)
    pframe = _frame_from_header(header)
    bx, by = int(header["BOXX0"]), int(header["BOXY0"])
    nx, ny = int(header["BOXNX"]), int(header["BOXNY"])
    filename, exptime = header["FILENAME"], float(header["EXPTIME"])
    if nx == 0 or ny == 0:
        return _empty_partial(filename, exptime, frame)
    ox, oy = frame.integer_offset_of(pframe)  # pframe's pixel (0, 0) in frame
    x_lo, x_hi = max(ox + bx, 0), min(ox + bx + nx, frame.nx)
    y_lo, y_hi = max(oy + by, 0), min(oy + by + ny, frame.ny)
    if x_lo >= x_hi or y_lo >= y_hi:
        return _empty_partial(filename, exptime, frame)
    px, py = x_lo - ox - bx, y_lo - oy - by  # in the box
    cut = (slice(py, py + y_hi - y_lo), slice(px, px + x_hi - x_lo))
    with fits.open(path, memmap=False) as hdul:
        arrays = [np.asarray(hdul[name].section[cut]).astype(dtype, copy=False)
                  for name, dtype in (("FLUX", np.float32), ("WEIGHT", np.float32),
                                      ("NCHIPS", np.uint8))]
    return Partial(*arrays, pframe, bx + px, by + py, filename, header["IPPPSSOO"], exptime)


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
        The partial files of the members that reach the tile.
    sky_offsets : mapping, optional
        Sky offset per file, per pixel at the layer's scale.
    """
    def parts():
        for filename, exptime in members:
            path = partials.get(filename)
            yield (read_partial_window(path, frame) if path is not None
                   else _empty_partial(filename, exptime, frame))

    return combine_partials(parts(), frame, sky_offsets)


def write_tile(path: str | os.PathLike, arrays: LayerArrays, box: Sequence[int]) -> Path:
    """Write a reduced tile (its arrays and the inputs it used), atomically."""
    primary = fits.PrimaryHDU()
    primary.header["MVMTYPE"] = ("TILE", "one tile of a tiled layer")
    for key, v in zip(("TILEX0", "TILEY0", "TILENX", "TILENY"), box, strict=True):
        primary.header[key] = int(v)
    used = fits.BinTableHDU.from_columns([
        fits.Column("FILE", "A200", array=np.array(arrays.files, dtype="U200")),
        fits.Column("USED", "L", array=np.array(arrays.used, dtype=bool)),
    ], name="INPUTS")
    hdul = fits.HDUList([
        primary,
        fits.ImageHDU(arrays.sci, name="SCI"), fits.ImageHDU(arrays.wht, name="WHT"),
        fits.ImageHDU(arrays.ctx, name="CTX"),
        fits.ImageHDU(arrays.nchips.astype(np.int32), name="NCHIPS"),
        fits.ImageHDU(arrays.exptime, name="EXPTIME"), used,
    ])
    with atomic_path(Path(path)) as tmp:
        hdul.writeto(tmp, overwrite=True)
    return Path(path)


# ------------------------------------------------------------------------------------------
# statistics independent of the tiling


@dataclass
class _ExactSum:
    """An exact sum of non-negative float32 values: integer mantissa sums per exponent."""

    parts: Counter

    @classmethod
    def of(cls, values: np.ndarray) -> _ExactSum:
        m, e = np.frexp(values.astype(np.float32))
        mant = (m.astype(np.float64) * (1 << 24)).astype(np.int64)
        out = Counter()
        for exp in np.unique(e):
            out[int(exp)] += int(mant[e == exp].sum())
        return cls(out)

    def add(self, other: _ExactSum) -> None:
        self.parts.update(other.parts)

    def value(self) -> Fraction:
        return sum((Fraction(v) * Fraction(2) ** (e - 24) for e, v in self.parts.items()),
                   Fraction(0))


def _hist(values: np.ndarray) -> Counter:
    uniq, counts = np.unique(values, return_counts=True)
    return Counter(dict(zip(uniq.tolist(), counts.tolist(), strict=True)))


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
    low = np.logical_or.reduceat(np.logical_or.reduceat(valid, ry, axis=0), rx, axis=1)
    blocks[np.ix_((y0 + ry) // factor, (x0 + rx) // factor)] |= low


def _kth_wht(tiles: Sequence[str | os.PathLike], k: int, hi_bucket: int | None = None) -> int:
    """Bits of the ``k``-th smallest WHT > 0 over the tiles (two 16-bit radix passes)."""
    counts = np.zeros(1 << 16, dtype=np.int64)
    for path in tiles:
        w = fits.getdata(path, "WHT")
        b = _bits(w[w > 0])
        if hi_bucket is None:
            counts += np.bincount(b >> 16, minlength=1 << 16)
        else:
            counts += np.bincount(b[(b >> 16) == hi_bucket] & 0xFFFF, minlength=1 << 16)
    cum = np.cumsum(counts)
    bucket = int(np.searchsorted(cum, k, side="right"))
    if hi_bucket is None:
        below = int(cum[bucket - 1]) if bucket else 0
        return _kth_wht(tiles, k - below, bucket)
    return (hi_bucket << 16) | bucket


def summarize_tiles(frame: Frame, tiles: Sequence[tuple[Sequence[int], str | os.PathLike]],
                    files: Sequence[str]) -> TileSummary:
    """Gather a tiled layer's statistics from its tile files.

    Parameters
    ----------
    frame : Frame
        The layer frame.
    tiles : sequence of (box, path)
        Each tile's ``[x0, y0, nx, ny]`` in the frame and its file (:func:`write_tile`).
    files : sequence of str
        The layer's inputs in layer order.
    """
    factor = max(1, math.ceil(max(frame.ny, frame.nx) / _MAX_BLOCKS))
    blocks = np.zeros((-(-frame.ny // factor), -(-frame.nx // factor)), dtype=bool)
    used = [False] * len(files)
    ncov, wht_n = 0, 0
    nexp_hist, expt_hist = Counter(), Counter()
    wht_sum = _ExactSum(Counter())
    for (x0, y0, _, _), path in tiles:
        with fits.open(path, memmap=False) as hdul:
            names = [str(f).strip() for f in hdul["INPUTS"].data["FILE"]]
            if names != [str(f) for f in files]:
                raise ValueError(f"{Path(path).name}: inputs differ from the layer's")
            used = [a or bool(b) for a, b in zip(used, hdul["INPUTS"].data["USED"], strict=True)]
            nchips = hdul["NCHIPS"].data
            covered = nchips > 0
            ncov += int(covered.sum())
            nexp_hist.update(_hist(nchips[covered]))
            expt_hist.update(_hist(hdul["EXPTIME"].data[covered]))
            wht = hdul["WHT"].data
            good = wht > 0
            wht_n += int(good.sum())
            wht_sum.add(_ExactSum.of(wht[good]))
            _or_blocks(blocks, np.isfinite(hdul["SCI"].data), x0, y0, factor)
    paths = [p for _, p in tiles]
    median = 0.0
    if wht_n:
        lo = _kth_wht(paths, (wht_n - 1) // 2)
        hi = lo if wht_n % 2 else _kth_wht(paths, wht_n // 2)
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
    return -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK


def _table_bytes(hdu: fits.BinTableHDU) -> bytes:
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    data = buf.getvalue()
    return data[_FITS_BLOCK:]  # the minimal primary header is one block


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


def write_tiled_layer(path: str | os.PathLike, frame: Frame,
                      tiles: Sequence[tuple[Sequence[int], str | os.PathLike]],
                      layer_name, records: Iterable, params: Mapping,
                      exptimes: Sequence[float], sky: Sequence[float], files: Sequence[str],
                      provenance=None, *, input_headers=None) -> Path:
    """Write a layer product from its tile files, atomically, with bounded memory.

    Parameters
    ----------
    path : path-like
        The product (its name must be the layer's name).
    frame : Frame
        The layer frame; the tiles must cover it exactly.
    tiles : sequence of (box, path)
        The tile boxes ``[x0, y0, nx, ny]`` and files (:func:`write_tile`).
    layer_name, records, params, provenance, input_headers
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
    summary = summarize_tiles(frame, tiles, files).layer_summary(exptimes, sky)
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
            for box, tile in tiles:
                with fits.open(tile, memmap=False) as hdul:
                    _write_pixels(f, start, shape, box, hdul[name].data, dtype)
            f.seek(start + _padded(nbytes))
        f.write(_table_bytes(h.hdrtab))
    return path
