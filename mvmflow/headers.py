"""Header keywords of a layer product built from its inputs.

Three pieces, after the reference (spec processing.md 1.7 item 3 and 1.10):

- :func:`merge_primary`: the primary-header keywords merged across the inputs with the
  reference's MVM rules (``pars/*_mvm_header_hap.rules``): ``EXPTIME``/``TEXPTIME`` sum,
  ``EXPSTART`` min, ``EXPEND`` max, ``PHOT*`` mean, ``APERTURE``/``OBSMODE`` 'MULTIPLE' when
  they differ, ``PA_V3`` zero, ``TELESCOP``/``TARGNAME``/``INSTRUME``/``DETECTOR``/...
  first. Unlike the reference, which starts from the first input's whole primary header
  and deletes or tabulates what it knows about, only keywords with a rule are written
  (:data:`PRIMARY_RULES`, in that order): nothing exposure-specific leaks into the
  product (calibration switches, reference files, ``DATE`` of the input file, the first
  input's readout, pattern, CR-split and engineering values, ...; they are all in
  ``HDRTAB``). Also unlike the reference (whose rule is 'first'), ``DATE-OBS`` and
  ``TIME-OBS`` are the start of the observation as the FITS standard defines them: the
  earliest ``EXPSTART``, so they always agree with ``DATE-BEG``.
- :func:`hdrtab`: the ``HDRTAB`` binary table, one row per input chip, columns
  ``SVMROOTNAME, GENDATE, ROOTNAME, EXTNAME, EXTVER, FILENAME, <keywords>..., WCSNAME,
  WCSTYPE, HAPEXPNAME``, the keywords being those of the reference's MVM rules files
  (:data:`HDRTAB_KEYWORDS`) that some input has; plus our ``MDRIZSKY`` (the sky offset
  subtracted, in the layer's SCI units), ``CTXBIT`` (the input's context bit) and
  ``INSHA256`` (its checksum).
- :func:`drizzle_cards`: the per-chip ``D###xxxx`` drizzle keywords.

The values of an input come from its :class:`~mvmflow.records.ExposureRecord` and, when
available, its FITS headers (:class:`InputHeaders`, :func:`read_input_headers`,
:func:`headers_of_records`): a chip's SCI header first, then the primary header, then the
record. A record alone gives ``TELESCOP``, ``INSTRUME``, ``DETECTOR``, ``FILTER``, the
times, ``PROPOSID`` and ``PHOTFLAM``/``PHOTPLAM``.

Headers files. The screen job is the one reader of an exposure's headers: it writes them
to ``<outdir>/screen/headers/<key>.json`` (:func:`write_exposure_headers`), and the product
jobs (layer, exposure-level product, mosaic layer) read those declared inputs
(:func:`load_input_headers`, :func:`member_headers`), never the exposure itself. This
module is the one owner of the file type (docs/conventions.md). The file is JSON::

    {"format": "mvmflow-input-headers-1",
     "primary": ["SIMPLE  =                    T / conforms to FITS standard", ...],
     "chips": {"1": [...], "2": [...]}}

``primary`` and each SCI header (by EXTVER) are lists of the 80-character card images of
``fits.Header.tostring`` (a long string's ``CONTINUE`` cards one image each), trailing
blanks cut: every card - keyword, value, comment, ``HISTORY``/``COMMENT``/blank cards,
their order - reads back identical (as astropy would write it), in about two thirds of
the bytes of the same headers in FITS, and readable with any text tool. ``primary`` is
null (and ``chips`` empty) for an exposure whose headers could not be read (a rejected
file).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from mvmflow.inputs import exposure_key
from mvmflow.integrity import FITS_BLOCK
from mvmflow.workflow import atomic_path

__all__ = [
    "ALIGN_KEYWORDS",
    "HDRTAB_KEYWORDS",
    "PHOT_KEYWORDS",
    "PRIMARY_RULES",
    "InputHeaders",
    "ChipRow",
    "chip_rows",
    "drizzle_cards",
    "exposure_values",
    "hdrtab",
    "hdrtab_bytes",
    "headers_of_records",
    "iso_time",
    "load_input_headers",
    "member_headers",
    "merge_primary",
    "read_input_headers",
    "sorted_proposids",
    "write_exposure_headers",
    "write_input_headers",
]

PHOT_KEYWORDS = ("PHOTMODE", "PHOTFLAM", "PHOTFNU", "PHOTZPT", "PHOTPLAM", "PHOTBW")
"""Photometry keywords: merged from the inputs, then moved to the SCI header."""

PRIMARY_RULES: tuple[tuple[str, str, str], ...] = (
    # (output keyword, function, input keyword); the functions of the reference's
    # <instr>_mvm_header_hap.rules, except "start" (from the earliest EXPSTART)
    ("FILETYPE", "multi", "FILETYPE"),
    ("TELESCOP", "first", "TELESCOP"),
    ("INSTRUME", "first", "INSTRUME"),
    ("DETECTOR", "first", "DETECTOR"),
    ("FILTER", "first", "FILTER"),
    ("FILTER1", "multi", "FILTER1"),
    ("FILTER2", "multi", "FILTER2"),
    ("FILTNAM1", "first", "FILTNAM1"),
    ("FILTNAM2", "first", "FILTNAM2"),
    ("IMAGETYP", "first", "IMAGETYP"),
    ("PRIMESI", "multi", "PRIMESI"),
    ("TARGNAME", "first", "TARGNAME"),
    ("RA_TARG", "first", "RA_TARG"),
    ("DEC_TARG", "first", "DEC_TARG"),
    ("PROPOSID", "first", "PROPOSID"),
    ("PR_INV_L", "first", "PR_INV_L"),
    ("PR_INV_F", "first", "PR_INV_F"),
    ("PR_INV_M", "first", "PR_INV_M"),
    ("FGSLOCK", "multi", "FGSLOCK"),
    ("REFFRAME", "multi", "REFFRAME"),
    ("MTFLAG", "first", "MTFLAG"),
    ("DATE-OBS", "start", "EXPSTART"),
    ("TIME-OBS", "start", "EXPSTART"),
    ("EXPSTART", "min", "EXPSTART"),
    ("EXPEND", "max", "EXPEND"),
    ("EXPTIME", "sum", "EXPTIME"),
    ("TEXPTIME", "sum", "EXPTIME"),
    ("PA_V3", "zero", "PA_V3"),
    ("OPUS_VER", "first", "OPUS_VER"),
    ("CAL_VER", "first", "CAL_VER"),
    ("OBSTYPE", "first", "OBSTYPE"),
    ("OBSMODE", "multi", "OBSMODE"),
    ("SCLAMP", "multi", "SCLAMP"),
    ("NRPTEXP", "first", "NRPTEXP"),
    ("SUBARRAY", "first", "SUBARRAY"),
    ("SUBTYPE", "multi", "SUBTYPE"),
    ("APERTURE", "multi", "APERTURE"),
    ("PROPAPER", "multi", "PROPAPER"),
    ("DIRIMAGE", "multi", "DIRIMAGE"),
    ("SAMP_SEQ", "first", "SAMP_SEQ"),
    ("NSAMP", "first", "NSAMP"),
    ("CTEIMAGE", "first", "CTEIMAGE"),
    ("CTEDIR", "multi", "CTEDIR"),
    ("LRFWAVE", "first", "LRFWAVE"),
    ("CCDAMP", "first", "CCDAMP"),
    ("CCDGAIN", "first", "CCDGAIN"),
    ("PHOTMODE", "first", "PHOTMODE"),
    ("PHOTFLAM", "mean", "PHOTFLAM"),
    ("PHOTFNU", "mean", "PHOTFNU"),
    ("PHOTZPT", "mean", "PHOTZPT"),
    ("PHOTPLAM", "mean", "PHOTPLAM"),
    ("PHOTBW", "mean", "PHOTBW"),
)
"""The primary-header merge rules: written in this order, when some input has the keyword.

