"""The map step of the drizzle: one exposure's chips onto one layer frame, as a *partial*.

With EXP weights a drizzled layer is ``SCI = sum_i(w_i d_i) / sum_i(w_i)``, ``WHT =
sum_i(w_i)`` over exposures i (docs/design.md, "Drizzle as map and reduce"). A
:class:`~mvmflow.partials.Partial` holds one exposure's two sums over the exposure's own
bounding box in the frame, placed by an integer offset (its frame and box origin);
:func:`mvmflow.combine.combine_partials` adds partials into a layer frame (the reduce).

What one chip's drizzle does (spec processing.md 1.7 "Final drizzle" and 8 "Mapping the
reference drizzle settings onto the drizzle package"):

- input weight ``w = EXPTIME x good``, with ``good = (DQ & ~resetbits & ~final_bits) == 0``,
  AND the static mask when ``params['static_mask']``, AND NOT the optional cosmic-ray mask,
  AND finite data (``final_wht_type=EXP``, ``wt_scl=exptime``, i.e. weight scale 1);
- input units from ``BUNIT``: ``.../S`` is ``in_units='cps'``, anything else ``'counts'``
  (divided by EXPTIME), as drizzlepac's ``set_units``; the output is a count rate (e-/s);
- ``drizzle.resample.Drizzle(kernel, out_shape=<chip box>, fillval=NaN, disable_ctx=True)``
  and ``add_image(data, exptime, pixmap, weight_map=w, pixfrac, in_units, iscale=r**2,
  pixel_scale_ratio=r, wht_scale=1)`` with ``r = frame scale / nominal chip scale``;
- the pixel map from :func:`pixmap` (the full WCS: SIP + NPOL + D2IM).

**Pixel-area convention (flux conservation).** FLT/FLC pixels are flat-fielded: a pixel
value is a surface brightness times the *nominal* pixel area ``s_nom**2`` (``s_nom`` =
``IDCSCALE``, or ``sqrt|det CD|`` without it; drizzlepac's ``wcslin_pscale``), not the true
(distorted) area ``A_k`` of pixel k. Drizzle with ``iscale = (s_out/s_nom)**2`` makes the
output a surface brightness per output pixel, so for a source

    sum_out(SCI) = sum_k d_k * A_k / s_nom**2    (d_k in e-/s)

i.e. the drizzled total is the input total corrected by the pixel-area map, and a flat
input ``d`` becomes a flat output ``d * (s_out/s_nom)**2``. This is what drizzlepac does.

**Partial sums.** ``flux = SCI_chip x WHT_chip`` summed over chips and ``weight = WHT``,
where ``SCI_chip``/``WHT_chip`` are one chip's drizzle outputs. ``flux`` is stored as
float32: drizzle itself computes and accumulates in float32, so the single float32 rounding
of the product (relative 6e-8) is below the kernel's own arithmetic error, and it halves the
largest intermediate file of the workflow. Every step is deterministic, so reruns are
bit-identical (files included: no dates or checksums are written).

**Weights.** Drizzle spreads each input pixel's weight over its footprint with fractions
summing to 1, so ``sum(weight) = EXPTIME x (good input pixels)`` and a fully covered output
pixel gets about ``EXPTIME x (s_out / s_true)**2``. Each chip is drizzled into its own box
(the reference drizzles all chips into one array; the results agree to float32 rounding), so
``nchips`` counts the chips with weight > 0 in each pixel.

**Bounding box.** Each chip's box is the integer box of the output pixels its (pixfrac-
shrunk) input pixels can touch, from the exact mapping of the chip's edge pixels, plus a
1-pixel margin, clipped to the frame; the exposure's box is the union of its chips' boxes.

**Differences from the reference, by design.** The static mask is computed per exposure
(see :mod:`mvmflow.masks`); the pixel map is an exact mapping on a ``stepsize`` grid with
bicubic interpolation and D2IM applied exactly (the reference's cdriz interpolates a 10-pixel
grid, which loses the column-scale D2IM structure; its star pixels differ from an exact-map
drizzle by ~1e-3 of the peak, ours by 2e-5 (ACS/WFC, NPOL) to 4e-8 (SIP only)). Only the
flux-conserving ``square``, ``turbo`` and ``point`` are accepted.

**Partial file**: written and read by :mod:`mvmflow.partials` only (docs/conventions.md,
"One owner per file type"): :func:`mvmflow.partials.write_partial` stores the covered row
spans of the three arrays; :class:`mvmflow.partials.PartialFile` reads them back, whole or by
window.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from mvmflow.grid import Frame
from mvmflow.masks import good_pixel_mask, parse_bits, static_cut, static_mask
from mvmflow.partials import Box, Partial, empty_partial

__all__ = [
    "Box",
    "Chip",
    "Partial",
    "chip_box",
    "drizzle_exposure",
    "drizzle_file",
    "input_units",
    "load_chips",
    "nominal_scale",
    "pixmap",
]

log = logging.getLogger(__name__)

KERNELS = ("square", "point", "turbo")
"""Flux-conserving drizzle kernels supported (MVM uses ``square``)."""

DEFAULT_STEP = 10
"""Spacing of the exactly evaluated pixel-map grid (the reference's ``stepsize``)."""

_ROW_BLOCK = 1024


# --------------------------------------------------------------------------------------
# Inputs


@dataclass
class Chip:
    """One chip (SCI extension) of an exposure, ready to drizzle.

    Attributes
    ----------
    data : numpy.ndarray
        SCI array, in ``bunit``.
    wcs : astropy.wcs.WCS
        The chip's full WCS (SIP + NPOL + D2IM lookup tables).
    exptime : float
        Exposure time in seconds (the primary ``EXPTIME``; the EXP weight).
    bunit : str
        ``BUNIT`` of the SCI extension (``ELECTRONS``, ``ELECTRONS/S``, ``COUNTS``).
    dq : numpy.ndarray or None
        DQ array; None means every pixel is good.
    extver : int
        EXTVER of the SCI extension.
    idcscale : float or None
        Nominal pixel scale in arcsec (``IDCSCALE``); None: from the CD matrix.
    filename : str
        The exposure's file name (the same for all chips of an exposure).
    """

    data: np.ndarray
    wcs: WCS
    exptime: float
    bunit: str = "ELECTRONS"
    dq: np.ndarray | None = None
    extver: int = 1
    idcscale: float | None = None
    filename: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the chip."""
        return tuple(np.shape(self.data))


def load_chips(path: str | os.PathLike, extvers: Sequence[int] | None = None) -> list[Chip]:
    """Read an exposure's chips (the only place this module reads exposure files).

    Uses :class:`mvmflow.exposure.Exposure` (SCI and DQ arrays, EXPTIME, BUNIT, IDCSCALE and
    the full chip WCS with SIP + NPOL + D2IM).

    Parameters
    ----------
    path : str or os.PathLike
        An ``_flt.fits`` / ``_flc.fits`` file.
    extvers : sequence of int, optional
        SCI extensions to read; default all, in file order.

    Returns
    -------
    list of Chip
        SCI as native float32, DQ as native integers (None without a DQ extension).
    """
    from mvmflow.exposure import Exposure

    exposure = Exposure.open(path)
    chips = []
    for extver in extvers or exposure.extvers:
        header = exposure.sci_header(extver)
        try:
            dq = exposure.dq(extver)
        except KeyError:
            dq = None
        idcscale = header.get("IDCSCALE")
        chips.append(Chip(
            data=np.asarray(exposure.data(extver), dtype=np.float32),
            wcs=exposure.chip_wcs(extver),
            exptime=exposure.exptime,
            bunit=str(header.get("BUNIT", exposure.bunit) or ""),
            dq=None if dq is None else np.asarray(dq, dtype=dq.dtype.newbyteorder("=")),
            extver=extver,
            idcscale=float(idcscale) if idcscale else None,
            filename=exposure.filename,
        ))
    if not chips:
        raise ValueError(f"{Path(path).name} has no SCI extension to drizzle")
    return chips


def input_units(bunit: str) -> str:
    """drizzle's ``in_units`` for a ``BUNIT``: ``'cps'`` for a rate (``.../S``), else
    ``'counts'`` (as drizzlepac; a blank BUNIT is taken as ``ELECTRONS/S``, as the reference).

    No gain is applied: ACS and WFC3 FLT/FLC data are in electrons (SBC in counts, gain 1).
    WFPC2 data in DN would need the gain folded into ``Chip.data`` by the caller.
    """
    text = (bunit or "").strip()
    if not text:
        return "cps"
    return "cps" if "/S" in text.upper() else "counts"


def nominal_scale(chip: Chip) -> float:
    """The chip's nominal pixel scale in arcsec: ``IDCSCALE``, else ``sqrt|det CD|``.

    This is drizzlepac's ``wcslin_pscale`` (stwcs ``make_orthogonal_cd``).
    """
    if chip.idcscale:
        return float(chip.idcscale)
    cd = chip.wcs.celestial.pixel_scale_matrix
    return math.sqrt(abs(float(np.linalg.det(cd)))) * 3600.0


# --------------------------------------------------------------------------------------
# Pixel map


def _target_wcs(target) -> WCS:
    return target.wcs if isinstance(target, Frame) else target


def _chip_shape(chip_wcs: WCS, shape) -> tuple[int, int]:
    if shape is None:
        if chip_wcs.pixel_shape is None:
            raise ValueError("pixmap needs a shape: the chip WCS has no pixel_shape")
        nx, ny = chip_wcs.pixel_shape
        return int(ny), int(nx)
    ny, nx = shape
    return int(ny), int(nx)


def _samples(n: int, step: int) -> np.ndarray:
    """Sample positions 0, step, 2 step, ... and n - 1; at least 4 when n >= 4."""
    pos = np.arange(0, n, step, dtype=np.float64)
    if pos[-1] != n - 1:
        pos = np.append(pos, float(n - 1))
    if pos.size < 4 and n >= 4:
        pos = np.linspace(0.0, n - 1.0, 4)
    return pos


def _without_det2im(chip_wcs: WCS) -> WCS:
    if chip_wcs.det2im1 is None and chip_wcs.det2im2 is None:
        return chip_wcs
    smooth = chip_wcs.deepcopy()
    smooth.det2im1 = None
    smooth.det2im2 = None
    return smooth


def _map_points(chip_wcs: WCS, target_wcs: WCS, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Exact mapping of chip pixels (0-based) to target pixels through the sky (degrees).

    The sky position is never interpolated, so the RA wrap at 0/360 is harmless.
    """
    ra, dec = chip_wcs.all_pix2world(x, y, 0)
    fx, fy = target_wcs.world_to_pixel_values(ra, dec)
    return np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)


