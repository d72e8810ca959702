"""The final drizzle of a cosmic-ray job by subtraction from the separate drizzle.

An exposure's final partial (its drizzle without the cosmic-ray pixels) differs from its
separate partial (the same drizzle with them, already made for the median) only by the
contributions of the pixels that were good there and are masked now, a fraction of a per
cent of a chip. Drizzle's sums are linear in the input pixels, so::

    final = separate - drizzle(only the masked pixels weighted)

and only the masked pixels need drizzling (docs/speed.md, "Cosmic-ray rejection").

**Packing.** drizzle's ``tdriz`` computes every input pixel's footprint whatever its
weight, so the masked pixels are packed into a small image: pixel k becomes the centre of
a 3 x 3 block holding its own 3 x 3 neighbourhood of the pixel map (the data and weight
only at the centre), blocks side by side and separated by a column of NaN, a row of NaN
above and below (a 5 x (4N + 1) image). Why this is the full chip's drizzle of those
pixels (drizzle's ``src/cdrizzlebox.c`` and ``cdrizzlemap.c``):

- the square kernel's footprint of pixel (i, j) is the quadrilateral of the map at
  (i +- pixfrac/2, j +- pixfrac/2), bilinearly interpolated from the 3 x 3 neighbourhood
  (``interpolate_four_points``, used for pixels at least one pixel inside the image's low
  edges and two inside its high edges, which every block centre is); ``turbo`` and
  ``point`` use the pixel's own map value. The overlaps (``boxer``), the weight
  ``w / jacobian`` and the running updates (``update_data``) then depend on the footprint
  and on the pixel's value and weight alone, and pixels of zero weight change nothing;
- every other pixel of the packed image touches a NaN of the map, so drizzle skips it
  without computing a footprint;
- the scan limits (``init_image_scanner``) map the input's corners: the first corner reads
  the NaN at (0, 0), so drizzle scans the whole (shrunk) input box, i.e. every block.

A pixel on the chip's outermost row or column (the low edges) or its two outermost (the
high ones) is interpolated in the full chip by ``interpolate_point``, which extrapolates
the map linearly past the edge; its block holds that linear extrapolation, so its
footprint agrees to float64 rounding (1e-13 px; exactly with ``pixfrac = 1``, where all
these sums are exact). Inside, the contributions are the full chip's to the bit
(tests/test_crsubtract.py).

**Compact output.** With ``pixfrac = 1`` the square kernel's corners are sums of quarters
of map values, exact for multiples of :data:`~mvmflow.resample.MAP_QUANTUM`, and so are
``boxer``'s offsets from an output pixel: a pixel's map shifted by integers gives the same
overlaps with the shifted output pixels, to the bit. Each packed pixel's map is shifted
onto a small cell of its own, so the output holds a few pixels per masked pixel instead
of the chip's whole box (29 Mpx for ACS/WFC: allocating and filling it cost more than
the drizzle); the contributions are added back in float64. Other kernels and pixfracs
drizzle the packed pixels onto the chip's box.

**Pixel map.** The cosmic-ray blot's map, kept near the pixels that can be flagged
(:class:`KeptMap`) and shifted by integers onto the drizzle's box (maps onto frames of one
grid differ by integers, :func:`mvmflow.resample.pixmap`), or :func:`pixmap_at`:
``pixmap``'s values at the pixels needed, computed there only (the same exact grid and
spline evaluated by the same operations, :meth:`mvmflow.resample.MapSpline.at`, the same
D2IM term, rounding and shift).
Both are the drizzle's map to the bit.

**Subtraction** (:func:`subtract_masked`), in float64 from the float32 stored sums, at the
output pixels the masked pixels touch (every other pixel keeps the separate partial's
value, which is the full re-drizzle's to the bit: the same contributions in the same
order). :func:`masked_changes` computes those pixels and their final sums alone, reading
the separate partial there only: the workflow's job writes them as a patch of the separate
partial (:class:`mvmflow.partials.PartialPatch`). The float32 sums carry rounding of a few
1e-8 of the masked (bright) flux, so the subtracted flux agrees with a full re-drizzle to
that absolute level, not to the relative float32 precision of the (faint) remainder
(docs/speed.md gives the measured differences). A pixel whose remaining weight is at most
``tolerance`` (1e-5) of its separate weight gets weight 0, flux 0 and its chip uncounted
in ``nchips``: a pixel all of whose contributions were masked is left with rounding only,
at most about 1e-6 of its weight (two float32 sums of up to a dozen overlaps, a few 6e-8
each), and a real remainder that small (a footprint's sliver) weighs less than 1e-5 of one
exposure in the layer.

**nchips** counts the chips with weight in a pixel. Where one chip covers the pixel it
drops to 0 with the weight; where two do (chips that overlap on the sky; ACS/WFC and
WFC3/UVIS have a gap between theirs, the other MVM detectors one chip) and weight
remains, the sums cannot tell whether one chip was emptied: :func:`subtract_masked` then
returns None and the caller drizzles the exposure again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mvmflow.grid import Frame
from mvmflow.partials import Box, Partial
from mvmflow.resample import (
    DEFAULT_STEP,
    EXACT_SAMPLES,
    MAP_QUANTUM,
    Chip,
    MapSpline,
    _chip_inputs,
    _det2im_offsets,
    _map_points,
    _samples,
    _settings,
    _without_det2im,
    chip_box,
    input_units,
    nominal_scale,
    pixmap,
    quantize_map,
    shift_map,
)

__all__ = ["TOLERANCE", "Changes", "KeptMap", "drizzle_pixels", "masked_changes", "pixmap_at",
           "subtract_masked"]

log = logging.getLogger(__name__)

TOLERANCE = 1e-5
"""Remaining weight, relative to the separate weight, at or below which a pixel is empty."""



# --------------------------------------------------------------------------------------
# The pixel map at some pixels


def pixmap_at(chip_wcs, frame: Frame, shape: tuple[int, int], rows: np.ndarray,
              cols: np.ndarray, step: int = DEFAULT_STEP, box: Box | None = None
              ) -> np.ndarray:
    """``pixmap(chip_wcs, frame, shape, step, box)[rows, cols]``, to the bit, computed at
    those pixels only.

    Parameters
    ----------
    chip_wcs : astropy.wcs.WCS
        The chip's full WCS.
    frame : Frame
        The output frame.
    shape : tuple of int
        ``(ny, nx)`` of the chip.
    rows, cols : numpy.ndarray
        Integer chip pixel indices (1-D, the same length).
    step : int
        Grid spacing of the exact evaluation.
    box : Box, optional
        As :func:`mvmflow.resample.pixmap`.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` float64 frame ``x, y`` (relative to ``box``).
    """
    rows = np.asarray(rows, dtype=np.intp)
    cols = np.asarray(cols, dtype=np.intp)
    ny, nx = int(shape[0]), int(shape[1])
    grid = frame.grid_frame()
    xs, ys = _samples(nx, int(step)), _samples(ny, int(step))
    if xs.size < 2 or ys.size < 2:
        return pixmap(chip_wcs, frame, shape, step=step, box=box)[rows, cols]
    gx, gy = np.meshgrid(xs, ys)
    fx, fy = _map_points(_without_det2im(chip_wcs), grid.wcs, gx, gy)
    bound = max(float(np.max(np.abs(fx))), float(np.max(np.abs(fy))))
    if not bound < EXACT_SAMPLES:  # NaN or huge: pixmap's rounding depends on the whole map
        return pixmap(chip_wcs, frame, shape, step=step, box=box)[rows, cols]
    offsets = _det2im_offsets(chip_wcs, (ny, nx))
    out = np.empty((rows.size, 2), dtype=np.float64)
    for k, values in enumerate((fx, fy)):
        out[:, k] = MapSpline(xs, ys, values, (ny, nx), offsets).at(rows, cols)
    quantize_map(out)
    shift_map(out, frame, grid, box)
    return out


@dataclass
class KeptMap:
    """A chip's pixel map onto a frame, kept at some pixels (e.g. the cosmic-ray blot's,
    near the pixels that can be flagged), to give the final drizzle's map there without
    computing it again.

    Maps onto frames of one grid differ by integers (:func:`mvmflow.resample.pixmap`), so
    the kept values shifted are the drizzle's to the bit; kept only when they are exact
    multiples of :data:`~mvmflow.resample.MAP_QUANTUM` (then the shift is exact).

    Attributes
    ----------
    index : numpy.ndarray
        Sorted flat indices of the chip pixels kept.
    values : numpy.ndarray
        ``(n, 2)`` the map there, relative to ``box`` of ``frame``.
    frame : Frame
    box : Box
    shape : tuple of int
        The chip's ``(ny, nx)``.
    step : int
        The map's grid step.
    """

    index: np.ndarray
    values: np.ndarray
    frame: Frame
    box: Box
    shape: tuple[int, int]
    step: int = DEFAULT_STEP

    @classmethod
    def keep(cls, pm: np.ndarray, frame: Frame, box: Box, region: np.ndarray,
             grow: int = 1, step: int = DEFAULT_STEP) -> KeptMap | None:
        """Keep ``pm`` (a chip's :func:`~mvmflow.resample.pixmap` onto ``box`` of
        ``frame``) on ``region``, grown by ``grow // 2`` pixels; None if the map is not
        exact.

        For a cosmic-ray mask, ``region`` holds the 3 x 3 neighbourhoods of the pixels that
        can be flagged before growth (:func:`mvmflow.crreject.sampling_regions`' first
        array) and ``grow`` is the mask's growth: then every pixel the final drizzle needs
        is kept.
        """
        region = np.asarray(region, dtype=bool)
        reach = int(grow) // 2
        if reach > 0:
            from scipy import ndimage

            region = ndimage.maximum_filter(region, size=2 * reach + 1, mode="constant")
        index = np.flatnonzero(region)
        values = np.asarray(pm).reshape(-1, 2)[index]
        if not _quantized(values):
            return None
        return cls(index, values, frame, box, tuple(region.shape), int(step))

    def at(self, frame: Frame, box: Box, step: int, fallback: Callable) -> Callable:
        """``f(rows, cols) -> (n, 2)``: the map (grid ``step``) onto ``box`` of ``frame``
        at those pixels: kept values shifted, ``fallback(rows, cols)`` for pixels not kept
        (for all, on another grid or with another step)."""
        if frame.grid_frame() != self.frame.grid_frame() or int(step) != self.step:
            return fallback
        grid = frame.grid_frame()
        gx, gy = frame.integer_offset_of(grid)
        kx, ky = self.frame.integer_offset_of(grid)
        shift = np.array([(gx - box.x0) - (kx - self.box.x0),
                          (gy - box.y0) - (ky - self.box.y0)], dtype=np.float64)
        nx = self.shape[1]

        def map_at(rows, cols):
            flat = np.asarray(rows, dtype=np.intp) * nx + np.asarray(cols, dtype=np.intp)
            pos = np.minimum(np.searchsorted(self.index, flat), max(self.index.size - 1, 0))
            found = self.index[pos] == flat if self.index.size else np.zeros(flat.size, bool)
            out = np.empty((flat.size, 2), dtype=np.float64)
            out[found] = self.values[pos[found]] + shift
            if not found.all():
                out[~found] = fallback(rows[~found], cols[~found])
            return out

        return map_at


def _neighbourhoods(map_at: Callable, rows: np.ndarray, cols: np.ndarray,
                    shape: tuple[int, int]) -> np.ndarray:
    """``(n, 3, 3, 2)``: the map on each pixel's 3 x 3 neighbourhood (``[dy, dx]``), made
    linear past the chip's edges (module notes)."""
    ny, nx = shape
    d = np.arange(-1, 2)
    r = np.clip(rows[:, None] + d, 0, ny - 1)[:, :, None]
    c = np.clip(cols[:, None] + d, 0, nx - 1)[:, None, :]
    flat = (r * nx + c).ravel()
    # the distinct pixels and where each neighbour is among them, by a mark and a lookup
    # over the chip instead of sorting (np.unique): docs/speed.md, "The cosmic-ray path
    # (stop 30)"
    mark = np.zeros(ny * nx, dtype=bool)
    mark[flat] = True
    uniq = np.flatnonzero(mark)
    del mark
    lookup = np.empty(ny * nx, dtype=np.int32 if uniq.size < 2**31 else np.int64)
    lookup[uniq] = np.arange(uniq.size, dtype=lookup.dtype)
    inverse = lookup[flat]
    del lookup
    values = np.asarray(map_at(uniq // nx, uniq % nx), dtype=np.float64)
    nb = values[inverse].reshape(rows.size, 3, 3, 2)
    for edge, a, b, c_ in ((rows == 0, 0, 1, 2), (rows == ny - 1, 2, 1, 0)):
        nb[edge, a] = 2.0 * nb[edge, b] - nb[edge, c_]
    for edge, a, b, c_ in ((cols == 0, 0, 1, 2), (cols == nx - 1, 2, 1, 0)):
        nb[edge, :, a] = 2.0 * nb[edge, :, b] - nb[edge, :, c_]
    return nb


# --------------------------------------------------------------------------------------
# Drizzling some pixels


def drizzle_pixels(chip: Chip, data: np.ndarray, weight: np.ndarray, rows: np.ndarray,
                   cols: np.ndarray, neighbourhoods: np.ndarray, out_shape: tuple[int, int],
                   params: dict, scale: float) -> tuple[np.ndarray, ...]:
    """Drizzle chosen pixels of a chip alone, packed (module notes).

    Parameters
    ----------
    chip : Chip
        The chip (exposure time, units, WCS scale).
    data, weight : numpy.ndarray
        The chip's data and weight map as drizzled (``resample._chip_inputs``).
    rows, cols : numpy.ndarray
        The pixels (1-D integer arrays).
    neighbourhoods : numpy.ndarray
        ``(n, 3, 3, 2)``: the pixel map (relative to the output) on each pixel's 3 x 3
        neighbourhood.
    out_shape : tuple of int
        ``(ny, nx)`` of the output the map is relative to.
    params : dict
        Drizzle parameters (kernel, pixfrac).
    scale : float
        The output's pixel scale (arcsec).

    Returns
    -------
    iy, ix : numpy.ndarray
        Output pixels reached (a pixel may repeat).
    flux, wht : numpy.ndarray
        float64 contributions there: ``sum(w * d)`` and ``sum(w)``.
    """
    s = _settings(params)
    nb = np.asarray(neighbourhoods, dtype=np.float64)
    if s.kernel == "square" and s.pixfrac == 1.0 and _quantized(nb):
        return _drizzle_cells(chip, data, weight, rows, cols, nb, out_shape, s, scale)
    sci, wht = _drizzle_packed(chip, data[rows, cols], weight[rows, cols], nb,
                               tuple(out_shape), s, scale)
    iy, ix = np.nonzero(wht > 0)
    w = wht[iy, ix].astype(np.float64)
    return iy, ix, sci[iy, ix].astype(np.float64) * w, w


def _quantized(values: np.ndarray) -> bool:
    """Whether map values are pixmap's exact ones (multiples of MAP_QUANTUM below 2**20)."""
    scaled = values * (1.0 / MAP_QUANTUM)
    return bool(np.all(np.abs(values) < EXACT_SAMPLES) and np.all(np.rint(scaled) == scaled))


def _drizzle_packed(chip: Chip, data: np.ndarray, weight: np.ndarray, nb: np.ndarray,
                    out_shape: tuple[int, int], s, scale: float):
    """drizzle's ``out_img, out_wht`` of the packed pixels (values ``data``, weights
    ``weight``, map neighbourhoods ``nb``) on an output of ``out_shape``."""
    from drizzle.resample import Drizzle

    n = int(nb.shape[0])
    pm = np.full((5, 4 * n + 1, 2), np.nan)
    blocks = np.full((3, n, 4, 2), np.nan)
    blocks[:, :, :3] = nb.transpose(1, 0, 2, 3)
    pm[1:4, 1:] = blocks.reshape(3, 4 * n, 2)
    data_p = np.zeros((5, 4 * n + 1), dtype=np.float32)
    weight_p = np.zeros_like(data_p)
    data_p[2, 2::4] = data
    weight_p[2, 2::4] = weight
    ratio = float(scale) / nominal_scale(chip)
    driz = Drizzle(kernel=s.kernel, out_shape=out_shape, fillval="INDEF", disable_ctx=True)
    driz.add_image(
        data_p, exptime=float(chip.exptime), pixmap=pm, weight_map=weight_p,
        wht_scale=1.0, pixfrac=s.pixfrac, in_units=input_units(chip.bunit),
        iscale=ratio * ratio, pixel_scale_ratio=ratio,
    )
    return driz.out_img, driz.out_wht


def _drizzle_cells(chip: Chip, data, weight, rows, cols, nb, out_shape, s, scale):
    """:func:`drizzle_pixels` on a compact output: each pixel's map is shifted by integers
    onto a cell of its own, so the output is a few pixels per masked pixel instead of the
    chip's box. With ``pixfrac = 1`` drizzle's corners are sums of quarters of map values,
    exact for :data:`MAP_QUANTUM` multiples, and so are the offsets ``boxer`` takes from
    an output pixel: shifted footprints overlap shifted pixels identically, to the bit."""
    n = int(nb.shape[0])
    # a footprint lies within its neighbourhood's range (corners are convex combinations)
    # (n, 2): x, y; the nine values reduced pairwise (a reduction over two middle axes
    # is several times slower)
    nine = nb.reshape(n, 9, 2)
    lo, hi = nine[:, 0].copy(), nine[:, 0].copy()
    for k in range(1, 9):
        np.minimum(lo, nine[:, k], out=lo)
        np.maximum(hi, nine[:, k], out=hi)
    lo, hi = np.floor(lo), np.ceil(hi)
    cw, ch = (int(v) + 2 for v in (hi - lo).max(axis=0))
    ncols = max(1, int(np.ceil(np.sqrt(n))))
    nrows = -(-n // ncols)
    k = np.arange(n)
    cell = np.column_stack([(k % ncols) * cw + 1, (k // ncols) * ch + 1]).astype(np.float64)
    shift = cell - lo  # integers: map + shift puts the footprint inside its cell
    shifted = nb + shift[:, None, None, :]
    sci, wht = _drizzle_packed(chip, data[rows, cols], weight[rows, cols], shifted,
                               (nrows * ch, ncols * cw), s, scale)
    wht = wht.reshape(nrows, ch, ncols, cw).transpose(0, 2, 1, 3).reshape(-1, ch, cw)[:n]
    sci = sci.reshape(nrows, ch, ncols, cw).transpose(0, 2, 1, 3).reshape(-1, ch, cw)[:n]
    kk, jy, jx = np.nonzero(wht > 0)
    w = wht[kk, jy, jx].astype(np.float64)
    f = sci[kk, jy, jx].astype(np.float64) * w
    iy = jy + ((k // ncols) * ch - shift[:, 1]).astype(np.intp)[kk]
    ix = jx + ((k % ncols) * cw - shift[:, 0]).astype(np.intp)[kk]
    inside = (iy >= 0) & (ix >= 0) & (iy < out_shape[0]) & (ix < out_shape[1])
    return iy[inside], ix[inside], f[inside], w[inside]


# --------------------------------------------------------------------------------------
# The final partial


def _same_drizzle(partial, chips: Sequence[Chip], frame: Frame, params: dict,
                  ebox: Box | None) -> str:
    """Why ``partial`` (a Partial or PartialFile) is not the separate drizzle of ``chips`` on
    ``frame`` ('' if it is)."""
    if partial.frame != frame:
        return "another frame"
    if partial.filename != chips[0].filename or float(partial.exptime) != float(
            chips[0].exptime):
        return "another exposure"
    try:
        if _settings(partial.params) != _settings(params):
            return "other drizzle parameters"
    except (ValueError, TypeError):
        return "unreadable drizzle parameters"
    if ebox is None:
        return "" if partial.empty else "another box"
    if (partial.box_x0, partial.box_y0, partial.shape) != (ebox.x0, ebox.y0,
                                                           (ebox.ny, ebox.nx)):
        return "another box"
    if [int(c.get("extver", -1)) for c in partial.chips] != [int(c.extver) for c in chips]:
        return "other chips"
    if any(float(c.get("sky") or 0.0) != 0.0 for c in partial.chips):
        return "a sky subtracted"
    return ""


@dataclass
class Changes:
    """The output pixels a subtraction changes (:func:`masked_changes`).

    Attributes
    ----------
    rows, cols : numpy.ndarray
        int64, in the separate partial's box.
    flux, weight : numpy.ndarray
        float32, their final sums.
    nchips : numpy.ndarray
        uint8, their final chip counts.
    chips : list of dict
        The final partial's per-chip records (``ngood`` without the masked pixels).
    """

    rows: np.ndarray
    cols: np.ndarray
    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray
    chips: list


def subtract_masked(partial: Partial, chips: Sequence[Chip], frame: Frame, params: dict,
                    cr_masks: Sequence[np.ndarray | None], *, static_masks=None,
                    kept: Sequence[KeptMap | None] | None = None,
                    tolerance: float = TOLERANCE, copy: bool = True) -> Partial | None:
    """The drizzle of ``chips`` without the ``cr_masks`` pixels, from their drizzle with
    them (module notes).

    Parameters
    ----------
    partial : Partial
        ``resample.drizzle_exposure(chips, frame, params, static_masks=static_masks)``
        (the separate drizzle).
    chips, frame, params, static_masks
        As :func:`mvmflow.resample.drizzle_exposure` (no sky).
    cr_masks : sequence of (numpy.ndarray or None)
        Per chip, True where a cosmic ray was found.
    kept : sequence of (KeptMap or None), optional
        Per chip, pixel-map values already made (the cosmic-ray blot's); the others are
        made by :func:`pixmap_at`.
    tolerance : float
        Remaining weight (relative) at or below which a pixel is empty.
    copy : bool
        False: modify ``partial``'s arrays in place.

    Returns
    -------
    Partial or None
        The final partial, equal to ``drizzle_exposure(..., cr_masks=cr_masks)`` to float32
        rounding of the masked flux; None when ``partial`` is not that separate drizzle or
        a seam of two chips makes ``nchips`` ambiguous (then drizzle again).
    """
    def values_at(rows, cols):
        return {"flux": partial.flux[rows, cols], "weight": partial.weight[rows, cols],
                "nchips": partial.nchips[rows, cols]}

    changes = masked_changes(partial, chips, frame, params, cr_masks, values_at,
                             static_masks=static_masks, kept=kept, tolerance=tolerance)
    if changes is None:
        return None
    flux, weight, nchips = partial.flux, partial.weight, partial.nchips
    if copy:
        flux, weight, nchips = flux.copy(), weight.copy(), nchips.copy()
    at = changes.rows, changes.cols
    flux[at], weight[at], nchips[at] = changes.flux, changes.weight, changes.nchips
    return Partial(flux, weight, nchips, frame, partial.box_x0, partial.box_y0,
                   partial.filename, partial.ipppssoo, partial.exptime, dict(params),
                   changes.chips)


def masked_changes(separate, chips: Sequence[Chip], frame: Frame, params: dict,
                   cr_masks: Sequence[np.ndarray | None], values_at: Callable, *,
                   static_masks=None, kept: Sequence[KeptMap | None] | None = None,
                   tolerance: float = TOLERANCE) -> Changes | None:
    """What :func:`subtract_masked` changes in the separate partial: the output pixels the
    masked pixels touch and their final sums, without the partial's whole arrays (for a
    :class:`mvmflow.partials.PartialPatch`).

    Parameters
    ----------
    separate : Partial or mvmflow.partials.PartialFile
        The separate drizzle (its frame, box, parameters and chip records).
    chips, frame, params, cr_masks, static_masks, kept, tolerance
        As :func:`subtract_masked`.
    values_at : callable
        ``values_at(rows, cols)``: the separate partial's ``flux``, ``weight`` and
        ``nchips`` at those box pixels, as a dict (e.g.
        :meth:`mvmflow.partials.PartialFile.read_points`).

    Returns
    -------
    Changes or None
        None as :func:`subtract_masked`.
    """
    chips = list(chips)
    s = _settings(params)
    n = len(chips)
    masks = list(cr_masks) if cr_masks is not None else [None] * n
    statics = [None] * n if static_masks is None else list(static_masks)
    maps = [None] * n if kept is None else list(kept)
    if not (len(masks) == len(statics) == len(maps) == n):
        raise ValueError("subtract_masked: one mask, static mask and map per chip")
    boxes = [chip_box(c.wcs, frame, c.shape, s.pixfrac) for c in chips]
    used = [b for b in boxes if b is not None]
    ebox = None
    for b in used:
        ebox = b if ebox is None else ebox.union(b)
    why = _same_drizzle(separate, chips, frame, params, ebox)
    if why:
        log.info("%s: the separate partial is not usable (%s): drizzling again",
                 chips[0].filename, why)
        return None
    records = [dict(c) for c in separate.chips]
    none = np.zeros(0, dtype=np.int64)
    if ebox is None:
        return Changes(none, none, np.zeros(0, np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.uint8), records)
    ridx, rflux, rwht = [], [], []
    for chip, box, mask, static, mat, record in zip(chips, boxes, masks, statics, maps,
                                                    records, strict=True):
        if box is None or mask is None or not np.any(mask):
            continue
        # the separate drizzle's static cut, when it recorded one (not computed again)
        data, wmap, *_ = _chip_inputs(chip, s, 0.0, None, static, record.get("static_cut"))
        flat = np.flatnonzero(mask)
        flat = flat[wmap.ravel().take(flat) > 0]
        rows, cols = np.divmod(flat, chip.shape[1])
        del flat
        record["ngood"] = int(record["ngood"]) - int(rows.size)
        if rows.size == 0:
            continue
        full = chip_box(chip.wcs, frame, chip.shape, s.pixfrac, clip=False)
        def compute(r, c, chip=chip, full=full):
            return pixmap_at(chip.wcs, frame, chip.shape, r, c, s.step, full)

        map_at = compute if mat is None else mat.at(frame, full, s.step, compute)
        nb = _neighbourhoods(map_at, rows, cols, chip.shape)
        iy, ix, f_m, w_m = drizzle_pixels(chip, data, wmap, rows, cols, nb,
                                          (full.ny, full.nx), params, frame.scale)
        del data, wmap
        # the part on the frame (drizzle_exposure's cut of the chip's unclipped box)
        iy, ix = iy + (full.y0 - box.y0), ix + (full.x0 - box.x0)
        keep = (iy >= 0) & (ix >= 0) & (iy < box.ny) & (ix < box.nx)
        ridx.append((iy[keep] + (box.y0 - ebox.y0)) * ebox.nx + ix[keep] + (box.x0 - ebox.x0))
        rflux.append(f_m[keep])
        rwht.append(w_m[keep])
    if not ridx:
        log.info("%s: 0 output pixels by subtraction (0 emptied)", chips[0].filename)
        return Changes(none, none, np.zeros(0, np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.uint8), records)
    idx, inverse = np.unique(np.concatenate(ridx), return_inverse=True)
    f_m = np.bincount(inverse, np.concatenate(rflux), minlength=idx.size)
    w_m = np.bincount(inverse, np.concatenate(rwht), minlength=idx.size)
    fy, fx = np.divmod(idx, ebox.nx)
    before = values_at(fy, fx)
    w_sep = np.asarray(before["weight"]).astype(np.float64)
    remain = w_sep - w_m
    flux_r = np.asarray(before["flux"]).astype(np.float64) - f_m
    empty = remain <= tolerance * w_sep
    count = np.asarray(before["nchips"])
    if np.any(~empty & (count > 1)):
        log.info("%s: masked pixels on a seam of chips (nchips ambiguous): drizzling "
                 "again", chips[0].filename)
        return None
    emptied = int(np.count_nonzero(empty))
    log.info("%s: %d output pixels by subtraction (%d emptied)", chips[0].filename,
             idx.size, emptied)
    return Changes(fy.astype(np.int64), fx.astype(np.int64),
                   np.where(empty, 0.0, flux_r).astype(np.float32),
                   np.where(empty, 0.0, remain).astype(np.float32),
                   np.where(empty, 0, count).astype(np.uint8), records)