The reference copies every other keyword of its first input's primary header unchanged;
those describe one exposure (its readout, pattern position, CR-split and calibration
parameters, engineering values, reference files, processing time) and are tabulated per
input in ``HDRTAB`` instead."""

_COMMENTS = {
    "FILETYPE": "type of data found in data file",
    "TELESCOP": "telescope used to acquire data",
    "INSTRUME": "identifier for instrument used to acquire data",
    "DETECTOR": "detector in use",
    "FILTER": "element(s) selected from filter wheel(s)",
    "FILTER1": "filter wheel 1 element (MULTIPLE if they vary)",
    "FILTER2": "filter wheel 2 element (MULTIPLE if they vary)",
    "FILTNAM1": "first filter name (first input)",
    "FILTNAM2": "second filter name (first input)",
    "IMAGETYP": "type of exposure identifier (first input)",
    "PRIMESI": "prime instrument (MULTIPLE if they differ)",
    "TARGNAME": "proposer's target name (first input)",
    "RA_TARG": "[deg] RA of the target (first input)",
    "DEC_TARG": "[deg] Dec of the target (first input)",
    "PROPOSID": "PEP proposal identifier(s)",
    "PR_INV_L": "last name of the PI (first input)",
    "PR_INV_F": "first name of the PI (first input)",
    "PR_INV_M": "middle name of the PI (first input)",
    "FGSLOCK": "commanded FGS lock (MULTIPLE if they differ)",
    "REFFRAME": "guide star catalog (MULTIPLE if they differ)",
    "MTFLAG": "moving target flag (first input)",
    "DATE-OBS": "UT date of start of observation (= DATE-BEG)",
    "TIME-OBS": "UT time of start of observation (= DATE-BEG)",
    "EXPSTART": "[MJD] earliest exposure start",
    "EXPEND": "[MJD] latest exposure end",
    "EXPTIME": "[s] total exposure time of the inputs",
    "TEXPTIME": "[s] total exposure time of the inputs",
    "PA_V3": "set to zero for a multi-visit product",
    "OPUS_VER": "data processing system version (first input)",
    "CAL_VER": "calibration code version (first input)",
    "OBSTYPE": "observation type (first input)",
    "OBSMODE": "operating mode (MULTIPLE when inputs differ)",
    "SCLAMP": "lamp status (MULTIPLE if they differ)",
    "NRPTEXP": "number of repeat exposures in set (first input)",
    "SUBARRAY": "data from a subarray (first input)",
    "SUBTYPE": "IR subarray type (MULTIPLE if they differ)",
    "APERTURE": "aperture name (MULTIPLE when inputs differ)",
    "PROPAPER": "proposed aperture (MULTIPLE if they differ)",
    "DIRIMAGE": "direct image for grism or prism exposure",
    "SAMP_SEQ": "MultiAccum sample sequence (first input)",
    "NSAMP": "number of MULTIACCUM samples (first input)",
    "CTEIMAGE": "type of Charge Transfer Image, if applicable",
    "CTEDIR": "CTE measurement direction (MULTIPLE if differ)",
    "LRFWAVE": "proposed linear ramp filter wavelength",
    "CCDAMP": "CCD amplifier readout (first input)",
    "CCDGAIN": "commanded gain of CCD (first input)",
    "PHOTMODE": "observation configuration (first input)",
    "PHOTFLAM": "inverse sensitivity, ergs/cm2/A/e- (mean)",
    "PHOTFNU": "inverse sensitivity, Jy*sec/e- (mean)",
    "PHOTZPT": "ST magnitude zero point (mean)",
    "PHOTPLAM": "pivot wavelength (Angstroms) (mean)",
    "PHOTBW": "RMS bandwidth of filter plus detector (mean)",
}

# The table keywords of drizzlepac 3.11.0's pars/acs_mvm_header_hap.rules in their order,
# then those only pars/wfc3_mvm_header_hap.rules has. Left out: ROOTNAME, EXTNAME, EXTVER,
# FILENAME, WCSNAME, WCSTYPE and MDRIZSKY (fixed columns of :func:`hdrtab`) and the FITS
# structure cards SIMPLE, XTENSION, BITPIX, NAXIS, PCOUNT, GCOUNT, EXTEND.
_RULES_TABLE_KEYWORDS = """
A_0_2 A_0_3 A_0_4 A_1_1 A_1_2 A_1_3 A_2_0 A_2_1 A_2_2 A_3_0 A_3_1 A_4_0 ACQNAME A_ORDER
APERTURE ASN_ID ASN_MTYP ASN_TAB ATODCORR ATODGNA ATODGNB ATODGNC ATODGND ATODTAB B_0_2
B_0_3 B_0_4 B_1_1 B_1_2 B_1_3 B_2_0 B_2_1 B_2_2 B_3_0 B_3_1 B_4_0 BADINPDQ BIASCORR
BIASFILE BIASLEVA BIASLEVB BIASLEVC BIASLEVD BINAXIS1 BINAXIS2 BLEVCORR B_ORDER BPIXTAB
BUNIT CAL_VER CBLKSIZ CCDAMP CCDCHIP CCDGAIN CCDOFSTA CCDOFSTB CCDOFSTC CCDOFSTD CCDTAB
CD1_1 CD1_2 CD2_1 CD2_2 CENTERA1 CENTERA2 CFLTFILE COMPTAB COMPTYP CRCORR CRMASK CRPIX1
CRPIX2 CRRADIUS CRREJTAB CRSIGMAS CRSPLIT CRTHRESH CRVAL1 CRVAL2 CTE_NAME CTE_VER CTEDIR
CTEIMAGE CTYPE1 CTYPE2 D2IMFILE DARKCORR DARKFILE DATE DATE-OBS DEC_APER DEC_TARG DETECTOR
DFLTFILE DGEOFILE DIRIMAGE DQICORR DRIZCORR DRKCFILE EQUINOX ERRCNT EXPEND EXPFLAG EXPNAME
EXPSCORR EXPSTART EXPTIME FGSLOCK FILETYPE FILLCNT FILTER1 FILTER2 FLASHCUR FLASHDUR
FLASHSTA FLATCORR FLSHCORR FLSHFILE FW1ERROR FW1OFFST FW2ERROR FW2OFFST FWSERROR FWSOFFST
GLINCORR GLOBLIM GLOBRATE GOODMAX GOODMEAN GOODMIN GRAPHTAB GYROMODE IDCSCALE IDCTAB
IDCTHETA IDCV2REF IDCV3REF IMAGETYP IMPHTTAB INHERIT INITGUES INSTRUME JWROTYPE LFLGCORR
LFLTFILE LINENUM LOSTPIX LRC_FAIL LRC_XSTS LRFWAVE LTM1_1 LTM2_2 LTV1 LTV2 MDECODT1
MDECODT2 MDRIZTAB MEANBLEV MEANDARK MEANEXP MEANFLSH MLINTAB MOFFSET1 MOFFSET2 MOONANGL
MTFLAG NAXIS1 NAXIS2 NCOMBINE NEXTEND NGOODPIX NPOLFILE NRPTEXP OBSMODE OBSTYPE OCD1_1
OCD1_2 OCD2_1 OCD2_2 OCRPIX1 OCRPIX2 OCRVAL1 OCRVAL2 OCTYPE1 OCTYPE2 OCX10 OCX11 OCY10
OCY11 ONAXIS1 ONAXIS2 OORIENTA OPUS_VER ORIENTAT ORIGIN OSCNTAB P1_ANGLE P1_CENTR P1_FRAME
P1_LSPAC P1_NPTS P1_ORINT P1_PSPAC P1_PURPS P1_SHAPE PA_APER PATTERN1 PATTSTEP PA_V3
PCTECORR PCTEFRAC PCTENSMD PCTERNCL PCTESHFT PCTESMIT PCTETAB PFLTFILE PHOTBW PHOTCORR
PHOTFLAM PHOTMODE PHOTPLAM PHOTTAB PHOTZPT PODPSFF POSTARG1 POSTARG2 PRIMESI PR_INV_F
PR_INV_L PR_INV_M PROCTIME PROPAPER PROPOSID QUALCOM1 QUALCOM2 QUALCOM3 QUALITY RA_APER
RA_TARG READNSEA READNSEB READNSEC READNSED REFFRAME REJ_RATE RPTCORR SCALENSE SCLAMP
SDQFLAGS SHADCORR SHADFILE SHUTRPOS SIZAXIS1 SIZAXIS2 SKYSUB SKYSUM SNRMAX SNRMEAN SNRMIN
SOFTERRS SPOTTAB STATFLAG STDCFFF STDCFFP SUBARRAY SUN_ALT SUNANGLE TARGNAME TDDALPHA
TDDBETA TELESCOP TIME-OBS T_SGSTAR VAFACTOR WCSAXES WCSCDATE WFCMPRSD WRTERR WCSNAMEO
WCSAXESO LONPOLEO LATPOLEO RESTFRQO RESTWAVO CD1_1O CD1_2O CD2_1O CD2_2O CDELT1O CDELT2O
CRPIX1O CRPIX2O CRVAL1O CRVAL2O CTYPE1O CTYPE2O CUNIT1O CUNIT2O
CCDOFSAB CCDOFSCD CHINJECT DATAMAX DATAMIN DELTATIM FILTER IRAF-TLM NLINCORR NLINFILE
NSAMP P2_ANGLE P2_CENTR P2_FRAME P2_LSPAC P2_NPTS P2_ORINT P2_PSPAC P2_PURPS P2_SHAPE
PATTERN2 PHOTFNU ROUTTIME SAA_DARK SAA_EXIT SAA_TIME SAACRMAP SAMP_SEQ SAMPNUM SAMPTIME
SAMPZERO SUBTYPE TDFTRANS UNITCORR ZOFFCORR ZSIGCORR
""".split()

HDRTAB_KEYWORDS: tuple[str, ...] = (*_RULES_TABLE_KEYWORDS, "FILTNAM1", "FILTNAM2")
"""Input keywords tabulated in HDRTAB (in this order) when some input has them: the
reference's rules-file table keywords (plus WFPC2's filter names)."""

ALIGNED_WCS_KEYWORDS = ("CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "ORIENTAT")
"""Chip-header keywords an alignment changes: left empty in the HDRTAB row of an aligned
input (its header holds the WCS before alignment; the solution file has the new one)."""

_ALWAYS = {"FILENAME", "ROOTNAME", "EXTVER", "EXPTIME", "EXPSTART", "EXPEND", "PHOTFLAM",
           "PHOTPLAM", "FILTER", "DETECTOR", "PROPOSID", "WCSNAME", "HAPEXPNAME",
           "SVMROOTNAME", "GENDATE", "EXTNAME"}

_MISSING = object()

HEADERS_FORMAT = "mvmflow-input-headers-1"
"""The ``format`` value of a headers file (:func:`write_input_headers`)."""


@dataclass
class InputHeaders:
    """Headers of one input exposure.

    Attributes
    ----------
    primary : astropy.io.fits.Header
    chips : dict of int to astropy.io.fits.Header
        SCI extension headers by EXTVER.
    """

    primary: fits.Header
    chips: dict[int, fits.Header] = field(default_factory=dict)


def read_input_headers(path: str | os.PathLike) -> InputHeaders:
    """Read the primary and SCI headers of an exposure (no data is read).

    Raises
    ------
    OSError, ValueError
        With the file name, when the file cannot be read as FITS.
    """
    try:
        with fits.open(path, lazy_load_hdus=True, memmap=False) as hdul:
            primary = hdul[0].header.copy()
            chips = {}
            for hdu in hdul[1:]:
                if str(hdu.header.get("EXTNAME", "")).strip().upper() == "SCI":
                    chips[int(hdu.header.get("EXTVER", 1) or 1)] = hdu.header.copy()
    except (OSError, ValueError) as exc:
        raise type(exc)(f"cannot read the headers of {os.fspath(path)!r}: {exc}") from exc
    return InputHeaders(primary, chips)


def write_input_headers(headers: InputHeaders | None, path: str | os.PathLike) -> Path:
    """Write an exposure's headers file atomically (see the module notes for the format).

    Parameters
    ----------
    headers : InputHeaders or None
        None for an exposure whose headers could not be read (a rejected file): the file
        then holds no headers, so the screen job always writes one.
    path : path-like
        The ``.json`` file (the screen rule's ``headers`` output).

    Returns
    -------
    Path
        ``path``.
    """
    data: dict = {"format": HEADERS_FORMAT, "primary": None, "chips": {}}
    if headers is not None:
        data["primary"] = _card_lines(headers.primary)
        data["chips"] = {str(v): _card_lines(h) for v, h in sorted(headers.chips.items())}
    path = Path(path)
    # docs/conventions.md, "Files written": whole or not at all, with the umask's mode
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=0) + "\n", encoding="utf-8")
    return path


def write_exposure_headers(exposure: str | os.PathLike, path: str | os.PathLike, *,
                           required: bool = True) -> InputHeaders | None:
    """Read an exposure's headers and write its headers file (the screen job's).

    Astropy's warnings about damaged cards are silenced: screening reports them.

    Parameters
    ----------
    exposure : path-like
        The exposure (``_flt``/``_flc`` file).
    path : path-like
        The headers file.
    required : bool
        False for a rejected exposure: if its headers cannot be read, the file holds no
        headers instead of the error being raised.

    Returns
    -------
    InputHeaders or None
        What was written.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            headers = read_input_headers(exposure)
        except Exception:  # noqa: BLE001 - a rejected file may fail in any way
            if required:
                raise
            headers = None
    write_input_headers(headers, path)  # a failed write is an error, never "no headers"
    return headers


