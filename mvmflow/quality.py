"""Quality files of a layer: ``<rootname>_mvm_wcsname.json`` and
``<rootname>_mvm_overlap_crossmatch.json`` (``quality_testing`` on).

Both are in the reference's ``HapDiagnostic`` layout (spec processing.md section 6;
:func:`diagnostic`): ``header`` (the layer's primary header, without blank, ``HISTORY`` and
``COMMENT`` cards), ``general information`` (telescope, proposal_id, instrument, detector,
visit, filter, dataset, dataframe_index, imgname, generation date and time, seconds since
epoch, commit id, data_source, description) and ``data``: per item ``original format``,
``data``, ``descriptions`` and ``units``. Where the reference fills ``general information``
with values that mean nothing for a multi-visit layer (``visit="wfc3"``, ``dataset="all"``)
this module writes the layer's visits and its root name. The generation date and time are
those of the newest input exposure's end (``DATE-END``), and ``seconds since epoch`` that
instant: the files hold no time of the run, so a rerun writes identical bytes
(docs/conventions.md).

**WCS names** (:func:`wcsname_report`, fine layers, as the reference). Under
``data[<sky cell id>]["data"]``: per input exposure ``filename``, ``wcsname`` (the part after
the first ``-``; the whole name when it has no ``-``, where the reference fails with an
IndexError), ``shape`` (the layer's), ``wcs_value`` (:func:`wcs_value`: a 2^n code of the
kind and catalogue of the name, defined for every name, where the reference's fixed list
fails with a KeyError on ``FIT_MVM_*``), ``img_value`` (2^k, k the input's position),
``RA``/``Dec`` (closed chip outlines) and ``X``/``Y`` (those corners in layer pixels,
truncated to int), and beyond the reference: ``ipppssoo``, ``visit``, ``status``,
``frame``, ``nmatches``, ``rms_ra``, ``rms_dec``. The item ``astrometric frames`` says the
layer's frame(s) (:func:`mvmflow.solution.layer_frames`), whether they are mixed, the
``align.mixed_frames`` setting, the inputs left out of the layer for it (from the plan) and
the layer header's record (``ALNFRAME``, ``ALNMIXED``, ``NALIGNED``, ``NUNALIGN``,
``NINHERIT``).

**Overlap cross-match** (:func:`crossmatch_report`). The reference cross-matches the SVM
catalogues of different visits in one sky cell (files this workflow does not make, so its
test was skipped). Here a fine layer's own catalogue (:mod:`mvmflow.layercat`) is matched
with the catalogues of the layers of the same instrument, detector and filter in the
neighbouring sky cells whose frames overlap it (:func:`mvmflow.runplan.neighbour_layers`): the same stars,
drizzled again on another sky cell's frame (a different tangent plane when the projection
cells differ), must agree. Per neighbour, item ``overlap region <n>``: the overlap's size
(layer pixels with weight in both, sampled), catalogue names and sizes, the sources usable
in the overlap (flags without ``edge`` or ``masked_core``), the number matched (mutual
nearest within :data:`MATCH_TOLERANCE` arcsec), the reference's four statistics blocks
(X, Y, X-Y separation in layer pixels, RA-Dec separation in arcsec) and the same for
the magnitude difference, and a data table. Item ``summary``: per neighbour the median and
clipped scatter of the position (mas) and magnitude differences. A layer without such a
neighbour says so (``summary`` with no regions and a note): nothing is skipped silently; its
visits are listed either way.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from mvmflow.solution import FRAME_HEADER, layer_frames
from mvmflow.workflow import atomic_path

__all__ = [
    "CROSSMATCH_SUFFIX",
    "MATCH_TOLERANCE",
    "WCSNAME_SUFFIX",
    "compute_stats",
    "crossmatch_report",
    "diagnostic",
    "match_catalogs",
    "visit_report",
    "wcs_value",
    "wcsname_report",
    "write_diagnostic",
]

WCSNAME_SUFFIX = "_mvm_wcsname.json"
CROSSMATCH_SUFFIX = "_mvm_overlap_crossmatch.json"
MATCH_TOLERANCE = 0.1
"""Largest separation (arcsec) of a cross-match pair."""

_KINDS = ("FIT_MVM", "FIT_SVM", "FIT_REL", "FIT_IMG", "FIT_EVM", "VISIT", "HEADER")
_CATALOGS = ("GAIADR3", "GAIAEDR3", "GAIADR2", "GAIADR1", "GSC242", "2MASS", "HSC30",
             "GSC240", "REFCAT", "NONE")
_OTHER = len(_CATALOGS)


def wcs_value(suffix: str) -> int:
    """The 2^n code of a WCS name's suffix (the part after the first ``-``).

    ``n = kind * 11 + catalogue`` with kinds ``FIT_MVM, FIT_SVM, FIT_REL, FIT_IMG, FIT_EVM,
    VISIT, HEADER`` (a name without a recognised kind, e.g. a bare ``IDC_...``, is
    ``HEADER``) and catalogues ``GAIADR3, GAIAEDR3, GAIADR2, GAIADR1, GSC242, 2MASS, HSC30,
    GSC240, REFCAT, NONE`` then any other: smaller is better, as in the reference's list,
    and every name has one.
    """
    text = str(suffix).upper()
    kind = len(_KINDS) - 1
    rest = ""
    for i, k in enumerate(_KINDS[:-1]):
        if text.startswith(k):
            kind, rest = i, text[len(k):].lstrip("_")
            break
    cat = _CATALOGS.index(rest) if rest in _CATALOGS else (_OTHER if rest else _CATALOGS.index(
        "NONE"))
    return 2 ** (kind * (len(_CATALOGS) + 1) + cat)


def _suffix(wcsname: str) -> str:
    name = str(wcsname or "")
    return name.split("-", 1)[1] if "-" in name else name


# ---- the HapDiagnostic layout


def _json_value(value):
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _header_dict(header: fits.Header) -> dict:
    out = {}
    for card in header.cards:
        if card.keyword in ("", "HISTORY", "COMMENT") or card.keyword in out:
            continue
        out[card.keyword] = _json_value(card.value)
    return out


def diagnostic(header: fits.Header, *, data_source: str, description: str,
               visits: Sequence[str] = ()) -> dict:
    """A new diagnostic (``header``, ``general information``, empty ``data``).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The layer's primary header.
    data_source, description : str
        What made the data, and what it is.
    visits : sequence of str
        The layer's visits (``ipppss``), for ``visit``.
    """
    filename = str(header.get("FILENAME", ""))
    end = str(header.get("DATE-END", "") or "")
    try:
        when = datetime.fromisoformat(end).replace(tzinfo=UTC)
    except ValueError:
        when = None
    filt = str(header.get("FILTER", "") or "")
    if not filt:
        filt = ";".join(str(header.get(k, "")).strip() for k in ("FILTER1", "FILTER2")
                        if str(header.get(k, "")).strip() and
                        not str(header.get(k, "")).upper().startswith("CLEAR"))
    from mvmflow.provenance import software_versions

    general = {
        "telescope": str(header.get("TELESCOP", "HST")),
        "proposal_id": _json_value(header.get("PROPOSID", "")),
        "instrument": str(header.get("INSTRUME", "")),
        "detector": str(header.get("DETECTOR", "")),
        "visit": ",".join(sorted(set(visits))),
        "filter": filt.lower(),
        "dataset": str(header.get("ROOTNAME", "")),
        "dataframe_index": filename[:-9] if filename.endswith(".fits") else filename,
        "imgname": filename,
        "generation date": when.strftime("%m/%d/%Y") if when else None,
        "generation time": when.strftime("%H:%M:%S") if when else None,
        "seconds since epoch": round(when.timestamp(), 3) if when else None,
        "commit id": f"mvmflow {software_versions().get('mvmflow', '')}",
        "data_source": data_source,
        "description": description,
    }
    return {"header": _header_dict(header), "general information": general, "data": {}}


def add_item(diag: dict, title: str, data, descriptions: Mapping | None = None,
             units: Mapping | None = None) -> None:
    """Add ``data`` under ``diag["data"][title]`` (a Table becomes the reference's
    column dict: ``dtype``, ``unit``, ``format``, ``data`` per column)."""
    if isinstance(data, Table):
        fmt = "<class 'astropy.table.table.Table'>"
        value = {c: {"dtype": str(data[c].dtype), "unit": str(data[c].unit),
                     "format": data[c].format, "data": _json_value(np.asarray(data[c]))}
                 for c in data.colnames}
    else:
        fmt = str(type(data))
        value = _json_value(data)
    diag["data"][title] = {"original format": fmt, "data": value,
                           "descriptions": _json_value(dict(descriptions or {})),
                           "units": _json_value(dict(units or {}))}


def write_diagnostic(diag: dict, path: str | os.PathLike) -> Path:
    """Write a diagnostic as JSON atomically (indented, key order kept, NaN as null)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_value(diag), indent=4, allow_nan=False) + "\n")
    return path


