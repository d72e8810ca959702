"""A light, lazy reader of one calibrated HST exposure (``_flt.fits`` / ``_flc.fits``).

:class:`Exposure` reads every HDU header once, on first use, and keeps only the headers; pixel
arrays are read one extension at a time (memory-mapped where the file allows it) and every
file handle is closed before a method returns. There is no global state.

Conventions
-----------
- Identity comes from the file name through :mod:`mvmflow.names` (plain ``ib4606c5q_flc.fits``
  or SVM ``hst_11665_06_wfc3_uvis_f555w_ib4606c5_flc.fits`` names); ``ROOTNAME`` in the primary
  header is used only when the name is not an exposure name (``ptype`` then cannot be known).
- Pixel coordinates are 0-based; pixel *edges* of a chip of ``nx`` columns run from ``-0.5``
  to ``nx - 0.5``.
- HST "constant-value" extensions (``NAXIS = 0`` with ``PIXVALUE`` and ``NPIX1``/``NPIX2``,
  common for ERR and DQ) are expanded to full arrays by the readers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from mvmflow.names import (
    filter_from_header,
    instrument_from_rootname,
    parse_exposure,
)

__all__ = [
    "DEFAULT_SAMPLES_PER_EDGE",
    "Exposure",
    "HeaderError",
    "edge_pixels",
]

DEFAULT_SAMPLES_PER_EDGE = 25
"""Footprint points per chip edge (4 edges, so 100 points per chip)."""

SECONDS_PER_DAY = 86400.0


class HeaderError(ValueError):
    """A keyword the caller asked for is missing or has an unusable value."""


@dataclass(frozen=True)
class _HduInfo:
    """Position, name and header of one HDU."""

    index: int
    extname: str
    extver: int
    header: fits.Header


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _keyword(header: fits.Header, key: str, where: str):
    """Return ``header[key]``; raise :class:`HeaderError` if it is missing or blank."""
    value = header.get(key)
    if _blank(value):
        raise HeaderError(f"{where} header has no {key} keyword")
    return value


def _float_keyword(header: fits.Header, key: str, where: str) -> float:
    value = _keyword(header, key, where)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HeaderError(f"{key} is {value!r} in the {where} header, not a number") from None
    if not np.isfinite(number):
        raise HeaderError(f"{key} is {value!r} in the {where} header, not a finite number")
    return number


def edge_pixels(
    shape: tuple[int, int], samples_per_edge: int = DEFAULT_SAMPLES_PER_EDGE
) -> np.ndarray:
    """Return 0-based ``(x, y)`` points along the edge pixels of an image, going round once.

    The points are the centres of the outermost pixels (``0 .. n - 1``), as the reference's
    ``SkyFootprint`` samples them: footprints, sky-cell membership and the trimmed layer
    frames then match the reference's to the pixel.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    samples_per_edge : int
        Points per edge; each edge starts at its first corner and stops short of the next,
        so the outline has ``4 * samples_per_edge`` points and is not closed.

    Returns
    -------
    numpy.ndarray
        ``(4 * samples_per_edge, 2)`` array of ``(x, y)``, counter-clockwise in pixel space
        from the corner pixel ``(0, 0)``.
    """
    if samples_per_edge < 1:
        raise ValueError(f"samples_per_edge must be at least 1, not {samples_per_edge}")
    ny, nx = shape
    x0, y0, x1, y1 = 0.0, 0.0, float(nx - 1), float(ny - 1)
    t = np.linspace(0.0, 1.0, samples_per_edge, endpoint=False)
    xs = np.concatenate(
        [x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)]
    )
    ys = np.concatenate(
        [np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t]
    )
    return np.column_stack([xs, ys])


class Exposure:
    """Lazy reader of one calibrated HST exposure.

    Parameters
    ----------
    path : str or os.PathLike
        The ``_flt.fits`` / ``_flc.fits`` file. Nothing is read until an attribute is used.

    Notes
    -----
    Header-derived attributes raise :class:`HeaderError` (a ``ValueError``) when their keyword
    is missing; the file-name-derived ones raise ``ValueError`` for a non-exposure name.
    Opening the file may raise ``OSError`` for an unreadable or non-FITS file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Exposure:
        """Return an :class:`Exposure` whose headers are already read (fails early if unreadable)."""
        exposure = cls(path)
        exposure._hdus  # noqa: B018 - read the headers now
        return exposure

    def __repr__(self) -> str:
        return f"Exposure({os.fspath(self.path)!r})"

    # --------------------------------------------------------------------------------------
    # headers

    @cached_property
    def _hdus(self) -> tuple[_HduInfo, ...]:
        """Every HDU's index, EXTNAME (upper case), EXTVER and a copy of its header."""
        infos = []
        with fits.open(self.path, memmap=True, lazy_load_hdus=True) as hdul:
            for index, hdu in enumerate(hdul):
                header = hdu.header
                extname = (
                    "PRIMARY" if index == 0 else str(header.get("EXTNAME", "")).strip().upper()
                )
                extver = int(header.get("EXTVER", 1) or 1)
                infos.append(_HduInfo(index, extname, extver, header.copy()))
        return tuple(infos)

    @property
    def primary_header(self) -> fits.Header:
        """The primary header (a copy owned by this object)."""
        return self._hdus[0].header

    def _find(self, extname: str, extver: int) -> _HduInfo | None:
        extname = extname.upper()
        for info in self._hdus[1:]:
            if info.extname == extname and info.extver == extver:
                return info
        return None

    def has_extension(self, extname: str, extver: int = 1) -> bool:
        """True if the file has an ``(extname, extver)`` extension."""
        return self._find(extname, extver) is not None

    def header(self, extname: str, extver: int = 1) -> fits.Header:
        """Return the header of extension ``(extname, extver)``; ``KeyError`` if absent."""
        info = self._find(extname, extver)
        if info is None:
            raise KeyError(f"{self.filename} has no ({extname.upper()},{extver}) extension")
        return info.header

    def sci_header(self, extver: int = 1) -> fits.Header:
        """Return the header of ``(SCI, extver)``."""
        return self.header("SCI", extver)

    @property
    def extensions(self) -> list[tuple[str, int]]:
        """``(EXTNAME, EXTVER)`` of every extension (not the primary), in file order."""
        return [(info.extname, info.extver) for info in self._hdus[1:]]

    @property
    def extvers(self) -> list[int]:
        """EXTVERs of the SCI extensions, in file order."""
        return [info.extver for info in self._hdus[1:] if info.extname == "SCI"]

    # --------------------------------------------------------------------------------------
    # identity (file name first)

    @property
    def filename(self) -> str:
        return self.path.name

    @cached_property
    def _name(self):
        """The parsed file name (of a ``.fits.gz``: of the file it holds), or None when it
        is not an exposure name."""
        name = self.filename
        try:
            return parse_exposure(name[: -len(".gz")] if name.endswith(".fits.gz") else name)
        except ValueError:
            return None

    @property
    def rootname(self) -> str:
        """Lower-case rootname: from the file name (9 or 8 characters), else ``ROOTNAME``."""
        if self._name is not None:
            root = self._name.rootname
            header_root = str(self.primary_header.get("ROOTNAME", "")).strip().lower()
            # An SVM name carries only the ipppssoo: complete it from the header if it agrees.
            if len(root) == 8 and len(header_root) == 9 and header_root.startswith(root):
                return header_root
            return root
        return str(_keyword(self.primary_header, "ROOTNAME", "primary")).strip().lower()

    @property
    def ipppssoo(self) -> str:
        return self.rootname[:8]

    @property
    def ptype(self) -> str:
        """``'flt'`` or ``'flc'``, from the file name."""
        if self._name is None:
            raise ValueError(
                f"{self.filename!r} is not an exposure name "
                "('<ipppssoot>_<flt|flc>.fits' or an SVM name): cannot tell FLT from FLC"
            )
        return self._name.file_type

    @property
    def instrument(self) -> str:
        """Lower-case ``INSTRUME`` (``acs``, ``wfc3``, ...); from the rootname if absent."""
        value = self.primary_header.get("INSTRUME")
        if _blank(value):
            return instrument_from_rootname(self.rootname)
        return str(value).strip().lower()

    @property
    def detector(self) -> str:
        """Lower-case ``DETECTOR`` (``wfc``, ``uvis``, ``ir``, ``hrc``, ``sbc``)."""
        value = self.primary_header.get("DETECTOR")
        if _blank(value) and self.instrument == "wfpc2":
            return "pc"
        return str(_keyword(self.primary_header, "DETECTOR", "primary")).strip().lower()

    @property
    def detkey(self) -> str:
        return f"{self.instrument}_{self.detector}"

    @property
    def filter(self) -> str:
        """Normalised lower-case filter name (:func:`mvmflow.names.filter_from_header`)."""
        try:
            return filter_from_header(self.primary_header)
        except ValueError as err:
            raise HeaderError(str(err)) from None

    # --------------------------------------------------------------------------------------
    # times and programme

    @property
    def exptime(self) -> float:
        """``EXPTIME`` of the primary header, seconds."""
        return _float_keyword(self.primary_header, "EXPTIME", "primary")

    @property
    def expstart(self) -> float:
        """``EXPSTART``, MJD."""
        return _float_keyword(self.primary_header, "EXPSTART", "primary")

    @property
    def expend(self) -> float:
        """``EXPEND``, MJD; ``EXPSTART + EXPTIME`` when the keyword is absent."""
        if _blank(self.primary_header.get("EXPEND")):
            return self.expstart + self.exptime / SECONDS_PER_DAY
        return _float_keyword(self.primary_header, "EXPEND", "primary")

    @property
    def date_obs(self) -> str:
        """``DATE-OBS`` (``YYYY-MM-DD``); :class:`HeaderError` if it is not such a date."""
        import datetime

        text = str(_keyword(self.primary_header, "DATE-OBS", "primary")).strip()
        try:
            datetime.date.fromisoformat(text[:10])
        except ValueError:
            raise HeaderError(f"DATE-OBS is {text!r} in the primary header, not a date "
                              "(YYYY-MM-DD)") from None
        return text

    @property
    def proposid(self) -> str:
        """``PROPOSID`` as a string (``'11665'``)."""
        return str(_keyword(self.primary_header, "PROPOSID", "primary")).strip()

    # --------------------------------------------------------------------------------------
    # photometry and units

    def _sci_then_primary(self) -> list[tuple[str, fits.Header]]:
        """The first SCI header (if any) then the primary header, with their names."""
        headers = []
        if self.extvers:
            extver = self.extvers[0]
            headers.append((f"SCI,{extver}", self.sci_header(extver)))
        headers.append(("primary", self.primary_header))
        return headers

    def _phot(self, key: str) -> float:
        headers = self._sci_then_primary()
        if str(self.primary_header.get("DETECTOR", "")).strip().upper() == "IR":
            headers.reverse()
        for where, header in headers:
            if not _blank(header.get(key)):
                return _float_keyword(header, key, where)
        raise HeaderError(f"no {key} keyword in the SCI or primary header")

    @property
    def photflam(self) -> float:
        """``PHOTFLAM`` of (SCI,1), or of the primary header for WFC3/IR; falls back to the other."""
        return self._phot("PHOTFLAM")

    @property
    def photplam(self) -> float:
        """``PHOTPLAM``, looked up like :attr:`photflam`."""
        return self._phot("PHOTPLAM")

    @property
    def bunit(self) -> str:
        """``BUNIT`` of the first SCI header (primary as fallback), ``''`` if absent."""
        for _, header in self._sci_then_primary():
            if not _blank(header.get("BUNIT")):
                return str(header["BUNIT"]).strip()
        return ""

    @property
    def wcsname(self) -> str:
        """``WCSNAME`` of the first SCI header, ``''`` if absent."""
        if not self.extvers:
            return ""
        return str(self.sci_header(self.extvers[0]).get("WCSNAME", "")).strip()

    # --------------------------------------------------------------------------------------
    # geometry

    def chip_shape(self, extver: int = 1) -> tuple[int, int]:
        """``(ny, nx)`` of ``(SCI, extver)``, from NAXISn or, for a constant image, NPIXn."""
        header = self.sci_header(extver)
        return _image_shape(header, f"SCI,{extver}")

    def chip_wcs(self, extver: int = 1) -> WCS:
        """Return the full WCS of ``(SCI, extver)``: SIP + NPOL (WCSDVARR) + D2IM (D2IMARR).

        The lookup tables are read from the file (``fobj``) and copied, so the returned WCS
        does not depend on the file staying open. ``pixel_shape`` is ``(nx, ny)``.
        """
        header = self.sci_header(extver)
        shape = _image_shape(header, f"SCI,{extver}")
        with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdul:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(header, fobj=hdul)
        wcs.pixel_shape = (shape[1], shape[0])
        return wcs

    def footprint(
        self, extver: int = 1, samples_per_edge: int = DEFAULT_SAMPLES_PER_EDGE,
        wcs: WCS | None = None,
    ) -> np.ndarray:
        """Return the chip outline on the sky through the full WCS.

        Parameters
        ----------
        extver : int
            SCI extension.
        samples_per_edge : int
            Points per edge (see :func:`edge_pixels`).
        wcs : astropy.wcs.WCS, optional
            A WCS to use instead of the header's (an aligned one).

        Returns
        -------
        numpy.ndarray
            ``(4 * samples_per_edge, 2)`` array of ``(ra, dec)`` in degrees, RA in [0, 360),
            not closed.
        """
        wcs = self.chip_wcs(extver) if wcs is None else wcs
        pixels = edge_pixels(self.chip_shape(extver), samples_per_edge)
        world = wcs.all_pix2world(pixels, 0)
        world[:, 0] = np.mod(world[:, 0], 360.0)
        return world

    # --------------------------------------------------------------------------------------
    # pixels

    def _read(self, extname: str, extver: int) -> np.ndarray:
        info = self._find(extname, extver)
        if info is None:
            raise KeyError(f"{self.filename} has no ({extname.upper()},{extver}) extension")
        constant = _constant_image(info.header, f"{extname.upper()},{extver}")
        if constant is not None:
            return constant
        with fits.open(self.path, memmap=True, lazy_load_hdus=True) as hdul:
            data = hdul[info.index].data
        if data is None:
            raise HeaderError(f"({extname.upper()},{extver}) of {self.filename} has no data")
        return data

    def data(self, extver: int = 1) -> np.ndarray:
        """The ``(SCI, extver)`` array (memory-mapped when possible; may be big-endian)."""
        return self._read("SCI", extver)

    def err(self, extver: int = 1) -> np.ndarray:
        """The ``(ERR, extver)`` array; ``KeyError`` if the extension is absent."""
        return self._read("ERR", extver)

    def dq(self, extver: int = 1) -> np.ndarray:
        """The ``(DQ, extver)`` array; ``KeyError`` if the extension is absent."""
        return self._read("DQ", extver)


def _image_shape(header: fits.Header, where: str) -> tuple[int, int]:
    """``(ny, nx)`` of a 2-D image header (NAXISn, or NPIXn for a constant image)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0 and "NPIX1" in header and "NPIX2" in header:
        return int(header["NPIX2"]), int(header["NPIX1"])
    if naxis != 2:
        raise HeaderError(f"{where} is not a 2-D image (NAXIS={naxis})")
    return int(header["NAXIS2"]), int(header["NAXIS1"])


def _constant_image(header: fits.Header, where: str) -> np.ndarray | None:
    """The full array of an HST constant-value extension (PIXVALUE), else None."""
    if int(header.get("NAXIS", 0)) != 0 or "PIXVALUE" not in header:
        return None
    shape = _image_shape(header, where)
    value = header["PIXVALUE"]
    dtype = np.int16 if header.get("EXTNAME", "").strip().upper() == "DQ" else np.float32
    return np.full(shape, value, dtype=dtype)