def load_input_headers(path: str | os.PathLike) -> InputHeaders | None:
    """Read a headers file written by :func:`write_input_headers`.

    Returns
    -------
    InputHeaders or None
        None when the file holds no headers (an exposure whose headers could not be read).

    Raises
    ------
    ValueError
        With the file name, if it is not a headers file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != HEADERS_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {HEADERS_FORMAT!r}")
        if data["primary"] is None:
            return None
        return InputHeaders(_from_lines(data["primary"]),
                            {int(v): _from_lines(lines) for v, lines in data["chips"].items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{os.fspath(path)} is not an input headers file: {exc}") from exc


def _card_lines(header: fits.Header) -> list[str]:
    """The header's 80-character card images (CONTINUE cards apart), trailing blanks cut."""
    text = header.tostring(sep="", endcard=False, padding=False)
    return [text[i:i + 80].rstrip() for i in range(0, len(text), 80)]


def _from_lines(lines: Sequence[str]) -> fits.Header:
    return fits.Header.fromstring("".join(line.ljust(80) for line in lines))


def member_headers(records: Sequence, paths: Sequence[str | os.PathLike]
                   ) -> dict[str, InputHeaders]:
    """The ``input_headers`` of a product's writer: each member's headers file, by file name.

    Parameters
    ----------
    records : sequence of ExposureRecord
        The members' records.
    paths : sequence of path-like
        Their headers files (``<key>.json``, :func:`write_input_headers`), in the same order.

    Raises
    ------
    ValueError
        If a file is not the headers of the record beside it, or holds no headers.
    """
    out = {}
    for record, path in zip(records, paths, strict=True):
        name = record.filename or os.path.basename(str(record.file))
        if Path(path).name != f"{exposure_key(name)}.json":
            raise ValueError(f"headers file {os.fspath(path)} is not that of {name}")
        headers = load_input_headers(path)
        if headers is None:
            raise ValueError(f"{os.fspath(path)} holds no headers: {name} was not readable "
                             "when it was screened")
        out[name] = headers
    return out