# ---- WCS names and astrometric frames


def _layer_wcs(path) -> tuple[fits.Header, WCS, tuple[int, int]]:
    with fits.open(path, memmap=True) as hdul:
        prim = hdul[0].header.copy()
        sh = hdul["SCI"].header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(sh)
        shape = (int(sh["NAXIS2"]), int(sh["NAXIS1"]))
    return prim, wcs, shape


def wcsname_report(layer_path: str | os.PathLike, records: Sequence, *,
                   mixed_frames: str = "drop_unaligned",
                   dropped: Iterable[Mapping] = ()) -> dict:
    """The WCS-name diagnostic of a layer.

    Parameters
    ----------
    layer_path : path-like
        The layer product.
    records : sequence of ExposureRecord
        Its drizzled inputs' records in drizzle order, aligned where aligned
        (:func:`mvmflow.aligned.load_record`: chip outlines through the aligned WCS, the
        solution keywords in ``alignment``).
    mixed_frames : str
        The ``align.mixed_frames`` setting the plan applied.
    dropped : iterable of mapping
        The plan's left-out inputs of this layer (``filename`` or ``file``, ``reason``:
        :meth:`mvmflow.plan.Dropped.to_dict`).

    Returns
    -------
    dict
        The diagnostic (:func:`write_diagnostic` writes it).
    """
    prim, wcs, shape = _layer_wcs(layer_path)
    visits = [r.ipppssoo[:6] for r in records if r.ipppssoo]
    diag = diagnostic(prim, data_source="mvmflow.quality.wcsname_report",
                      description="WCS names and astrometric frames of the layer's inputs",
                      visits=visits)
    frames = layer_frames(records)
    cols = {k: [] for k in ("filename", "ipppssoo", "visit", "wcsname", "status", "frame",
                            "nmatches", "rms_ra", "rms_dec", "shape", "wcs_value", "img_value",
                            "RA", "Dec", "X", "Y")}
    for k, r in enumerate(records):
        name = r.filename or Path(r.file).name
        al = r.alignment or {}
        wname = al.get("WCSNAME") or r.wcsname
        cols["filename"].append(name)
        cols["ipppssoo"].append(r.ipppssoo)
        cols["visit"].append(r.ipppssoo[:6])
        cols["wcsname"].append(_suffix(wname))
        cols["status"].append(al.get("ALIGNST", "none"))
        cols["frame"].append(frames[name])
        cols["nmatches"].append(int(al.get("NMATCHES", 0) or 0))
        cols["rms_ra"].append(al.get("RMS_RA"))
        cols["rms_dec"].append(al.get("RMS_DEC"))
        cols["shape"].append(list(shape))
        cols["wcs_value"].append(wcs_value(_suffix(wname)))
        cols["img_value"].append(2 ** k)
        ras, decs, xs, ys = [], [], [], []
        for chip in r.chips:
            poly = np.asarray(chip.footprint, dtype=np.float64)
            if poly.size == 0:
                continue
            poly = np.vstack([poly, poly[:1]])
            x, y = wcs.world_to_pixel_values(poly[:, 0], poly[:, 1])
            ras.append(poly[:, 0].tolist())
            decs.append(poly[:, 1].tolist())
            xs.append([int(v) for v in x])
            ys.append([int(v) for v in y])
        cols["RA"].append(ras)
        cols["Dec"].append(decs)
        cols["X"].append(xs)
        cols["Y"].append(ys)
    descriptions = {
        "filename": "input exposure", "ipppssoo": "exposure name", "visit": "visit (ipppss)",
        "wcsname": "WCSNAME after its first '-' (the whole name without one)",
        "status": "alignment status (mvmflow.solution)",
        "frame": "astrometric frame of the input's WCS", "nmatches": "own catalogue matches",
        "rms_ra": "fit RMS along RA", "rms_dec": "fit RMS along Dec",
        "shape": "layer array shape (ny, nx)",
        "wcs_value": "2^n code of the WCS name's kind and catalogue (smaller is better)",
        "img_value": "2^k, k the input's position in the layer",
        "RA": "chip outlines, closed", "Dec": "chip outlines, closed",
        "X": "outline corners in layer pixels (0-based, truncated)",
        "Y": "outline corners in layer pixels (0-based, truncated)",
    }
    units = {k: "unitless" for k in cols}
    units.update({"rms_ra": "mas", "rms_dec": "mas", "RA": "deg", "Dec": "deg", "X": "pixels",
                  "Y": "pixels", "shape": "pixels"})
    cell = str(prim.get("SCELLID", "") or prim.get("ROOTNAME", ""))
    add_item(diag, cell, cols, descriptions, units)

    distinct = sorted(set(frames.values()))
    layer_cards = {k: _json_value(prim.get(k)) for k in
                   ("ALNFRAME", "ALNMIXED", "NALIGNED", "NUNALIGN", "NINHERIT") if k in prim}
    dropped = [{"file": str(d.get("filename") or d.get("file", "")),
                "reason": str(d.get("reason", ""))} for d in dropped]
    frame_data = {
        "frames": frames,
        "distinct frames": distinct,
        "mixed": len(distinct) > 1,
        "one frame": len(distinct) == 1,
        "header-WCS inputs": [m for m, f in frames.items() if f == FRAME_HEADER],
        "mixed_frames setting": mixed_frames,
        "inputs left out": dropped,
        "layer header": layer_cards,
    }
    add_item(diag, "astrometric frames", frame_data, {
        "frames": "astrometric frame of each input (catalogue, RELATIVE or HEADER)",
        "distinct frames": "the frames present", "mixed": "more than one frame",
        "one frame": "every input in one frame",
        "header-WCS inputs": "inputs on their header WCS",
        "mixed_frames setting": "align.mixed_frames",
        "inputs left out": "inputs the plan left out of this layer, with the reason",
        "layer header": "the layer header's alignment record",
    }, {k: "unitless" for k in frame_data})
    return diag


