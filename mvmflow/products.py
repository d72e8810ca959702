"""Layer products: the ``_dr[cz].fits`` file, its trailer and the sky cell's manifest.

:func:`write_layer` (the one-tile case of :func:`mvmflow.tiles.write_tiled_layer`, which
writes every product tile by tile) writes ``hst_<skycell>_<instr>_<det>_<filter>_<all|coarse-all>_dr[cz].fits``
with the reference's structure (spec processing.md 1.10): ``PRIMARY`` (no data), ``SCI``
(float32), ``WHT`` (float32), ``CTX`` (int32) and ``HDRTAB`` (one row per input chip).
It differs where spec section 8 asks for a fix:

- ``CTX`` holds a real context image (bit ``k % 32`` of plane ``k // 32`` = input ``k`` in
  layer order, the order of ``IN###NAM`` and of ``HDRTAB.CTXBIT``); the reference writes
  it empty;
- ``DRIZPARS`` names the trailer that exists (``<rootname>_trl.txt``), not ``_trl.log``;
- ``WCSNAME`` is the same in ``SCI``, ``WHT`` and ``CTX``;
- ``NPIXFRAC`` is relative to the product's array by default (see
  :meth:`mvmflow.tiles.TileSummary.layer_summary`);
- provenance: software versions, configuration digest, input names and checksums
  (:mod:`mvmflow.provenance`);
- the SCI header also records the frame's origin on the projection-cell plane (``PCELLID``,
  ``PCX0``, ``PCY0``), so layers can be reassembled by integer slicing;
- ``DATE-OBS``/``TIME-OBS`` are the start of the earliest input (= ``DATE-BEG``), not the
  first input's (:func:`mvmflow.headers.merge_primary`).

The keywords come from the inputs' headers, when given (the workflow passes every
member's, read by the screen job: :func:`mvmflow.headers.member_headers`; no exposure is
opened here), and from the records. Left out on purpose
(the reference has them): its rules-file bookkeeping (``RULESVER``, ``BLENDVER``,
``RULEFILE``, the rules as ``HISTORY``), the ``DATE`` the file was written, and what the
reference copies from its first input although it describes that one exposure (readout,
pattern, CR-split and calibration parameters, engineering values, reference files,
``ROOTNAME``/``EXPNAME``/``LTV``/``RA_APER``/statistics in the extensions): those are in
``HDRTAB``, one row per input chip.

Determinism: no card holds the time of the run (there is no ``DATE``; ``DATE-BEG`` and
``DATE-END`` come from the inputs' ``EXPSTART``/``EXPEND``, ``GENDATE`` from the inputs'
``DATE``), so the same arrays, records and parameters give a byte-identical file.

Every write is atomic (:func:`mvmflow.workflow.atomic_path`): an interrupted write leaves
no file, and an existing product is replaced only by a complete one.

The manifest (:func:`write_manifest`) lists names in the order given, which is the order the
products were made (the reference sorts them with ``np.unique``); see
:func:`manifest_entries`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from mvmflow.combine import CTX_BITS, LayerArrays
from mvmflow.grid import Frame
from mvmflow.headers import (
    PHOT_KEYWORDS,
    InputHeaders,
    chip_rows,
    drizzle_cards,
    exposure_values,
    hdrtab_bytes,
    headers_of_records,
    iso_time,
    merge_primary,
    sorted_proposids,
)
from mvmflow.names import LayerName, _check_prefix, parse_manifest_filename
from mvmflow.provenance import Provenance, collect
from mvmflow.solution import solution_frame
from mvmflow.workflow import atomic_path

__all__ = [
    "HAPLEVEL",
    "LayerHeaders",
    "LayerSummary",
    "align_records",
    "layer_headers",
    "manifest_entries",
    "write_layer",
    "write_manifest",
    "write_trailer",
]

HAPLEVEL = 4
"""Classification level of sky-cell layer products."""

_STAT_COMMENTS = {
    "NPIXFRAC": "fraction of the array's pixels covered by inputs",
    "MEANEXPT": "[s] mean exposure time per covered pixel",
    "MEDEXPT": "[s] median exposure time per covered pixel",
    "MEANNEXP": "mean number of input chips per covered pixel",
    "MEDNEXP": "median number of input chips per covered pixel",
    "MEANWHT": "mean WHT over pixels with WHT > 0",
    "MEDWHT": "median WHT over pixels with WHT > 0",
}


def _layer_name(layer: LayerName | str) -> LayerName:
    return layer if isinstance(layer, LayerName) else LayerName.parse(layer)


def align_records(files: Sequence[str], records: Iterable) -> list:
    """Return the records of ``files`` in the same order.

    A record matches a file by its ``file`` path, or by base name (``file`` or
    ``filename``) when the paths differ.

    Raises
    ------
    ValueError
        Naming the files without a record.
    """
    records = list(records)
    by_path = {str(r.file): r for r in records}
    by_name: dict[str, object] = {}
    for r in records:
        for name in (os.path.basename(str(r.file)), r.filename):
            if name:
                by_name.setdefault(name, r)
    out, missing = [], []
    for f in files:
        r = by_path.get(str(f)) or by_name.get(os.path.basename(str(f)))
        if r is None:
            missing.append(str(f))
        out.append(r)
    if missing:
        raise ValueError(f"no exposure record for input(s) {missing}")
    return out


def _frame_cards(frame: Frame, wcsname: str | None) -> list:
    """The frame's TAN WCS as in the reference's extensions (plus ``WCSNAME``)."""
    out = [("WCSAXES", 2, "number of World Coordinate System axes")]
    for c in frame.header().cards:
        if c.keyword in ("NAXIS1", "NAXIS2"):
            continue
        out.append((c.keyword, c.value, c.comment))
        if c.keyword == "CD2_2":
            out += [("CUNIT1", "deg", "units of CRVAL1 and CD1_*"),
                    ("CUNIT2", "deg", "units of CRVAL2 and CD2_*")]
    out.append(("VAFACTOR", 1.0, "velocity aberration plate scale factor"))
    if wcsname:
        out.append(("WCSNAME", wcsname, "coordinate system title"))
    return out


_INHERIT = ("INHERIT", True, "inherit the primary header")


def _alignment_cards(exp_values: Sequence[Mapping]) -> list[tuple]:
    """Summary of the inputs' alignment (per-input figures are in HDRTAB)."""
    fits_ = [v for v in exp_values if "ALIGNST" in v]
    if not fits_:
        return []
    aligned = [v for v in fits_ if v["ALIGNST"] not in ("unaligned", "inherited")]
    inherited = [v for v in fits_ if v["ALIGNST"] == "inherited"]

    def worst(key):
        vals = [float(v[key]) for v in aligned if np.isfinite(float(v.get(key, np.nan)))]
        return round(max(vals), 3) if vals else "N/A"

    refcats = sorted({str(v.get("REFCAT", "NONE")) for v in aligned})
    # every input, aligned or not (mvmflow.solution.solution_frame)
    frames = sorted({solution_frame({"ALIGNST": v.get("ALIGNST", "unaligned"),
                                     "REFCAT": v.get("REFCAT", "NONE")}) for v in exp_values})
    return [
        ("NALIGNED", len(aligned), "inputs with an alignment fit"),
        ("NUNALIGN", len(fits_) - len(aligned) - len(inherited),
         "inputs left on their header WCS"),
        ("NINHERIT", len(inherited), "inputs given their visit's solution, unverified"),
        ("ALNREFC", ",".join(refcats) or "NONE", "reference catalogue(s) of the alignment"),
        ("ALNRMSRA", worst("RMS_RA"), "[mas] largest input fit RMS in RA"),
        ("ALNRMSDE", worst("RMS_DEC"), "[mas] largest input fit RMS in Dec"),
        ("ALNMINMT", min((int(v.get("NMATCHES", 0)) for v in aligned), default=0),
         "fewest matches of an aligned input"),
        ("ALNFRAME", ",".join(frames), "astrometric frame(s) of the inputs' WCSs"),
        ("ALNMIXED", len(frames) > 1, "inputs in different astrometric frames"),
    ]


