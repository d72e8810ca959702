"""Sky offsets shared by every sky cell of a layer group.

A layer of one detector and filter usually spans several sky cells of a projection cell,
and its exposures straddle them. Solving the sky offsets separately per sky cell would give
each cell its own solution (its frame sees other parts of the overlaps), so the layers of
neighbouring sky cells would disagree in their shared strip. Instead the offsets are solved
once per *group* (projection cell, instrument, detector, filter, exposure-time class) from
all the group's fine-scale partials placed on the projection-cell plane, and every sky
cell's reduce subtracts the same offsets. The fine grids of all sky cells of a projection
cell are pixel-aligned, so placing is slicing.

Offsets are in count rate per fine (0.04") pixel; :func:`offsets_for_scale` converts them
to another scale (a pedestal per pixel scales with the pixel area).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from mvmflow.grid import PC_SCALE, Frame
from mvmflow.partials import PartialFile
from mvmflow.skymatch import SkyMatch, sky_match

__all__ = ["LazyMergedPartial", "MergedPartial", "group_sky", "group_sky_files",
           "lazy_merge_on_plane", "merge_on_plane", "offsets_for_scale", "read_sky_offsets"]


@dataclass
class MergedPartial:
    """One exposure's partials of several sky cells merged on a common frame."""

    file: str
    exptime: float
    frame: Frame
    box_x0: int
    box_y0: int
    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray


def _name(p) -> str:
    return str(getattr(p, "filename", None) or p.file)


def _layout(ref: Frame, boxes: list[tuple[int, int, int, int]], names: list[str]):
    """The union frame of ``boxes`` (``(x0, y0, nx, ny)`` in ``ref`` pixels) and, per file in
    order of first appearance, ``(name, indices, (x0, y0, x1, y1))``: its partials and its
    merged box in union pixels."""
    xmin, ymin = min(b[0] for b in boxes), min(b[1] for b in boxes)
    xmax = max(b[0] + b[2] for b in boxes)
    ymax = max(b[1] + b[3] for b in boxes)
    union = ref.window(xmin, ymin, xmax - xmin, ymax - ymin)
    by_file: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_file.setdefault(name, []).append(i)
    files = []
    for name, idx in by_file.items():
        files.append((name, idx, (min(boxes[i][0] for i in idx) - xmin,
                                  min(boxes[i][1] for i in idx) - ymin,
                                  max(boxes[i][0] + boxes[i][2] for i in idx) - xmin,
                                  max(boxes[i][1] + boxes[i][3] for i in idx) - ymin)))
    return union, files


def merge_on_plane(partials: Iterable) -> tuple[Frame, list[MergedPartial]]:
    """Merge partials (of possibly several sky-cell frames) per exposure on one frame.

    The frames must share a projection cell and a scale and be pixel-aligned (fine scale).
    A pixel present in several partials of one exposure (the sky cells' overlap strips)
    holds the same drizzled value in each; the first one is kept.

    Returns
    -------
    frame : Frame
        The union box on the projection-cell plane.
    merged : list of MergedPartial
        One per exposure, in order of first appearance.
    """
    partials = [p for p in partials if not getattr(p, "empty", False)]
    if not partials:
        raise ValueError("no partial to merge")
    ref = partials[0].frame
    boxes = []
    for p in partials:
        dx, dy = ref.integer_offset_of(p.frame)
        x0, y0 = dx + int(p.box_x0), dy + int(p.box_y0)
        ny, nx = p.flux.shape
        boxes.append((x0, y0, nx, ny))
    union, files = _layout(ref, boxes, [_name(p) for p in partials])
    xmin, ymin = union.offset_of(ref)
    xmin, ymin = -int(round(xmin)), -int(round(ymin))
    merged = []
    for name, idx, (bx0, by0, bx1, by1) in files:
        flux = np.zeros((by1 - by0, bx1 - bx0), np.float32)
        weight = np.zeros_like(flux)
        nchips = np.zeros(flux.shape, np.uint8)
        for i in reversed(idx):  # the first partial wins where they overlap
            x0, y0, nx, ny = boxes[i]
            sl = (slice(y0 - ymin - by0, y0 - ymin - by0 + ny),
                  slice(x0 - xmin - bx0, x0 - xmin - bx0 + nx))
            p = partials[i]
            has = p.weight > 0
            flux[sl][has] = p.flux[has]
            weight[sl][has] = p.weight[has]
            if getattr(p, "nchips", None) is not None:
                nchips[sl][has] = p.nchips[has]
        merged.append(MergedPartial(name, float(partials[idx[0]].exptime), union, bx0, by0,
                                    flux, weight, nchips))
    return union, merged


def group_sky(partials: Iterable, stat: str = "median", **kwargs) -> SkyMatch:
    """Sky offsets of a layer group from all its fine partials (see the module notes)."""
    frame, merged = merge_on_plane(partials)
    return sky_match(merged, frame, stat, **kwargs)


# ------------------------------------------------------------------------------------------
# the same from partial files, without holding them


