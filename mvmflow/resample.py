"""The map step of the drizzle: one exposure's chips onto one layer frame, as a *partial*.

With EXP weights a drizzled layer is ``SCI = sum_i(w_i d_i) / sum_i(w_i)``, ``WHT =
sum_i(w_i)`` over exposures i (``ARCHITECTURE.md``, "Drizzle as map and reduce"). A
:class:`Partial` holds one exposure's two sums over the exposure's own bounding box in the
frame, placed by an absolute integer offset on the projection-cell plane; :func:`place` adds
partials into a layer frame (the reduce).

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

**Partial file** (:func:`write_partial`): PRIMARY (no data; ``FILENAME``, ``IPPPSSOO``,
``EXPTIME``, the frame ``PCELL PSCALE FRCRPIX1/2 FRNAXIS1/2``, the box ``BOXX0 BOXY0 BOXNX
BOXNY``, ``ABSOLUTE`` and ``PLANEX0 PLANEY0``, drizzle settings, per-chip ``C<i>*`` records,
``PARAMS`` as JSON, versions), then FLUX (float32), WEIGHT (float32), NCHIPS (uint8), each
with the box's TAN WCS.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from mvmflow.grid import Frame
from mvmflow.masks import good_pixel_mask, parse_bits, static_mask
from mvmflow.workflow import atomic_path

__all__ = [
    "Box",
    "Chip",
    "Partial",
    "Stack",
    "PARTIAL_VERSION",
    "chip_box",
    "drizzle_exposure",
    "drizzle_file",
    "input_units",
    "load_chips",
    "nominal_scale",
    "pixmap",
    "place",
    "read_partial",
    "read_partial_header",
    "write_partial",
]

log = logging.getLogger(__name__)

PARTIAL_VERSION = 1
"""Layout version of partial files (primary keyword ``PARTVER``)."""

KERNELS = ("square", "point", "turbo")
"""Flux-conserving drizzle kernels supported (MVM uses ``square``)."""

DEFAULT_STEP = 10
"""Spacing of the exactly evaluated pixel-map grid (the reference's ``stepsize``)."""

_PLANE_TOL = 1e-6
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
           step: int = DEFAULT_STEP) -> np.ndarray:
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
    2e-8 px for a WFC3/IR chip (SIP only); 0.4-0.5 s instead of 4-6 s for an 8 Mpix chip.

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

    Returns
    -------
    numpy.ndarray
        ``(ny, nx, 2)`` float64: 0-based target ``x`` and ``y`` of every chip pixel centre.
    """
    if int(step) != step or step < 1:
        raise ValueError(f"pixmap step must be a positive integer, got {step!r}")
    ny, nx = _chip_shape(chip_wcs, shape)
    target_wcs = _target_wcs(target)
    xs, ys = _samples(nx, int(step)), _samples(ny, int(step))
    gx, gy = np.meshgrid(xs, ys)
    fx, fy = _map_points(_without_det2im(chip_wcs), target_wcs, gx, gy)
    kx, ky = min(3, xs.size - 1), min(3, ys.size - 1)
    x, y = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
    offsets = _det2im_offsets(chip_wcs, (ny, nx))
    out = np.empty((ny, nx, 2), dtype=np.float64)
    for k, values in enumerate((fx, fy)):
        if xs.size == 1 or ys.size == 1:
            # a single row or column: evaluate exactly
            gx1, gy1 = np.meshgrid(x, y)
            out[..., k] = _map_points(chip_wcs, target_wcs, gx1, gy1)[k]
            continue
        from scipy.interpolate import RectBivariateSpline  # lazy: 0.8 s to import

        spline = RectBivariateSpline(ys, xs, values, kx=ky, ky=kx, s=0)
        out[..., k] = spline(y, x)
        if offsets[0] is not None:
            out[..., k] += spline(y, x, dy=1) * offsets[0]
        if offsets[1] is not None:
            out[..., k] += spline(y, x, dx=1) * offsets[1]
    return out


# --------------------------------------------------------------------------------------
# Bounding boxes


@dataclass(frozen=True)
class Box:
    """Integer box ``[x0, x0 + nx) x [y0, y0 + ny)`` in a frame's pixels."""

    x0: int
    y0: int
    nx: int
    ny: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.ny), slice(self.x0, self.x0 + self.nx)

    def union(self, other: Box) -> Box:
        x0, y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        x1 = max(self.x0 + self.nx, other.x0 + other.nx)
        y1 = max(self.y0 + self.ny, other.y0 + other.ny)
        return Box(x0, y0, x1 - x0, y1 - y0)


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
# Partials