def _card(key: str, value, comment: str) -> fits.Card:
    """A card whose comment is cut to fit 80 characters (silently, unlike astropy)."""
    if comment and not (isinstance(value, str) and len(value) > 68):
        # the comment starts where a one-letter one does (strings with a comment are padded
        # to 20 columns); a probe that does not fit leaves no room at all
        with warnings.catch_warnings(record=True) as cut:
            warnings.simplefilter("always", VerifyWarning)
            probe = len(fits.Card(key, value, "x").image.rstrip())
        comment = "" if cut else comment[:80 - (probe - 1)].rstrip()
    return fits.Card(key, value, comment)


def _header(cards: Iterable[tuple[str, object, str]]) -> fits.Header:
    hdr = fits.Header()
    for key, value, comment in cards:
        hdr.append(_card(key, value, comment), end=True)
    return hdr


def _first(values: Sequence[Mapping], key: str):
    for v in values:
        if v.get(key) not in (None, ""):
            return v[key]
    return None


@dataclass(frozen=True)
class LayerSummary:
    """What a layer's headers need from its arrays (so tiled products need no whole array).

    Attributes
    ----------
    files, exptimes, sky, used : tuple
        As :class:`mvmflow.combine.LayerArrays`.
    stats : dict
        The footprint keywords (``NPIXFRAC``, ``MEANEXPT``, ``MEDEXPT``, ``MEANNEXP``,
        ``MEDNEXP``, ``MEANWHT``, ``MEDWHT``; spec processing.md 1.5) from
        :meth:`mvmflow.tiles.TileSummary.layer_summary`.
    region : str
        The ``S_REGION`` value.
    nplanes : int
        Context planes.
    """

    files: tuple
    exptimes: tuple
    sky: tuple
    used: tuple
    stats: dict
    region: str
    nplanes: int


