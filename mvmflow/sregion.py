"""``S_REGION``: the sky outline of a product's data, one polygon per connected region.

The reference (``processing_utils.compute_sregion``) traces the corners of each connected
region of the non-NaN SCI mask at full resolution after a dilation/erosion by 11 px. Here,
cheaply and with bounded memory:

1. the valid-data mask is reduced to blocks of ``f x f`` pixels (a block is set when any
   of its pixels is valid; ``f`` keeps the block grid within ``max_blocks`` per side), read
   a band of rows at a time;
2. blocks closer than ``merge_px`` pixels are joined (binary dilation of the block mask)
   and the joined mask is labelled with 8-connectivity (scipy.ndimage), in raster order;
3. each region's polygon is the convex hull of its blocks' outer corners, so it contains
   every valid pixel of the region completely (pixel edges, not just centres). Concave
   outlines are not followed: the hull is the documented simplification.

Polygon vertices are counter-clockwise in pixel coordinates, converted to (RA, Dec) with
the frame's WCS and written as ``POLYGON ICRS ra1 dec1 ra2 dec2 ...`` (not closed, as the
reference's drizzled products), the regions joined by a space.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from mvmflow.grid import Frame

__all__ = ["block_mask", "block_polygons", "polygons_to_s_region", "region_polygons", "s_region"]


def _valid(chunk: np.ndarray) -> np.ndarray:
    if chunk.dtype == bool:
        return chunk
    return np.isfinite(chunk)


def block_mask(data: np.ndarray, factor: int) -> np.ndarray:
    """Reduce ``data``'s valid mask (finite values, or a boolean mask) to ``factor``-px blocks."""
    ny, nx = data.shape
    by, bx = -(-ny // factor), -(-nx // factor)
    out = np.zeros((by, bx), dtype=bool)
    band = factor * max(1, 1024 // factor)
    for r0 in range(0, ny, band):
        m = _valid(data[r0:r0 + band])
        h = m.shape[0]
        hb = -(-h // factor)
        pad = np.zeros((hb * factor, bx * factor), dtype=bool)
        pad[:h, :nx] = m
        out[r0 // factor:r0 // factor + hb] = pad.reshape(hb, factor, bx, factor).any(axis=(1, 3))
    return out


def region_polygons(
    data: np.ndarray, *, max_blocks: int = 1024, merge_px: int = 11
) -> list[np.ndarray]:
    """Convex outlines of the connected valid regions of ``data``, in 0-based pixels.

    Parameters
    ----------
    data : ndarray
        SCI array (valid where finite) or a boolean mask.
    max_blocks : int
        Largest block-grid size per axis.
    merge_px : int
        Regions closer than this (in pixels) are one region.

    Returns
    -------
    list of ndarray of shape (n, 2)
        ``(x, y)`` vertices, counter-clockwise, one array per region in raster order.
    """
    ny, nx = data.shape
    factor = max(1, math.ceil(max(ny, nx) / max_blocks))
    return block_polygons(block_mask(data, factor), factor, nx, ny, merge_px=merge_px)


def block_polygons(low: np.ndarray, factor: int, nx: int, ny: int, *,
                   merge_px: int = 11) -> list[np.ndarray]:
    """Convex outlines of the connected regions of a block mask (see :func:`region_polygons`).

    ``low`` is the valid mask reduced to ``factor``-px blocks of an ``(ny, nx)`` array
    (:func:`block_mask`), so it can be gathered piece by piece for arrays not in memory.
    """
    if not low.any():
        return []
    grow = math.ceil(merge_px / factor) if merge_px > 0 else 0
    joined = ndimage.binary_dilation(low, iterations=grow) if grow else low
    labels, n = ndimage.label(joined, structure=np.ones((3, 3), dtype=bool))
    polygons = []
    for region in range(1, n + 1):
        iy, ix = np.nonzero(low & (labels == region))
        if iy.size == 0:
            continue
        # per block row only the outermost blocks can give hull corners; np.nonzero is in
        # raster order, so a row's first and last entries are its leftmost and rightmost
        rows, first = np.unique(iy, return_index=True)
        last = np.r_[first[1:], iy.size] - 1
        r = np.concatenate([rows, rows]).astype(np.float64)
        c = np.concatenate([ix[first], ix[last]]).astype(np.float64)
        x_lo, x_hi = c * factor - 0.5, np.minimum((c + 1) * factor, nx) - 0.5
        y_lo, y_hi = r * factor - 0.5, np.minimum((r + 1) * factor, ny) - 0.5
        pts = np.concatenate([
            np.column_stack([x_lo, y_lo]), np.column_stack([x_hi, y_lo]),
            np.column_stack([x_hi, y_hi]), np.column_stack([x_lo, y_hi]),
        ])
        pts = np.unique(pts, axis=0)
        hull = ConvexHull(pts)
        polygons.append(pts[hull.vertices])
    return polygons


def polygons_to_s_region(polygons: list[np.ndarray], frame: Frame, digits: int = 9) -> str:
    """``POLYGON ICRS ...`` text of pixel polygons on ``frame``; ``''`` for none."""
    wcs = frame.wcs
    parts = []
    for poly in polygons:
        ra, dec = wcs.pixel_to_world_values(poly[:, 0], poly[:, 1])
        coords = " ".join(f"{a:.{digits}f} {d:.{digits}f}"
                          for a, d in zip(np.atleast_1d(ra) % 360.0, np.atleast_1d(dec),
                                          strict=True))
        parts.append(f"POLYGON ICRS {coords}")
    return " ".join(parts)


def s_region(data: np.ndarray, frame: Frame, *, max_blocks: int = 1024,
             merge_px: int = 11, digits: int = 9) -> str:
    """The ``S_REGION`` value of ``data`` on ``frame``; ``''`` when nothing is valid."""
    if data.shape != frame.shape:
        raise ValueError(f"data shape {data.shape} differs from the frame's {frame.shape}")
    polys = region_polygons(data, max_blocks=max_blocks, merge_px=merge_px)
    return polygons_to_s_region(polys, frame, digits)