def _plane_offset(frame: Frame) -> tuple[int, int] | None:
    """The frame's integer pixel offset on its projection-cell plane, or None."""
    x0, y0 = frame.x0, frame.y0
    ix, iy = round(x0), round(y0)
    if abs(x0 - ix) > _PLANE_TOL or abs(y0 - iy) > _PLANE_TOL:
        return None
    return int(ix), int(iy)


@dataclass(eq=False)
class Partial:
    """One exposure drizzled onto one frame: weighted-flux and weight sums over its box.

    Attributes
    ----------
    flux : numpy.ndarray
        float32 ``(ny, nx)``: ``sum(w * d)`` with ``d`` in e-/s (per output pixel, see the
        module notes), 0 where the weight is 0.
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
        the static mask).
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


def _chip_inputs(chip: Chip, s: _Settings, sky, cr_mask, static) -> tuple:
    """Data (float32, sky-subtracted, finite) and EXP weight map of one chip, with counts."""
    data = np.array(chip.data, dtype=np.float32)  # a copy we may modify
    dq = None
    if chip.dq is not None:
        dq = np.asarray(chip.dq)
        if s.resetbits:
            dq = dq & np.array(~s.resetbits, dtype=np.int64).astype(dq.dtype)
    good = good_pixel_mask(dq, s.final_bits, shape=data.shape)
    nstatic = 0
    if static is not None:
        keep = np.asarray(static, dtype=bool)
    elif s.static:
        keep = static_mask(data, s.static_sig)
    else:
        keep = None
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
    return data, weight, int(np.count_nonzero(good)), nstatic


def _accumulate(flux, weight, nchips, box: Box, sci, wht) -> None:
    """Add one chip's drizzle (``sci``, ``wht`` over ``box``) into the exposure arrays."""
    sy, sx = box.slices
    for r0 in range(0, box.ny, _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, box.ny)
        w = wht[r0:r1]
        covered = w > 0
        product = sci[r0:r1].astype(np.float64)
        product *= w
        product[~covered] = 0.0
        rows = slice(sy.start + r0, sy.start + r1)
        flux[rows, sx] += product.astype(np.float32)
        weight[rows, sx] += w
        nchips[rows, sx] += covered.astype(np.uint8)


