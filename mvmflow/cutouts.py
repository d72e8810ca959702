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

A product is identified by opening it (:func:`product_layer_name`): a file named like a layer
product must agree with what its header says (``SCELLID``, ``INSTRUME``, ``DETECTOR``,
``FILTER``, the SCI WCS's pixel scale and tangent point, ``ROOTNAME``/``FILENAME``); a
renamed file is identified by its header alone (``ROOTNAME`` first, which our products and the archive's
carry). A file that is missing, a directory, unreadable, not FITS, truncated, or not a layer
product (no ``SCI``/``WHT``, nothing identifying it) raises :class:`ProductError`, whose
message is the reason (``no such file``, ``not a layer product: no WHT extension ...``).
"""

from __future__ import annotations

import logging
import math
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.card import Undefined
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from mvmflow.grid import SCALES as GRID_SCALES
from mvmflow.grid import ProjectionCell, scale_name
from mvmflow.names import (
    CutoutName,
    LayerName,
    cutout_size_arcsec,
    filter_from_header,
    normalize_filter,
    parse_skycell,
    skycell_from_scellid,
)
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


class ProductError(ValueError):
    """A file that cannot be cut; the message is the reason, ready to show after the path."""


#: Fields of a layer name that a cutout name carries, in the order reported.
_FIELDS = ("skycell", "instrument", "detector", "filter", "scale", "exptime_class", "year",
           "ipppssoo")


def _fields(layer: LayerName) -> dict:
    return {f: getattr(layer, f) for f in _FIELDS}


def _text(value) -> str:
    """A header value as stripped text; '' for a missing or blank value."""
    if value is None or isinstance(value, Undefined):
        return ""
    return str(value).strip()


def _check_path(path: Path) -> None:
    """Raise :class:`ProductError` unless ``path`` is an existing, readable regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ProductError("no such file" + (" (broken symbolic link)" if path.is_symlink()
                                             else "")) from None
    except OSError as exc:
        raise ProductError(f"cannot access the file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ProductError("is a directory, not a FITS file")
    if not stat.S_ISREG(st.st_mode):
        raise ProductError("not a regular file")
    if st.st_size == 0:
        raise ProductError("empty file, not a FITS file")
    if not os.access(path, os.R_OK):
        raise ProductError("cannot read the file: permission denied")


@contextmanager
def open_product(path: str | os.PathLike) -> Iterator[fits.HDUList]:
    """Open a FITS file (memory-mapped) with every header read; clear errors otherwise.

    Raises :class:`ProductError` for a missing path, a directory, an empty, unreadable,
    non-FITS or truncated file. The data are not read.
    """
    path = Path(path)
    _check_path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=True)
        except PermissionError:
            raise ProductError("cannot read the file: permission denied") from None
        except Exception as exc:  # noqa: BLE001 - astropy raises OSError, ValueError, ...
            raise ProductError(f"not a FITS file, or a corrupt one: {_first_sentence(exc)}") from None
        try:
            hdul.readall()
        except Exception as exc:  # noqa: BLE001
            hdul.close()
            raise ProductError(f"corrupt FITS file: {_first_sentence(exc)}") from None
    for w in caught:
        message = _first_sentence(w.message)
        if "truncated" in message.lower():
            hdul.close()
            raise ProductError(f"truncated FITS file: {message.split('truncated:')[-1].strip()}")
        log.warning("%s: %s", path, message)
    with hdul:
        yield hdul


def _first_sentence(exc) -> str:
    text = " ".join(str(exc).split())
    return text.split(". ")[0].rstrip(".") or type(exc).__name__


def _layer_hdus(hdul: fits.HDUList):
    """``(SCI, WHT)`` of a layer product, or :class:`ProductError` saying why it is not one."""
    missing = [name for name in ("SCI", "WHT") if name not in hdul]
    if missing:
        found = ", ".join(h.name or "(unnamed)" for h in hdul)
        raise ProductError(f"not a layer product: no {' or '.join(missing)} extension "
                           f"(it has {found})")
    sci, wht = hdul["SCI"], hdul["WHT"]
    if sci.shape != wht.shape or len(sci.shape) != 2:
        raise ProductError(f"not a layer product: SCI {sci.shape} and WHT {wht.shape} are "
                           "not one 2-d grid")
    return sci, wht


def _celestial_wcs(sci_header: fits.Header) -> WCS:
    try:
        wcs = WCS(sci_header)
    except Exception as exc:  # noqa: BLE001 - astropy.wcs raises many kinds
        raise ProductError(f"not a layer product: unusable SCI WCS ({_first_sentence(exc)})") from None
    if not wcs.has_celestial or wcs.naxis != 2:
        raise ProductError("not a layer product: SCI has no celestial 2-d WCS")
    return wcs


def _scale_of(wcs: WCS) -> str:
    """``'fine'``/``'coarse'`` from the WCS pixel scale, else the scale in arcsec/px."""
    sx, sy = (float(s) * 3600.0 for s in proj_plane_pixel_scales(wcs))
    name = scale_name(sx, rel_tol=1e-4)
    if name is not None and scale_name(sy, rel_tol=1e-4) == name:
        return name
    return f'{sx:.4g}"/px' if math.isclose(sx, sy, rel_tol=1e-4) else f'{sx:.4g}x{sy:.4g}"/px'


def _header_value(headers, key: str) -> tuple[str, str]:
    """``(value, where)`` of the first non-blank ``key`` in the primary then SCI header."""
    for header, where in zip(headers, ("", " in SCI"), strict=True):
        value = _text(header.get(key))
        if value:
            return value, where
    return "", ""


def _header_facts(primary: fits.Header, sci_header: fits.Header, wcs: WCS):
    """What the headers say about the product.

    Returns ``(facts, named)``: ``facts`` is a list of ``(field, value, source)`` from the
    keywords (``SCELLID``, ``INSTRUME``, ``DETECTOR``, ``FILTER``) and the SCI WCS (scale,
    tangent point), ``named`` a list of ``(LayerName, keyword, value)`` from ``ROOTNAME``
    and ``FILENAME`` when they are layer names.
    """
    headers = (primary, sci_header)
    facts: list[tuple[str, object, str]] = []
    value, where = _header_value(headers, "SCELLID")
    if value:
        try:
            cell = skycell_from_scellid(value.removeprefix("skycell-"))
        except ValueError:
            raise ProductError(f"SCELLID{where} {value!r} is not a sky-cell id") from None
        facts.append(("skycell", cell, f"SCELLID{where}"))
    instrument, where = _header_value(headers, "INSTRUME")
    instrument = instrument.lower()
    if instrument:
        facts.append(("instrument", instrument, f"INSTRUME{where}"))
    detector, where = _header_value(headers, "DETECTOR")
    if instrument == "wfpc2" and (not detector or detector.isdigit()):
        detector, where = "pc", " (WFPC2)"  # the poller's and the names' WFPC2 detector
    if detector:
        facts.append(("detector", detector.lower(), f"DETECTOR{where}"))
    raw, where = _header_value(headers, "FILTER")
    try:
        if raw:
            facts.append(("filter", normalize_filter(raw), f"FILTER{where}"))
        elif instrument in ("acs", "wfpc2"):
            facts.append(("filter", filter_from_header(primary), "FILTER1/FILTER2"))
    except ValueError:
        pass  # no usable filter keyword: the name (or ROOTNAME) has to say it
    named: list[tuple[LayerName, str, str]] = []
    for key in ("FILENAME", "ROOTNAME"):
        value = _text(primary.get(key))
        if not value:
            continue
        try:
            if key == "FILENAME":
                layer = LayerName.parse(value)
            else:  # the product type is FILENAME's when they name the same product
                ptype = next((n.product_type for n, _, _ in named if n.rootname == value), "drz")
                layer = LayerName.from_rootname(value, ptype)
        except ValueError:
            continue  # e.g. a cutout's FILENAME: not a layer's
        named.insert(0, (layer, key, value))  # ROOTNAME first
    facts += [("scale", _scale_of(wcs), "the SCI WCS pixel scale"),
              ("tangent point", tuple(float(v) for v in wcs.wcs.crval), "SCI CRVAL1/2")]
    return facts, named


def _on_plane(skycell: str, crval) -> bool:
    """Whether ``crval`` (deg) is the tangent point of ``skycell``'s projection cell."""
    pc_ra, pc_dec = ProjectionCell(parse_skycell(skycell)[0]).crval
    ra, dec = crval
    dra = abs((ra - pc_ra + 180.0) % 360.0 - 180.0)
    return abs(dec - pc_dec) < 1e-6 and (dra < 1e-6 or abs(pc_dec) > 89.9)


def _disagreements(layer: LayerName, by: str, facts, named, skip: str | None = None) -> list[str]:
    """How ``layer`` (from ``by``) disagrees with the header ``facts`` and ``named`` layers."""
    mine = _fields(layer)
    out = []
    for field, value, source in facts:
        if field == "tangent point":
            if layer.skycell is not None and not _on_plane(layer.skycell, value):
                out.append(f"{layer.skycell} is not on the plane of the WCS "
                           f"({source} {value[0]:.8g}, {value[1]:.8g})")
        elif mine[field] != value:
            out.append(f"{field} {mine[field]} in {by}, {value} in {source}")
    for other, source, raw in named:
        if source != skip and _fields(other) != mine:
            out.append(f"{source} is {raw}")
    return out


def product_layer_name(path: str | os.PathLike, primary: fits.Header, sci_header: fits.Header,
                       wcs: WCS | None = None) -> LayerName:
    """The layer name of a product: its file name if that is one, checked against the header.

    When the file name is a sky-cell layer name (:meth:`LayerName.parse`; a custom-mosaic
    prefix counts only when the header does not name a sky cell), every identifying keyword
    present must agree with it: ``SCELLID``, ``INSTRUME``, ``DETECTOR``, ``FILTER`` (ACS,
    WFPC2: ``FILTER1``/``FILTER2``), the SCI WCS (pixel scale: fine 0.04"/px, coarse
    0.12"/px; tangent point: the sky cell's projection-cell centre) and
    ``ROOTNAME``/``FILENAME`` when they are layer names. Otherwise
    (a renamed file) the name comes from the header: ``ROOTNAME`` (the product's name less
    ``_<type>.fits``, in our products and the archive's), else ``FILENAME``, else the keywords
    (``SCELLID``, ``INSTRUME``, ``DETECTOR``, ``FILTER`` and the scale; class ``all``). The
    header's own sources must agree too.

    Raises
    ------
    ProductError
        When the name and the header disagree, or neither identifies a layer product.
    """
    name = Path(path).name
    wcs = _celestial_wcs(sci_header) if wcs is None else wcs
    facts, named = _header_facts(primary, sci_header, wcs)
    try:
        layer = LayerName.parse(name)
    except ValueError:
        layer = None
    header_has_cell = bool(named) or any(field == "skycell" for field, _, _ in facts)
    if layer is not None and (layer.skycell is not None or not header_has_cell):
        bad = _disagreements(layer, "the name", facts, named)
        if bad:
            raise ProductError("the file name and the header disagree: " + "; ".join(bad))
        return layer
    if named:
        layer, source, _ = named[0]
        bad = _disagreements(layer, source, facts, named, skip=source)
        if bad:
            raise ProductError(f"the header contradicts its {source} {layer.rootname}: "
                               + "; ".join(bad))
        return layer
    have = {field: value for field, value, _ in facts}
    keys = {"skycell": "SCELLID", "instrument": "INSTRUME", "detector": "DETECTOR",
            "filter": "FILTER"}
    missing = [key for field, key in keys.items() if field not in have]
    if missing:
        raise ProductError(
            f"not a layer product: {name!r} is not a sky-cell layer name and the header has "
            f"no layer ROOTNAME or FILENAME, nor {', '.join(missing)}")
    if have["scale"] not in GRID_SCALES:
        raise ProductError(f"not a layer product: pixel scale {have['scale']} is neither fine "
                           "nor coarse")
    try:
        layer = LayerName.for_skycell(have["skycell"], have["instrument"], have["detector"],
                                      have["filter"], scale=have["scale"])
    except ValueError as err:
        raise ProductError(f"not a layer product: {err}") from None
    bad = _disagreements(layer, "the keywords", facts, named)
    if bad:
        raise ProductError("the header contradicts itself: " + "; ".join(bad))
    return layer


def identify_product(path: str | os.PathLike) -> LayerName:
    """The layer name of the product in ``path`` (see :func:`product_layer_name`).

    Raises :class:`ProductError` for a file that is missing, unreadable, not FITS, or not a
    layer product.
    """
    with open_product(path) as hdul:
        sci, _ = _layer_hdus(hdul)
        return product_layer_name(path, hdul[0].header, sci.header)


def cut_product(path: str | os.PathLike, ra: float, dec: float, size,
                out_dir: str | os.PathLike = ".") -> Path | None:
    """Write the cutout of one layer product at (``ra``, ``dec``) degrees into ``out_dir``.

    Parameters
    ----------
    path : path
        A layer product (ours or the archive's) with ``SCI`` and ``WHT`` extensions
        (``CTX`` and ``HDRTAB`` are cut and copied when present). It is identified by its
        name checked against its header, or by its header when renamed
        (:func:`product_layer_name`).
    size : number or (w, h)
        Box size in arcsec (see :func:`mvmflow.names.cutout_size_arcsec`).

    Returns
    -------
    Path or None
        The cutout written, or None when the box does not overlap the product.

    Raises
    ------
    ProductError
        For a missing, unreadable, non-FITS or corrupt file, or one that is not a layer
        product (the message is the reason).
    ValueError, OSError
        For other failures (e.g. the output cannot be written).
    """
    return _cut(Path(path), ra, dec, size, out_dir, {})


def _cut(path: Path, ra: float, dec: float, size, out_dir, done: dict) -> Path | None:
    """:func:`cut_product`; ``done`` maps the cutout names written so far to their sources."""
    with open_product(path) as hdul:
        sci, wht = _layer_hdus(hdul)
        wcs = _celestial_wcs(sci.header)
        layer = product_layer_name(path, hdul[0].header, sci.header, wcs)
        try:
            name = CutoutName.from_layer(layer, ra, dec).filename
        except ValueError as err:
            raise ProductError(str(err)) from None
        box = cutout_box(wcs, ra, dec, size)
        if box is None:
            return None
        x0, y0, nx, ny = box
        NY, NX = sci.shape
        if x0 >= NX or y0 >= NY or x0 + nx <= 0 or y0 + ny <= 0:
            return None
        target = Path(out_dir) / name
        if name in done:
            raise ProductError(f"the same product as {done[name]} (both cut to {name})")
        if target.exists() and target.resolve() == path.resolve():
            raise ProductError(f"its cutout {name} would replace it")
        try:
            sci_data = _read_box(sci, x0, y0, nx, ny, np.nan)
            wht_data = _read_box(wht, x0, y0, nx, ny, 0.0)
        except (OSError, TypeError, ValueError) as exc:
            raise ProductError(f"cannot read SCI/WHT (corrupt file?): {_first_sentence(exc)}") from None

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
        with atomic_path(target) as tmp:
            out.writeto(tmp, overwrite=True)
    done[name] = path
    return target


def make_cutouts(paths: Iterable[str | os.PathLike], ra: float, dec: float, size,
                 out_dir: str | os.PathLike = ".") -> tuple[list[Path], list[tuple[Path, str]]]:
    """Cut every product of ``paths`` that overlaps the box; see :func:`cut_product`.

    A file that fails is returned with the reason (a :class:`ProductError`'s message as is:
    ``no such file``, ``not a layer product: ...``; other errors prefixed by their type) and
    logged at INFO only, since the callers report it; the rest are still cut. Products that
    do not overlap the box are skipped silently (logged at INFO), and so is a path given
    twice. Two different files that are the same product (a renamed copy) would write the
    same cutout: the second fails.

    Returns
    -------
    (written, failed)
        The cutouts written, and ``(path, reason)`` for each file that failed.
    """
    cutout_size_arcsec(size)  # a bad size is the caller's error, not every file's
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    done: dict[str, Path] = {}
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        key = path.resolve()
        if key in seen:
            log.info("%s given twice: cut once", path)
            continue
        seen.add(key)
        try:
            result = _cut(path, ra, dec, size, out_dir, done)
        except Exception as exc:  # noqa: BLE001 - one bad product must not stop the rest
            reason = str(exc) if isinstance(exc, ProductError) else f"{type(exc).__name__}: {exc}"
            log.info("cannot cut %s: %s", path, reason)  # the caller reports ``failed``
            failed.append((path, reason))
            continue
        if result is None:
            log.info("%s does not overlap the cutout box", path)
        else:
            written.append(result)
    return written, failed