# ---- neighbours and the cross-match


def compute_stats(values) -> dict:
    """The reference's statistics of a set of differences (unclipped and 3-sigma,
    3-iteration clipped; percentages within 1, 2, 3 clipped SD of the clipped mean)."""
    from astropy.stats import sigma_clipped_stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"Number of values": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmean, cmed, csd = sigma_clipped_stats(v, sigma=3, maxiters=3)
    sd = float(np.std(v))
    out = {"Number of values": int(v.size), "Non-clipped minimum": float(v.min()),
           "Non-clipped maximum": float(v.max()), "Non-clipped mean": float(v.mean()),
           "Non-clipped median": float(np.median(v)), "Non-clipped standard deviation": sd,
           "Non-clipped mean/SD": float(v.mean() / sd) if sd > 0 else None,
           "3x3 sigma-clipped mean": float(cmean), "3x3 sigma-clipped median": float(cmed),
           "3x3 sigma-clipped standard deviation": float(csd)}
    for n in (1, 2, 3):
        within = np.abs(v - cmean) <= n * csd if csd > 0 else v == cmean
        out[f"Percent of values within {n} sigma of the clipped mean"] = float(
            100.0 * within.mean())
    return out


def match_catalogs(ref: Table, comp: Table, tolerance: float = MATCH_TOLERANCE):
    """Mutual nearest neighbours of two catalogues (``ra``, ``dec``) within ``tolerance``
    arcsec: index arrays into ``ref`` and ``comp`` (:func:`mvmflow.visitmatch.mutual_nearest`
    on a plane at the median of ``ref``)."""
    from mvmflow.visitmatch import mutual_nearest, sky_plane

    if len(ref) == 0 or len(comp) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    ra0, dec0 = float(np.median(ref["ra"])), float(np.median(ref["dec"]))
    return mutual_nearest(sky_plane(ref["ra"], ref["dec"], ra0, dec0),
                          sky_plane(comp["ra"], comp["dec"], ra0, dec0), tolerance)


