"""Access to the simulator's package data in ``mvmflow/data/hst/`` (read lazily, cached).

The files and their provenance are described in ``mvmflow/data/hst/README.md`` and produced by
:mod:`mvmflow.simulate.build_data`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from astropy.io import fits

__all__ = [
    "ApertureInfo",
    "FilterInfo",
    "Template",
    "aperture_info",
    "filter_info",
    "psf_array",
    "template",
]


FULL_FRAME_APERTURES = frozenset({"WFC", "UVIS", "IR", "HRC", "SBC"})


def _data_file(*parts: str):
    return resources.files("mvmflow").joinpath("data", "hst", *parts)


def _csv_rows(name: str) -> list[dict[str, str]]:
    text = _data_file(name).read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


@dataclass(frozen=True)
class ApertureInfo:
    """One readout aperture (full frame or subarray) of a detector.

    ``x0, y0`` are the 0-based first column and row of the readout in full-chip FLT pixels;
    ``ccdchip`` is the chip a subarray is on (0 = every chip, full frame).
    """

    name: str
    siaf: str
    instrument: str
    detector: str
    ccdchip: int
    x0: int
    y0: int
    nx: int
    ny: int
    v2: float
    v3: float

    @property
    def subarray(self) -> bool:
        """Whether this is a subarray readout (``SUBARRAY = T``)."""
        return self.name not in FULL_FRAME_APERTURES


@cache
def _apertures() -> dict[str, ApertureInfo]:
    out = {}
    for row in _csv_rows("apertures.csv"):
        out[row["aperture"]] = ApertureInfo(
            name=row["aperture"], siaf=row["siaf"], instrument=row["instrument"],
            detector=row["detector"], ccdchip=int(row["ccdchip"]), x0=int(row["x0"]),
            y0=int(row["y0"]), nx=int(row["nx"]), ny=int(row["ny"]), v2=float(row["siaf_v2"]),
            v3=float(row["siaf_v3"]))
    return out


def aperture_info(name: str) -> ApertureInfo:
    """The aperture called ``name`` (the header ``APERTURE`` value, e.g. ``WFC1-1K``)."""
    try:
        return _apertures()[name.upper()]
    except KeyError:
        known = ", ".join(sorted(_apertures()))
        raise ValueError(f"unknown aperture {name!r}; known: {known}") from None


@dataclass(frozen=True)
class FilterInfo:
    """Photometric keywords and model PSF of one instrument/detector/filter."""

    instrument: str
    detector: str
    filter: str
    filter1: str
    filter2: str
    photmode: str
    photflam: float
    photplam: float
    photbw: float
    photzpt: float
    phtflam1: float | None
    phtflam2: float | None
    psf: str
    source: str

    @property
    def photfnu(self) -> float:
        """Inverse sensitivity in Jy s / e- (``PHOTFLAM * PHOTPLAM**2 / c``)."""
        return self.photflam * self.photplam**2 / 2.99792458e18 / 1e-23

    @property
    def key(self) -> str:
        return f"{self.instrument}_{self.detector}_{self.filter}".lower()


@cache
def _filters() -> dict[tuple[str, str, str], FilterInfo]:
    out = {}
    for row in _csv_rows("filters.csv"):
        info = FilterInfo(
            instrument=row["instrument"], detector=row["detector"], filter=row["filter"],
            filter1=row["filter1"], filter2=row["filter2"], photmode=row["photmode"],
            photflam=float(row["photflam"]), photplam=float(row["photplam"]),
            photbw=float(row["photbw"]), photzpt=float(row["photzpt"]),
            phtflam1=float(row["phtflam1"]) if row["phtflam1"] else None,
            phtflam2=float(row["phtflam2"]) if row["phtflam2"] else None,
            psf=row["psf"], source=row["source"])
        out[(info.instrument, info.detector, info.filter)] = info
    return out


def filter_info(instrument: str, detector: str, filter: str) -> FilterInfo:
    """Photometry and PSF of a filter; raise ``ValueError`` for modes without data."""
    key = (instrument.upper(), detector.upper(), filter.upper())
    try:
        return _filters()[key]
    except KeyError:
        known = ", ".join("/".join(k) for k in sorted(_filters()))
        raise ValueError(f"no photometry for {'/'.join(key)}; available: {known}") from None


def available_filters() -> list[tuple[str, str, str]]:
    """Every (instrument, detector, filter) the simulator has photometry and a PSF for."""
    return sorted(_filters())


@cache
def psf_array(name: str) -> tuple[np.ndarray, fits.Header]:
    """The raw model PSF ``name`` (e.g. ``acs_wfc_f814w``) and its header."""
    with _data_file("psfs", f"{name}.fits").open("rb") as fh:
        with fits.open(fh) as hdul:
            return hdul[0].data.astype(np.float64), hdul[0].header.copy()


@dataclass(frozen=True)
class Template:
    """The real header templates and lookup tables of one detector.

    ``ext[(extname, extver)]`` holds the headers of PRIMARY-less extensions (``SCI``, ``ERR``,
    ``DQ``, ``SAMP``, ``TIME``); ``lookup[(extname, extver)]`` the ``(header, data)`` of the
    ``WCSDVARR``/``D2IMARR`` tables, in full-chip coordinates.
    """

    key: str
    primary: fits.Header
    ext: dict
    lookup: dict

    def sci(self, extver: int) -> fits.Header:
        return self.ext[("SCI", extver)]


@cache
def template(key: str) -> Template:
    """The template of detector ``key`` (``acs_wfc``, ``wfc3_uvis``, ``wfc3_ir``, ...)."""
    with _data_file("templates", f"{key}.fits").open("rb") as fh:
        with fits.open(fh) as hdul:
            primary = hdul[0].header.copy()
            ext, lookup = {}, {}
            for hdu in hdul[1:]:
                name, ver = hdu.header["EXTNAME"].strip(), int(hdu.header["EXTVER"])
                if name in ("WCSDVARR", "D2IMARR"):
                    lookup[(name, ver)] = (hdu.header.copy(), np.array(hdu.data))
                else:
                    ext[(name, ver)] = hdu.header.copy()
    return Template(key=key, primary=primary, ext=ext, lookup=lookup)
