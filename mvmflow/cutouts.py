"""Cutouts of layer products (hapcut's ``make_the_cut``, spec processing.md §5.3).

A layer product is a window of a projection cell's tangent plane, so a cutout is an
integer-pixel slice of it: its WCS is the product's WCS with CRPIX shifted by the slice
origin, which is exact. No resampling is done.

The box is ``n = round(size / pixel scale)`` pixels along each axis (at least 1), so 3" is
25 coarse or 75 fine pixels, as in the reference. Its origin is ``floor(x - (n - 1) / 2 +
0.5)`` for the (0-based) pixel position ``x`` of (RA, Dec), so the box centre is within half
a pixel of the position. For odd ``n`` the box is centred on the pixel containing the
position, exactly what astrocut's ``limit_rounding_method='round'`` gives; for even ``n``
astrocut's box (``round(x - n / 2)``) can be one pixel further left/down. Parts of the box outside the
product are NaN in SCI and 0 in WHT (the reference fills WHT with NaN too).

Only the rows and columns of the box are read from the product (``HDU.section``), so an
uncompressed product is never loaded whole.

The output has the source's full primary header plus ``FILENAME``, ``ORIG_FLE``,
``RA_OBJ`` and ``DEC_OBJ``, then ``SCI`` and ``WHT`` image extensions with the cutout WCS.
It is named by :class:`mvmflow.names.CutoutName`.
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
    """The ``(ny, nx)`` box at (x0, y0) of ``hdu``, ``fill`` outside; reads only the box.

    The box must overlap the image. A NaN fill makes the result floating point.
    """
    NY, NX = hdu.shape
    xa, xb = max(x0, 0), min(x0 + nx, NX)
    ya, yb = max(y0, 0), min(y0 + ny, NY)
    part = np.asarray(hdu.section[ya:yb, xa:xb])
    dtype = np.result_type(part.dtype, np.float32) if np.isnan(fill) else part.dtype
    out = np.full((ny, nx), fill, dtype=dtype)
    out[ya - y0:yb - y0, xa - x0:xb - x0] = part
    return out


def _cut_header(header: fits.Header, x0: int, y0: int) -> fits.Header:
    hdr = header.copy()
    for key in _STALE:
        hdr.remove(key, ignore_missing=True, remove_all=True)
    hdr["CRPIX1"] = header["CRPIX1"] - x0
    hdr["CRPIX2"] = header["CRPIX2"] - y0
    return hdr


def cut_product(path: str | os.PathLike, ra: float, dec: float, size,
                out_dir: str | os.PathLike = ".") -> Path | None:
    """Write the cutout of one layer product at (``ra``, ``dec``) degrees into ``out_dir``.

    Parameters
    ----------
    path : path
        A layer product named like ``hst_skycell-…_<instr>_<det>_<filter>_<label>_drz.fits``
        with ``SCI`` and ``WHT`` extensions.
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
