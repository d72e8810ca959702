"""Screen one input exposure: accept it with everything planning needs, or reject it with a reason.

:func:`screen_exposure` never raises for bad input. It runs these checks in order and
stops at the first failure, whose message becomes ``ExposureRecord.reason``:

1. **File**: exists, is a regular non-empty readable file (its ``size`` and ``sha256`` are
   recorded whenever it can be read).
2. **FITS structure**: starts with a ``SIMPLE`` card, and walking the HDUs by their size
   keywords ends exactly at the end of the file (shorter: truncated, "truncated FITS file: N
   bytes, expected M"; longer with non-null bytes: damaged); then astropy must read every
   header. A gzip-compressed file (``_flc.fits.gz``) is checked the same way on its
   decompressed bytes (a cut gzip stream is "truncated gzip file"); astropy reads it as is.
3. **Origin**: ``TELESCOP`` is HST; the instrument/detector is ACS WFC/HRC/SBC or WFC3
   UVIS/IR (WFPC2, STIS, NICMOS, FOC, ... are "unsupported"); the file name is an exposure
   name (``<ipppssoot>_<flt|flc>.fits`` or an SVM name) whose rootname letter agrees with
   ``INSTRUME``.
4. **Viability rules of the reference** (``analyze.analyze_data`` and ``verify_guiding`` of
   drizzlepac 3.11.0, MVM mode), in its order: ``OBSTYPE`` not ``IMAGING`` (or missing);
   ``DRIZCORR`` ``OMIT``/``SKIPPED``; ``MTFLAG`` ``T``; WFC3 ``SCAN_TYP`` ``C``/``D``;
   calibration ``TARGNAME`` (contains DARK, TUNG, BIAS, FLAT, DEUT or EARTH-CAL);
   ``EXPTIME`` missing, ``|EXPTIME| < 1e-5`` or (here) negative; WFC3/UVIS ``CHINJECT`` not
   ``NONE``; a filter keyword missing or starting with ``G``/``PR`` (grism/prism), ``FR``
   (ramp) or ``BLOCK``; ``QUALITY`` containing ``GSFAIL`` or ``TDF-DOWN``. ``FGSLOCK``
   containing ``GY`` or ``COARSE`` only adds a warning. Then the filter must normalise
   (:func:`mvmflow.names.filter_from_header`) and ``EXPSTART`` must be present.
5. **SCI data**: at least one SCI extension, no duplicate EXTVERs, both chips of a
   full-frame ACS/WFC or WFC3/UVIS exposure (this catches a file cut exactly at an HDU
   boundary), each a 2-D image with data (HST constant ``PIXVALUE`` images count); not every
   array all zeros; not every array without a finite pixel; not every pixel of every chip
   flagged in DQ (no pixel with DQ 0: nothing to drizzle; one such chip is a warning).
6. **Bad guiding in the image**: the sources of the first usable chip must not be trailed
   in one common direction (:func:`detect_trails`; ``check_trails=False`` skips it).
7. **WCS** of every chip: a celestial ``CTYPE``, a CD (or PC/CDELT) matrix that is not
   singular, a finite ``CRVAL`` with ``|CRVAL2| <= 90``, every SIP coefficient up to
   ``A_ORDER``/``B_ORDER`` present (HST headers write them all; a missing one is damage, not
   a zero), a pixel scale between 0.01 and 0.5 arcsec, and a footprint through the full
   distortion model (SIP + NPOL + D2IM) that evaluates to finite positions.

Warnings (the exposure is still accepted): gyro/coarse ``FGSLOCK``; one chip all zeros or
non-finite; a missing DQ extension; ``NEXTEND`` larger than the number of extensions; null
padding after the last HDU; ``ROOTNAME`` disagreeing with the file name; missing
``PHOTFLAM``/``PHOTPLAM``/``PROPOSID``/``DATE-OBS`` (0 or derived values are used); and up
to three astropy warnings about damaged or non-standard header cards.

Differences from the reference
------------------------------
- The reference's image-based trail detection in ``verify_guiding`` (background subtraction
  at 1 sigma, segmentation, Canny edges and a probabilistic Hough transform on SCI,1 needing
  at least ``max(4, n_sources / 10)`` long lines and a dominant direction) is replaced by
  :func:`detect_trails`, a simpler moment-based test with the same intent and thresholds
  (33-pixel trails, 4-degree direction bins, column-aligned features ignored). It needs no
  scikit-image and takes about half a second on a full ACS/WFC chip. Its verdicts can differ
  from the reference's on marginal cases.
- The reference evaluates its rules as one ``elif`` chain in which ``FGSLOCK`` comes before
  ``CHINJECT`` and the filter rules, so a gyro-guided charge-injection exposure slips through;
  here ``FGSLOCK`` never hides a later rule.
- Unreadable, truncated or non-FITS files, non-HST or unsupported-instrument files, missing
  or unusable WCSs and missing keywords are rejected with a reason instead of aborting the
  whole sky cell (spec ``processing.md`` §8, item 3).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import FITSFixedWarning

from mvmflow.exposure import DEFAULT_SAMPLES_PER_EDGE, Exposure, HeaderError
from mvmflow.integrity import FITS_BLOCK
from mvmflow.names import INSTRUMENT_LETTERS
from mvmflow.records import ChipRecord, ExposureRecord, read_record
from mvmflow.workflow import atomic_path

__all__ = [
    "ACCEPTED_COLUMNS",
    "CAL_TARGETS",
    "FOOTPRINT_SAMPLES",
    "REJECTED_COLUMNS",
    "SUPPORTED_DETECTORS",
    "TrailResult",
    "collect_records",
    "detect_trails",
    "screen_exposure",
]

SUPPORTED_DETECTORS = {"acs": ("wfc", "hrc", "sbc"), "wfc3": ("uvis", "ir")}
"""Instrument -> detectors that MVM processing supports (lower case)."""
FULL_FRAME_CHIPS = {("acs", "wfc"): 2, ("wfc3", "uvis"): 2}
"""SCI extensions of a full-frame (SUBARRAY = F) exposure of the two-chip detectors."""
CAL_TARGETS = ("DARK", "TUNG", "BIAS", "FLAT", "DEUT", "EARTH-CAL")
"""Substrings of TARGNAME that mark a calibration target (reference ``CAL_TARGETS['DEFAULT']``)."""
EXPTIME_ZERO = 1e-5
"""|EXPTIME| below this is "zero" (reference: ``math.isclose(exptime, 0, abs_tol=1e-5)``)."""
PIXEL_SCALE_RANGE = (0.01, 0.5)
"""Plausible pixel scales of ACS/WFC3 (0.025-0.13 arcsec), with a wide margin."""
FOOTPRINT_SAMPLES = DEFAULT_SAMPLES_PER_EDGE
"""Points per chip edge of the recorded footprints."""
TRAIL_DQ_MASK = 256 | 512 | 1024 | 2048 | 4096
"""DQ bits ignored by the trail detection (saturation, bad pixels, traps, cosmic rays)."""
MAX_HEADER_WARNINGS = 3
"""At most this many astropy FITS warnings are copied into a record's warnings."""