def _drizzle_chip(chip: Chip, frame: Frame, box: Box, s: _Settings, inputs) -> tuple:
    """Drizzle one chip onto ``box`` of ``frame``; return (sci, wht, iscale).

    drizzle 3.0.0's ``nmiss``/``nskip`` return values are not meaningful (nmiss is -ny for a
    fully contained chip), so they are not kept.
    """
    from drizzle.resample import Drizzle

    data, wmap = inputs
    pm = pixmap(chip.wcs, frame, chip.shape, step=s.step)
    pm[..., 0] -= box.x0
    pm[..., 1] -= box.y0
    ratio = frame.scale / nominal_scale(chip)
    driz = Drizzle(kernel=s.kernel, out_shape=(box.ny, box.nx), fillval="INDEF",
                   disable_ctx=True)
    driz.add_image(
        data, exptime=float(chip.exptime), pixmap=pm, weight_map=wmap,
        wht_scale=1.0, pixfrac=s.pixfrac, in_units=input_units(chip.bunit),
        iscale=ratio * ratio, pixel_scale_ratio=ratio,
    )
    return driz.out_img, driz.out_wht, ratio * ratio


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
        empty = np.zeros((0, 0), dtype=np.float32)
        log.info("%s does not reach the frame", filename)
        return Partial(empty, empty.copy(), np.zeros((0, 0), np.uint8), frame, 0, 0,
                       filename, ipppssoo, exptime, dict(params), info)
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
        data, wmap, ngood, nstatic = _chip_inputs(chip, s, sky_c, cr, st)
        # Drizzle onto the chip's whole (unclipped) box, then keep the part on the frame:
        # drizzle clips input lines against its output array with an approximate outline,
        # which would weigh chip-edge pixels differently in frames that cut a chip
        # differently (neighbouring sky cells must agree in their overlap).
        full = chip_box(chip.wcs, frame, chip.shape, s.pixfrac, clip=False)
        sci, wht, iscale = _drizzle_chip(chip, frame, full, s, (data, wmap))
        del data, wmap
        cut = (slice(box.y0 - full.y0, box.y0 - full.y0 + box.ny),
               slice(box.x0 - full.x0, box.x0 - full.x0 + box.nx))
        sci, wht = sci[cut], wht[cut]
        local = Box(box.x0 - ebox.x0, box.y0 - ebox.y0, box.nx, box.ny)
        _accumulate(flux, weight, nchips, local, sci, wht)
        record.update(ngood=ngood, nstatic=nstatic, iscale=iscale, drizzled=True)
        log.info("%s[SCI,%d]: %d good pixels (%d static-masked), box %dx%d at (%d, %d)",
                 filename, chip.extver, ngood, nstatic, box.nx, box.ny, box.x0, box.y0)
    return Partial(flux, weight, nchips, frame, ebox.x0, ebox.y0, filename, ipppssoo,
                   exptime, dict(params), info)


def drizzle_file(path: str | os.PathLike, frame: Frame, params: dict, **kwargs) -> Partial:
    """:func:`load_chips` then :func:`drizzle_exposure` (keyword arguments passed on)."""
    return drizzle_exposure(load_chips(path), frame, params, **kwargs)


# --------------------------------------------------------------------------------------
# Files


def _versions() -> tuple[str, str]:
    import drizzle

    import mvmflow

    return mvmflow.__version__, getattr(drizzle, "__version__", "unknown")


def _frame_cards(frame: Frame) -> list[tuple]:
    return [
        ("PCELL", frame.projection_cell, "projection cell of the frame"),
        ("PSCALE", frame.scale, "[arcsec/px] frame pixel scale"),
        ("FRCRPIX1", frame.crpix1, "frame CRPIX1 (1-based)"),
        ("FRCRPIX2", frame.crpix2, "frame CRPIX2 (1-based)"),
        ("FRNAXIS1", frame.nx, "frame size along x"),
        ("FRNAXIS2", frame.ny, "frame size along y"),
    ]


