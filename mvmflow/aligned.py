"""Exposure records and solution files of aligned exposures (the workflow's view).

The ``align`` rule writes, per alignment group, a directory holding for each member
``<key>_wcs.json`` (the solution, :mod:`mvmflow.solution`) and ``<key>_record.json`` (its
screen record with the chip footprints recomputed through the aligned WCS, the aligned
``WCSNAME`` and the fit keywords in ``alignment``), plus ``report.ecsv``. Later rules
(plan, drizzle, layer) use the aligned record and solution of an exposure where one exists
and its screen record and header WCS otherwise; ``key`` is the input file name without
``.fits``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from mvmflow.exposure import Exposure
from mvmflow.records import ChipRecord, ExposureRecord, read_record
from mvmflow.screen import FOOTPRINT_SAMPLES
from mvmflow.solution import (
    corrected_chip_wcs,
    read_solution,
    solution_frame,
    solution_keywords,
)

__all__ = ["SOLUTION_SUFFIX", "RECORD_SUFFIX", "REPORT_NAME", "input_key", "aligned_record",
           "alignment_warnings", "find_file", "load_record", "load_solution", "member_frames"]

SOLUTION_SUFFIX = "_wcs.json"
RECORD_SUFFIX = "_record.json"
REPORT_NAME = "report.ecsv"


def input_key(path: str | os.PathLike) -> str:
    """The workflow key of an input or record file: its name without ``.fits``/``.json``."""
    name = Path(path).name
    for suffix in (".fits", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def aligned_record(record: ExposureRecord, solution) -> ExposureRecord:
    """``record`` with footprints, ``WCSNAME`` and ``alignment`` from ``solution``.

    Parameters
    ----------
    record : ExposureRecord
        The exposure's screen record (its ``file`` is read for the chip WCSs).
    solution : dict or path
        The exposure's solution.
    """
    solution = read_solution(solution) if not isinstance(solution, dict) else solution
    exposure = Exposure.open(record.file)
    chips = []
    for chip in record.chips:
        wcs = corrected_chip_wcs(exposure, solution, chip.extver)
        outline = exposure.footprint(chip.extver, FOOTPRINT_SAMPLES, wcs=wcs)
        chips.append(ChipRecord(chip.extver, list(chip.shape), outline.tolist()))
    keywords = solution_keywords(solution)
    return dataclasses.replace(record, chips=chips, wcsname=keywords["WCSNAME"],
                               alignment=keywords)


def find_file(directories: Iterable[str | os.PathLike], key: str, suffix: str) -> Path | None:
    """``<dir>/<key><suffix>`` in the first of ``directories`` that has it, else None."""
    for d in directories:
        path = Path(d) / f"{key}{suffix}"
        if path.is_file():
            return path
    return None


def load_record(screen_record: str | os.PathLike,
                directories: Iterable[str | os.PathLike] = ()) -> ExposureRecord:
    """The aligned record of an exposure if one of ``directories`` has it, else its screen
    record."""
    path = find_file(directories, input_key(screen_record), RECORD_SUFFIX)
    return read_record(path or screen_record)


def load_solution(key: str, directories: Iterable[str | os.PathLike]) -> dict | None:
    """The solution of input ``key`` from ``directories``, or None (header WCS)."""
    path = find_file(directories, key, SOLUTION_SUFFIX)
    return None if path is None else read_solution(path)


def alignment_warnings(sources: Iterable) -> list[str]:
    """One-line warnings for a run's summary: the exposures left unaligned, and those that
    disagreed with their visit's solution and were fitted on their own.

    Parameters
    ----------
    sources : iterable
        Solutions (dicts), solution files, or alignment directories (their
        ``*_wcs.json``).

    Returns
    -------
    list of str
        Empty when every exposure took its group's solution.
    """
    solutions = []
    for item in sources:
        if isinstance(item, dict):
            solutions.append(item)
        elif Path(item).is_dir():
            solutions += [read_solution(p) for p in sorted(Path(item).glob(f"*{SOLUTION_SUFFIX}"))]
        else:
            solutions.append(read_solution(item))
    lines = []
    unaligned = [s["file"] for s in solutions if s.get("status") == "unaligned"]
    own = [s["file"] for s in solutions if str(s.get("status", "")).endswith("-own")]
    inherited = [s["file"] for s in solutions if s.get("status") == "inherited"]
    if unaligned:
        lines.append(f"WARNING: {len(unaligned)} exposure{'s' if len(unaligned) != 1 else ''} "
                     f"left on the header WCS (unaligned): {', '.join(sorted(unaligned))}")
    if own:
        lines.append(f"WARNING: {len(own)} exposure{'s' if len(own) != 1 else ''} disagreed "
                     f"with their visit's solution and were fitted on their own: "
                     f"{', '.join(sorted(own))}")
    if inherited:
        lines.append(f"WARNING: {len(inherited)} exposure{'s' if len(inherited) != 1 else ''} "
                     f"had too few sources to check their visit's solution (applied, "
                     f"unverified): {', '.join(sorted(inherited))}")
    return lines


def member_frames(keys: Iterable[str], directories: Iterable[str | os.PathLike]) -> dict[str, str]:
    """The astrometric frame of each input of a layer, from the alignment directories.

    Parameters
    ----------
    keys : iterable of str
        The layer's members (input keys, :func:`input_key`; e.g. a plan layer's
        ``member_keys``).
    directories : iterable of path
        The alignment directories (none when alignment is off: every input is ``HEADER``).

    Returns
    -------
    dict
        ``{key: frame}`` (:func:`mvmflow.solution.solution_frame`); more than one distinct
        value: the layer mixes frames.
    """
    directories = list(directories)
    return {k: solution_frame(load_solution(k, directories)) for k in keys}
