"""Header keywords of a layer product built from its inputs.

Three pieces, after the reference (spec processing.md 1.7 item 3 and 1.10):

- :func:`merge_primary`: the primary-header keywords merged across the inputs with the
  reference's MVM rules (``pars/*_mvm_header_hap.rules``): ``EXPTIME``/``TEXPTIME`` sum,
  ``EXPSTART`` min, ``EXPEND`` max, ``PHOT*`` mean, ``APERTURE``/``OBSMODE`` 'MULTIPLE' when
  they differ, ``PA_V3``/``PA_APER`` zero, ``TARGNAME``/``INSTRUME``/``DETECTOR``/...
  first. Unlike the reference, which starts from the first input's whole primary header
  and deletes or tabulates what it knows about, only keywords with a rule are written
  (:data:`PRIMARY_RULES`, in that order): nothing exposure-specific leaks into the
  product (calibration switches, reference files, ``DATE`` of the input file, ...).
- :func:`hdrtab`: the ``HDRTAB`` binary table, one row per input chip, columns
  ``SVMROOTNAME, GENDATE, ROOTNAME, EXTNAME, EXTVER, FILENAME, <keywords>..., WCSNAME,
  WCSTYPE, HAPEXPNAME`` (:data:`HDRTAB_KEYWORDS`); plus our ``MDRIZSKY`` (the sky offset
  subtracted, in the layer's SCI units), ``CTXBIT`` (the input's context bit) and
  ``INSHA256`` (its checksum).
- :func:`drizzle_cards`: the per-chip ``D###xxxx`` drizzle keywords.

The values of an input come from its :class:`~mvmflow.records.ExposureRecord` and, when
available, its FITS headers (:class:`InputHeaders`, :func:`read_input_headers`): a chip's
SCI header first, then the primary header, then the record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

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
    "merge_primary",
    "read_input_headers",
    "sorted_proposids",
]

PHOT_KEYWORDS = ("PHOTMODE", "PHOTFLAM", "PHOTFNU", "PHOTZPT", "PHOTPLAM", "PHOTBW")
"""Photometry keywords: merged from the inputs, then moved to the SCI header."""

PRIMARY_RULES: tuple[tuple[str, str, str], ...] = (
    # (output keyword, function, input keyword)
    ("TELESCOP", "first", "TELESCOP"),
    ("INSTRUME", "first", "INSTRUME"),
    ("DETECTOR", "first", "DETECTOR"),
    ("FILTER", "first", "FILTER"),
    ("FILTER1", "multi", "FILTER1"),
    ("FILTER2", "multi", "FILTER2"),
    ("FILTNAM1", "first", "FILTNAM1"),
    ("FILTNAM2", "first", "FILTNAM2"),
    ("APERTURE", "multi", "APERTURE"),
    ("OBSTYPE", "first", "OBSTYPE"),
    ("OBSMODE", "multi", "OBSMODE"),
    ("IMAGETYP", "first", "IMAGETYP"),
    ("PROPOSID", "first", "PROPOSID"),
    ("TARGNAME", "first", "TARGNAME"),
    ("RA_TARG", "first", "RA_TARG"),
    ("DEC_TARG", "first", "DEC_TARG"),
    ("PA_V3", "zero", "PA_V3"),
    ("PA_APER", "zero", "PA_APER"),
    ("DATE-OBS", "first", "DATE-OBS"),
    ("TIME-OBS", "first", "TIME-OBS"),
    ("EXPSTART", "min", "EXPSTART"),
    ("EXPEND", "max", "EXPEND"),
    ("EXPTIME", "sum", "EXPTIME"),
    ("TEXPTIME", "sum", "EXPTIME"),
    ("SUBARRAY", "first", "SUBARRAY"),
    ("CCDAMP", "first", "CCDAMP"),
    ("CCDGAIN", "first", "CCDGAIN"),
    ("SAMP_SEQ", "first", "SAMP_SEQ"),
    ("NSAMP", "first", "NSAMP"),
    ("CAL_VER", "first", "CAL_VER"),
    ("OPUS_VER", "first", "OPUS_VER"),
    ("PHOTMODE", "first", "PHOTMODE"),
    ("PHOTFLAM", "mean", "PHOTFLAM"),
    ("PHOTFNU", "mean", "PHOTFNU"),
    ("PHOTZPT", "mean", "PHOTZPT"),
    ("PHOTPLAM", "mean", "PHOTPLAM"),
    ("PHOTBW", "mean", "PHOTBW"),
)
"""The primary-header merge rules: written in this order, when some input has the keyword."""

_COMMENTS = {
    "TELESCOP": "telescope used to acquire data",
    "INSTRUME": "identifier for instrument used to acquire data",
    "DETECTOR": "detector in use",
    "FILTER": "element(s) selected from filter wheel(s)",
    "APERTURE": "aperture name (MULTIPLE when inputs differ)",
    "OBSMODE": "operating mode (MULTIPLE when inputs differ)",
    "PROPOSID": "PEP proposal identifier(s)",
    "TARGNAME": "proposer's target name (first input)",
    "PA_V3": "set to zero for a multi-visit product",
    "PA_APER": "set to zero for a multi-visit product",
    "EXPSTART": "[MJD] earliest exposure start",
    "EXPEND": "[MJD] latest exposure end",
    "EXPTIME": "[s] total exposure time of the inputs",
    "TEXPTIME": "[s] total exposure time of the inputs",
    "PHOTMODE": "observation configuration (first input)",
    "PHOTFLAM": "inverse sensitivity, ergs/cm2/A/e- (mean)",
    "PHOTFNU": "inverse sensitivity, Jy*sec/e- (mean)",
    "PHOTZPT": "ST magnitude zero point (mean)",
    "PHOTPLAM": "pivot wavelength (Angstroms) (mean)",
    "PHOTBW": "RMS bandwidth of filter plus detector (mean)",
}

HDRTAB_KEYWORDS: tuple[str, ...] = (
    "INSTRUME", "DETECTOR", "FILTER", "FILTER1", "FILTER2", "FILTNAM1", "FILTNAM2",
    "APERTURE", "OBSMODE", "PROPOSID", "TARGNAME", "PR_INV_L", "DATE-OBS", "TIME-OBS",
    "EXPSTART", "EXPEND", "EXPTIME", "CCDCHIP", "CCDAMP", "CCDGAIN", "SUBARRAY",
    "NAXIS1", "NAXIS2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2",
    "CD1_1", "CD1_2", "CD2_1", "CD2_2", "ORIENTAT", "PA_V3", "BUNIT",
    "PHOTMODE", "PHOTFLAM", "PHOTFNU", "PHOTZPT", "PHOTPLAM", "PHOTBW",
    "CAL_VER", "IDCTAB",
)
"""Input keywords tabulated in HDRTAB (in this order) when some input has them."""

_ALWAYS = {"FILENAME", "ROOTNAME", "EXTVER", "EXPTIME", "EXPSTART", "EXPEND", "PHOTFLAM",
           "PHOTPLAM", "FILTER", "DETECTOR", "PROPOSID", "WCSNAME", "HAPEXPNAME",
           "SVMROOTNAME", "GENDATE", "EXTNAME"}

_MISSING = object()


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
                    chips[int(hdu.header.get("EXTVER", 1))] = hdu.header.copy()
    except (OSError, ValueError) as exc:
        raise type(exc)(f"cannot read the headers of {os.fspath(path)!r}: {exc}") from exc
    return InputHeaders(primary, chips)


ALIGN_KEYWORDS = ("WCSNAME", "RMS_RA", "RMS_DEC", "NMATCHES", "FITGEOM", "ALIGNST", "REFCAT")
"""Alignment keywords of an aligned input (:func:`mvmflow.solution.solution_keywords`)."""


def _record_values(record) -> dict:
    """Keyword values known from an ExposureRecord (empty or zero fields are left out)."""
    filename = record.filename or os.path.basename(str(record.file))
    out: dict = {"FILENAME": filename}
    if record.rootname:
        out["ROOTNAME"] = record.rootname
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
            for key in (*PHOT_KEYWORDS, "BUNIT", "WCSNAME"):
                if key not in headers.primary and key in first:
                    values[key] = _header_values(first)[key]
    values.update(getattr(record, "alignment", None) or {})  # the aligned WCS wins
    if str(values.get("INSTRUME", "")).upper() == "ACS":
        acs = _acs_filter(values)
        if acs is not None:
            values["FILTER"] = acs
    return values


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
        In rule order; a keyword no input has is left out. Numeric rules skip inputs
        whose value is not a number.
    """
    cards = []
    for out_key, func, in_key in PRIMARY_RULES:
        vals = [e[in_key] for e in exposures if e.get(in_key, _MISSING) is not _MISSING
                and e[in_key] is not None and e[in_key] != ""]
        if func in ("sum", "mean", "min", "max"):
            vals = [v for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
        if not vals:
            continue
        comment = _COMMENTS.get(out_key, f"{func} over the inputs")
        cards.append((out_key, _apply(func, vals), comment))
    return cards


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
        for extver in sorted(extvers):
            values = dict(base)
            if hdrs is not None and extver in hdrs.chips:
                values.update(_header_values(hdrs.chips[extver]))
                if "FILTER" in base:  # keep the exposure's (ACS-joined) filter
                    values["FILTER"] = base["FILTER"]
                values.update(getattr(record, "alignment", None) or {})
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


def _column(name: str, vals: list) -> fits.Column:
    present = [v for v in vals if v is not _MISSING and v is not None]
    if present and all(isinstance(v, bool | np.bool_) for v in present) and len(present) == len(vals):
        return fits.Column(name=name, format="L", array=np.array(vals, dtype=bool))
    numeric = all(isinstance(v, int | float | np.integer | np.floating)
                  and not isinstance(v, bool | np.bool_) for v in present)
    if present and numeric:
        if len(present) == len(vals) and all(isinstance(v, int | np.integer) for v in present):
            return fits.Column(name=name, format="K", array=np.array(vals, dtype=np.int64))
        arr = np.array([float(v) if v is not _MISSING and v is not None else np.nan
                        for v in vals], dtype=np.float64)
        return fits.Column(name=name, format="D", array=arr)
    text = ["" if v is _MISSING or v is None else str(v) for v in vals]
    width = max([1, *(len(t.encode()) for t in text)])
    return fits.Column(name=name, format=f"{width}A", array=np.array(text, dtype=f"U{width}"))


def hdrtab(rows: Sequence[ChipRow]) -> fits.BinTableHDU:
    """The ``HDRTAB`` extension: one row per input chip.

    Columns ``SVMROOTNAME, GENDATE, ROOTNAME, EXTNAME, EXTVER, FILENAME``, then each of
    :data:`HDRTAB_KEYWORDS` that some input has (the required ones always), then
    ``MDRIZSKY, CTXBIT, INSHA256, WCSNAME, WCSTYPE, HAPEXPNAME`` and, for aligned inputs,
    ``RMS_RA, RMS_DEC, NMATCHES, FITGEOM, ALIGNST, REFCAT``. A value an input lacks is
    NaN in a numeric column and empty in a text column.
    """
    head = ["SVMROOTNAME", "GENDATE", "ROOTNAME", "EXTNAME", "EXTVER", "FILENAME"]
    tail = ["MDRIZSKY", "CTXBIT", "INSHA256", "WCSNAME", "WCSTYPE", "HAPEXPNAME"]
    tail += [k for k in ALIGN_KEYWORDS if k != "WCSNAME" and any(k in r.values for r in rows)]
    middle = [k for k in HDRTAB_KEYWORDS
              if k in _ALWAYS or any(k in r.values for r in rows)]
    cols = [
        _column(name, [r.values.get(name, _MISSING) for r in rows])
        for name in head + middle + tail
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="HDRTAB")
    hdu.header["EXTVER"] = 1
    return hdu


def drizzle_cards(
    rows: Sequence[ChipRow],
    product: str,
    params: Mapping,
    version: str,
    limit: int = 999,
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
    return cards