def _primary_header(p: Partial) -> fits.Header:
    mvm_version, driz_version = _versions()
    ny, nx = p.shape
    cards = [
        ("MVMTYPE", "PARTIAL", "one exposure drizzled onto one frame"),
        ("PARTVER", PARTIAL_VERSION, "partial file layout version"),
        ("FILENAME", p.filename, "exposure file"),
        ("IPPPSSOO", p.ipppssoo, "exposure ipppssoo"),
        ("EXPTIME", p.exptime, "[s] exposure time (EXP weight)"),
        *_frame_cards(p.frame),
        ("BOXX0", p.box_x0, "box origin in the frame, x (0-based)"),
        ("BOXY0", p.box_y0, "box origin in the frame, y (0-based)"),
        ("BOXNX", nx, "box size along x"),
        ("BOXNY", ny, "box size along y"),
        ("ABSOLUTE", p.absolute, "frame is at an integer offset on its plane"),
    ]
    if p.absolute:
        cards += [("PLANEX0", p.x0, "box origin on the projection-cell plane, x"),
                  ("PLANEY0", p.y0, "box origin on the projection-cell plane, y")]
    s = _settings(p.params)
    cards += [
        ("KERNEL", s.kernel, "drizzle kernel"),
        ("PIXFRAC", s.pixfrac, "drizzle pixfrac"),
        ("FINLBITS", str(s.final_bits), "DQ flags counted as good"),
        ("RESETBIT", s.resetbits, "DQ flags cleared before masking"),
        ("STATMASK", s.static, "static mask applied"),
        ("STATSIG", s.static_sig, "static mask sigma"),
        ("WHTTYPE", "EXP", "input weight: EXPTIME x good-pixel mask"),
        ("OUTUNITS", "cps", "flux/weight is a count rate (e-/s)"),
        ("PIXSTEP", s.step, "pixel-map grid step (chip pixels)"),
        ("NCHIPIN", len(p.chips), "chips in the exposure"),
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
    header = fits.Header(cards)
    header["PARAMS"] = json.dumps(p.params, sort_keys=True, default=str)
    return header


def _image_hdu(name: str, data: np.ndarray, p: Partial, bunit: str) -> fits.ImageHDU:
    header = fits.Header()
    if not p.empty:
        wcs_header = p.window.header()
        for key in ("NAXIS1", "NAXIS2"):
            del wcs_header[key]
        header.extend(wcs_header)
    header["BUNIT"] = bunit
    return fits.ImageHDU(data=data if data.size else None, header=header, name=name)


def write_partial(partial: Partial, path: str | os.PathLike) -> Path:
    """Write a partial as FITS, atomically.

    Layout: PRIMARY (no data; identity, frame, box, parameters, per-chip records), FLUX
    (float32), WEIGHT (float32), NCHIPS (uint8), each image with the box's TAN WCS.
    """
    path = Path(path)
    hdul = fits.HDUList([
        fits.PrimaryHDU(header=_primary_header(partial)),
        _image_hdu("FLUX", np.ascontiguousarray(partial.flux, dtype=np.float32), partial,
                   "ELECTRONS/S*WEIGHT"),
        _image_hdu("WEIGHT", np.ascontiguousarray(partial.weight, dtype=np.float32), partial,
                   "WEIGHT"),
        _image_hdu("NCHIPS", np.ascontiguousarray(partial.nchips, dtype=np.uint8), partial,
                   "CHIPS"),
    ])
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True, output_verify="exception")
    return path


def _frame_from_header(h: fits.Header) -> Frame:
    return Frame(int(h["PCELL"]), float(h["PSCALE"]), float(h["FRCRPIX1"]),
                 float(h["FRCRPIX2"]), int(h["FRNAXIS1"]), int(h["FRNAXIS2"]))


def read_partial_header(path: str | os.PathLike) -> fits.Header:
    """The primary header of a partial file (identity, frame, box; no pixels read)."""
    header = fits.getheader(path, 0)
    if header.get("MVMTYPE") != "PARTIAL":
        raise ValueError(f"{Path(path).name} is not an mvmflow partial (MVMTYPE)")
    if header.get("PARTVER") != PARTIAL_VERSION:
        raise ValueError(f"{Path(path).name}: partial layout version {header.get('PARTVER')}, "
                         f"expected {PARTIAL_VERSION}")
    return header


def _native(data, dtype, shape) -> np.ndarray:
    if data is None:
        return np.zeros(shape, dtype=dtype)
    return np.asarray(data, dtype=np.dtype(dtype).newbyteorder("="))


def read_partial(path: str | os.PathLike) -> Partial:
    """Read a partial written by :func:`write_partial`."""
    header = read_partial_header(path)
    with fits.open(path, memmap=False) as hdul:
        shape = (int(header["BOXNY"]), int(header["BOXNX"]))
        flux = _native(hdul["FLUX"].data, np.float32, shape)
        weight = _native(hdul["WEIGHT"].data, np.float32, shape)
        nchips = _native(hdul["NCHIPS"].data, np.uint8, shape)
    chips = []
    for i in range(1, int(header["NCHIPIN"]) + 1):
        chips.append({
            "extver": header[f"C{i}EXTV"], "drizzled": header[f"C{i}DRIZ"],
            "in_units": header[f"C{i}UNIT"], "sky": header[f"C{i}SKY"],
            "iscale": header[f"C{i}ISCL"], "ngood": header[f"C{i}NGOD"],
            "nstatic": header[f"C{i}NSTA"],
        })
    return Partial(flux, weight, nchips, _frame_from_header(header), int(header["BOXX0"]),
                   int(header["BOXY0"]), header["FILENAME"], header["IPPPSSOO"],
                   float(header["EXPTIME"]), json.loads(header["PARAMS"]), chips)