@dataclass
class _Part:
    file: PartialFile
    x0: int  # box origin in the merged partial's coordinates
    y0: int
    nx: int
    ny: int


@dataclass
class _Shape:
    shape: tuple[int, int]


def _picked(start: int, stop: int, step: int, lo: int, hi: int) -> tuple[int, int]:
    """Indices ``k`` with ``lo <= start + k * step < hi`` and ``start + k*step < stop``."""
    n = len(range(start, stop, step))
    k0 = max(0, -(-(lo - start) // step))
    k1 = min(n, -(-(hi - start) // step))
    return k0, max(k0, k1)


@dataclass
class LazyMergedPartial:
    """One exposure's partial files merged on a common frame, read only where asked.

    Stands for :class:`MergedPartial` in :func:`mvmflow.skymatch.sky_match`: ``read(slices)``
    gives ``(flux, weight)`` of a region exactly as the merged arrays would (where partials
    of the exposure overlap, the first one wins), reading only the rows of that region from
    the files (:meth:`mvmflow.partials.PartialFile.read_arrays`, strides included).
    """

    file: str
    exptime: float
    frame: Frame
    box_x0: int
    box_y0: int
    parts: list
    shape: tuple[int, int]

    @property
    def weight(self) -> _Shape:
        """Only the shape (for :func:`mvmflow.combine.placement`)."""
        return _Shape(self.shape)

    def read(self, key: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = (k.indices(n) for k, n in zip(key, self.shape, strict=True))
        out_shape = (len(range(*ys)), len(range(*xs)))
        flux = np.zeros(out_shape, np.float32)
        weight = np.zeros(out_shape, np.float32)
        for part in reversed(self.parts):  # the first partial wins where they overlap
            r0, r1 = _picked(*ys, part.y0, part.y0 + part.ny)
            c0, c1 = _picked(*xs, part.x0, part.x0 + part.nx)
            if r0 >= r1 or c0 >= c1:
                continue
            fy0 = ys[0] + r0 * ys[2] - part.y0
            fx0 = xs[0] + c0 * xs[2] - part.x0
            rows = slice(fy0, fy0 + (r1 - r0 - 1) * ys[2] + 1, ys[2])
            cols = slice(fx0, fx0 + (c1 - c0 - 1) * xs[2] + 1, xs[2])
            arrays = part.file.read_arrays(("flux", "weight"), rows, cols)
            f, w = arrays["flux"], arrays["weight"]
            has = w > 0
            flux[r0:r1, c0:c1][has] = f[has]
            weight[r0:r1, c0:c1][has] = w[has]
        return flux, weight


def lazy_merge_on_plane(paths: Iterable) -> tuple[Frame, list[LazyMergedPartial]]:
    """:func:`merge_on_plane` of partial files, reading only their headers
    (:meth:`mvmflow.partials.PartialFile.open`)."""
    opened = [pf for pf in (PartialFile.open(p) for p in paths) if not pf.empty]
    if not opened:
        raise ValueError("no partial to merge")
    ref = opened[0].frame
    boxes = []
    for pf in opened:
        x0, y0 = pf.placement(ref)
        boxes.append((x0, y0, pf.box.nx, pf.box.ny))
    union, files = _layout(ref, boxes, [pf.filename for pf in opened])
    xmin, ymin = union.offset_of(ref)
    xmin, ymin = -int(round(xmin)), -int(round(ymin))
    merged = []
    for name, idx, (bx0, by0, bx1, by1) in files:
        parts = [_Part(opened[i], boxes[i][0] - xmin - bx0, boxes[i][1] - ymin - by0,
                       boxes[i][2], boxes[i][3]) for i in idx]
        merged.append(LazyMergedPartial(name, opened[idx[0]].exptime, union, bx0, by0, parts,
                                        (by1 - by0, bx1 - bx0)))
    return union, merged


def group_sky_files(paths: Iterable, stat: str = "median", **kwargs) -> SkyMatch:
    """:func:`group_sky` of partial files, holding only the overlap being measured.

    The same offsets, bit for bit, as reading every partial first; memory is bounded by one
    pair of exposures' overlap, not by the number of exposures.
    """
    frame, merged = lazy_merge_on_plane(paths)
    return sky_match(merged, frame, stat, **kwargs)


def offsets_for_scale(offsets: Mapping[str, float], scale: float) -> dict[str, float]:
    """Convert per-fine-pixel offsets to per-pixel offsets at ``scale`` (arcsec/px)."""
    factor = (float(scale) / PC_SCALE) ** 2
    return {k: float(v) * factor for k, v in offsets.items()}


def read_sky_offsets(path, names, scale: float) -> dict[str, float]:
    """The offsets of the exposures ``names`` from a sky-group file (rule ``sky``), per pixel
    at ``scale``; exposures the file does not list are left out (their offset is 0)."""
    import json
    from pathlib import Path

    names = set(names)
    group = json.loads(Path(path).read_text())["offsets"]
    return offsets_for_scale({k: v for k, v in group.items() if k in names}, scale)