@dataclass
class LayerHeaders:
    """The headers of a layer product: primary, SCI, WHT, CTX cards and the HDRTAB
    extension as written (:func:`mvmflow.headers.hdrtab_bytes`)."""

    primary: fits.Header
    sci: fits.Header
    wht: fits.Header
    ctx: fits.Header
    hdrtab: bytes


def layer_headers(
    summary: LayerSummary,
    frame: Frame,
    layer_name: LayerName | str,
    records: Iterable,
    params: Mapping,
    provenance: Provenance | None = None,
    *,
    input_headers: Mapping[str, InputHeaders] | None = None,
) -> LayerHeaders:
    """The headers of a layer product (see :func:`write_layer`), without its pixels."""
    layer = _layer_name(layer_name)
    files = list(summary.files)
    recs = align_records(files, records)
    headers = headers_of_records(files, recs, input_headers)
    if provenance is None:
        provenance = collect(params, recs)
    version = provenance.version_of("mvmflow")

    exp_values = [exposure_values(r, headers.get(f)) for f, r in zip(files, recs, strict=True)]
    ptypes = [r.ptype or {"drz": "flt", "drc": "flc"}.get(layer.product_type, "flt") for r in recs]
    hapexpnames = [
        layer.layer.exposure(r.ipppssoo, pt).rootname if r.ipppssoo else ""
        for r, pt in zip(recs, ptypes, strict=True)
    ]
    rows = chip_rows(files, recs, headers, hapexpnames, summary.sky)
    stats = summary.stats
    merged = merge_primary(exp_values)
    phot = [(k, v, c) for k, v, c in merged if k in PHOT_KEYWORDS]
    proposids = [r.values["PROPOSID"] for r in rows if r.values.get("PROPOSID") not in (None, "")]
    wcsname = _first(exp_values, "WCSNAME")
    n_contrib = int(sum(summary.used))

    # ---- primary
    cards = [
        ("NEXTEND", 4, "number of standard extensions"),
        ("FILENAME", layer.filename, "name of file"),
        ("ROOTNAME", layer.rootname, "rootname of the product"),
        ("PROD_VER", f"mvmflow {version}", "software that made this product"),
        ("ASN_MTYP", "PROD-DTH", "role of the member in the association"),
        ("HAPLEVEL", HAPLEVEL, "classification level of this product"),
    ]
    if layer.skycell is not None:
        cards.append(("SCELLID", layer.skycell[len("skycell-"):], "sky cell identifier"))
    for key, value, comment in merged:
        if key in PHOT_KEYWORDS:
            continue
        if key == "PROPOSID" and proposids:
            value = sorted_proposids(proposids)
            comment = "PEP proposal identifiers of the inputs"
        cards.append((key, value, comment))
    piname = _first(exp_values, "PR_INV_L")
    if piname:
        cards.append(("PINAME", piname, "last name of first input's PI"))
    starts = [v["EXPSTART"] for v in exp_values if isinstance(v.get("EXPSTART"), float | int)]
    ends = [v["EXPEND"] for v in exp_values if isinstance(v.get("EXPEND"), float | int)]
    cards += [
        ("EQUINOX", 2000.0, "equinox of celestial coord. system"),
        ("NUMEXP", len(files), "number of input exposures"),
        ("NDRIZIM", len(rows), "number of input chips drizzled"),
    ]
    if starts:
        cards.append(("DATE-BEG", iso_time(min(starts)), "start of the first exposure (UTC)"))
    if ends:
        cards.append(("DATE-END", iso_time(max(ends)), "end of the last exposure (UTC)"))
    cards += [(k, stats[k], _STAT_COMMENTS[k]) for k in _STAT_COMMENTS]
    cards += [
        ("SKYMETH", "match" if params.get("skysub") else "none", "sky: relative offsets"),
        ("SKYSTAT", str(params.get("skystat", "median")), "sky statistic"),
        ("DRIZPARS", layer.trailer, "trailer file with the processing log"),
    ]
    cards += _alignment_cards(exp_values)
    cards += drizzle_cards(rows, layer.filename, params, f"mvmflow {version}",
                           scale=frame.scale)
    cards += provenance.cards()

    # ---- SCI, WHT, CTX
    units = str(params.get("units", "cps"))
    pa_aper = ("PA_APER", 0.0, "set to zero for a multi-visit product")
    ccdchip = ("CCDCHIP", "-999", "CCD chip (not applicable)")
    sci_cards = [_INHERIT,
                 ("BUNIT", "ELECTRONS/S" if units == "cps" else "ELECTRONS", "units of data")]
    sci_cards += _frame_cards(frame, wcsname)
    sci_cards += [
        pa_aper,
        ("PCELLID", frame.projection_cell, "projection cell of the frame"),
        ("PCX0", frame.x0, "x of pixel (0,0) on the projection-cell plane"),
        ("PCY0", frame.y0, "y of pixel (0,0) on the projection-cell plane"),
    ]
    sci_cards += phot
    sci_cards += [ccdchip, ("NCOMBINE", n_contrib, "number of exposures combined")]
    if summary.region:
        sci_cards.append(("S_REGION", summary.region, "spatial extent of the data"))
    wht_cards = [_INHERIT, ("BUNIT", "UNITLESS", "sum of input weights (EXP)")]
    wht_cards += _frame_cards(frame, wcsname) + [pa_aper, ccdchip]
    ctx_cards = [_INHERIT, ("BUNIT", "UNITLESS", "context: bit k = k-th input")]
    ctx_cards += _frame_cards(frame, wcsname) + [
        pa_aper,
        ("CTXNEXP", len(files), "inputs encoded: bit k%32 of plane k//32"),
        ("CTXNPLN", summary.nplanes, f"int32 planes of {CTX_BITS} inputs each"),
    ]
    return LayerHeaders(_header(cards), _header(sci_cards), _header(wht_cards),
                        _header(ctx_cards), hdrtab_bytes(rows))


