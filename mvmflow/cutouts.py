"""Cutouts of layer products (hapcut's ``make_the_cut``, spec processing.md §5.3).

A layer product is a window of a projection cell's tangent plane, so a cutout is an
integer-pixel slice of it: its WCS is the product's WCS with CRPIX shifted by the slice
origin, which is exact. No resampling is done.

The box is ``n = round(size / pixel scale)`` pixels along each axis (at least 1), so 3" is
25 coarse or 75 fine pixels, as in the reference. Its origin is ``floor(x - (n - 1) / 2 +
0.5)`` for the (0-based) pixel position ``x`` of (RA, Dec), so the box centre is within half
a pixel of the position (for odd ``n`` the box is centred on the pixel containing it).
astrocut (``limit_rounding_method='round'``, the reference's) starts the box at
``round(x - n / 2)``, which treats pixel positions as corners: its box centre lies 0 to 1
pixel left/below the position. The two boxes are the same when the fraction of
``x - (n - 1) / 2`` is below 0.5 (for odd ``n``: when the position is in the right/upper
half of its pixel), and astrocut's is one pixel further left/down otherwise (a position on
a pixel centre can go either way in astrocut, whose ``n / 2`` carries floating-point
error). Parts of the box outside the product are NaN in SCI and 0 in WHT (the reference
fills WHT with NaN too).

The context image is cut too, when the product has a ``CTX`` whose last two axes are those of
``SCI`` (2-d for up to 32 inputs, 3-d ``(nplanes, ny, nx)`` beyond): the same box of every
plane, 0 outside the product, int32 kept. ``HDRTAB`` (one row per input chip, with
``CTXBIT``) is copied unchanged, so a cutout still says which exposures cover each of its
pixels (:mod:`mvmflow.cutcombine` uses this not to count an exposure twice). A ``CTX``
of another shape (the archive's empty ``CTX`` may have no data) is left out.

Only the box is read from the product, so a product is never loaded whole: an uncompressed
image through its memory map (only the pages of the box are touched), a tile-compressed one
through ``HDU.section`` (only the tiles of the box are decompressed).

The output has the source's full primary header plus ``FILENAME``, ``ORIG_FLE``,
``RA_OBJ`` and ``DEC_OBJ``, then the extensions ``SCI``, ``WHT`` [, ``CTX``] [, ``HDRTAB``]
with the cutout WCS (CRPIX shifted by the slice origin; ``PCX0``/``PCY0``, the origin on
the projection-cell plane, shifted likewise when present). It is named by
:class:`mvmflow.names.CutoutName`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from mvmflow.names import CutoutName, LayerName, cutout_size_arcsec
from mvmflow.workflow import atomic_path

log = logging.getLogger(__name__)

#: Extension-header keywords that would be stale in a cutout.
_STALE = ("CHECKSUM", "DATASUM", "S_REGION", "BSCALE", "BZERO", "BLANK")


def cutout_box(wcs: WCS, ra: float, dec: float, size) -> tuple[int, int, int, int] | None:
    """The cutout box ``(x0, y0, nx, ny)`` (0-based pixels of ``wcs``) at (``ra``, ``dec``).

    ``size`` is arcsec, a scalar (square) or ``(w, h)`` with ``w`` along x (RA). Returns
    None when the position does not project onto the plane.
    """
    w, h = cutout_size_arcsec(size)
    sx, sy = (s * 3600.0 for s in proj_plane_pixel_scales(wcs))
    nx = max(1, int(math.floor(w / sx + 0.5)))
    ny = max(1, int(math.floor(h / sy + 0.5)))
    x, y = (float(v) for v in wcs.world_to_pixel_values(ra, dec))
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    x0 = math.floor(x - (nx - 1) / 2 + 0.5)
    y0 = math.floor(y - (ny - 1) / 2 + 0.5)
    return x0, y0, nx, ny


def _read_box(hdu, x0: int, y0: int, nx: int, ny: int, fill: float) -> np.ndarray:
    """The ``(..., ny, nx)`` box at (x0, y0) of ``hdu``, ``fill`` outside; reads only the box.

    The box applies to the last two axes; leading axes (context planes) are read whole.
    The box must overlap the image. A NaN fill makes the result floating point.
    """
    *lead, NY, NX = hdu.shape
    xa, xb = max(x0, 0), min(x0 + nx, NX)
    ya, yb = max(y0, 0), min(y0 + ny, NY)
    box = (..., slice(ya, yb), slice(xa, xb))
    part = np.array(hdu.data[box]) if _mapped(hdu) else np.asarray(hdu.section[box])
    dtype = np.result_type(part.dtype, np.float32) if np.isnan(fill) else part.dtype
    out = np.full((*lead, ny, nx), fill, dtype=dtype)
    out[..., ya - y0:yb - y0, xa - x0:xb - x0] = part
    return out


def _mapped(hdu) -> bool:
    """Whether ``hdu.data`` is a memory map of the stored values.

    True for a plain (not tile-compressed) image without scaling in a file opened with
    ``memmap=True`` that is not gzip/bzip2/zip-compressed: slicing the map then reads only
    the pages of the box, in one call (``HDU.section`` reads an uncompressed box row by
    row, about 3x slower for large boxes).
    """
    if isinstance(hdu, fits.CompImageHDU) or not isinstance(hdu, fits.ImageHDU | fits.PrimaryHDU):
        return False
    if hdu.header.get("BSCALE", 1) != 1 or hdu.header.get("BZERO", 0) != 0:
        return False
    info = hdu.fileinfo()
    handle = info.get("file") if info else None
    return bool(getattr(handle, "memmap", False)) and getattr(handle, "compression", None) is None


def _cut_header(header: fits.Header, x0: int, y0: int, strict: bool = True) -> fits.Header:
    """``header`` for the slice at (x0, y0): CRPIX (and PCX0/PCY0) shifted, stale cards gone.

    With ``strict`` a missing CRPIX raises KeyError (SCI, WHT); otherwise it is left out.
    """
    hdr = header.copy()
    for key in _STALE:
        hdr.remove(key, ignore_missing=True, remove_all=True)
    for key, shift in (("CRPIX1", -x0), ("CRPIX2", -y0), ("PCX0", x0), ("PCY0", y0)):
        if key in header or (strict and key.startswith("CRPIX")):
            hdr[key] = header[key] + shift
    return hdr


def _cut_ctx(hdul: fits.HDUList, sci_shape: tuple[int, int], box) -> fits.ImageHDU | None:
    """The cut ``CTX`` extension, or None when the product has none on the SCI grid."""
    if "CTX" not in hdul:
        return None
    ctx = hdul["CTX"]
    shape = ctx.shape or ()
    if len(shape) not in (2, 3) or tuple(shape[-2:]) != tuple(sci_shape):
        log.info("CTX of shape %s is not on the SCI grid %s: not cut", shape, sci_shape)
        return None
    x0, y0, nx, ny = box
    data = _read_box(ctx, x0, y0, nx, ny, 0)
    return fits.ImageHDU(data, header=_cut_header(ctx.header, x0, y0, strict=False), name="CTX")


def _copy_hdrtab(hdul: fits.HDUList) -> fits.BinTableHDU | None:
    """A copy of the product's ``HDRTAB`` (one row per input chip), or None."""
    if "HDRTAB" not in hdul:
        return None
    src = hdul["HDRTAB"]
    return fits.BinTableHDU(data=src.data.copy(), header=src.header.copy(), name="HDRTAB")