def headers_of_records(
    files: Sequence[str],
    records: Sequence,
    given: Mapping[str, InputHeaders] | None = None,
) -> dict[str, InputHeaders]:
    """The headers of each input: ``given[file]``, else ``given`` under its record's name.

    No exposure is opened here: the screen job is the one reader of the input files, and
    the workflow passes every member's headers (:func:`member_headers`). An input without
    headers (a test's made-up record) gets its keywords from its record alone; when
    ``given`` is passed but lacks some inputs, they are named in a warning.

    Parameters
    ----------
    files : sequence of str
        Input names in layer order (the keys of the result).
    records : sequence of ExposureRecord
        Aligned with ``files``.
    given : mapping of str to InputHeaders, optional
        Headers by input name, or by the record's ``filename`` or ``file`` base name.
    """
    out: dict[str, InputHeaders] = {}
    missing = []
    for name, record in zip(files, records, strict=True):
        keys = (name, record.filename, os.path.basename(str(record.file)),
                os.path.basename(str(name)))
        found = [given[k] for k in keys if k and given and given.get(k) is not None]
        if found:
            out[name] = found[0]
        else:
            missing.append(os.path.basename(str(name)))
    if given is not None and missing:
        logging.getLogger("mvmflow").warning(
            "no headers for input(s), header keywords from the records only: %s",
            ", ".join(missing))
    return out