def _det2im_offsets(chip_wcs: WCS, shape: tuple[int, int]) -> list[np.ndarray | None]:
    """Per axis, the D2IM correction (pixels) as arrays broadcastable to ``shape``.

    A one-row (one-column) lookup table does not depend on y (x), so it is evaluated on a
    single row (column) and broadcast; a 2-D table on every pixel.
    """
    ny, nx = shape
    offsets: list[np.ndarray | None] = [None, None]
    for axis, table in enumerate((chip_wcs.det2im1, chip_wcs.det2im2)):
        if table is None:
            continue
        single = chip_wcs.deepcopy()
        if axis == 0:
            single.det2im2 = None
        else:
            single.det2im1 = None
        rows, cols = np.shape(table.data)
        if rows == 1:
            x = np.arange(nx, dtype=np.float64)
            pts = np.column_stack([x, np.zeros_like(x)])
            offsets[axis] = (single.det2im(pts, 0) - pts)[:, axis][None, :]
        elif cols == 1:
            y = np.arange(ny, dtype=np.float64)
            pts = np.column_stack([np.zeros_like(y), y])
            offsets[axis] = (single.det2im(pts, 0) - pts)[:, axis][:, None]
        else:
            y, x = np.indices(shape, dtype=np.float64)
            pts = np.column_stack([x.ravel(), y.ravel()])
            offsets[axis] = (single.det2im(pts, 0) - pts)[:, axis].reshape(shape)
    return offsets