# --------------------------------------------------------------------------------------
# Reduce helper


@dataclass
class Stack:
    """Sums of partials over a layer frame (float64 sums; see :func:`place`).

    ``SCI = flux / weight`` where ``weight > 0``; ``nchips`` is the number of chips and
    ``nexp`` the number of exposures with weight in each pixel.
    """

    frame: Frame
    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray
    nexp: np.ndarray
    filenames: list = field(default_factory=list)

    @classmethod
    def zeros(cls, frame: Frame) -> Stack:
        """An empty stack over ``frame``."""
        return cls(frame, np.zeros(frame.shape, np.float64), np.zeros(frame.shape, np.float64),
                   np.zeros(frame.shape, np.uint16), np.zeros(frame.shape, np.uint16))

    def sci(self, fillval: float = np.nan) -> np.ndarray:
        """``flux / weight`` as float32, ``fillval`` where the weight is 0."""
        out = np.full(self.flux.shape, fillval, dtype=np.float32)
        good = self.weight > 0
        out[good] = (self.flux[good] / self.weight[good]).astype(np.float32)
        return out


def _offset_in(partial: Partial, frame: Frame) -> tuple[int, int]:
    """Position of the partial box's pixel (0, 0) in ``frame`` (integers).

    Raises
    ------
    ValueError
        If the frames are on different planes or not pixel-aligned.
    """
    plane = _plane_offset(frame)
    same = (partial.frame.projection_cell == frame.projection_cell
            and partial.frame.scale == frame.scale)
    if same and plane is not None and partial.absolute:
        return partial.x0 - plane[0], partial.y0 - plane[1]
    dx, dy = frame.integer_offset_of(partial.frame)
    return dx + partial.box_x0, dy + partial.box_y0


def _sort_key(item) -> tuple:
    if isinstance(item, Partial):
        return (item.filename, item.x0, item.y0)
    h = read_partial_header(item)
    return (h["FILENAME"], int(h.get("PLANEX0", h["BOXX0"])), int(h.get("PLANEY0", h["BOXY0"])))


def _place_one(stack: Stack, partial: Partial) -> None:
    ox, oy = _offset_in(partial, stack.frame)
    ny, nx = partial.shape
    x0, x1 = max(ox, 0), min(ox + nx, stack.frame.nx)
    y0, y1 = max(oy, 0), min(oy + ny, stack.frame.ny)
    if x1 <= x0 or y1 <= y0:
        return
    src = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
    dst = (slice(y0, y1), slice(x0, x1))
    stack.flux[dst] += partial.flux[src]
    stack.weight[dst] += partial.weight[src]
    stack.nchips[dst] += partial.nchips[src]
    stack.nexp[dst] += partial.nchips[src] > 0


def place(partials: Iterable, frame: Frame, out: Stack | None = None) -> Stack:
    """Add partials into a layer frame, in a fixed order (float64 sums).

    Parameters
    ----------
    partials : iterable of Partial or path
        Paths are read one at a time (bounded memory). Items are added sorted by (exposure
        file name, plane offset), whatever the given order, so a rerun gives the same bits.
    frame : Frame
        The layer frame; partials must be on the same projection cell and scale, pixel-
        aligned with it (always true for fine frames). Pixels of a partial outside the frame
        are dropped.
    out : Stack, optional
        A stack to add to (e.g. an earlier sum, for incremental updates).

    Returns
    -------
    Stack
    """
    stack = Stack.zeros(frame) if out is None else out
    if stack.frame != frame:
        raise ValueError("place: 'out' is a stack over a different frame")
    items = sorted(partials, key=_sort_key)
    for item in items:
        partial = item if isinstance(item, Partial) else read_partial(item)
        if not partial.empty:
            _place_one(stack, partial)
        stack.filenames.append(partial.filename)
    return stack