ALIGN_KEYWORDS = ("WCSNAME", "RMS_RA", "RMS_DEC", "NMATCHES", "FITGEOM", "ALIGNST", "REFCAT")
"""Alignment keywords of an aligned input (:func:`mvmflow.solution.solution_keywords`)."""


def _record_values(record) -> dict:
    """Keyword values known from an ExposureRecord (empty or zero fields are left out)."""
    filename = record.filename or os.path.basename(str(record.file))
    out: dict = {"FILENAME": filename}
    if record.rootname:
        out["ROOTNAME"] = record.rootname
    telescope = getattr(record, "telescope", "")
    if telescope:
        out["TELESCOP"] = telescope
    if record.instrument:
        out["INSTRUME"] = record.instrument.upper()
    if record.detector:
        out["DETECTOR"] = record.detector.upper()
    if record.filter:
        out["FILTER"] = record.filter.upper().replace("-", ";")
    for key, value in (("EXPTIME", record.exptime), ("EXPSTART", record.expstart),
                       ("EXPEND", record.expend), ("PHOTFLAM", record.photflam),
                       ("PHOTPLAM", record.photplam)):
        if value:
            out[key] = float(value)
    if record.date_obs:
        out["DATE-OBS"] = str(record.date_obs)[:10]
    if record.proposid:
        pid = str(record.proposid).strip()
        out["PROPOSID"] = int(pid) if pid.isdigit() else pid
    if record.bunit:
        out["BUNIT"] = record.bunit
    if record.wcsname:
        out["WCSNAME"] = record.wcsname
    return out


def _header_values(header: fits.Header | None) -> dict:
    if header is None:
        return {}
    out = {}
    for card in header.cards:
        key = card.keyword
        if not key or key in ("COMMENT", "HISTORY") or key in out:
            continue
        value = card.value
        if isinstance(value, fits.card.Undefined):
            continue
        if isinstance(value, str):
            value = value.strip()
        out[key] = value
    return out