def pixmap(chip_wcs: WCS, target, shape: tuple[int, int] | None = None,
           step: int = DEFAULT_STEP, box: Box | None = None) -> np.ndarray:
    """Full-distortion pixel map from chip pixels to target (frame) pixels.

    The smooth part of the mapping (SIP + NPOL lookup tables + TAN, then the target's WCS) is
    evaluated exactly on a grid every ``step`` pixels that includes the last row and column,
    and interpolated to every pixel with a bicubic spline; the detector-to-image (D2IM)
    correction, which has column-scale structure, is applied exactly to first order:
    ``map(p + d) = map(p) + J(p) d`` with ``J`` the spline's Jacobian (``|d| < 0.1 px``, so
    the neglected term is below 1e-6 px).

    Accuracy (tests/test_resample.py): 8e-4 px worst case against the exact per-pixel
    mapping (``drizzle.utils.calc_pixmap``) for a full ACS/WFC chip with SIP + NPOL + D2IM at
    ``step=10`` (4e-4 px at ``step=8``; the residual is the NPOL tables' bilinear kinks), and
    2e-8 px for a WFC3/IR chip (SIP only); about 0.15 s instead of 4-6 s for an 8 Mpix
    chip (the spline is evaluated as a tensor product, :class:`MapSpline`).

    For a :class:`~mvmflow.grid.Frame` target the map is made on the frame's grid
    (:meth:`~mvmflow.grid.Frame.grid_frame`), rounded to :data:`MAP_QUANTUM` and shifted onto the frame (and the
    box) by integers, which is then exact: every frame of one grid gets the same map to the
    bit, whichever job makes it (docs/data_path.md, "Pixel maps").

    Parameters
    ----------
    chip_wcs : astropy.wcs.WCS
        The chip's full WCS.
    target : Frame or astropy.wcs.WCS
        The output frame (a TAN frame of the grid, or any celestial WCS).
    shape : tuple of int, optional
        ``(ny, nx)`` of the chip; default from ``chip_wcs.pixel_shape``.
    step : int
        Grid spacing of the exact evaluation, in chip pixels.
    box : Box, optional
        Frame targets only: positions relative to this box of the frame (its ``x0, y0``
        subtracted).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx, 2)`` float64: 0-based target ``x`` and ``y`` of every chip pixel centre.
    """
    if not isinstance(target, Frame):
        if box is not None:
            raise ValueError("pixmap: a box is a window of a Frame target")
        return _pixmap(chip_wcs, target, shape, step)[0]
    grid = target.grid_frame()

    def finish(strip):  # rounded and shifted strip by strip, while in cache
        quantize_map(strip)
        shift_map(strip, target, grid, box)

    pm, done = _pixmap(chip_wcs, grid.wcs, shape, step, finish)
    if not done:  # samples beyond 2**20 px (or NaN): the whole map's range decides
        # (no |pm| temporary: 134 MB for a full ACS/WFC chip)
        if max(np.nanmax(pm, initial=0.0), -np.nanmin(pm, initial=0.0)) < 2.0 ** 21:
            quantize_map(pm)
        shift_map(pm, target, grid, box)
    return pm


def quantize_map(pm: np.ndarray) -> None:
    """Round map values (in place) to multiples of :data:`MAP_QUANTUM`."""
    pm *= 1.0 / MAP_QUANTUM
    np.rint(pm, out=pm)
    pm *= MAP_QUANTUM