def write_layer(
    path: str | os.PathLike,
    arrays: LayerArrays,
    frame: Frame,
    layer_name: LayerName | str,
    records: Iterable,
    params: Mapping,
    provenance: Provenance | None = None,
    *,
    input_headers: Mapping[str, InputHeaders] | None = None,
    npix_total: int | None = None,
) -> Path:
    """Write a layer product atomically.

    Parameters
    ----------
    path : path-like
        Output path; its file name must be ``layer_name``'s file name.
    arrays : LayerArrays
        From :func:`mvmflow.combine.combine_partials`.
    frame : Frame
        The layer frame (must be ``arrays.frame``).
    layer_name : LayerName or str
        The product's name (:class:`mvmflow.names.LayerName`).
    records : iterable of ExposureRecord
        The inputs' records (any order; matched to ``arrays.files``).
    params : mapping
        Resolved layer parameters (:func:`mvmflow.params.layer_parameters`): drizzle
        keywords and the configuration digest.
    provenance : Provenance, optional
        Default: :func:`mvmflow.provenance.collect` of ``params`` and the records.
    input_headers : mapping of str to InputHeaders, optional
        Input headers by file (as in ``arrays.files``, or the record's file name), for the
        merged primary keywords and HDRTAB (:func:`mvmflow.headers.headers_of_records`);
        for an input without them only its record's fields are used.
    npix_total : int, optional
        Denominator of ``NPIXFRAC`` (default: the array's pixel count).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the path's name is not the layer's name, the frames differ or an input has no
        record.
    """
    path = Path(path)
    layer = _layer_name(layer_name)
    if path.name != layer.filename:
        raise ValueError(f"product path {path.name!r} is not the layer name {layer.filename!r}")
    if arrays.frame != frame:
        raise ValueError(f"the arrays are on {arrays.frame}, not on the layer frame {frame}")
    # the one-tile case of the tiled writer: every product is written by the same code
    from mvmflow.tiles import ArraysTile, write_tiled_layer

    tile = ArraysTile(arrays)
    return write_tiled_layer(path, frame, [(tile.box, tile)], layer, records, params,
                             arrays.exptimes, arrays.sky, arrays.files, provenance,
                             input_headers=input_headers, npix_total=npix_total)