def _acs_filter(values: Mapping) -> str | None:
    """``FILTER1;FILTER2`` without ``CLEAR*`` (the reference's ACS rule), or None."""
    if "FILTER1" not in values and "FILTER2" not in values:
        return None
    kept = [str(values[k]) for k in ("FILTER1", "FILTER2")
            if k in values and "clear" not in str(values[k]).lower() and str(values[k])]
    return ";".join(kept) or "CLEAR"


def exposure_values(record, headers: InputHeaders | None = None) -> dict:
    """All keyword values of one exposure (its primary-header view).

    The record's fields, overridden by the primary header; ``PHOT*`` and ``BUNIT``,
    ``WCSNAME`` absent from the primary come from the first SCI header. For ACS,
    ``FILTER`` is ``FILTER1;FILTER2`` without clear elements.
    """
    values = _record_values(record)
    if headers is not None:
        values.update(_header_values(headers.primary))
        if headers.chips:
            first = headers.chips[min(headers.chips)]
            first_values = None  # read once (every card value costs an astropy config look-up)
            for key in (*PHOT_KEYWORDS, "BUNIT", "WCSNAME"):
                if key not in headers.primary and key in first:
                    if first_values is None:
                        first_values = _header_values(first)
                    values[key] = first_values[key]
    values.update(getattr(record, "alignment", None) or {})  # the aligned WCS wins
    if str(values.get("INSTRUME", "")).upper() == "ACS":
        acs = _acs_filter(values)
        if acs is not None:
            values["FILTER"] = acs
    return values


def iso_time(mjd: float) -> str:
    """ISO-8601 UTC time of an MJD, to the millisecond (``DATE-BEG`` form)."""
    return Time(float(mjd), format="mjd", scale="utc").isot


def _apply(func: str, vals: list):
    if func == "first":
        return vals[0]
    if func == "multi":
        uniq = list(dict.fromkeys(vals))
        return uniq[0] if len(uniq) == 1 else "MULTIPLE"
    if func == "zero":
        return 0.0
    nums = [float(v) for v in vals]
    if func == "sum":
        return float(np.sum(nums))
    if func == "mean":
        return float(np.mean(nums))
    if func == "min":
        return float(np.min(nums))
    if func == "max":
        return float(np.max(nums))
    raise ValueError(f"unknown merge function {func!r}")