def shift_map(pm: np.ndarray, frame: Frame, grid: Frame, box: Box | None = None) -> None:
    """Shift a map onto ``grid`` (last axis ``x, y``) by integers onto ``frame`` (and
    ``box`` of it), in place: exact for quantized values below 2**21 px."""
    dx, dy = frame.integer_offset_of(grid)
    if box is not None:
        dx, dy = dx - int(box.x0), dy - int(box.y0)
    if dx:
        pm[..., 0] += float(dx)
    if dy:
        pm[..., 1] += float(dy)


EXACT_SAMPLES = 2.0 ** 20
"""Exact map samples below this bound keep the whole map below the 2**21 px where
:func:`pixmap` rounds it (the spline does not overshoot by 2**20 px)."""

MAP_QUANTUM = 2.0 ** -30
"""Pixel maps onto frames are rounded to multiples of 2**-30 px (1e-9 px, far below their
8e-4 px accuracy), so that shifting positions below 2**21 px by integers is exact."""


def _pixmap(chip_wcs: WCS, target, shape: tuple[int, int] | None = None,
            step: int = DEFAULT_STEP, finish=None) -> tuple[np.ndarray, bool]:
    """:func:`pixmap` onto any celestial WCS ``target``: the exact mapping on the ``step``
    grid, the spline between, D2IM to first order; and whether ``finish`` (a function of a
    strip of rows of the map, in place) was applied, which it is when every exact sample is
    below 2**20 px (the map then stays below 2**21 px, where :func:`pixmap` rounds it)."""
    if int(step) != step or step < 1:
        raise ValueError(f"pixmap step must be a positive integer, got {step!r}")
    ny, nx = _chip_shape(chip_wcs, shape)
    target_wcs = _target_wcs(target)
    xs, ys = _samples(nx, int(step)), _samples(ny, int(step))
    gx, gy = np.meshgrid(xs, ys)
    fx, fy = _map_points(_without_det2im(chip_wcs), target_wcs, gx, gy)
    x, y = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
    out = np.empty((ny, nx, 2), dtype=np.float64)
    if xs.size == 1 or ys.size == 1:
        # a single row or column of samples: evaluate exactly
        out[..., 0], out[..., 1] = _map_points(chip_wcs, target_wcs, *np.meshgrid(x, y))
        return out, False
    if finish is not None:
        with np.errstate(invalid="ignore"):
            if not max(np.abs(fx).max(), np.abs(fy).max()) < EXACT_SAMPLES:
                finish = None
    offsets = _det2im_offsets(chip_wcs, (ny, nx))
    splines = [MapSpline(xs, ys, values, (ny, nx), offsets) for values in (fx, fy)]
    # by strips of rows: temporaries of a strip, not of the chip (docs/speed.md,
    # "Memory allocation")
    for r0 in range(0, ny, _MAP_STRIP):
        r1 = min(r0 + _MAP_STRIP, ny)
        for k, spline in enumerate(splines):
            out[r0:r1, :, k] = spline.rows(r0, r1)
        if finish is not None:
            finish(out[r0:r1])
    return out, finish is not None


_MAP_STRIP = 32  # rows of a chip per spline evaluation in _pixmap (docs/speed.md, "Pixel maps")