def write_trailer(path: str | os.PathLike, layer: LayerName | str,
                  lines: Iterable[str]) -> Path:
    """Write a layer's trailer ``<rootname>_trl.txt`` atomically.

    Parameters
    ----------
    path : path-like
        Output path; its name must be ``layer``'s trailer name.
    layer : LayerName or str
        The layer product (name or :class:`~mvmflow.names.LayerName`).
    lines : iterable of str
        Log lines, written one per line after a title line.
    """
    path = Path(path)
    layer = _layer_name(layer)
    if path.name != layer.trailer:
        raise ValueError(f"trailer path {path.name!r} is not {layer.trailer!r}")
    text = f"# mvmflow trailer of {layer.filename}\n"
    text += "".join(f"{line.rstrip(chr(10))}\n" for line in lines)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def manifest_entries(layers: Iterable[LayerName | str]) -> list[str]:
    """Manifest lines for layers in the order they were made: each product, then its trailer."""
    out = []
    for layer in layers:
        layer = _layer_name(layer)
        out += [layer.filename, layer.trailer]
    return out


def write_manifest(path: str | os.PathLike, filenames: Iterable[str | os.PathLike]) -> Path:
    """Write a manifest ``<skycell>_manifest.txt`` (or a mosaic's ``<prefix>_manifest.txt``).

    One file name (base name) per line, **in the order given** (the order the products
    were made), duplicates dropped after their first occurrence; the reference sorts the
    names with ``np.unique`` instead. An empty list writes an empty file.

    Raises
    ------
    ValueError
        If the path's name is not a manifest name.
    """
    path = Path(path)
    if not path.name.endswith("_manifest.txt"):
        parse_manifest_filename(path.name)  # raises, naming the expected form
    try:
        parse_manifest_filename(path.name)
    except ValueError:
        _check_prefix(path.name[: -len("_manifest.txt")])  # a custom mosaic's prefix
    names = list(dict.fromkeys(os.path.basename(os.fspath(f)) for f in filenames))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names))
    return path