ACCEPTED_COLUMNS = (
    ("file", str),
    ("filename", str),
    ("rootname", str),
    ("ipppssoo", str),
    ("instrument", str),
    ("detector", str),
    ("filter", str),
    ("ptype", str),
    ("exptime", float),
    ("expstart", float),
    ("expend", float),
    ("date_obs", str),
    ("proposid", str),
    ("photflam", float),
    ("photplam", float),
    ("bunit", str),
    ("wcsname", str),
    ("nchips", int),
    ("size", int),
    ("sha256", str),
    ("warnings", str),
)
"""Columns (name, type) of ``accepted.ecsv``."""
REJECTED_COLUMNS = (("file", str), ("reason", str))
"""Columns (name, type) of ``rejected.ecsv``."""


class Rejected(Exception):
    """Raised by a check to reject the exposure; the message is the reason."""


# ------------------------------------------------------------------------------------------
# public API


def screen_exposure(path: str | os.PathLike, *, check_trails: bool = True) -> ExposureRecord:
    """Screen one calibrated exposure; never raises for bad input.

    Parameters
    ----------
    path : str or os.PathLike
        The ``_flt.fits`` / ``_flc.fits`` file.
    check_trails : bool
        Run the image-based bad-guiding test (:func:`detect_trails`) on the first chip.

    Returns
    -------
    ExposureRecord
        ``accepted=True`` with every field filled (chips with footprints through the full
        WCS, ``sha256``, ``size``, ``warnings``), or ``accepted=False`` with ``reason`` naming
        the first problem found (and the fields that could be read before it).
    """
    path = Path(path)
    record = ExposureRecord(file=os.fspath(path), accepted=False, filename=path.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _screen(path, record, check_trails)
            if record.accepted:  # for the cosmic-ray switch 'auto'
                from mvmflow.masks import has_cr_flags

                record.cr_flagged = has_cr_flags(path)
        except Rejected as reason:
            record.accepted = False
            record.reason = str(reason)
        except Exception as err:  # noqa: BLE001 - the contract is to never raise for bad input
            record.accepted = False
            record.reason = f"unexpected error while screening: {type(err).__name__}: {err}"
    record.warnings.extend(_header_warnings(caught))
    return record


def _header_warnings(caught: list, limit: int = MAX_HEADER_WARNINGS) -> list[str]:
    """Distinct astropy FITS warnings (damaged or non-standard cards), at most ``limit``."""
    found: list[str] = []
    for item in caught:
        if issubclass(
            item.category, FITSFixedWarning
        ) or "astropy.io.fits" not in item.filename.replace(os.sep, "."):
            continue
        text = "FITS: " + " ".join(str(item.message).split())[:160]
        if text not in found:
            found.append(text)
    if len(found) > limit:
        found = [*found[:limit], f"FITS: {len(found) - limit} more header warnings"]
    return found


def collect_records(
    records: Iterable[ExposureRecord | str | os.PathLike],
    accepted_path: str | os.PathLike,
    rejected_path: str | os.PathLike,
    skipped: Iterable[tuple[str, str]] = (),
) -> tuple[Table, Table]:
    """Write ``accepted.ecsv`` and ``rejected.ecsv`` from screening records, atomically.

    Parameters
    ----------
    records : iterable of ExposureRecord or path
        Records, or JSON files written by :func:`mvmflow.records.write_record`.
    accepted_path, rejected_path : str or os.PathLike
        Output ECSV files. Rows are sorted by ``file``; see :data:`ACCEPTED_COLUMNS` and
        :data:`REJECTED_COLUMNS`. ``warnings`` is the record's warnings joined by ``"; "``.
    skipped : iterable of (str, str)
        ``(file, reason)`` of inputs never screened (:func:`mvmflow.inputs.resolve_inputs`:
        a directory or dangling link the glob matched, a second file of one name): rows of
        the rejected table.

    Returns
    -------
    (Table, Table)
        The accepted and rejected tables as written.
    """
    loaded = [r if isinstance(r, ExposureRecord) else read_record(r) for r in records]
    loaded.sort(key=lambda r: r.file)
    accepted = _table([_accepted_row(r) for r in loaded if r.accepted], ACCEPTED_COLUMNS)
    rows = [(r.file, r.reason) for r in loaded if not r.accepted] + [tuple(s) for s in skipped]
    rejected = _table(sorted(rows), REJECTED_COLUMNS)
    for table, path in ((accepted, accepted_path), (rejected, rejected_path)):
        with atomic_path(path) as tmp:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
    return accepted, rejected


# ------------------------------------------------------------------------------------------
# the checks, in order


def _screen(path: Path, record: ExposureRecord, check_trails: bool) -> None:
    record.size, record.sha256 = _check_file(path)
    record.warnings.extend(_check_fits_structure(path, record.size))
    exposure = _open(path)
    record.warnings.extend(_check_nextend(exposure))
    _check_origin(exposure, record)
    _check_name(exposure, record)
    record.warnings.extend(_check_viability(exposure))
    _fill_filter(exposure, record)
    _fill_times_and_photometry(exposure, record)
    record.warnings.extend(_check_sci(exposure))
    if check_trails:
        _check_trails(exposure)
    record.chips = [_chip_record(exposure, extver) for extver in exposure.extvers]
    record.accepted = True
    record.reason = ""


def _check_file(path: Path) -> tuple[int, str]:
    """Reject a missing, empty or unreadable file; return its size and SHA-256."""
    if path.is_symlink() and not path.exists():
        raise Rejected(f"dangling symbolic link: its target {os.readlink(path)} does not exist")
    if not path.exists():
        raise Rejected(f"file not found: {path}")
    if not path.is_file():
        raise Rejected(f"not a regular file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise Rejected("empty file (0 bytes)")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise Rejected(f"unreadable file: {err.strerror or err}") from None
    return size, digest.hexdigest()


def _data_bytes(cards: dict) -> int:
    """Unpadded data size in bytes of an HDU from its keywords (FITS standard, eq. 2)."""
    naxis = int(cards.get("NAXIS", 0))
    if naxis == 0:
        return 0
    dims = [int(cards.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    if cards.get("GROUPS") is True and dims[0] == 0:  # random groups
        dims = dims[1:]
    count = int(np.prod(dims, dtype=np.int64))
    gcount = int(cards.get("GCOUNT", 1))
    pcount = int(cards.get("PCOUNT", 0))
    return abs(int(cards["BITPIX"])) // 8 * gcount * (pcount + count)


_SIZE_KEYS = {"BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS"}


def _read_header_cards(f, number: int, start: int, size: int) -> tuple[dict, int]:
    """Read the header at ``start``; return its size keywords and the data offset."""
    cards: dict = {}
    position = start
    while True:
        block = f.read(FITS_BLOCK)
        position += len(block)
        if len(block) < FITS_BLOCK:
            raise Rejected(
                f"truncated FITS file: {size} bytes end inside the header of HDU {number}"
            )
        for i in range(0, FITS_BLOCK, 80):
            image = block[i : i + 80].decode("ascii", errors="replace")
            key = image[:8].strip()
            if key == "END":
                return cards, position
            if key in _SIZE_KEYS or (key.startswith("NAXIS") and key[5:].isdigit()):
                cards[key] = fits.Card.fromstring(image).value


def _walk_hdus(path: Path, size: int, opener=open) -> list[str]:
    """Walk the file HDU by HDU from the size keywords alone; return warnings.

    Rejects a file that ends inside a header or data unit (truncated) and one whose bytes
    after an HDU are neither a new extension nor null padding (damaged). ``opener`` opens
    the file for reading bytes (``gzip.open`` for a compressed file, ``size`` then being
    the decompressed size).
    """
    number, position = 0, 0
    with opener(path, "rb") as f:
        while position < size:
            f.seek(position)
            start = f.read(8)
            if number > 0 and start != b"XTENSION":
                f.seek(position)
                if f.read().strip(b"\0"):
                    raise Rejected(
                        f"corrupt FITS file: {size - position} bytes after HDU {number - 1} "
                        "are not a FITS extension"
                    )
                return [f"{size - position} null bytes after the last HDU"]
            f.seek(position)
            try:
                cards, data_start = _read_header_cards(f, number, position, size)
                data = _data_bytes(cards)
            except (KeyError, TypeError, ValueError) as err:
                raise Rejected(f"corrupt FITS file: bad header of HDU {number}: {err}") from None
            position = data_start + -(-data // FITS_BLOCK) * FITS_BLOCK
            if size < position:
                raise Rejected(f"truncated FITS file: {size} bytes, expected {position}")
            number += 1
    return []


def _check_fits_structure(path: Path, size: int) -> list[str]:
    """Reject non-FITS, corrupt or truncated files (compressed or not); return warnings."""
    with open(path, "rb") as f:
        head = f.read(FITS_BLOCK)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(FITS_BLOCK)
                size = f.seek(0, os.SEEK_END)  # the decompressed size
            opener = gzip.open
        except (OSError, EOFError, ValueError) as err:
            raise Rejected(f"truncated gzip file: {err}" if isinstance(err, EOFError)
                           else f"damaged gzip file: {err}") from None
        what = "gzip-compressed file holds no FITS file:"
    else:
        opener, what = open, "not a FITS file:"
    if not head.startswith(b"SIMPLE  =") or head[9:30].strip() != b"T":
        raise Rejected(f"{what} it does not begin with 'SIMPLE  =                    T'")
    return _walk_hdus(path, size, opener)


def _check_nextend(exposure: Exposure) -> list[str]:
    """Warn when NEXTEND promises more extensions than the file has."""
    nextend = exposure.primary_header.get("NEXTEND")
    have = len(exposure.extensions)
    if isinstance(nextend, int) and nextend > have:
        return [f"NEXTEND is {nextend} but the file has {have} extensions"]
    return []


def _open(path: Path) -> Exposure:
    try:
        return Exposure.open(path)
    except Exception as err:  # noqa: BLE001
        raise Rejected(f"unreadable FITS headers: {err}") from None


def _text(header: fits.Header, key: str) -> str:
    """Upper-case stripped keyword value, ``''`` if absent."""
    value = header.get(key)
    return "" if value is None else str(value).strip().upper()


def _check_origin(exposure: Exposure, record: ExposureRecord) -> None:
    """Reject non-HST files and unsupported instruments or detectors."""
    primary = exposure.primary_header
    telescope = _text(primary, "TELESCOP")
    if not telescope:
        raise Rejected("no TELESCOP keyword: not an HST exposure")
    if telescope != "HST":
        raise Rejected(f"TELESCOP is {telescope}, not HST")
    instrument = _text(primary, "INSTRUME")
    if not instrument:
        raise Rejected("no INSTRUME keyword")
    if instrument.lower() not in SUPPORTED_DETECTORS:
        raise Rejected(
            f"unsupported instrument {instrument} (only ACS WFC/HRC/SBC and WFC3 UVIS/IR)"
        )
    detector = _text(primary, "DETECTOR")
    if detector.lower() not in SUPPORTED_DETECTORS[instrument.lower()]:
        supported = "/".join(d.upper() for d in SUPPORTED_DETECTORS[instrument.lower()])
        shown = detector or "missing"
        raise Rejected(f"unsupported detector {instrument}/{shown} (only {instrument} {supported})")
    record.instrument = instrument.lower()
    record.detector = detector.lower()


def _check_name(exposure: Exposure, record: ExposureRecord) -> None:
    """Reject a file name that is not an exposure name or disagrees with INSTRUME."""
    try:
        record.ptype = exposure.ptype
        rootname = exposure.rootname
    except ValueError as err:
        raise Rejected(str(err)) from None
    record.rootname, record.ipppssoo = rootname, rootname[:8]
    implied = INSTRUMENT_LETTERS[rootname[0]]
    if implied != record.instrument:
        raise Rejected(
            f"INSTRUME is {record.instrument.upper()} but rootname {rootname} is a "
            f"{implied.upper()} name"
        )
    header_root = _text(exposure.primary_header, "ROOTNAME").lower()
    if header_root and not header_root.startswith(rootname[:8]):
        record.warnings.append(f"ROOTNAME is {header_root} but the file name says {rootname}")


def _fill_filter(exposure: Exposure, record: ExposureRecord) -> None:
    try:
        record.filter = exposure.filter
    except ValueError as err:
        raise Rejected(f"cannot determine the filter: {err}") from None


def _filter_keywords(exposure: Exposure) -> list[tuple[str, str]]:
    """``(keyword, upper-case value)`` of the non-blank filter keywords."""
    keys = ("FILTER",) if exposure.instrument == "wfc3" else ("FILTER1", "FILTER2")
    values = [(key, _text(exposure.primary_header, key)) for key in keys]
    return [(key, value) for key, value in values if value]


def _exptime(exposure: Exposure) -> float:
    try:
        return exposure.exptime
    except HeaderError as err:
        raise Rejected(str(err)) from None


def _check_viability(exposure: Exposure) -> list[str]:
    """The reference's MVM viability rules; return the FGSLOCK warning, if any."""
    primary = exposure.primary_header
    wfc3 = exposure.instrument == "wfc3"
    obstype = _text(primary, "OBSTYPE")
    if obstype != "IMAGING":
        raise Rejected(f"OBSTYPE is {obstype}, not IMAGING" if obstype else "no OBSTYPE keyword")
    drizcorr = _text(primary, "DRIZCORR")
    if drizcorr in ("OMIT", "SKIPPED"):
        raise Rejected(f"DRIZCORR is {drizcorr}: drizzling was switched off")
    if _text(primary, "MTFLAG") == "T":
        raise Rejected("MTFLAG is T: moving target")
    scan = _text(primary, "SCAN_TYP")
    if wfc3 and scan in ("C", "D"):
        raise Rejected(f"SCAN_TYP is {scan}: WFC3 spatial scan")
    targname = _text(primary, "TARGNAME")
    hits = [name for name in CAL_TARGETS if name in targname]
    if hits:
        raise Rejected(f"TARGNAME is {targname}: calibration target (contains {hits[0]})")
    _check_exptime(_exptime(exposure))
    chinject = _text(primary, "CHINJECT")
    if wfc3 and exposure.detector == "uvis" and chinject and chinject != "NONE":
        raise Rejected(f"CHINJECT is {chinject}, not NONE: charge injection")
    _check_filters(exposure)
    _check_quality(primary)
    fgslock = _text(primary, "FGSLOCK")
    if "GY" in fgslock or "COARSE" in fgslock:
        return [f"FGSLOCK is {fgslock}: gyro or coarse-track guiding, the image may be blurred"]
    return []


def _check_exptime(exptime: float) -> None:
    if abs(exptime) < EXPTIME_ZERO:
        raise Rejected(f"EXPTIME is {exptime:g} s (|EXPTIME| < {EXPTIME_ZERO:g})")
    if exptime < 0:
        raise Rejected(f"EXPTIME is {exptime:g} s, negative")


def _check_filters(exposure: Exposure) -> None:
    filters = _filter_keywords(exposure)
    if not filters:
        keys = "FILTER" if exposure.instrument == "wfc3" else "FILTER1/FILTER2"
        raise Rejected(f"no {keys} keyword")
    for key, value in filters:
        if value.startswith(("G", "PR")):
            raise Rejected(f"{key} is {value}: grism/prism exposures are not used in MVM")
        if value.startswith("FR"):
            raise Rejected(f"{key} is {value}: ramp-filter exposures are not used in MVM")
        if value.startswith("BLOCK"):
            raise Rejected(f"{key} is {value}: blocking filter (SBC internal calibration)")


def _check_quality(primary: fits.Header) -> None:
    quality = _text(primary, "QUALITY")
    for flag in ("GSFAIL", "TDF-DOWN"):
        if flag in quality:
            raise Rejected(f"QUALITY is {quality!r}: bad guiding ({flag})")


def _fill_times_and_photometry(exposure: Exposure, record: ExposureRecord) -> None:
    try:
        record.exptime = exposure.exptime
        record.expstart = exposure.expstart
        record.expend = exposure.expend
    except HeaderError as err:
        raise Rejected(str(err)) from None
    record.date_obs = _optional(exposure, "date_obs", record.warnings) or _mjd_date(record.expstart)
    record.proposid = _optional(exposure, "proposid", record.warnings) or ""
    record.photflam = _optional(exposure, "photflam", record.warnings) or 0.0
    record.photplam = _optional(exposure, "photplam", record.warnings) or 0.0
    record.bunit = exposure.bunit
    record.wcsname = exposure.wcsname


def _optional(exposure: Exposure, name: str, found: list[str]):
    """``getattr(exposure, name)``, or None with a warning if its keyword is unusable."""
    try:
        return getattr(exposure, name)
    except HeaderError as err:
        found.append(str(err))
        return None


def _mjd_date(mjd: float) -> str:
    from astropy.time import Time

    return Time(mjd, format="mjd").isot[:10]


def _check_sci(exposure: Exposure) -> list[str]:
    """Reject missing, malformed, all-zero or all-non-finite SCI data; return warnings."""
    extvers = exposure.extvers
    if not extvers:
        raise Rejected("no SCI extension")
    if len(set(extvers)) != len(extvers):
        raise Rejected(f"duplicate SCI extensions (EXTVERs {extvers})")
    _check_chip_count(exposure, len(extvers))
    found, zero, nonfinite, flagged = [], [], [], []
    for extver in extvers:
        data = _sci_data(exposure, extver)
        finite = np.isfinite(data)
        if not finite.any():
            nonfinite.append(extver)
            found.append(f"SCI,{extver} has no finite pixel")
        elif not np.any(data[finite] != 0):
            zero.append(extver)
            found.append(f"SCI,{extver} is all zeros")
        if not exposure.has_extension("DQ", extver):
            found.append(f"no DQ,{extver} extension")
        elif not np.any(np.asarray(exposure.dq(extver)) == 0):
            flagged.append(extver)
            found.append(f"DQ,{extver} flags every pixel")
    if len(flagged) == len(extvers):
        raise Rejected("every pixel is flagged in DQ (no pixel with DQ 0 in any chip)")
    if len(zero) == len(extvers):
        raise Rejected("every SCI array is all zeros")
    if len(nonfinite) == len(extvers):
        raise Rejected("no finite SCI pixel in any chip")
    if len(zero) + len(nonfinite) == len(extvers):
        raise Rejected("every SCI array is all zeros or non-finite")
    return found


def _check_chip_count(exposure: Exposure, nchips: int) -> None:
    expected = FULL_FRAME_CHIPS.get((exposure.instrument, exposure.detector))
    subarray = exposure.primary_header.get("SUBARRAY")
    if expected and subarray is False and nchips < expected:
        raise Rejected(
            f"full-frame {exposure.instrument.upper()}/{exposure.detector.upper()} exposure has "
            f"{nchips} SCI extension(s), expected {expected} (truncated?)"
        )


def _sci_data(exposure: Exposure, extver: int) -> np.ndarray:
    try:
        exposure.chip_shape(extver)
        return np.asarray(exposure.data(extver))
    except (HeaderError, KeyError) as err:
        raise Rejected(str(err).strip("'\"")) from None
    except Exception as err:  # noqa: BLE001
        raise Rejected(f"cannot read SCI,{extver} data: {err}") from None


def _check_trails(exposure: Exposure) -> None:
    """Reject an exposure whose first usable chip shows sources trailed in one direction."""
    for extver in exposure.extvers:
        data = np.asarray(exposure.data(extver))
        finite = np.isfinite(data)
        if not np.any(data[finite] != 0):
            continue
        mask = None
        if exposure.has_extension("DQ", extver):
            mask = (np.asarray(exposure.dq(extver)).astype(np.int64) & TRAIL_DQ_MASK) != 0
        result = detect_trails(data, mask)
        if result.bad:
            raise Rejected(
                f"SCI,{extver} has {result.n_aligned} of {result.n_sources} sources trailed along "
                f"{result.angle:.0f} deg: bad guiding (trail detection)"
            )
        return


def _chip_record(exposure: Exposure, extver: int) -> ChipRecord:
    """Check the chip's WCS and return its record with the footprint."""
    where = f"SCI,{extver}"
    header = exposure.sci_header(extver)
    ctypes = [_text(header, f"CTYPE{i}") for i in (1, 2)]
    if not (ctypes[0][:4] in ("RA--", "DEC-") and ctypes[1][:4] in ("RA--", "DEC-")):
        raise Rejected(f"{where} has no celestial WCS (CTYPE1={ctypes[0]!r}, CTYPE2={ctypes[1]!r})")
    if not any(k in header for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2", "CDELT1", "CDELT2")):
        raise Rejected(f"{where} has no CD matrix (CD1_1 ... CD2_2)")
    _check_crval(where, header, ctypes)
    _check_sip(where, header)
    try:
        wcs = exposure.chip_wcs(extver)
        footprint = exposure.footprint(extver, FOOTPRINT_SAMPLES)
    except Exception as err:  # noqa: BLE001 - wcslib and astropy raise many types
        raise Rejected(f"{where} WCS is unusable: {_wcslib_text(err)}") from None
    _check_scale(where, header, wcs)
    if not np.all(np.isfinite(footprint)):
        raise Rejected(f"{where} WCS does not evaluate: non-finite sky positions on the chip edges")
    shape = exposure.chip_shape(extver)
    return ChipRecord(extver=extver, shape=list(shape), footprint=footprint.tolist())


_WCSLIB_PLACE = re.compile(r"ERROR \d+ in \w+\(\) at line \d+ of file \S+:\s*")


def _wcslib_text(err: Exception) -> str:
    """An astropy/wcslib error in one line, without wcslib's source file and line."""
    return _WCSLIB_PLACE.sub("", " ".join(str(err).split())).strip("'\" ")


def _check_crval(where: str, header: fits.Header, ctypes: list[str]) -> None:
    """Reject a CRVAL that is not a finite number or a declination beyond the poles."""
    for axis, ctype in zip((1, 2), ctypes, strict=True):
        key = f"CRVAL{axis}"
        try:
            value = float(header.get(key, 0.0))
        except (TypeError, ValueError):
            raise Rejected(f"{where} {key} is {header[key]!r}, not a number") from None
        if not np.isfinite(value):
            raise Rejected(f"{where} {key} is {value}, not finite")
        if ctype.startswith("DEC-") and abs(value) > 90:
            raise Rejected(f"{where} {key} is {value:g}, not a declination (-90 to 90)")


def _check_sip(where: str, header: fits.Header) -> None:
    """Reject SIP polynomials with missing coefficients (``A_p_q``, ``2 <= p+q <= order``)."""
    for name in ("A", "B"):
        order = header.get(f"{name}_ORDER")
        if order is None:
            continue
        try:
            order = int(order)
        except (TypeError, ValueError):
            raise Rejected(f"{where} SIP {name}_ORDER is {order!r}, not an integer") from None
        missing = [f"{name}_{p}_{q}" for p in range(order + 1) for q in range(order + 1 - p)
                   if p + q >= 2 and f"{name}_{p}_{q}" not in header]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more"
                                                if len(missing) > 4 else "")
            raise Rejected(f"{where} SIP {name}_ORDER is {order} but {shown} "
                           f"{'is' if len(missing) == 1 else 'are'} missing: a damaged "
                           "distortion header")


def _check_scale(where: str, header: fits.Header, wcs) -> None:
    """Reject a singular CD matrix or a pixel scale no HST camera has."""
    cd_keys = ("CD1_1", "CD1_2", "CD2_1", "CD2_2")
    if all(k in header for k in cd_keys):
        cd = np.array([float(header[k]) for k in cd_keys]).reshape(2, 2)
        if not np.all(np.isfinite(cd)) or abs(np.linalg.det(cd)) <= 1e-10 * np.sum(cd**2):
            raise Rejected(f"{where} CD matrix is singular or not finite ({cd.ravel().tolist()})")
    matrix = wcs.pixel_scale_matrix
    scale = np.sqrt(abs(np.linalg.det(matrix))) * 3600 if np.all(np.isfinite(matrix)) else np.nan
    low, high = PIXEL_SCALE_RANGE
    if not low <= scale <= high:
        raise Rejected(
            f"{where} WCS pixel scale is {scale:.4g} arcsec, not {low}-{high} as HST cameras"
        )


# ------------------------------------------------------------------------------------------
# trail detection (the image half of the reference's verify_guiding)


@dataclass(frozen=True)
class TrailResult:
    """Outcome of :func:`detect_trails`.

    Attributes
    ----------
    bad : bool
        True if enough sources are trailed in one common direction (bad guiding).
    n_sources : int
        Sources found (connected groups of at least ``min_pixels`` pixels above threshold).
    n_trailed : int
        Sources at least ``min_elongation`` times longer than wide and ``min_length`` long,
        not along the columns.
    n_aligned : int
        Largest number of trailed sources within ``angle_tolerance`` of one direction.
    angle : float
        That direction, degrees from the +x axis towards +y, in (-90, 90].
    """

    bad: bool
    n_sources: int
    n_trailed: int
    n_aligned: int
    angle: float


def detect_trails(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    nsigma: float = 3.0,
    min_pixels: int = 17,
    min_length: float = 33.0,
    min_elongation: float = 3.0,
    angle_tolerance: float = 4.0,
    min_aligned: int = 4,
    aligned_fraction: float = 0.1,
) -> TrailResult:
    """Decide whether the sources of an image are trailed in one direction (bad guiding).

    A simpler, moment-based stand-in for the reference's Canny + probabilistic Hough line
    search: the image is smoothed (Gaussian, sigma 1 px), thresholded at ``nsigma`` times
    the sigma-clipped noise above the background, and each connected source of at least
    ``min_pixels`` pixels gets flux-weighted second moments. A source is *trailed* when its
    major/minor axis ratio is at least ``min_elongation`` and its length (``sqrt(12)`` times
    the major-axis sigma, the length of a uniform line) is at least ``min_length`` pixels.
    Sources within 2 degrees of the column direction are ignored (saturation bleeding and
    CTE trails), as in the reference. The image is *bad* when at least
    ``max(min_aligned, aligned_fraction * n_sources)`` trailed sources share one direction
    within ``angle_tolerance`` degrees.

    Parameters
    ----------
    image : numpy.ndarray
        2-D science array (any units; non-finite pixels are ignored).
    mask : numpy.ndarray of bool, optional
        True for pixels to ignore (bad DQ).

    Returns
    -------
    TrailResult
    """
    from astropy.stats import sigma_clipped_stats
    from scipy import ndimage

    data = np.array(image, dtype=np.float32)
    bad = ~np.isfinite(data) if mask is None else (~np.isfinite(data) | mask)
    good = data[~bad]
    if good.size < min_pixels:
        return TrailResult(False, 0, 0, 0, 0.0)
    data[bad] = np.median(good[:: max(1, good.size // 500_000)])  # holes at background level
    smooth = ndimage.gaussian_filter(data, 1.0)
    sample = smooth[~bad][:: max(1, good.size // 500_000)]
    _, median, std = sigma_clipped_stats(sample, sigma=3.0, maxiters=5)
    above = (smooth > median + nsigma * std) & ~bad
    labels, count = ndimage.label(above)
    if count == 0:
        return TrailResult(False, 0, 0, 0, 0.0)
    moments = _source_moments(labels, count, np.where(above, smooth - median, 0.0), min_pixels)
    return _judge_trails(
        moments, min_length, min_elongation, angle_tolerance, min_aligned, aligned_fraction
    )


def _source_moments(
    labels: np.ndarray, count: int, weight: np.ndarray, min_pixels: int
) -> np.ndarray:
    """``(major_sigma, minor_sigma, angle_deg)`` of each source of ``min_pixels`` or more pixels."""
    flat = labels.ravel()
    keep = flat > 0
    idx = flat[keep]
    w = weight.ravel()[keep].astype(np.float64)
    yy, xx = np.divmod(np.flatnonzero(keep), labels.shape[1])
    n = count + 1
    area = np.bincount(idx, minlength=n)
    sw = np.bincount(idx, w, n)
    good = (area >= min_pixels) & (sw > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = np.bincount(idx, w * xx, n) / sw, np.bincount(idx, w * yy, n) / sw
        cxx = np.bincount(idx, w * xx * xx, n) / sw - mx**2
        cyy = np.bincount(idx, w * yy * yy, n) / sw - my**2
        cxy = np.bincount(idx, w * xx * yy, n) / sw - mx * my
    cxx, cyy, cxy = cxx[good], cyy[good], cxy[good]
    half_trace, root = (cxx + cyy) / 2, np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    major = np.sqrt(np.maximum(half_trace + root, 0.0))
    minor = np.sqrt(np.maximum(half_trace - root, 1.0 / 12.0))  # at least a one-pixel width
    angle = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy))
    return np.column_stack([major, minor, angle])


def _judge_trails(
    moments, min_length, min_elongation, tolerance, min_aligned, fraction
) -> TrailResult:
    n_sources = len(moments)
    major, minor, angle = moments.T if n_sources else (np.empty(0),) * 3
    along_columns = np.abs(np.abs(angle) - 90.0) < 2.0
    trailed = (
        (major / minor >= min_elongation) & (np.sqrt(12.0) * major >= min_length) & ~along_columns
    )
    angles = angle[trailed]
    if angles.size == 0:
        return TrailResult(False, n_sources, 0, 0, 0.0)
    # trailed sources within +-tolerance of each one's direction (directions wrap at 180)
    ring = np.sort(np.concatenate([angles - 180.0, angles, angles + 180.0]))
    close = np.searchsorted(ring, angles + tolerance, "right") - np.searchsorted(
        ring, angles - tolerance, "left"
    )
    best = int(np.argmax(close))
    n_aligned = int(close[best])
    is_bad = n_aligned >= max(min_aligned, fraction * n_sources)
    return TrailResult(bool(is_bad), n_sources, int(angles.size), n_aligned, float(angles[best]))


# ------------------------------------------------------------------------------------------
# tables


def _accepted_row(record: ExposureRecord) -> tuple:
    values = {
        **record.to_dict(),
        "nchips": len(record.chips),
        "warnings": "; ".join(record.warnings),
    }
    return tuple(values[name] for name, _ in ACCEPTED_COLUMNS)


def _table(rows: list[tuple], columns: tuple) -> Table:
    names = [name for name, _ in columns]
    dtypes = [kind for _, kind in columns]
    if not rows:
        return Table(names=names, dtype=dtypes)
    return Table(rows=rows, names=names, dtype=dtypes)