class MapSpline:
    """One target coordinate of a chip's pixel map between its exact grid samples: the
    interpolating (bi)cubic spline plus the first-order D2IM term (:func:`pixmap`).

    The spline is FITPACK's (``scipy.interpolate.RectBivariateSpline``, ``s=0``), evaluated
    here as a tensor product, ``v(r, c) = sum_m wy[r, m] table[iy[r] + m, c]``: the row
    basis ``wy`` (B-splines, non-zero from ``iy``) against ``table = C Bx^T``, the
    coefficients contracted once with the column basis. A one-row D2IM ``x`` table (ACS)
    is folded into ``table`` (``+ (C' Bx'^T) * ox``, the ``x`` derivative's coefficients
    ``C'``); other D2IM tables add their derivative term. :meth:`rows` and :meth:`at` do
    the same operations in the same order, so a map computed at some pixels is the whole
    map's to the bit (:func:`mvmflow.crsubtract.pixmap_at`). About 4 times faster than
    FITPACK's own evaluation with its derivatives (docs/speed.md, "Pixel maps").

    Parameters
    ----------
    xs, ys : numpy.ndarray
        Sample columns and rows (at least 2 each, increasing).
    values : numpy.ndarray
        ``(ys.size, xs.size)`` exact target coordinate at the samples.
    shape : tuple of int
        ``(ny, nx)`` of the chip.
    offsets : list
        The D2IM offsets per axis (:func:`_det2im_offsets`), or None.
    """

    def __init__(self, xs, ys, values, shape, offsets):
        from scipy.interpolate import RectBivariateSpline  # lazy: 0.8 s to import

        ny, nx = shape
        kx, ky = min(3, xs.size - 1), min(3, ys.size - 1)
        spline = RectBivariateSpline(ys, xs, values, kx=ky, ky=kx, s=0)
        ty, tx, c = spline.tck
        coef = c.reshape(ty.size - ky - 1, tx.size - kx - 1)
        x, y = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
        wx, ix = _basis(x, tx, kx)
        self._wy, self._iy = _basis(y, ty, ky)
        self._table = _contract(coef, wx, ix)
        self._terms = []  # (row basis, index, table, offsets) of the D2IM terms not folded
        ox, oy = offsets
        if ox is not None:
            dx = _contract(_derivative(coef, tx, kx, 1), *_basis(x, tx[1:-1], kx - 1))
            if ox.shape[0] == 1:
                self._table += dx * ox
            else:
                self._terms.append((self._wy, self._iy, dx, ox))
        if oy is not None:
            dy = _contract(_derivative(coef, ty, ky, 0), wx, ix)
            self._terms.append((*_basis(y, ty[1:-1], ky - 1), dy, oy))

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """``(r1 - r0, nx)`` the values on chip rows ``r0:r1``."""
        out = _rows_of(self._table, self._wy, self._iy, r0, r1)
        for w, i, table, off in self._terms:
            out += _rows_of(table, w, i, r0, r1) * _rows(off, r0, r1)
        return out

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The values at chip pixels ``(rows, cols)`` (1-D integer arrays)."""
        out = _points_of(self._table, self._wy, self._iy, rows, cols)
        for w, i, table, off in self._terms:
            r = rows if off.shape[0] > 1 else 0
            c = cols if off.shape[1] > 1 else 0
            out += _points_of(table, w, i, rows, cols) * off[r, c]
        return out


def _basis(x: np.ndarray, t: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """B-spline basis of degree ``k`` on knots ``t`` at ``x``: ``(n, k + 1)`` values and the
    index of the first non-zero B-spline of each point."""
    from scipy.interpolate import BSpline

    m = BSpline.design_matrix(x, t, k)
    if not np.array_equal(m.indptr, np.arange(x.size + 1) * (k + 1)):
        raise RuntimeError("unexpected B-spline design matrix layout")  # scipy changed
    return m.data.reshape(-1, k + 1), m.indices.reshape(-1, k + 1)[:, 0].copy()


def _contract(coef: np.ndarray, w: np.ndarray, i: np.ndarray) -> np.ndarray:
    """``coef`` contracted with a column basis: ``t[:, c] = sum_m w[c, m] coef[:, i[c] + m]``."""
    table = coef[:, i] * w[:, 0]
    for m in range(1, w.shape[1]):
        table += coef[:, i + m] * w[:, m]
    return table


def _derivative(coef: np.ndarray, t: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Coefficients of a spline's derivative along ``axis`` (degree ``k - 1`` on knots
    ``t[1:-1]``): ``k (c[j+1] - c[j]) / (t[j+k+1] - t[j+1])``."""
    shape = [1, 1]
    shape[axis] = -1
    return k * np.diff(coef, axis=axis) / (t[k + 1:-1] - t[1:-k - 1]).reshape(shape)