def cut_product(path: str | os.PathLike, ra: float, dec: float, size,
                out_dir: str | os.PathLike = ".") -> Path | None:
    """Write the cutout of one layer product at (``ra``, ``dec``) degrees into ``out_dir``.

    Parameters
    ----------
    path : path
        A layer product named like ``hst_skycell-…_<instr>_<det>_<filter>_<label>_drz.fits``
        with ``SCI`` and ``WHT`` extensions (``CTX`` and ``HDRTAB`` are cut and copied
        when present).
    size : number or (w, h)
        Box size in arcsec (see :func:`mvmflow.names.cutout_size_arcsec`).

    Returns
    -------
    Path or None
        The cutout written, or None when the box does not overlap the product.

    Raises
    ------
    ValueError, OSError, KeyError
        For a badly named, unreadable or malformed product.
    """
    path = Path(path)
    name = CutoutName.from_layer(LayerName.parse(path.name), ra, dec).filename
    with fits.open(path, memmap=True) as hdul:
        sci, wht = hdul["SCI"], hdul["WHT"]
        if sci.shape != wht.shape or len(sci.shape) != 2:
            raise ValueError(f"{path.name}: SCI {sci.shape} and WHT {wht.shape} are not one 2-d grid")
        box = cutout_box(WCS(sci.header), ra, dec, size)
        if box is None:
            return None
        x0, y0, nx, ny = box
        NY, NX = sci.shape
        if x0 >= NX or y0 >= NY or x0 + nx <= 0 or y0 + ny <= 0:
            return None
        sci_data = _read_box(sci, x0, y0, nx, ny, np.nan)
        wht_data = _read_box(wht, x0, y0, nx, ny, 0.0)

        primary = hdul[0].header.copy()
        primary["FILENAME"] = name
        primary["ORIG_FLE"] = path.name
        primary["RA_OBJ"] = (ra, "[deg] right ascension")
        primary["DEC_OBJ"] = (dec, "[deg] declination")
        out = fits.HDUList([
            fits.PrimaryHDU(header=primary),
            fits.ImageHDU(sci_data, header=_cut_header(sci.header, x0, y0), name="SCI"),
            fits.ImageHDU(wht_data, header=_cut_header(wht.header, x0, y0), name="WHT"),
        ])
        for extra in (_cut_ctx(hdul, sci.shape, box), _copy_hdrtab(hdul)):
            if extra is not None:
                out.append(extra)
        target = Path(out_dir) / name
        with atomic_path(target) as tmp:
            out.writeto(tmp, overwrite=True)
    return target


def make_cutouts(paths: Iterable[str | os.PathLike], ra: float, dec: float, size,
                 out_dir: str | os.PathLike = ".") -> tuple[list[Path], list[tuple[Path, str]]]:
    """Cut every product of ``paths`` that overlaps the box; see :func:`cut_product`.

    A product that fails is logged and reported; the rest are still cut. Products that do
    not overlap the box are skipped silently (logged at INFO).

    Returns
    -------
    (written, failed)
        The cutouts written, and ``(path, reason)`` for each product that failed.
    """
    cutout_size_arcsec(size)  # a bad size is the caller's error, not every file's
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for path in paths:
        path = Path(path)
        try:
            result = cut_product(path, ra, dec, size, out_dir)
        except Exception as exc:  # noqa: BLE001 - one bad product must not stop the rest
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("cannot cut %s: %s", path, reason)
            failed.append((path, reason))
            continue
        if result is None:
            log.info("%s does not overlap the cutout box", path)
        else:
            written.append(result)
    return written, failed