_BAD_FLAGS = 1 | 4  # edge, masked core (mvmflow.layercat)


def _weight_at(path, ra, dec) -> np.ndarray:
    """The WHT of layer ``path`` at sky positions (0 off the array)."""
    with fits.open(path, memmap=True) as hdul:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdul["SCI"].header)
        wht = hdul["WHT"].data
        x, y = wcs.world_to_pixel_values(np.asarray(ra), np.asarray(dec))
        ix = np.floor(np.asarray(x) + 0.5).astype(int)
        iy = np.floor(np.asarray(y) + 0.5).astype(int)
        inside = (ix >= 0) & (iy >= 0) & (ix < wht.shape[1]) & (iy < wht.shape[0])
        out = np.zeros(ix.size, dtype=np.float64)
        if inside.any():
            out[inside] = np.asarray(wht[iy[inside], ix[inside]], dtype=np.float64)
    return out


def _overlap_size(path, other_path, step_max: int = 512) -> int:
    """Pixels of layer ``path`` with weight there and in ``other_path`` (sampled on a grid of
    at most ``step_max`` points a side, scaled to the full count)."""
    with fits.open(path, memmap=True) as hdul:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdul["SCI"].header)
        ny, nx = hdul["WHT"].shape
        step = max(1, int(math.ceil(max(nx, ny) / step_max)))
        ys = np.arange(0, ny, step)
        xs = np.arange(0, nx, step)
        wht = np.asarray(hdul["WHT"].data[::step, ::step], dtype=np.float64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    own = wht > 0
    if not own.any():
        return 0
    ra, dec = wcs.pixel_to_world_values(xx[own], yy[own])
    both = _weight_at(other_path, ra, dec) > 0
    return int(both.sum()) * step * step


def crossmatch_report(layer_path: str | os.PathLike, catalog_path: str | os.PathLike,
                      neighbours: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
                      visits: Sequence[str] = (), tolerance: float = MATCH_TOLERANCE, *,
                      members: Sequence[tuple] = (),
                      refcat: str | os.PathLike | Table | None = None) -> dict:
    """The overlap cross-match diagnostic of a layer.

    Parameters
    ----------
    layer_path, catalog_path : path-like
        The layer product and its catalogue (:mod:`mvmflow.layercat`).
    neighbours : sequence of (layer path, catalogue path)
        The overlapping layers of the same key in other sky cells (:func:`mvmflow.runplan.neighbour_layers`).
    visits : sequence of str
        The layer's visits (reported).
    tolerance : float
        Match radius (arcsec).
    members : sequence of (key, exposure path, catalogue path, solution or None)
        The layer's inputs, for the visit-against-visit cross-match (:func:`visit_report`).
    refcat : path or Table, optional
        The alignment's reference catalogue: its proper motions carry stars between the
        visits' epochs.
    """
    from mvmflow.layercat import read_layer_catalog

    prim, wcs, _ = _layer_wcs(layer_path)
    diag = diagnostic(prim, data_source="mvmflow.quality.crossmatch_report",
                      description="point sources of the layer matched with the overlapping "
                                  "layers of the same detector and filter in neighbouring sky "
                                  "cells", visits=visits)
    ref = read_layer_catalog(catalog_path)
    scale = float(abs(wcs.wcs.cd[1, 1]) * 3600.0) if wcs.wcs.has_cd() else 0.04
    summary = []
    for n, (other_layer, other_cat) in enumerate(neighbours, 1):
        comp = read_layer_catalog(other_cat)
        size = _overlap_size(layer_path, other_layer)
        r = ref[(np.asarray(ref["flags"]) & _BAD_FLAGS) == 0] if len(ref) else ref
        c = comp[(np.asarray(comp["flags"]) & _BAD_FLAGS) == 0] if len(comp) else comp
        if len(r):
            r = r[_weight_at(other_layer, r["ra"], r["dec"]) > 0]
        if len(c):
            c = c[_weight_at(layer_path, c["ra"], c["dec"]) > 0]
        ir, ic = match_catalogs(r, c, tolerance)
        rm, cm = r[ir], c[ic]
        cx, cy = (wcs.world_to_pixel_values(np.asarray(cm["ra"]), np.asarray(cm["dec"]))
                  if len(cm) else (np.zeros(0), np.zeros(0)))
        dx = np.asarray(cx) - np.asarray(rm["x"])
        dy = np.asarray(cy) - np.asarray(rm["y"])
        dxy = np.hypot(dx, dy)
        cosd = np.cos(np.radians(np.asarray(rm["dec"], dtype=np.float64)))
        dra = (np.asarray(cm["ra"]) - np.asarray(rm["ra"])) * cosd * 3.6e6
        ddec = (np.asarray(cm["dec"]) - np.asarray(rm["dec"])) * 3.6e6
        drd = np.hypot(dra, ddec) / 1000.0
        dmag = np.asarray(cm["mag_st"]) - np.asarray(rm["mag_st"])
        titles = ("X-axis differences", "Y-axis differences", "On-sky separation (X-Y)",
                  "On-sky separation (RA-Dec)", "Magnitude differences")
        units = ("HAP pixels", "HAP pixels", "HAP pixels", "Arcseconds", "mag")
        stats = {}
        for title, unit, diff in zip(titles, units, (dx, dy, dxy, drd, dmag), strict=True):
            stats[title] = {**compute_stats(diff), "Units": unit}
        table = Table()
        table["X"] = np.asarray(rm["x"], dtype=np.float64)
        table["Y"] = np.asarray(rm["y"], dtype=np.float64)
        table["RA"] = np.asarray(rm["ra"], dtype=np.float64)
        table["DEC"] = np.asarray(rm["dec"], dtype=np.float64)
        for title, diff in zip(titles, (dx, dy, dxy, drd, dmag), strict=True):
            table[title] = np.asarray(diff, dtype=np.float64)
        region = {
            "overlap region size": size,
            "reference catalog name": Path(catalog_path).name,
            "comparison catalog name": Path(other_cat).name,
            "comparison layer": Path(other_layer).name,
            "total reference catalog size": len(ref),
            "total comparison catalog size": len(comp),
            "reference sources in the overlap": len(r),
            "comparison sources in the overlap": len(c),
            "number matched": int(len(ir)),
            "statistics": stats,
            "data table": {col: _json_value(np.asarray(table[col])) for col in table.colnames},
        }
        add_item(diag, f"overlap region {n}", region, {
            "overlap region size": "layer pixels with weight in both layers",
            "reference catalog name": "this layer's catalogue",
            "comparison catalog name": "the neighbouring layer's catalogue",
            "number matched": f"mutual nearest neighbours within {tolerance} arcsec",
            "statistics": "comparison - reference, per difference type",
            "data table": "matched reference positions and the differences",
        }, {"overlap region size": "pixels", "statistics": "per block (Units)",
            "data table": "pixels, deg, arcsec, mag"})
        summary.append(_summary_row(Path(other_layer).name, len(ir), dra, ddec, dmag, scale))
    note = ("" if neighbours else "no layer of the same instrument, detector and filter in a "
            "neighbouring sky cell overlaps this one: nothing to cross-match")
    pairs, visit_note = visit_report(diag, layer_path, members, refcat, tolerance, wcs=wcs)
    add_item(diag, "summary", {"visits": sorted(set(visits)), "regions": summary,
                               "note": note, "visit pairs": pairs, "visit note": visit_note},
             {"visits": "the layer's visits (ipppss)",
              "regions": "per overlapping layer: matches, median and clipped scatter of the "
                         "differences (comparison - reference)",
              "note": "why there is no region, when there is none",
              "visit pairs": "per pair of the layer's visits: stars matched, median and "
                             "clipped scatter of the motion-corrected and the raw "
                             "differences (later - earlier visit)",
              "visit note": "why there is no visit pair, when there is none"},
             {"regions": "mas (positions), mag (magnitudes)",
              "visit pairs": "mas (positions), mag (magnitudes), yr (epochs)"})
    return diag


def visit_report(diag: dict, layer_path: str | os.PathLike, members: Sequence[tuple],
                 refcat=None, tolerance: float = MATCH_TOLERANCE,
                 wcs: WCS | None = None) -> tuple[list, str]:
    """Add the visit-against-visit items (``visit pair <n>``) to ``diag``
    (:mod:`mvmflow.visitmatch`): per pair of the layer's visits, the stars both measured
    where the layer has weight, matched after carrying them to one epoch with the reference
    catalogue's proper motions.

    Returns
    -------
    pairs : list of dict
        The summary row of each pair.
    note : str
        Why there is no pair (one visit, or no member catalogues), else empty.
    """
    from mvmflow.refcat import read_refcat
    from mvmflow.visitmatch import pair_statistics, visit_catalogs, visit_of

    visits = sorted({visit_of(m[0]) for m in members})
    if len(visits) < 2:
        return [], (f"the layer has {len(visits)} visit{'s' if len(visits) != 1 else ''} "
                    f"({', '.join(visits) or 'no member catalogues'}): no visit pair to "
                    "cross-match")
    ref = refcat if isinstance(refcat, Table) or refcat is None else read_refcat(refcat)
    if ref is not None and (len(ref) == 0 or "pmra" not in ref.colnames):
        ref = None
    if wcs is None:
        _, wcs, _ = _layer_wcs(layer_path)
    cats = visit_catalogs(members)
    cats = [c.select(_weight_at(layer_path, c.ra, c.dec) > 0) if len(c) else c for c in cats]
    cats.sort(key=lambda c: (c.epoch, c.visit))
    pairs = []
    for i, a in enumerate(cats):
        for b in cats[i + 1:]:
            res = pair_statistics(a, b, ref, tolerance, wcs.world_to_pixel_values)
            row = res["summary"]
            pairs.append(row)
            stats = {}
            for title, unit, diff in (
                    ("X-axis differences", "HAP pixels", res.get("dx", [])),
                    ("Y-axis differences", "HAP pixels", res.get("dy", [])),
                    ("On-sky separation (X-Y)", "HAP pixels",
                     np.hypot(res.get("dx", []), res.get("dy", []))),
                    ("On-sky separation (RA-Dec)", "Arcseconds",
                     np.hypot(res["dra_pm"], res["ddec_pm"]) / 1000.0),
                    ("Magnitude differences", "mag", res["dmag"])):
                stats[title] = {**compute_stats(diff), "Units": unit}
            table = {"X": res.get("x", np.zeros(0)), "Y": res.get("y", np.zeros(0)),
                     "RA": a.ra[res["ia"]], "DEC": a.dec[res["ia"]],
                     "dRA raw [mas]": res["dra"], "dDec raw [mas]": res["ddec"],
                     "dmag": res["dmag"]}
            add_item(diag, f"visit pair {len(pairs)}", {
                **row, "exposures": [a.exposures, b.exposures],
                "reference catalogue": (str(ref.meta.get("name", "")) if ref is not None
                                        else "none: differences are not corrected for motion"),
                "statistics": stats,
                "data table": {k: _json_value(np.asarray(v, dtype=np.float64))
                               for k, v in table.items()},
            }, {"visits": "earlier, later visit (ipppss)",
                "matched": f"mutual nearest within {tolerance} arcsec after the motion "
                           "correction",
                "matched with reference motion": "pairs whose stars are one reference star: "
                                                 "the motion-corrected figures",
                "statistics": "later - earlier visit, motion-corrected where the reference "
                              "knows the star (X, Y), reference stars only (RA-Dec)",
                "data table": "matched positions (earlier visit) and raw differences"},
                {"statistics": "per block (Units)", "data table": "pixels, deg, mas, mag"})
    return pairs, ""


def _summary_row(name, n, dra, ddec, dmag, scale) -> dict:
    from mvmflow.visitmatch import clipped_median as stat

    mra, sra = stat(dra)
    mde, sde = stat(ddec)
    mmag, smag = stat(dmag)
    return {"comparison layer": name, "matched": int(n),
            "median dRA cos(dec) [mas]": mra, "scatter dRA cos(dec) [mas]": sra,
            "median dDec [mas]": mde, "scatter dDec [mas]": sde,
            "median dmag": mmag, "scatter dmag": smag, "pixel scale [arcsec]": round(scale, 6)}
