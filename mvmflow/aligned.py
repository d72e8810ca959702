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
from mvmflow.solution import corrected_chip_wcs, read_solution, solution_keywords

__all__ = ["SOLUTION_SUFFIX", "RECORD_SUFFIX", "REPORT_NAME", "input_key", "aligned_record",
           "find_file", "load_record", "load_solution"]

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