def _rows_of(table, w, i, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of ``sum_m w[r, m] table[i[r] + m]`` (rows of one knot interval
    at once)."""
    out = np.empty((r1 - r0, table.shape[1]), dtype=np.float64)
    ii, ww = i[r0:r1], w[r0:r1]
    cuts = np.flatnonzero(ii[1:] != ii[:-1]) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, r1 - r0], strict=True):
        j, block = int(ii[a]), out[a:b]
        np.multiply(ww[a:b, :1], table[j], out=block)
        for m in range(1, w.shape[1]):
            block += ww[a:b, m:m + 1] * table[j + m]
    return out


def _points_of(table, w, i, rows, cols) -> np.ndarray:
    """``sum_m w[r, m] table[i[r] + m, c]`` at points ``(rows, cols)``: :func:`_rows_of`'s
    operations, in its order."""
    ii, ww = i[rows], w[rows]
    out = ww[:, 0] * table[ii, cols]
    for m in range(1, w.shape[1]):
        out += ww[:, m] * table[ii + m, cols]
    return out


def _rows(offsets: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of a D2IM offset array (one row broadcast to all: itself)."""
    return offsets if offsets.shape[0] == 1 else offsets[r0:r1]


# --------------------------------------------------------------------------------------
# Bounding boxes


def _edge_jacobian(chip_wcs: WCS, frame: Frame, shape: tuple[int, int]):
    """Frame positions of the chip's edge pixel centres and bounds on the local Jacobian.

    Returns ``(fx, fy, jac)`` where ``jac[k, a]`` bounds ``|d X_k / d x_a|`` (``X_k`` frame
    coordinate k, ``x_a`` chip axis a) over the edges: along an edge from neighbouring edge
    pixels, across it from the pixels one row or column inward.
    """
    ny, nx = shape
    x, y = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
    inner_y, inner_x = min(1.0, ny - 1.0), min(1.0, nx - 1.0)
    edges = [  # (edge points, inward neighbours, chip axis along the edge)
        ((x, np.zeros(nx)), (x, np.full(nx, inner_y)), 0),
        ((x, np.full(nx, ny - 1.0)), (x, np.full(nx, ny - 1.0 - inner_y)), 0),
        ((np.zeros(ny), y), (np.full(ny, inner_x), y), 1),
        ((np.full(ny, nx - 1.0), y), (np.full(ny, nx - 1.0 - inner_x), y), 1),
    ]
    fxs, fys = [], []
    jac = np.zeros((2, 2))
    for (ex, ey), (ix, iy), axis in edges:
        fx, fy = _map_points(chip_wcs, frame.wcs, ex, ey)
        gx, gy = _map_points(chip_wcs, frame.wcs, ix, iy)
        fxs.append(fx)
        fys.append(fy)
        for k, (f, g) in enumerate(((fx, gx), (fy, gy))):
            if f.size > 1:
                jac[k, axis] = max(jac[k, axis], float(np.nanmax(np.abs(np.diff(f)), initial=0)))
            jac[k, 1 - axis] = max(jac[k, 1 - axis],
                                   float(np.nanmax(np.abs(g - f), initial=0)))
    return np.concatenate(fxs), np.concatenate(fys), jac


def chip_box(chip_wcs: WCS, frame: Frame, shape: tuple[int, int] | None = None,
             pixfrac: float = 1.0, margin: int = 1, clip: bool = True) -> Box | None:
    """The integer box of frame pixels a chip's drizzle can touch, or None.

    The chip outline is mapped exactly (the image of a chip's interior lies within the image
    of its edges). A drop (an input pixel shrunk by ``pixfrac``) reaches
    ``pixfrac/2 * (|dX/dx| + |dX/dy|)`` beyond its centre along frame axis X; frame pixel i
    covers ``[i - 0.5, i + 0.5)``. The box is grown by ``margin`` pixels and, with ``clip``,
    clipped to the frame (without, it may extend past the frame's edges: it is then a
    window of the frame's plane).
    """
    ny, nx = _chip_shape(chip_wcs, shape)
    fx, fy, jac = _edge_jacobian(chip_wcs, frame, (ny, nx))
    good = np.isfinite(fx) & np.isfinite(fy)
    if not good.any():
        return None
    half = 0.5 * float(pixfrac) * jac.sum(axis=1)
    lo_x = math.floor(float(fx[good].min()) - half[0] + 0.5) - margin
    hi_x = math.floor(float(fx[good].max()) + half[0] + 0.5) + margin
    lo_y = math.floor(float(fy[good].min()) - half[1] + 0.5) - margin
    hi_y = math.floor(float(fy[good].max()) + half[1] + 0.5) + margin
    if clip:
        lo_x, lo_y = max(lo_x, 0), max(lo_y, 0)
        hi_x, hi_y = min(hi_x, frame.nx - 1), min(hi_y, frame.ny - 1)
    if hi_x < lo_x or hi_y < lo_y:
        return None
    return Box(lo_x, lo_y, hi_x - lo_x + 1, hi_y - lo_y + 1)


# --------------------------------------------------------------------------------------
# Drizzling an exposure


@dataclass(frozen=True)
class _Settings:
    kernel: str
    pixfrac: float
    final_bits: object
    resetbits: int
    static: bool
    static_sig: float
    step: int


def _settings(params: dict) -> _Settings:
    kernel = str(params.get("kernel", "square")).lower()
    if kernel not in KERNELS:
        raise ValueError(f"drizzle kernel {kernel!r} is not supported: use one of {KERNELS}")
    wht_type = str(params.get("wht_type", "EXP")).upper()
    if wht_type != "EXP":
        raise ValueError(f"only EXP weighting is implemented, not wht_type={wht_type!r}")
    pixfrac = float(params.get("pixfrac", 1.0))
    if not 0.0 < pixfrac <= 1.0:
        raise ValueError(f"pixfrac must be in (0, 1], got {pixfrac}")
    final_bits = params.get("final_bits", 0)
    parse_bits(final_bits)  # validate
    resetbits = parse_bits(params.get("resetbits", 0)) or 0
    return _Settings(
        kernel=kernel,
        pixfrac=pixfrac,
        final_bits=final_bits,
        resetbits=int(resetbits),
        static=bool(params.get("static_mask", False)),
        static_sig=float(params.get("static_sig", 4.0)),
        step=int(params.get("stepsize", DEFAULT_STEP)),
    )


def _per_chip(value, n: int, what: str) -> list:
    if value is None or np.isscalar(value):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{what}: expected one per chip ({n}), got {len(values)}")
    return values


def _chip_inputs(chip: Chip, s: _Settings, sky, cr_mask, static, cut=None) -> tuple:
    """Data (float32, sky-subtracted, finite) and EXP weight map of one chip, with counts
    and the static mask's cut (:func:`mvmflow.masks.static_cut`; given as ``cut``, it is
    not computed again; None without a computed static mask)."""
    data = np.array(chip.data, dtype=np.float32)  # a copy we may modify
    dq = None
    if chip.dq is not None:
        dq = np.asarray(chip.dq)
        if s.resetbits:
            dq = dq & np.array(~s.resetbits, dtype=np.int64).astype(dq.dtype)
    good = good_pixel_mask(dq, s.final_bits, shape=data.shape)
    nstatic = 0
    if static is not None:
        keep, cut = np.asarray(static, dtype=bool), None
    elif s.static:
        if cut is None:
            cut = static_cut(data, s.static_sig)
        keep = static_mask(data, s.static_sig, cut)
    else:
        keep, cut = None, None
    if keep is not None:
        nstatic = int(np.count_nonzero(good & ~keep))
        good &= keep
    if cr_mask is not None:
        good &= ~np.asarray(cr_mask, dtype=bool)
    finite = np.isfinite(data)
    if not finite.all():
        good &= finite
        data[~finite] = 0.0
    if sky:
        data -= np.float32(sky)
    weight = good.astype(np.float32)
    weight *= np.float32(chip.exptime)
    return data, weight, int(np.count_nonzero(good)), nstatic, cut


def _accumulate(flux, weight, nchips, box: Box, sci, wht) -> None:
    """Add one chip's drizzle (``sci``, ``wht`` over ``box``) into the exposure arrays."""
    sy, sx = box.slices
    for r0 in range(0, box.ny, _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, box.ny)
        w = wht[r0:r1]
        covered = w > 0
        # float32 x float32 is exact in float64, so this single-rounded float32 product is
        # the float64 product rounded to float32, to the bit
        product = np.multiply(sci[r0:r1], w, dtype=np.float32)
        product[~covered] = 0.0
        rows = slice(sy.start + r0, sy.start + r1)
        flux[rows, sx] += product
        weight[rows, sx] += w
        nchips[rows, sx] += covered.view(np.uint8)


def _drizzle_chip(chip: Chip, frame: Frame, box: Box, s: _Settings, inputs,
                  part: Box | None = None) -> tuple:
    """Drizzle one chip onto ``box`` of ``frame``; return (sci, wht, iscale).

    ``part``: only the output pixels in this box of ``frame`` are wanted (the chip's box
    clipped to the frame); drizzle is then given the input window of the chip pixels that
    can reach it (:func:`_input_window`), and ``box`` keeps its other pixels' contributions
    from the rest of the chip out of the wanted ones unchanged: every wanted pixel gets the
    same contributions, in the same order, to the bit.

    drizzle 3.0.0's ``nmiss``/``nskip`` return values are not meaningful (nmiss is -ny for a
    fully contained chip), so they are not kept.
    """
    from drizzle.resample import Drizzle

    data, wmap = inputs
    pm = pixmap(chip.wcs, frame, chip.shape, step=s.step, box=box)
    ratio = frame.scale / nominal_scale(chip)
    window = {}
    if part is not None and part != box:
        window = _input_window(pm, Box(part.x0 - box.x0, part.y0 - box.y0, part.nx, part.ny),
                               2.0 + 2.0 / ratio)
    driz = Drizzle(kernel=s.kernel, out_shape=(box.ny, box.nx), fillval="INDEF",
                   disable_ctx=True)
    driz.add_image(
        data, exptime=float(chip.exptime), pixmap=pm, weight_map=wmap,
        wht_scale=1.0, pixfrac=s.pixfrac, in_units=input_units(chip.bunit),
        iscale=ratio * ratio, pixel_scale_ratio=ratio, **window,
    )
    return driz.out_img, driz.out_wht, ratio * ratio


_WINDOW_PAD = 2  # input pixels around the ones that can reach the wanted output


def _input_window(pm: np.ndarray, part: Box, reach: float) -> dict:
    """``xmin, xmax, ymin, ymax`` (inclusive) for drizzle's ``add_image``: the chip pixels
    whose mapped centre lies within ``reach`` output pixels of ``part`` (in the map's
    coordinates), plus :data:`_WINDOW_PAD`; ``{}`` (the whole chip) when that is all of it.

    ``reach`` bounds how far an input pixel's drizzle footprint extends from its centre
    (half a pixfrac-shrunk input pixel, ``0.5 / ratio`` output pixels at most, with room for
    the distortion); drizzle forms each pixel's footprint from the whole map, so a window
    changes which pixels are drizzled, not how (docs/speed.md, "Pixel maps").
    """
    ny, nx = pm.shape[:2]
    near = np.ones((ny, nx), dtype=bool)
    for k, (lo, n) in enumerate(((part.x0, part.nx), (part.y0, part.ny))):
        with np.errstate(invalid="ignore"):
            near &= pm[..., k] >= lo - 0.5 - reach
            near &= pm[..., k] <= lo + n - 0.5 + reach
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    if rows.size == 0:
        return {}  # nothing seems to reach it (the box says otherwise): the whole chip
    x0, x1 = max(int(cols[0]) - _WINDOW_PAD, 0), min(int(cols[-1]) + _WINDOW_PAD, nx - 1)
    y0, y1 = max(int(rows[0]) - _WINDOW_PAD, 0), min(int(rows[-1]) + _WINDOW_PAD, ny - 1)
    if (x0, x1, y0, y1) == (0, nx - 1, 0, ny - 1) or x1 == 0 or y1 == 0:
        return {}  # the whole chip (drizzle reads a zero maximum as "none")
    return {"xmin": x0, "xmax": x1, "ymin": y0, "ymax": y1}


def _exposure_identity(chips: Sequence[Chip]) -> tuple[str, str, float]:
    names = {c.filename for c in chips}
    times = {float(c.exptime) for c in chips}
    if len(names) != 1 or len(times) != 1:
        raise ValueError(f"chips of one exposure must share filename and exptime: "
                         f"{sorted(names)}, {sorted(times)}")
    filename, exptime = names.pop(), times.pop()
    if not exptime > 0:
        raise ValueError(f"{filename}: EXPTIME must be positive for EXP weighting, got {exptime}")
    try:
        from mvmflow.names import ipppssoo_of

        ipppssoo = ipppssoo_of(filename)
    except ValueError:
        ipppssoo = ""
    return filename, ipppssoo, exptime


def drizzle_exposure(chips: Sequence[Chip], frame: Frame, params: dict, sky=0.0,
                     cr_masks=None, *, static_masks=None) -> Partial:
    """Drizzle one exposure's chips onto ``frame`` and return its :class:`Partial`.

    Parameters
    ----------
    chips : sequence of Chip
        The exposure's chips (:func:`load_chips`), drizzled in this order.
    frame : Frame
        The layer frame (a sky cell, a trimmed layer, a mosaic tile...).
    params : dict
        Layer parameters (:func:`mvmflow.params.layer_parameters`); used keys: ``kernel``
        (square), ``pixfrac`` (1.0), ``final_bits`` (0), ``resetbits`` (0), ``static_mask``
        (False), ``static_sig`` (4), ``stepsize`` (pixel-map grid, 10), ``wht_type`` (EXP).
        The whole dict is recorded in the partial.
    sky : float or sequence of float
        Sky to subtract before drizzling, in the chip's ``BUNIT`` per pixel (like
        ``MDRIZSKY``), one value or one per chip. Normally 0: sky offsets are applied in the
        reduce (``sum(w (d - s)) = sum(w d) - s sum(w)``).
    cr_masks : sequence of (numpy.ndarray or None), optional
        Per chip, True where a cosmic ray was found (weight set to 0).
    static_masks : sequence of (numpy.ndarray or None), optional
        Per chip, a static mask (True = good) to use instead of computing one, e.g. the
        reference's run-wide mask (:func:`mvmflow.masks.combine_static_masks`).

    Returns
    -------
    Partial
        Empty (shape ``(0, 0)``) when no chip reaches the frame.
    """
    chips = list(chips)
    if not chips:
        raise ValueError("drizzle_exposure needs at least one chip")
    filename, ipppssoo, exptime = _exposure_identity(chips)
    s = _settings(params)
    n = len(chips)
    skies = [float(v or 0.0) for v in _per_chip(sky, n, "sky")]
    crs = _per_chip(cr_masks, n, "cr_masks")
    statics = _per_chip(static_masks, n, "static_masks")
    boxes = [chip_box(c.wcs, frame, c.shape, s.pixfrac) for c in chips]
    used = [b for b in boxes if b is not None]
    info = []
    if not used:
        log.info("%s does not reach the frame", filename)
        return empty_partial(frame, filename, ipppssoo, exptime, params, info)
    ebox = used[0]
    for b in used[1:]:
        ebox = ebox.union(b)
    flux = np.zeros((ebox.ny, ebox.nx), dtype=np.float32)
    weight = np.zeros_like(flux)
    nchips = np.zeros(flux.shape, dtype=np.uint8)
    for chip, box, sky_c, cr, st in zip(chips, boxes, skies, crs, statics, strict=True):
        record = {"extver": chip.extver, "in_units": input_units(chip.bunit), "sky": sky_c}
        info.append(record)
        if box is None:
            record.update(ngood=0, nstatic=0, iscale=0.0, drizzled=False)
            continue
        data, wmap, ngood, nstatic, scut = _chip_inputs(chip, s, sky_c, cr, st)
        # Drizzle onto the chip's whole (unclipped) box, then keep the part on the frame:
        # drizzle clips input lines against its output array with an approximate outline,
        # which would weigh chip-edge pixels differently in frames that cut a chip
        # differently (neighbouring sky cells must agree in their overlap).
        full = chip_box(chip.wcs, frame, chip.shape, s.pixfrac, clip=False)
        sci, wht, iscale = _drizzle_chip(chip, frame, full, s, (data, wmap), box)
        del data, wmap
        cut = (slice(box.y0 - full.y0, box.y0 - full.y0 + box.ny),
               slice(box.x0 - full.x0, box.x0 - full.x0 + box.nx))
        sci, wht = sci[cut], wht[cut]
        local = Box(box.x0 - ebox.x0, box.y0 - ebox.y0, box.nx, box.ny)
        _accumulate(flux, weight, nchips, local, sci, wht)
        record.update(ngood=ngood, nstatic=nstatic, iscale=iscale, drizzled=True)
        if scut is not None:
            record["static_cut"] = scut
        log.info("%s[SCI,%d]: %d good pixels (%d static-masked), box %dx%d at (%d, %d)",
                 filename, chip.extver, ngood, nstatic, box.nx, box.ny, box.x0, box.y0)
    return Partial(flux, weight, nchips, frame, ebox.x0, ebox.y0, filename, ipppssoo,
                   exptime, dict(params), info)


def drizzle_file(path: str | os.PathLike, frame: Frame, params: dict, **kwargs) -> Partial:
    """:func:`load_chips` then :func:`drizzle_exposure` (keyword arguments passed on)."""
    return drizzle_exposure(load_chips(path), frame, params, **kwargs)