def merge_primary(exposures: Sequence[Mapping]) -> list[tuple[str, object, str]]:
    """Merge the primary keywords of the inputs (layer order) with :data:`PRIMARY_RULES`.

    Parameters
    ----------
    exposures : sequence of mapping
        :func:`exposure_values` of each input.

    Returns
    -------
    list of (keyword, value, comment)
        In rule order; a keyword no input has is left out, one they all leave blank is
        blank. Numeric rules skip inputs whose value is not a number. ``DATE-OBS``/``TIME-OBS`` are the date and time of
        the earliest ``EXPSTART`` (the ``DATE-BEG`` of the product, truncated to the
        second); without any ``EXPSTART``, the inputs' own ``DATE-OBS``/``TIME-OBS`` of the
        earliest date.
    """
    cards = []
    for out_key, func, in_key in PRIMARY_RULES:
        vals = [e[in_key] for e in exposures if e.get(in_key, _MISSING) is not _MISSING
                and e[in_key] is not None and e[in_key] != ""]
        if not vals and func in ("first", "multi") and any(e.get(in_key) == ""
                                                             for e in exposures):
            vals = [""]  # blank in every input that has it (MTFLAG, PR_INV_M): kept blank
        if func in ("sum", "mean", "min", "max", "start"):
            vals = [v for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
        comment = _COMMENTS.get(out_key, f"{func} over the inputs")
        if func == "start":
            value = _start_of(exposures, out_key, vals)
            if value:
                cards.append((out_key, value, comment))
            continue
        if not vals:
            continue
        cards.append((out_key, _apply(func, vals), comment))
    return cards


def _start_of(exposures: Sequence[Mapping], key: str, starts: list) -> str | None:
    """``DATE-OBS`` (``key``) or ``TIME-OBS`` of the start of the observation."""
    if starts:
        iso = iso_time(min(starts))
        return iso[:10] if key == "DATE-OBS" else iso[11:19]
    dated = sorted((str(e.get("DATE-OBS", "")), str(e.get("TIME-OBS", ""))) for e in exposures
                   if e.get("DATE-OBS"))
    if not dated:
        return None
    value = dated[0][0] if key == "DATE-OBS" else dated[0][1]
    return value or None


def sorted_proposids(values) -> str:
    """Sorted unique proposal ids joined by ``'; '`` (numeric order when all are numbers)."""
    uniq = {str(v).strip() for v in values if str(v).strip()}
    if all(u.isdigit() for u in uniq):
        return "; ".join(str(v) for v in sorted(int(u) for u in uniq))
    return "; ".join(sorted(uniq))


@dataclass
class ChipRow:
    """One HDRTAB row: an input chip and its keyword values."""

    file: str
    extver: int
    values: dict


def _svm_root(filename: str) -> str:
    root, sep, _ = filename.rpartition("_")
    return root if sep else filename.split(".")[0]


def chip_rows(
    files: Sequence[str],
    records: Sequence,
    headers: Mapping[str, InputHeaders] | None,
    hapexpnames: Sequence[str],
    sky: Sequence[float],
) -> list[ChipRow]:
    """The HDRTAB rows, in layer order then EXTVER order.

    Parameters
    ----------
    files : sequence of str
        Input files in layer order (context-bit order).
    records : sequence of ExposureRecord
        Aligned with ``files``.
    headers : mapping of str to InputHeaders, optional
        By input file (as in ``files``).
    hapexpnames : sequence of str
        Exposure-level product basename of each input.
    sky : sequence of float
        Sky offset subtracted from each input.
    """
    headers = headers or {}
    rows = []
    for k, (name, record) in enumerate(zip(files, records, strict=True)):
        hdrs = headers.get(name)
        base = exposure_values(record, hdrs)
        extvers = [c.extver for c in record.chips] or (sorted(hdrs.chips) if hdrs else [1])
        alignment = getattr(record, "alignment", None) or {}
        for extver in sorted(extvers):
            values = dict(base)
            if hdrs is not None and extver in hdrs.chips:
                chip = _header_values(hdrs.chips[extver])
                values.update(chip)
                if "FILTER" in base:  # keep the exposure's (ACS-joined) filter
                    values["FILTER"] = base["FILTER"]
                values.update(alignment)
                if alignment.get("WCSNAME", chip.get("WCSNAME")) != chip.get("WCSNAME"):
                    for key in ALIGNED_WCS_KEYWORDS:  # the header's WCS is not the one used
                        values.pop(key, None)
            filename = str(base["FILENAME"])
            values.update({
                "SVMROOTNAME": _svm_root(filename),
                "GENDATE": str(hdrs.primary.get("DATE", ""))[:10] if hdrs is not None else "",
                "ROOTNAME": values.get("ROOTNAME", _svm_root(filename)),
                "EXTNAME": "SCI",
                "EXTVER": int(extver),
                "FILENAME": filename,
                "MDRIZSKY": float(sky[k]),
                "CTXBIT": k,
                "INSHA256": record.sha256 or "",
                "WCSNAME": values.get("WCSNAME", ""),
                "WCSTYPE": values.get("WCSTYPE", ""),
                "HAPEXPNAME": hapexpnames[k],
            })
            rows.append(ChipRow(name, int(extver), values))
    return rows


def _column(name: str, vals: list) -> tuple[str, np.ndarray]:
    """The ``TFORM`` and the big-endian values of one HDRTAB column."""
    present = [v for v in vals if v is not _MISSING and v is not None]
    if present and all(isinstance(v, bool | np.bool_) for v in present) and len(present) == len(vals):
        return "L", np.array([b"T" if v else b"F" for v in vals], dtype="S1")
    numeric = all(isinstance(v, int | float | np.integer | np.floating)
                  and not isinstance(v, bool | np.bool_) for v in present)
    if present and numeric:
        if len(present) == len(vals) and all(isinstance(v, int | np.integer) for v in present):
            return "K", np.array(vals, dtype=">i8")
        return "D", np.array([float(v) if v is not _MISSING and v is not None else np.nan
                              for v in vals], dtype=">f8")
    text = []
    for v in vals:
        t = "" if v is _MISSING or v is None else str(v)
        try:
            text.append(t.encode("ascii"))
        except UnicodeEncodeError:
            raise ValueError(f"HDRTAB column {name}: {t!r} is not ASCII text") from None
    width = max([1, *(len(t) for t in text)])
    # trailing blanks are written as NULs, all but a first character (astropy's
    # _rstrip_inplace: the bytes astropy writes)
    return f"{width}A", np.array([t[:1] + t[1:].rstrip(b" ") for t in text], dtype=f"S{width}")




def _fits_card(key: str, value: str | int, comment: str = "") -> str:
    """One 80-character header card, formatted as astropy formats it (fixed format)."""
    if isinstance(value, str):
        text = "'" + value.replace("'", "''").ljust(8) + "'"
        field = f"{text:20s}"
    else:
        field = f"{int(value):>20d}"
    card = f"{key:8s}= {field}" + (f" / {comment}" if comment else "")
    if len(card.rstrip()) > 80:
        raise ValueError(f"HDRTAB card {key} = {value!r} does not fit in 80 characters")
    return card.ljust(80)


def hdrtab_bytes(rows: Sequence[ChipRow]) -> bytes:
    """The ``HDRTAB`` extension as it is written, header and data: one row per input chip.

    Columns ``SVMROOTNAME, GENDATE, ROOTNAME, EXTNAME, EXTVER, FILENAME``, then each of
    :data:`HDRTAB_KEYWORDS` that some input has (the required ones always), then
    ``MDRIZSKY, CTXBIT, INSHA256, WCSNAME, WCSTYPE, HAPEXPNAME`` and, for aligned inputs,
    ``RMS_RA, RMS_DEC, NMATCHES, FITGEOM, ALIGNST, REFCAT``. A value an input lacks is
    NaN in a numeric column and empty in a text column; so are the
    :data:`ALIGNED_WCS_KEYWORDS` of an input whose alignment changed its WCS. Formats:
    ``L`` (every value a bool), ``K`` (every value an int), ``D`` (numbers), else ``<n>A``.

    The bytes are those astropy writes for the same table (``BinTableHDU.from_columns``
    with ``EXTNAME = 'HDRTAB'``, ``EXTVER = 1``; tests/test_products.py), made here
    directly: through astropy's columns and header cards the table of a layer of a few
    exposures (about 240 columns) took 0.3 s to build and write (docs/speed.md, "Layer
    jobs").
    """
    head = ["SVMROOTNAME", "GENDATE", "ROOTNAME", "EXTNAME", "EXTVER", "FILENAME"]
    tail = ["MDRIZSKY", "CTXBIT", "INSHA256", "WCSNAME", "WCSTYPE", "HAPEXPNAME"]
    tail += [k for k in ALIGN_KEYWORDS if k != "WCSNAME" and any(k in r.values for r in rows)]
    middle = [k for k in HDRTAB_KEYWORDS
              if k in _ALWAYS or any(k in r.values for r in rows)]
    names = head + middle + tail
    cols = [_column(name, [r.values.get(name, _MISSING) for r in rows]) for name in names]
    data = np.empty(len(rows), dtype=[(f"c{i}", a.dtype) for i, (_, a) in enumerate(cols)])
    for i, (_, values) in enumerate(cols):
        data[f"c{i}"] = values
    cards = [_fits_card("XTENSION", "BINTABLE", "binary table extension"),
             _fits_card("BITPIX", 8, "array data type"),
             _fits_card("NAXIS", 2, "number of array dimensions"),
             _fits_card("NAXIS1", data.dtype.itemsize, "length of dimension 1"),
             _fits_card("NAXIS2", len(rows), "length of dimension 2"),
             _fits_card("PCOUNT", 0, "number of group parameters"),
             _fits_card("GCOUNT", 1, "number of groups"),
             _fits_card("TFIELDS", len(names), "number of table fields")]
    for i, (name, (tform, _)) in enumerate(zip(names, cols, strict=True), start=1):
        cards += [_fits_card(f"TTYPE{i}", name), _fits_card(f"TFORM{i}", tform)]
    cards += [_fits_card("EXTNAME", "HDRTAB", "extension name"), _fits_card("EXTVER", 1),
              "END".ljust(80)]
    header = "".join(cards).encode("ascii")
    body = data.tobytes()
    return (header + b" " * (-len(header) % FITS_BLOCK)
            + body + b"\0" * (-len(body) % FITS_BLOCK))


def hdrtab(rows: Sequence[ChipRow]) -> fits.BinTableHDU:
    """The ``HDRTAB`` extension (:func:`hdrtab_bytes`) as an astropy HDU."""
    return fits.BinTableHDU.fromstring(hdrtab_bytes(rows))


def drizzle_cards(
    rows: Sequence[ChipRow],
    product: str,
    params: Mapping,
    version: str,
    limit: int = 999,
    scale: float | None = None,
) -> list[tuple[str, object, str]]:
    """The ``D###xxxx`` keywords of each input chip (the reference's drizzle record).

    ``###`` counts the chips from 001 in HDRTAB order; FITS keyword names allow 999, so
    chips after the 999th are recorded in HDRTAB only.

    Parameters
    ----------
    rows : sequence of ChipRow
    product : str
        The layer's file name (``OUDA``, ``OUWE``, ``OUCO``: SCI, WHT and CTX are in it).
    params : mapping
        Resolved layer parameters (``kernel``, ``pixfrac``, ``units``, ``fillval``,
        ``final_bits``, ``static_mask``).
    version : str
        Software identification for ``VER``.
    scale : float, optional
        Output pixel scale in arcsec (``SCAL``); ``ISCL`` is the chip's ``IDCSCALE`` when
        its header is known.
    """
    fillval = params.get("fillval")
    if fillval is None or (isinstance(fillval, float) and np.isnan(fillval)):
        fval = "INDEF"
    else:
        fval = str(fillval)
    mask = f"DQ & ~{params.get('final_bits', 0)} == 0"
    if params.get("static_mask"):
        mask += " and static mask"
    cards = []
    for d, row in enumerate(rows[:limit], start=1):
        p = f"D{d:03d}"
        cards += [
            (p + "VER", version, "Drizzle, task version"),
            (p + "GEOM", "wcs", "Drizzle, source of geometric information"),
            (p + "DATA", f"{row.values['FILENAME']}[sci,{row.extver}]",
             "Drizzle, input data image"),
            (p + "DEXP", float(row.values.get("EXPTIME", 0.0)),
             "Drizzle, input image exposure time (s)"),
            (p + "OUDA", product, "Drizzle, output data image"),
            (p + "OUWE", product, "Drizzle, output weighting image"),
            (p + "OUCO", product, "Drizzle, output context image"),
            (p + "MASK", mask, "Drizzle, input weighting image"),
            (p + "WTSC", 1.0, "Drizzle, weighting factor for input image"),
            (p + "KERN", str(params.get("kernel", "square")),
             "Drizzle, form of weight distribution kernel"),
            (p + "PIXF", float(params.get("pixfrac", 1.0)), "Drizzle, linear size of drop"),
            (p + "COEF", "WCS", "Drizzle, source of coefficients"),
            (p + "OUUN", str(params.get("units", "cps")),
             "Drizzle, units of output image - counts or cps"),
            (p + "FVAL", fval, "Drizzle, fill value for zero weight output pix"),
            (p + "WKEY", " ", "Input image WCS Version used"),
        ]
        if scale is not None:
            cards.append((p + "SCAL", float(scale),
                          "Drizzle, pixel size (arcsec) of output image"))
        iscl = row.values.get("IDCSCALE")
        if isinstance(iscl, int | float) and not isinstance(iscl, bool):
            cards.append((p + "ISCL", float(iscl),
                          "Drizzle, default IDCTAB pixel size(arcsec)"))
    return cards
