"""The blot step of cosmic-ray rejection: frame images resampled back onto a chip.

:class:`ChipBlotter` maps one chip into a frame once (the chip's box in the frame and the
same full-distortion pixel map the drizzle uses, :func:`mvmflow.resample.pixmap`: SIP +
NPOL + D2IM) and interpolates any image over that box at every chip pixel with
``drizzle.resample.blot_image`` (drizzle's ``tblot``, AstroDrizzle's blot; ``poly5`` by
default, as the reference's ``blot_interp``). :func:`blot_median` blots a layer's median,
reading only the part of the median file the chip reaches.

Units. Frame images are count rates per *frame* pixel: a flat input ``d`` (per nominal chip
pixel, ``IDCSCALE``) drizzles to ``d (s_frame/s_nom)**2`` (:mod:`mvmflow.resample` module
notes). The blot divides by that factor and, for a chip in counts (``BUNIT`` ``ELECTRONS``:
CCD FLT/FLC), multiplies by ``EXPTIME``, so a blotted image is in the chip's own units and
directly comparable with its SCI array. An exposure's sky offset (the one subtracted from its
single image before the median, in e-/s per frame pixel) is added back first, as
AstroDrizzle's ``blot_addsky``.

Validity. Frame images are NaN where no exposure covered a pixel (and outside the frame).
Before interpolating, the holes are filled, ring by ring up to the interpolant's reach, with
the mean of the defined neighbours, so a chip pixel next to a coverage edge is still modelled
(the interpolant reads up to three pixels away); a chip pixel has a model when the frame
pixel under its centre is defined.

:func:`derivative` is the blotted image's "derivative" of AstroDrizzle's driz_cr
(``quickDeriv.qderiv``): per pixel, the largest absolute difference to its four neighbours.
The reference's version compares edge rows and columns with zeros (a slicing artefact that
makes chip-edge pixels nearly untestable); here edge pixels use the neighbours they have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mvmflow.filters import block_reduce, bool_filter3, filter3
from mvmflow.grid import Frame
from mvmflow.median import median_frame, read_median
from mvmflow.resample import DEFAULT_STEP, Chip, chip_box, input_units, nominal_scale, pixmap

__all__ = ["Blot", "ChipBlotter", "INTERP_HALF_WIDTH", "blot_median", "bool_filter3",
           "derivative", "derivative_at", "filter3"]

INTERP_HALF_WIDTH = {"nearest": 1, "linear": 1, "poly3": 2, "poly5": 3, "lanczos3": 3,
                     "lanczos5": 5}
"""Frame pixels on each side of a position that an interpolant reads (rounded up)."""


@dataclass
class Blot:
    """A frame image blotted onto one chip.

    Attributes
    ----------
    data : numpy.ndarray
        float32, the chip's shape, in the chip's ``BUNIT`` (0 where not ``valid``).
    valid : numpy.ndarray
        bool, True where the frame image defines the value.
    conversion : float
        Factor from the chip's units to electrons (``EXPTIME`` for a rate, else 1).
    """

    data: np.ndarray
    valid: np.ndarray
    conversion: float


def _half_width(interp: str) -> int:
    try:
        return INTERP_HALF_WIDTH[interp]
    except KeyError:
        raise ValueError(f"blot interpolant {interp!r} is not one of "
                         f"{sorted(INTERP_HALF_WIDTH)}") from None


class ChipBlotter:
    """One chip's geometry in a frame, for blotting several frame images onto it.

    Parameters
    ----------
    chip : Chip
        Its ``wcs`` (full distortion; after :func:`mvmflow.solution.apply_solution` when the
        exposure was aligned), ``shape``, ``bunit``, ``exptime``, ``idcscale``.
    frame : Frame
    step : int
        Pixel-map grid step (:func:`mvmflow.resample.pixmap`).
    margin : int
        Frame pixels added around the chip's box (the interpolant's reach).

    Attributes
    ----------
    box : mvmflow.resample.Box or None
        The frame pixels the chip reaches (not clipped to the frame); None when it misses
        the frame's plane entirely.
    """

    def __init__(self, chip: Chip, frame: Frame, *, step: int = DEFAULT_STEP,
                 margin: int = 7):
        self.chip = chip
        self.frame = frame
        self.conversion = float(chip.exptime) if input_units(chip.bunit) == "cps" else 1.0
        ratio = frame.scale / nominal_scale(chip)
        self.iscale = 1.0 / (ratio * ratio)
        if input_units(chip.bunit) == "counts":
            self.iscale *= float(chip.exptime)
        self.box = chip_box(chip.wcs, frame, chip.shape, pixfrac=1.0, margin=margin,
                            clip=False)
        self._pm = None
        self._index = None
        self._rings = []  # (reach, finite mask, its rings) of the last two images extended
        self._valid = []  # (finite mask, defined) of the last two images
        self._canvas = None  # the box's image for blots of chosen pixels (their tiles)
        if self.box is not None:
            pm = self._pm = pixmap(chip.wcs, frame, chip.shape, step=step, box=self.box)
            # the box pixel under each chip pixel's centre, as a flat index (one gather of a
            # flat mask is about twice as fast as a 2-d fancy index, docs/speed.md); the box
            # holds the whole chip, so all are inside unless the map folds (the map's range
            # tells: rounding is monotonic)
            xs, ys = pm[..., 0], pm[..., 1]  # (a reduction over two axes of pm is slow)
            if (np.rint(xs.min()) >= 0 and np.rint(ys.min()) >= 0
                    and np.rint(xs.max()) < self.box.nx and np.rint(ys.max()) < self.box.ny):
                inside = None
                flat = np.rint(pm[..., 1])
                flat *= self.box.nx
                flat += np.rint(pm[..., 0])  # integers below 2**53: exact in float64
            else:
                ix = np.rint(pm[..., 0])
                iy = np.rint(pm[..., 1])
                inside = (ix >= 0) & (iy >= 0) & (ix < self.box.nx) & (iy < self.box.ny)
                flat = iy[inside] * self.box.nx + ix[inside]
                del ix, iy
            self._index = (inside, flat.astype(np.int32 if self.box.nx * self.box.ny < 2**31
                                               else np.int64).ravel())

    @property
    def shape(self) -> tuple[int, int]:
        return self.chip.shape

    @property
    def pixmap(self) -> np.ndarray | None:
        """The chip's pixel map onto :attr:`box` (None when the chip misses the frame); the
        cosmic-ray job keeps part of it for its final partial (mvmflow.crsubtract)."""
        return self._pm

    def _empty(self) -> Blot:
        return Blot(np.zeros(self.shape, np.float32), np.zeros(self.shape, bool),
                    self.conversion)

    def defined(self, image: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Where a blot of ``image`` is defined (:attr:`Blot.valid`), without blotting: the
        chip pixels whose centre falls on a finite pixel of ``image`` (over :attr:`box`).

        ``where`` (bool, the chip's shape): only at those pixels (False elsewhere)."""
        if self.box is None:
            return np.zeros(self.shape, dtype=bool)
        self._check(image)
        if where is None:
            return self._defined(np.isfinite(image))
        at = np.flatnonzero(where)
        valid = np.zeros(self.shape, dtype=bool)
        valid.ravel()[at] = self._defined_at(image, at)
        return valid

    def _defined_at(self, image: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """:meth:`defined` at the chip pixels ``flat`` (flat indices) alone: the image read
        under their centres only."""
        inside, index = self._index
        if inside is None:  # every chip pixel has a box pixel
            return np.isfinite(np.asarray(image).ravel().take(index.take(flat)))
        return self._defined(np.isfinite(image)).ravel()[flat]

    def _defined(self, finite: np.ndarray) -> np.ndarray:
        """:meth:`defined` of an image whose finite pixels are ``finite`` (the last two
        kept: the median's images share theirs, docs/speed.md "Cosmic-ray rejection")."""
        for known, valid in self._valid:
            if np.array_equal(known, finite):
                return valid.copy()
        inside, flat = self._index
        gathered = finite.ravel().take(flat)
        if inside is None:
            valid = gathered.reshape(self.shape)
        else:
            valid = np.zeros(self.shape, dtype=bool)
            valid[inside] = gathered
        self._valid = [(finite, valid), *self._valid[:1]]
        return valid.copy()

    def _check(self, image: np.ndarray) -> None:
        if np.shape(image) != (self.box.ny, self.box.nx):
            raise ValueError(f"blot: image shape {np.shape(image)} is not the chip's box "
                             f"({self.box.ny}, {self.box.nx})")

    def blot(self, image: np.ndarray, *, sky: float = 0.0, interp: str = "poly5",
             undefined: float | None = None, where: np.ndarray | None = None,
             overwrite: bool = False) -> Blot:
        """Blot an image over :attr:`box` (e-/s per frame pixel, NaN where undefined).

        Parameters
        ----------
        image : numpy.ndarray
            Shape ``(box.ny, box.nx)``.
        sky : float
            Added before resampling (e-/s per frame pixel).
        interp : str
            ``drizzle.resample.blot_image`` interpolant.
        undefined : float, optional
            Value given to undefined pixels before interpolating (e.g. a huge value for a
            tolerance map); default: extended from the defined neighbours (module notes).
        where : numpy.ndarray, optional
            bool, the chip's shape: interpolate only these chip pixels (0 elsewhere), with
            the same values, to the bit, as a blot of the whole chip (``blot_image`` computes
            each pixel from its own pixel-map position alone); :attr:`Blot.valid` is for
            every pixel. Where they are few, only the parts of the image they read are
            filled (:meth:`_blot_chosen`). Default: every pixel.
        overwrite : bool
            ``image`` (float32) may be filled in place (a blot of every pixel): the caller
            does not read it again.

        Returns
        -------
        Blot
        """
        from drizzle.resample import blot_image

        _half_width(interp)  # validate
        if self.box is None:
            return self._empty()
        self._check(image)
        if where is not None:
            valid = self.defined(image)
            flat = np.flatnonzero(where)
            out = np.zeros(self.shape, dtype=np.float32)
            out.ravel()[flat] = self._blot_chosen(image, flat, sky, interp, undefined)
        else:
            finite = np.isfinite(image)
            data = self._filled(image, finite, sky, interp, undefined, overwrite)
            if data is None:
                return self._empty()
            out = blot_image(data, self._pm, fillval=0.0, iscale=self.iscale, interp=interp)
            valid = self._defined(finite)
        out = np.where(valid, out, np.float32(0.0)).astype(np.float32, copy=False)
        return Blot(out, valid, self.conversion)

    def _filled(self, image: np.ndarray, finite: np.ndarray, sky: float, interp: str,
                undefined: float | None, overwrite: bool = False) -> np.ndarray | None:
        """The whole image as the interpolant reads it (:func:`_fill`); None if nothing is
        defined. ``overwrite``: in ``image`` itself when it is a float32 array."""
        if not finite.any():
            return None
        data = np.asarray(image, dtype=np.float32)
        rings, reach = None, _half_width(interp) + 1
        if undefined is None and not finite.all():
            # images of one median share their undefined pixels: their rings are found
            # once (docs/speed.md, "Cosmic-ray rejection")
            rings = next((r for k, f, r in self._rings
                          if k == reach and np.array_equal(f, finite)), None)
            if rings is None:
                rings = _rings(finite, reach)
                self._rings = [(reach, finite, rings), *self._rings[:1]]
        data = _fill(data, finite, reach, undefined, sky, rings,
                     in_place=overwrite and data is image)
        return np.ascontiguousarray(data, dtype=np.float32)

    def blot_at(self, image: np.ndarray, flat: np.ndarray, *, sky: float = 0.0,
                interp: str = "poly5", undefined: float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`blot` at some chip pixels alone: their values and validity, without
        arrays of the chip's size (docs/speed.md, "The cosmic-ray path (stop 30)").

        Parameters
        ----------
        image, sky, interp, undefined
            As :meth:`blot`.
        flat : numpy.ndarray
            Flat indices of chip pixels (row-major).

        Returns
        -------
        values : numpy.ndarray
            float32, ``blot(image, ...).data`` at those pixels, to the bit.
        valid : numpy.ndarray
            bool, ``blot(image, ...).valid`` there.
        """
        _half_width(interp)  # validate
        flat = np.asarray(flat, dtype=np.intp).ravel()
        if self.box is None or not flat.size:
            return np.zeros(flat.size, np.float32), np.zeros(flat.size, bool)
        self._check(image)
        valid = self._defined_at(image, flat)
        values = self._blot_chosen(image, flat, sky, interp, undefined)
        return np.where(valid, values, np.float32(0.0)).astype(np.float32, copy=False), valid

    def _blot_chosen(self, image: np.ndarray, flat: np.ndarray, sky: float, interp: str,
                     undefined: float | None) -> np.ndarray:
        """The blot of the chip pixels ``flat`` (flat indices) alone, not yet masked by
        validity, filling the image only where those pixels read it when that is less than
        half the box (docs/speed.md, "The cosmic-ray path (stop 29)").

        ``blot_image`` reads, for a chip pixel, the interpolant's stencil around the float32
        position the pixel map gives it (drizzle's ``doblot`` casts the map to float32),
        ``INTERP_HALF_WIDTH`` pixels on each side. The box is cut into tiles of ``_TILE``
        pixels. A tile holding such a position is filled over a *core* of that reach around
        it, with a margin of twice the hole fill's reach around the core
        (:func:`_tile_margin`). The tiles are filled stacked (one tile's margin meets the
        next one's, out of the cores' reach), and their cores are written into a box-sized
        canvas that the blot reads at the chosen positions alone: every pixel it reads holds
        the value the whole filled box holds there, so the result is the same to the bit
        (tests/test_crreject.py). A constant fill (``undefined``) is pointwise: then only
        the stencils' pixels are filled.
        """
        from drizzle.resample import blot_image

        if not flat.size:
            return np.zeros(0, dtype=np.float32)
        positions = np.ascontiguousarray(self._pm.reshape(-1, 2)[flat][None])
        data = self._chosen_image(image, positions[0], sky, interp, undefined)
        if data is None:
            return np.zeros(flat.size, dtype=np.float32)
        return blot_image(data, positions, fillval=0.0, iscale=self.iscale,
                          interp=interp)[0].astype(np.float32, copy=False)

    def _chosen_image(self, image: np.ndarray, positions: np.ndarray, sky: float,
                      interp: str, undefined: float | None) -> np.ndarray | None:
        """The image a blot at ``positions`` (``(n, 2)``, box pixels) reads, filled where it
        reads it (:meth:`_blot_chosen`): the canvas, or the whole filled box when the choice
        is dense; None when nothing is defined."""
        ny, nx = self.box.ny, self.box.nx
        at = positions.astype(np.float32)  # as doblot reads the map
        read = (at[:, 0] >= 0) & (at[:, 0] < nx) & (at[:, 1] >= 0) & (at[:, 1] < ny)
        ix, iy = at[read, 0].astype(np.int64), at[read, 1].astype(np.int64)
        if self._canvas is None:
            self._canvas = np.empty((ny, nx), dtype=np.float32)
        flat = None
        if undefined is not None:
            # a constant fill is pointwise: the stencils' pixels alone
            reach = np.arange(-_half_width(interp), _half_width(interp) + 1)
            if 2 * ix.size * reach.size ** 2 <= ny * nx:
                rows = np.clip(iy[:, None] + reach, 0, ny - 1)
                cols = np.clip(ix[:, None] + reach, 0, nx - 1)
                flat = (rows[:, :, None] * nx + cols[:, None, :]).ravel()
                values = np.asarray(image, dtype=np.float32).ravel()[flat]
                values = _fill(values, np.isfinite(values), 0, undefined, sky)
        if flat is None:
            t = _TILE
            ntx = -(-nx // t)
            tiles = np.unique((iy // t) * ntx + ix // t)
            core, margin = _tile_margin(interp, undefined is None)
            side = t + 2 * core
            width = side + 2 * margin
            if 2 * tiles.size * width * width > ny * nx:  # the whole box is cheaper
                return self._filled(image, np.isfinite(image), sky, interp, undefined)
            y0 = (tiles // ntx) * t - core
            x0 = (tiles % ntx) * t - core
            data = _gather_tiles(image, y0 - margin, x0 - margin, width, width)
            data = data.astype(np.float32, copy=False).reshape(-1, width)
            data = _fill(data, np.isfinite(data), core, undefined, sky)
            cores = data.reshape(-1, width, width)[:, margin:margin + side,
                                                   margin:margin + side]
            rows = y0[:, None] + np.arange(side)
            cols = x0[:, None] + np.arange(side)
            inside = (((rows >= 0) & (rows < ny))[:, :, None]
                      & ((cols >= 0) & (cols < nx))[:, None, :])
            flat = (rows[:, :, None] * nx + cols[:, None, :])[inside]
            values = cores[inside]
        # tiles' cores overlap where they meet, stencils where they do: the values there
        # are the same (all exact)
        self._canvas.ravel()[flat] = values
        return self._canvas

    def read(self, median_path: str | os.PathLike, extname: str = "MEDIAN") -> np.ndarray:
        """The part of a median file's image over :attr:`box` (NaN outside the frame)."""
        if self.box is None:
            raise ValueError("the chip misses the frame")
        return read_median(median_path, (self.box.x0, self.box.y0, self.box.nx, self.box.ny),
                           extname)

    def window(self, image: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """Cut (and NaN-pad) a frame image whose pixel (0, 0) is ``origin`` to :attr:`box`."""
        if self.box is None:
            raise ValueError("the chip misses the frame")
        out = np.full((self.box.ny, self.box.nx), np.nan, dtype=np.float32)
        ny, nx = np.shape(image)
        x0, y0 = origin[0] - self.box.x0, origin[1] - self.box.y0
        xa, xb = max(x0, 0), min(x0 + nx, self.box.nx)
        ya, yb = max(y0, 0), min(y0 + ny, self.box.ny)
        if xb > xa and yb > ya:
            out[ya:yb, xa:xb] = image[ya - y0:yb - y0, xa - x0:xb - x0]
        return out


_TILE = 32  # side of the tiles a blot of chosen pixels fills (ChipBlotter._blot_chosen)


def _tile_margin(interp: str, extend: bool) -> tuple[int, int]:
    """The core (pixels around a tile that ``interp`` may read for a position in it) and
    the margin around the core that makes the core's filled values exact: twice the hole
    fill's reach when undefined pixels are extended (:func:`_extend`; a core pixel's value
    depends on the pixels within its ring, at most the reach, each of whose ring numbers
    depends on the pixels within the reach), none for a constant fill."""
    core = _half_width(interp) + 1
    return core, 2 * core if extend else 0


def _gather_tiles(image: np.ndarray, y0: np.ndarray, x0: np.ndarray, height: int,
                  width: int) -> np.ndarray:
    """Windows of a 2-d image: ``(len(y0), height, width)``, window ``i`` starting at row
    ``y0[i]``, column ``x0[i]``; NaN where a window leaves the image (undefined)."""
    ny, nx = np.shape(image)
    y0, x0 = np.asarray(y0, dtype=np.int64), np.asarray(x0, dtype=np.int64)
    out = np.empty((y0.size, height, width), dtype=np.asarray(image[:0, :0]).dtype)
    whole = (y0 >= 0) & (x0 >= 0) & (y0 + height <= ny) & (x0 + width <= nx)
    if whole.any():  # one gather of the windows inside the image
        view = np.lib.stride_tricks.sliding_window_view(image, (height, width))
        out[whole] = view[y0[whole], x0[whole]]
    for i in np.flatnonzero(~whole):  # those that leave it (along its edges)
        out[i] = np.nan
        ya, yb = max(y0[i], 0), min(y0[i] + height, ny)
        xa, xb = max(x0[i], 0), min(x0[i] + width, nx)
        if yb > ya and xb > xa:
            out[i, ya - y0[i]:yb - y0[i], xa - x0[i]:xb - x0[i]] = image[ya:yb, xa:xb]
    return out


_RING_BLOCK = 64  # blocks _rings looks in (docs/speed.md, "Catalogues, rings and medians")


def _rings(finite: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undefined pixels within ``reach`` of a defined one: rows, columns and ring numbers,
    sorted by ring, then row, then column.

    The ring of a pixel is its chessboard distance to the nearest defined pixel: the number
    of 3x3 dilations of the defined set that reach it. Such pixels lie along the edges of the
    coverage, a small part of a chip's box in the frame: the box is cut into blocks of
    ``_RING_BLOCK`` pixels, and the distance transform runs only over the blocks that are
    not wholly defined and have a defined pixel within ``reach`` (each run of such blocks
    along a row of blocks padded by ``reach``, which decides every distance up to
    ``reach``), not over the whole box.
    """
    ny, nx = finite.shape
    empty = np.zeros(0, dtype=np.intp)
    if finite.size == 0:
        return empty, empty, empty
    b = _RING_BLOCK
    starts = np.arange(0, ny, b), np.arange(0, nx, b)
    any_defined = block_reduce(finite, *starts, np.logical_or)
    all_defined = block_reduce(finite, *starts, np.logical_and)
    near = any_defined
    for _ in range(-(-reach // b)):  # blocks within reach of a defined pixel
        near = bool_filter3(near, np.logical_or)
    todo = near & ~all_defined
    ys, xs, rings = [], [], []
    for i in np.flatnonzero(todo.any(axis=1)):
        r0, r1 = i * b, min((i + 1) * b, ny)
        a0, a1 = max(0, r0 - reach), min(ny, r1 + reach)
        run = np.flatnonzero(np.diff(np.concatenate(([0], todo[i].view(np.int8), [0]))))
        for j0, j1 in zip(run[::2], run[1::2], strict=True):  # runs of blocks [j0, j1)
            c0, c1 = j0 * b, min(j1 * b, nx)
            e0, e1 = max(0, c0 - reach), min(nx, c1 + reach)
            window = finite[a0:a1, e0:e1]
            dist = ndimage.distance_transform_cdt(~window, metric="chessboard")
            dist = dist[r0 - a0:r1 - a0, c0 - e0:c1 - e0]
            y, x = np.nonzero((dist >= 1) & (dist <= reach))
            ys.append(y + r0)
            xs.append(x + c0)
            rings.append(dist[y, x])
    if not ys:
        return empty, empty, empty
    ys, xs, rings = np.concatenate(ys), np.concatenate(xs), np.concatenate(rings)
    order = np.lexsort((xs, ys, rings))
    return ys[order], xs[order], rings[order]


def _fill(data: np.ndarray, finite: np.ndarray, reach: int, undefined: float | None,
          sky: float, rings=None, in_place: bool = False) -> np.ndarray:
    """Values as the interpolant reads them: undefined ones set to ``undefined``, or (None)
    extended from their defined neighbours up to ``reach`` (:func:`_extend`), then the sky
    added (float32)."""
    if not finite.all():
        if undefined is not None:
            data = np.where(finite, data, np.float32(undefined))
            in_place = True  # a copy of ours now
        else:
            data = _extend(data, finite, reach, rings, in_place=in_place)
            in_place = True
    if sky:
        if in_place:
            data += np.float32(sky)
        else:
            data = data + np.float32(sky)
    return data


def _extend(data: np.ndarray, finite: np.ndarray, reach: int, rings=None,
            in_place: bool = False) -> np.ndarray:
    """Fill undefined pixels up to ``reach`` pixels from defined ones with the mean of their
    defined 3x3 neighbours, ring by ring (the rest: 0); ``rings``: ``_rings(finite, reach)``
    when already known; ``in_place``: in ``data`` itself (float32)."""
    if in_place and data.dtype == np.float32:
        out = data
        np.copyto(out, np.float32(0.0), where=~finite)
    else:
        out = np.where(finite, data, np.float32(0.0)).astype(np.float32, copy=False)
    filled = finite.copy()
    ny, nx = out.shape
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    all_ys, all_xs, rings = _rings(finite, reach) if rings is None else rings
    bounds = np.searchsorted(rings, np.arange(1, reach + 2))
    for r in range(reach):
        ys, xs = all_ys[bounds[r]:bounds[r + 1]], all_xs[bounds[r]:bounds[r + 1]]
        if ys.size == 0:
            break
        total = np.zeros(ys.size, dtype=np.float64)
        count = np.zeros(ys.size, dtype=np.int64)
        for dy, dx in offsets:
            y, x = ys + dy, xs + dx
            inside = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
            y, x = np.where(inside, y, 0), np.where(inside, x, 0)
            use = inside & filled[y, x]
            total += np.where(use, out[y, x], 0.0)
            count += use
        out[ys, xs] = (total / count).astype(np.float32)
        filled[ys, xs] = True
    return out


def blot_median(median_path: str | os.PathLike, chip: Chip, *, sky: float = 0.0,
                interp: str = "poly5", step: int = DEFAULT_STEP,
                extname: str = "MEDIAN") -> Blot:
    """A layer's median (or another image of the median file) resampled onto one chip.

    Only the median pixels the chip can reach (its box in the frame plus the interpolant's
    reach) are read.

    Parameters
    ----------
    median_path : path
        A median file (:func:`mvmflow.median.median_layer`).
    chip : Chip
        The chip (:func:`mvmflow.resample.load_chips`, after
        :func:`mvmflow.solution.apply_solution` when the exposure was aligned).
    sky : float
        The exposure's sky offset as given to the median (e-/s per frame pixel).
    interp : str
        Interpolant (``poly5``, as the reference).
    step : int
        Pixel-map grid step.
    extname : str
        ``MEDIAN`` or ``UPPER``.

    Returns
    -------
    Blot
        In the chip's units; ``valid`` False everywhere when the chip misses the frame.
    """
    blotter = ChipBlotter(chip, median_frame(median_path), step=step)
    if blotter.box is None:
        return blotter._empty()
    return blotter.blot(blotter.read(median_path, extname), sky=sky, interp=interp)


def derivative_at(image: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """:func:`derivative` at some pixels alone (flat indices, row-major), to the bit: the
    same float32 differences (``|a - b| == |b - a|``) and their largest."""
    a = np.asarray(image, dtype=np.float32)
    ny, nx = a.shape
    flat = np.asarray(flat, dtype=np.intp).ravel()
    values = a.ravel()
    centre = values.take(flat)
    out = np.zeros(flat.size, dtype=np.float32)
    rows, cols = np.divmod(flat, nx)
    for step, has in ((-nx, rows > 0), (nx, rows < ny - 1), (-1, cols > 0),
                      (1, cols < nx - 1)):
        other = values.take(np.where(has, flat + step, flat))
        np.maximum(out, np.abs(other - centre), out=out, where=has)
    return out


def derivative(image: np.ndarray) -> np.ndarray:
    """Largest absolute difference of each pixel to its four neighbours (float32).

    Pixels on the edge use the neighbours they have.
    """
    a = np.asarray(image, dtype=np.float32)
    out = np.zeros(a.shape, dtype=np.float32)
    if a.shape[0] > 1:
        dy = np.abs(a[1:] - a[:-1])
        np.maximum(out[1:], dy, out=out[1:])
        np.maximum(out[:-1], dy, out=out[:-1])
    if a.shape[1] > 1:
        dx = np.abs(a[:, 1:] - a[:, :-1])
        np.maximum(out[:, 1:], dx, out=out[:, 1:])
        np.maximum(out[:, :-1], dx, out=out[:, :-1])
    return out
