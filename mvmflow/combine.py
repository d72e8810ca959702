"""REDUCE: sum the partials of a layer into its SCI, WHT and context arrays.

With EXP weights a drizzled layer is ``SCI = sum(w_i (d_i - s_i)) / sum(w_i)`` and
``WHT = sum(w_i)`` over the layer's exposures ``i`` (docs/design.md, "Drizzle as map and reduce"). The MAP step
(:mod:`mvmflow.resample`) gives one *partial* per (exposure, layer frame); this module adds
them, in the given order, into a tile of the layer frame (:mod:`mvmflow.tiles` cuts every
layer into tiles, so the sums below are bounded by a tile, docs/design.md).

A partial is any object with these attributes (no class is imported from the resample
module; see :class:`Partial` for the protocol):

``file`` (or ``filename``)
    Input file name (key of the sky offsets, and of the records in :mod:`mvmflow.products`).
``exptime``
    Exposure time in seconds (exposure-time coverage map).
``frame``, ``box_x0``, ``box_y0`` (as :class:`mvmflow.partials.Partial`)
    The frame the exposure was drizzled onto and the box origin in it: the partial is
    placed exactly by ``layer_frame.integer_offset_of(frame) + (box_x0, box_y0)``, which
    also works for coarse frames whose plane origin is fractional.
``flux``
    ``sum(w * d)`` per output pixel (count rate times weight), shape ``(ny, nx)``.
``weight``
    ``sum(w)`` per output pixel (EXP weights), same shape.
``nchips``
    uint8 number of the exposure's chips whose footprint covers each pixel, same shape, or
    None (then ``weight > 0`` stands in for it).

The sky offsets ``s_i`` are applied here, not in the maps, by linearity:
``sum(w_i (d_i - s_i)) = flux_i - s_i * weight_i``.

Determinism: every sum runs in float64 in the order of ``partials``, so the same partials
in the same order give bit-identical arrays; another order changes the values only by
float64 rounding.

Memory: the partials may be a generator (e.g. reading one partial file at a time); only the
layer accumulators and the current partial are held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mvmflow.grid import Frame

__all__ = [
    "CTX_BITS",
    "LayerArrays",
    "Partial",
    "combine_partials",
    "context_planes",
    "input_name",
    "overlap_slices",
    "placement",
]

CTX_BITS = 32
"""Exposures per int32 context plane."""

_ROWS_PER_BLOCK = 512
_BLOCK_PIXELS = 1 << 16  # pixels per block of a partial's sum (combine_partials)


class Partial(Protocol):
    """What :func:`combine_partials` reads from a MAP output (attributes only)."""

    file: str
    exptime: float
    frame: Frame
    box_x0: int
    box_y0: int
    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray | None


@dataclass
class LayerArrays:
    """The reduced arrays of one layer on its frame.

    Attributes
    ----------
    frame : Frame
        The layer frame; every array has shape ``frame.shape`` = ``(ny, nx)``.
    sci : ndarray of float32
        Weighted mean count rate, NaN where ``wht == 0``.
    wht : ndarray of float32
        Sum of the weights.
    ctx : ndarray of int32
        Context: bit ``k % 32`` of plane ``k // 32`` is set where exposure ``k`` (layer
        order, :attr:`files`) has weight > 0. Shape ``(ny, nx)`` for up to 32 exposures,
        else ``(nplanes, ny, nx)``.
    nexp : ndarray of uint16
        Exposures with weight > 0 per pixel.
    nchips : ndarray of uint16
        Chip footprints per pixel (sum of the partials' ``nchips``).
    exptime : ndarray of float32
        Exposure time per pixel: sum of ``exptime`` of the exposures whose chips cover it.
    files : tuple of str
        Input files in layer (context-bit) order.
    exptimes : tuple of float
        Their exposure times.
    sky : tuple of float
        The sky offset subtracted from each input (0 when none was given).
    used : tuple of bool
        Whether each input has weight > 0 somewhere in the frame.
    """

    frame: Frame
    sci: np.ndarray
    wht: np.ndarray
    ctx: np.ndarray
    nexp: np.ndarray
    nchips: np.ndarray
    exptime: np.ndarray
    files: tuple[str, ...]
    exptimes: tuple[float, ...]
    sky: tuple[float, ...]
    used: tuple[bool, ...] = ()

    @property
    def nplanes(self) -> int:
        """Number of int32 context planes."""
        return 1 if self.ctx.ndim == 2 else self.ctx.shape[0]

    def context_bit(self, k: int) -> np.ndarray:
        """Boolean map of pixels where exposure ``k`` (layer order) has weight > 0."""
        if not 0 <= k < len(self.files):
            raise IndexError(f"exposure index {k} outside 0..{len(self.files) - 1}")
        plane = self.ctx if self.ctx.ndim == 2 else self.ctx[k // CTX_BITS]
        return (plane.view(np.uint32) >> np.uint32(k % CTX_BITS)) & np.uint32(1) == 1


def context_planes(nexposures: int) -> int:
    """Number of int32 context planes for ``nexposures`` inputs (at least 1)."""
    return max(1, -(-int(nexposures) // CTX_BITS))


def placement(partial, frame: Frame) -> tuple[int, int]:
    """Integer position of ``partial``'s pixel (0, 0) in ``frame``.

    Parameters
    ----------
    partial : Partial
        With ``frame`` (the frame it was drizzled onto) and ``box_x0``, ``box_y0``.
    frame : Frame
        The layer frame.

    Raises
    ------
    ValueError
        If the frames are not on one pixel grid (see :meth:`Frame.integer_offset_of`).
    """
    dx, dy = frame.integer_offset_of(partial.frame)
    return dx + int(partial.box_x0), dy + int(partial.box_y0)


def overlap_slices(partial, frame: Frame):
    """Slices ``(frame_slice, partial_slice)`` of the part of ``partial`` inside ``frame``.

    Returns None when the partial does not overlap the frame.
    """
    ix, iy = placement(partial, frame)
    ny, nx = np.shape(partial.weight)
    x_lo, x_hi = max(ix, 0), min(ix + nx, frame.nx)
    y_lo, y_hi = max(iy, 0), min(iy + ny, frame.ny)
    if x_lo >= x_hi or y_lo >= y_hi:
        return None
    return (
        (slice(y_lo, y_hi), slice(x_lo, x_hi)),
        (slice(y_lo - iy, y_hi - iy), slice(x_lo - ix, x_hi - ix)),
    )


def input_name(partial) -> str:
    """The input file of a partial: its ``file``, else its ``filename`` attribute."""
    name = getattr(partial, "file", None) or getattr(partial, "filename", None)
    if not name:
        raise ValueError(f"partial {partial!r} has neither 'file' nor 'filename'")
    return str(name)


def _check_partial(p) -> None:
    shape = np.shape(p.weight)
    if len(shape) != 2 or np.shape(p.flux) != shape:
        raise ValueError(
            f"partial of {input_name(p)!r}: flux {np.shape(p.flux)} and weight "
            f"{shape} must be 2-D arrays of one shape"
        )
    if p.nchips is not None and np.shape(p.nchips) != shape:
        raise ValueError(
            f"partial of {input_name(p)!r}: nchips shape {np.shape(p.nchips)} differs from {shape}"
        )


def combine_partials(
    partials: Iterable[Partial],
    frame: Frame,
    sky_offsets: Mapping[str, float] | None = None,
) -> LayerArrays:
    """Sum partials into the layer frame (the REDUCE step).

    Parameters
    ----------
    partials : iterable of Partial
        In layer order: exposure ``k`` gets context bit ``k``. May be a generator.
    frame : Frame
        The layer frame. Parts of partials outside it are ignored.
    sky_offsets : mapping of str to float, optional
        Sky offset per input file (:func:`mvmflow.skymatch.match_sky`), in the partials'
        data units; missing files get 0.
    Returns
    -------
    LayerArrays

    Raises
    ------
    ValueError
        For a file given twice, a partial off the layer's pixel grid or with inconsistent
        array shapes.
    """
    sky_offsets = dict(sky_offsets or {})
    shape = frame.shape
    flux = np.zeros(shape, dtype=np.float64)
    wsum = np.zeros(shape, dtype=np.float64)
    nexp = np.zeros(shape, dtype=np.uint16)
    nchips = np.zeros(shape, dtype=np.uint16)
    expmap = np.zeros(shape, dtype=np.float32)
    # a sequence's length is known: allocate every context plane at once (no stacking copy)
    n_known = len(partials) if hasattr(partials, "__len__") else None
    block = (
        np.zeros((context_planes(n_known), *shape), dtype=np.uint32)
        if n_known is not None else None
    )
    planes: list[np.ndarray] = list(block) if block is not None else []
    files: list[str] = []
    seen: set[str] = set()
    exptimes: list[float] = []
    skies: list[float] = []
    used: list[bool] = []

    for k, p in enumerate(partials):
        _check_partial(p)
        name = input_name(p)
        if name in seen:
            raise ValueError(f"input {name!r} appears twice in the layer's partials")
        seen.add(name)
        files.append(name)
        exptimes.append(float(p.exptime))
        s = float(sky_offsets.get(name, 0.0))
        skies.append(s)
        used.append(False)
        if k // CTX_BITS == len(planes):
            planes.append(np.zeros(shape, dtype=np.uint32))
        sl = overlap_slices(p, frame)
        if sl is None:
            continue
        (fy, fx), (py, px) = sl
        plane = planes[k // CTX_BITS]
        bit = np.uint32(1 << (k % CTX_BITS))
        exptime = np.float32(p.exptime)
        # a block of rows at a time, so the temporaries stay in the cache (docs/speed.md,
        # "Layer jobs"); every pixel gets the same operations in the same order
        step = max(1, _BLOCK_PIXELS // max(1, fx.stop - fx.start))
        for r in range(0, fy.stop - fy.start, step):
            n = min(step, fy.stop - fy.start - r)
            fs = (slice(fy.start + r, fy.start + r + n), fx)
            ps = (slice(py.start + r, py.start + r + n), px)
            w = np.asarray(p.weight[ps], dtype=np.float64)
            f = np.array(p.flux[ps], dtype=np.float64)  # a float64 copy, modified below
            # pixels without weight (or with non-finite flux) add nothing
            has = w > 0
            has &= np.isfinite(f)
            if s != 0.0:
                f -= s * w
            np.add(flux[fs], f, out=flux[fs], where=has)
            np.add(wsum[fs], w, out=wsum[fs], where=has)
            del f, w
            used[-1] = used[-1] or bool(has.any())
            nexp[fs] += has
            np.bitwise_or(plane[fs], bit, out=plane[fs], where=has)
            if p.nchips is None:
                cover = has
                nchips[fs] += has
            else:
                chips = np.asarray(p.nchips[ps])
                cover = chips > 0
                nchips[fs] += chips.astype(np.uint16)
            np.add(expmap[fs], exptime, out=expmap[fs], where=cover)

    if not planes:
        planes.append(np.zeros(shape, dtype=np.uint32))
    if n_known is not None and len(files) != n_known:
        raise ValueError(f"expected {n_known} partials, got {len(files)}")
    sci = np.empty(shape, dtype=np.float32)
    for r in range(0, shape[0], _ROWS_PER_BLOCK):
        rows = slice(r, r + _ROWS_PER_BLOCK)
        w = wsum[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            sci[rows] = np.where(w > 0, flux[rows] / w, np.nan)
    del flux
    wht = wsum.astype(np.float32)
    del wsum
    if block is not None and len(block) > 1:
        ctx = block.view(np.int32)
    elif len(planes) == 1:
        ctx = planes[0].view(np.int32)
    else:
        ctx = np.stack(planes).view(np.int32)
    return LayerArrays(
        frame=frame, sci=sci, wht=wht, ctx=ctx, nexp=nexp, nchips=nchips, exptime=expmap,
        files=tuple(files), exptimes=tuple(exptimes), sky=tuple(skies), used=tuple(used),
    )
