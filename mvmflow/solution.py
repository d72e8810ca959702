"""WCS solutions of the alignment step: one small JSON file per exposure, and how to use them.

The input exposures are never modified. The ``align`` step writes, per exposure, a solution
file (:func:`write_solution`) holding the corrected linear WCS of every chip; the drizzle map
step then replaces each chip's WCS by :func:`corrected_chip_wcs` /
:func:`apply_solution` (the distortion model -- SIP, NPOL and D2IM -- comes from the exposure
file, unchanged: alignment only moves ``CRVAL`` and ``CD``).

Solution file (JSON, keys sorted, no dates: a rerun writes identical bytes)::

    format            "mvmflow-wcs-solution"
    version           1
    file, rootname    the exposure
    visit             its visit (ipppss)
    group             alignment group name, shared by all exposures aligned together
                      (:func:`mvmflow.groups.group_name`: ``align-<rootname>``)
    refcat            the catalogue the WCS is tied to: GAIADR3, REFCAT (a file, or the
                      file's ``name`` metadata), NONE (relative or unaligned)
    refcat_requested  the catalogue asked for (NONE for relative-only runs)
    status            absolute        fitted to the reference catalogue (per visit)
                      absolute-group  aligned to the others, the group fitted to the catalogue
                                      (the visit alone had too few catalogue stars)
                      absolute-own    the exposure disagreed with its visit's solution and
                                      was fitted to the catalogue on its own
                      relative-own    the exposure disagreed with its visit's solution and
                                      was fitted on its own to the group's exposures that
                                      agree with theirs
                      inherited       the exposure had too few sources of its own to
                                      check its visit's solution: that solution is
                                      applied, unverified (not aligned, flagged)
                      relative        aligned to the other visits only
                      reference       the visit the others were aligned to (relative only)
                      unaligned       no acceptable fit (or the exposure disagreed with its
                                      visit and could not be fitted on its own): the
                                      original WCS is kept
    aligned, flagged  booleans (flagged: unaligned, or the requested absolute fit failed)
    wcsname           <original WCSNAME up to "-FIT">-FIT_MVM_<REFCAT> (absolute,
                      absolute-group), -FIT_IMG_<REFCAT> (absolute-own, the reference's name
                      for an image fitted on its own), -FIT_REL_<REFCAT> (relative-own:
                      <REFCAT> when the exposures it was fitted to are tied to the catalogue,
                      else NONE), -FIT_REL_NONE (relative, reference), -VISIT_<REFCAT>
                      or -VISIT_NONE (inherited: no FIT, nothing was fitted to it), or the original
                      WCSNAME (unaligned)
    original_wcsname
    fitgeom           geometry of the last fit that set the WCS (shift, rshift, rscale,
                      general; "none" when unaligned)
    nmatches          this exposure's own sources matched to the reference after the
                      solution: the catalogue, or (relative statuses, and exposures with too
                      few catalogue stars of their own) the group's other exposures; an
                      aligned exposure has at least ``member_min_matches`` of them
                      (mvmflow.align.AlignParams), except a lone relative reference
    rms_ra, rms_dec   their RMS residuals along RA and Dec, mas (null without matches)
    transform         the total correction on the plane: {"matrix": 2x2, "shift": [x, y]}
                      (arcsec, x east, y north) about plane {"ra", "dec"}
    fits              the fits that led to the solution ({"relative": {...},
                      "absolute": {...}}: geometry, nmatches, rms_x, rms_y, notes)
    notes             why something was downgraded or failed
    epoch_mjd         mid-exposure MJD (the epoch the reference was propagated to)
    chips             per SCI extension: extver, crpix, crval, cd (corrected) and
                      original_crval, original_cd

:func:`solution_keywords` gives the header keywords the layer products record per input
(``WCSNAME``, ``RMS_RA``, ``RMS_DEC``, ``NMATCHES``, ``FITGEOM``, ``ALIGNST``).

**Astrometric frames.** :func:`solution_frame` names the frame an input's WCS is in: the
reference catalogue (``GAIADR3``, ``REFCAT``, ...) for inputs tied to it, ``RELATIVE`` for
inputs aligned to each other only, ``HEADER`` for inputs on their header WCS (unaligned, or
alignment off). :func:`layer_frames` gives them per member of a layer; a layer whose members
are in more than one frame is *mixed*, and :func:`mixed_frames_drops` applies the
``align.mixed_frames`` setting to it (:data:`MIXED_FRAMES_MODES`; default
:data:`DEFAULT_MIXED_FRAMES`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mvmflow.workflow import atomic_path

if TYPE_CHECKING:
    from astropy.table import Table
    from astropy.wcs import WCS

__all__ = [
    "DEFAULT_MIXED_FRAMES",
    "FRAME_HEADER",
    "FRAME_RELATIVE",
    "MIXED_FRAMES_MODES",
    "SOLUTION_FORMAT",
    "SOLUTION_VERSION",
    "STATUSES",
    "MixedFramesError",
    "apply_solution",
    "corrected_chip_wcs",
    "layer_frames",
    "mixed_frames_drops",
    "read_solution",
    "report_table",
    "solution_frame",
    "solution_keywords",
    "write_report",
    "write_solution",
]

SOLUTION_FORMAT = "mvmflow-wcs-solution"
SOLUTION_VERSION = 1
STATUSES = ("absolute", "absolute-group", "absolute-own", "relative", "relative-own",
            "reference", "inherited", "unaligned")

FRAME_HEADER = "HEADER"
"""The frame of an input on its header WCS (unaligned, or alignment off)."""
FRAME_RELATIVE = "RELATIVE"
"""The frame of an input aligned to the others of its group only."""
MIXED_FRAMES_MODES = ("keep", "drop_unaligned", "fail")
"""``align.mixed_frames``: what to do with a layer whose inputs are in different frames."""
DEFAULT_MIXED_FRAMES = "drop_unaligned"
"""The default: the safest mode that still makes the layer (docs/design.md, "One
astrometric frame per layer")."""

_CRPIX_TOL = 1e-6


def _clean(value):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_solution(solution: dict, path: str | os.PathLike) -> Path:
    """Write a solution as JSON (sorted keys, 1-space indent, trailing newline), atomically."""
    path = Path(path)
    text = json.dumps(_clean(solution), sort_keys=True, indent=1, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_solution(path: str | os.PathLike) -> dict:
    """Read a solution file; ``ValueError`` if it is not one."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != SOLUTION_FORMAT:
        raise ValueError(f"{Path(path).name} is not an mvmflow WCS solution")
    if data.get("version") != SOLUTION_VERSION:
        raise ValueError(f"{Path(path).name}: solution version {data.get('version')}, "
                         f"expected {SOLUTION_VERSION}")
    return data


def _as_solution(solution) -> dict | None:
    if solution is None:
        return None
    if isinstance(solution, dict):
        return solution
    return read_solution(solution)


def _chip_record(solution: dict, extver: int) -> dict:
    for chip in solution.get("chips", []):
        if int(chip["extver"]) == int(extver):
            return chip
    raise KeyError(f"solution of {solution.get('file')} has no chip SCI,{extver}")


def _set_linear(wcs: WCS, chip: dict, where: str) -> WCS:
    out = wcs.deepcopy()
    crpix = np.asarray(chip["crpix"], dtype=np.float64)
    if not np.allclose(out.wcs.crpix, crpix, rtol=0, atol=_CRPIX_TOL):
        raise ValueError(f"{where}: the solution's CRPIX {list(crpix)} differs from the WCS's "
                         f"{list(out.wcs.crpix)}; is it the solution of another file?")
    out.wcs.crval = np.asarray(chip["crval"], dtype=np.float64)
    cd = np.asarray(chip["cd"], dtype=np.float64)
    if out.wcs.has_cd():
        out.wcs.cd = cd
    else:
        out.wcs.pc = cd
        out.wcs.cdelt = [1.0, 1.0]
    out.wcs.set()
    out.pixel_shape = wcs.pixel_shape
    return out


def corrected_chip_wcs(exposure, solution, extver: int = 1) -> WCS:
    """The aligned full WCS of ``(SCI, extver)`` (SIP + NPOL + D2IM from the file).

    Parameters
    ----------
    exposure : Exposure, str or os.PathLike
        The exposure (an :class:`mvmflow.exposure.Exposure` or its path).
    solution : dict, str, os.PathLike or None
        Its solution (:func:`read_solution`); None gives the header WCS.
    extver : int
        SCI extension.
    """
    from mvmflow.exposure import Exposure

    if not isinstance(exposure, Exposure):
        exposure = Exposure(exposure)
    wcs = exposure.chip_wcs(extver)
    solution = _as_solution(solution)
    if solution is None:
        return wcs
    if solution.get("file") and solution["file"] != exposure.filename:
        raise ValueError(f"solution is for {solution['file']}, not {exposure.filename}")
    return _set_linear(wcs, _chip_record(solution, extver), f"{exposure.filename}[SCI,{extver}]")


def apply_solution(chips: Sequence, solution) -> list:
    """Chips (:class:`mvmflow.resample.Chip`) with their WCS replaced by the aligned one.

    The chips are not modified; new ones are returned (same arrays). ``solution`` None returns
    the chips unchanged (as a new list).
    """
    solution = _as_solution(solution)
    if solution is None:
        return list(chips)
    out = []
    for chip in chips:
        if solution.get("file") and chip.filename and chip.filename != solution["file"]:
            raise ValueError(f"solution is for {solution['file']}, not {chip.filename}")
        record = _chip_record(solution, chip.extver)
        wcs = _set_linear(chip.wcs, record, f"{chip.filename}[SCI,{chip.extver}]")
        out.append(dataclasses.replace(chip, wcs=wcs))
    return out


def solution_keywords(solution) -> dict:
    """Header keywords recording an input's alignment (primary header / HDRTAB row).

    Returns
    -------
    dict
        ``WCSNAME``, ``RMS_RA``, ``RMS_DEC`` (mas, NaN when unknown), ``NMATCHES``,
        ``FITGEOM``, ``ALIGNST`` (the status), ``REFCAT``.
    """
    solution = _as_solution(solution)

    def number(key):
        value = solution.get(key)
        return float("nan") if value is None else float(value)

    return {
        "WCSNAME": str(solution.get("wcsname", "")),
        "RMS_RA": number("rms_ra"),
        "RMS_DEC": number("rms_dec"),
        "NMATCHES": int(solution.get("nmatches") or 0),
        "FITGEOM": str(solution.get("fitgeom", "none")),
        "ALIGNST": str(solution.get("status", "unaligned")),
        "REFCAT": str(solution.get("refcat", "NONE")),
    }


def solution_frame(alignment) -> str:
    """The astrometric frame of an input's WCS.

    Parameters
    ----------
    alignment : dict, path or None
        Its solution (:func:`read_solution`), the keywords of :func:`solution_keywords`
        (an aligned record's ``alignment``), or None / ``{}`` (no solution: header WCS).

    Returns
    -------
    str
        The reference catalogue's name (``GAIADR3``, ``REFCAT``, ...) for an input tied to
        it, :data:`FRAME_RELATIVE` for one aligned to the others of its group only,
        :data:`FRAME_HEADER` for one on its header WCS.
    """
    if alignment is None or (isinstance(alignment, dict) and not alignment):
        return FRAME_HEADER
    alignment = _as_solution(alignment)
    status = alignment.get("status", alignment.get("ALIGNST", "unaligned"))
    refcat = str(alignment.get("refcat", alignment.get("REFCAT", "NONE")) or "NONE")
    if status == "unaligned":
        return FRAME_HEADER
    return FRAME_RELATIVE if refcat.upper() == "NONE" else refcat


def layer_frames(members) -> dict[str, str]:
    """The astrometric frame of every member of a layer.

    Parameters
    ----------
    members : mapping or iterable
        ``{name: alignment}`` (anything :func:`solution_frame` takes), or records
        (:class:`mvmflow.records.ExposureRecord`: ``filename`` and ``alignment``).

    Returns
    -------
    dict
        ``{name: frame}`` in the members' order; more than one distinct frame makes the layer
        *mixed*.
    """
    if isinstance(members, dict):
        items = members.items()
    else:
        items = ((r.filename or Path(r.file).name, r.alignment) for r in members)
    return {str(name): solution_frame(value) for name, value in items}


class MixedFramesError(ValueError):
    """A layer's inputs are in different astrometric frames and ``align.mixed_frames`` is
    ``fail``."""


def mixed_frames_drops(layer: str, frames: dict[str, str], mode: str) -> dict[str, str]:
    """The members ``align.mixed_frames`` leaves out of a layer, with the reason.

    Parameters
    ----------
    layer : str
        The layer's name (for the messages).
    frames : dict
        ``{member: frame}`` (:func:`layer_frames`).
    mode : {'keep', 'drop_unaligned', 'fail'}
        ``keep``: every member stays (the layer records the mix); ``drop_unaligned``: in a
        mixed layer, the members on their header WCS are left out (a layer whose members are
        all unaligned is not mixed and keeps them; aligned members in different frames stay
        and are recorded); ``fail``: a mixed layer raises :class:`MixedFramesError`.

    Returns
    -------
    dict
        ``{member: reason}`` of the members to leave out (empty when nothing is).
    """
    if mode not in MIXED_FRAMES_MODES:
        raise ValueError(f"align.mixed_frames must be one of {', '.join(MIXED_FRAMES_MODES)}, "
                         f"not {mode!r}")
    kinds = sorted(set(frames.values()))
    if len(kinds) < 2 or mode == "keep":
        return {}
    if mode == "fail":
        listing = "; ".join(f"{k}: {', '.join(m for m, f in frames.items() if f == k)}"
                            for k in kinds)
        raise MixedFramesError(f"{layer}: inputs in different astrometric frames ({listing}); "
                               "align.mixed_frames is fail (keep or drop_unaligned make the "
                               "layer)")
    others = ", ".join(k for k in kinds if k != FRAME_HEADER)
    return {m: (f"on its header WCS while the layer's other inputs are aligned ({others}): "
                "left out (align.mixed_frames: drop_unaligned)")
            for m, f in frames.items() if f == FRAME_HEADER}


_REPORT_COLUMNS = (
    ("file", str), ("rootname", str), ("visit", str), ("group", str), ("status", str),
    ("aligned", bool), ("flagged", bool), ("wcsname", str), ("refcat", str),
    ("fitgeom", str), ("nmatches", int), ("rms_ra", float), ("rms_dec", float),
    ("shift_x", float), ("shift_y", float), ("rotation", float), ("scale", float),
    ("epoch_mjd", float), ("notes", str),
)


def report_table(solutions: Sequence) -> Table:
    """One row per exposure's solution (dicts or paths), in the given order."""
    rows = {name: [] for name, _ in _REPORT_COLUMNS}
    for item in solutions:
        s = _as_solution(item)
        m = np.asarray(s["transform"]["matrix"], dtype=np.float64)
        values = {
            "shift_x": s["transform"]["shift"][0], "shift_y": s["transform"]["shift"][1],
            "rotation": math.degrees(math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1])),
            "scale": math.sqrt(abs(float(np.linalg.det(m)))),
            "notes": "; ".join(s.get("notes", [])),
        }
        for name, kind in _REPORT_COLUMNS:
            value = values[name] if name in values else s.get(name)
            if kind is float:
                value = float("nan") if value is None else float(value)
            elif kind is int:
                value = int(value or 0)
            elif kind is bool:
                value = bool(value)
            else:
                value = "" if value is None else str(value)
            rows[name].append(value)
    from astropy.table import Table  # lazy (docs/speed.md, "Job start-up")

    table = Table()
    for name, kind in _REPORT_COLUMNS:
        dtype = {str: str, bool: bool, int: np.int64, float: np.float64}[kind]
        table[name] = np.array(rows[name], dtype=dtype) if rows[name] else np.zeros(0, dtype)
    for name in ("rms_ra", "rms_dec"):
        table[name].unit = "mas"
    for name in ("shift_x", "shift_y"):
        table[name].unit = "arcsec"
    table["rotation"].unit = "deg"
    table["shift_x"].description = "total correction towards east at the plane origin"
    table["shift_y"].description = "total correction towards north at the plane origin"
    table["nmatches"].description = "sources matched to the reference after the solution"
    return table


def write_report(solutions: Sequence, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write the alignment report (ECSV, or JSON when ``path`` ends in ``.json``).

    Parameters
    ----------
    solutions : sequence of dict or path
        The exposures' solutions (e.g. every exposure of a sky cell).
    path : str or os.PathLike
        Output file.
    meta : dict, optional
        Extra metadata (e.g. ``{"skycell": ...}``).
    """
    path = Path(path)
    table = report_table(solutions)
    table.meta.update({"report": "mvmflow alignment", **(meta or {})})
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".json":
            rows = [{name: _clean(table[name][i].item() if hasattr(table[name][i], "item")
                                  else table[name][i]) for name in table.colnames}
                    for i in range(len(table))]
            text = json.dumps(_clean({"meta": dict(table.meta), "exposures": rows}),
                              sort_keys=True, indent=1, allow_nan=False) + "\n"
            tmp.write_text(text)
        else:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path
