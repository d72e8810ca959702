"""Per-exposure records passed between workflow stages.

The screen stage writes one :class:`ExposureRecord` per input file (JSON); the plan stage
reads the accepted ones. A record carries everything planning needs, so the plan never
reopens the exposures: identity, instrument/detector/filter, times, photometry keywords,
and each chip's footprint on the sky through the full distortion model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ChipRecord", "ExposureRecord", "read_record", "write_record"]


@dataclass
class ChipRecord:
    """One SCI chip of an exposure.

    Attributes
    ----------
    extver : int
        EXTVER of the SCI extension.
    shape : list of int
        ``[ny, nx]`` of the SCI array.
    footprint : list of [ra, dec]
        Chip outline in degrees, sampled along the four edges through the full WCS
        (SIP + lookup tables), counter-clockwise or clockwise, not closed.
    """

    extver: int
    shape: list[int]
    footprint: list[list[float]]


@dataclass
class ExposureRecord:
    """What the screen stage learned about one input file.

    ``accepted`` is False with a human-readable ``reason`` for a rejected file; fields it
    could not read stay at their defaults.
    """

    file: str
    accepted: bool
    reason: str = ""
    filename: str = ""
    rootname: str = ""
    ipppssoo: str = ""
    instrument: str = ""
    detector: str = ""
    filter: str = ""
    ptype: str = ""  # 'flt' or 'flc'
    exptime: float = 0.0
    expstart: float = 0.0  # MJD
    expend: float = 0.0  # MJD
    date_obs: str = ""
    proposid: str = ""
    photflam: float = 0.0
    photplam: float = 0.0
    bunit: str = ""
    wcsname: str = ""
    sha256: str = ""
    size: int = 0
    chips: list[ChipRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    alignment: dict = field(default_factory=dict)  # solution keywords, once aligned
    cr_flagged: bool = False  # any DQ pixel carries the cosmic-ray flag (4096)

    @property
    def telescope(self) -> str:
        """``'HST'`` once the screen has identified the instrument, else ``''``.

        The screen identifies the instrument only after checking ``TELESCOP = 'HST'``
        (:mod:`mvmflow.screen`, check 3), so every record with an instrument is an HST one;
        the products' ``TELESCOP`` needs no input header.
        """
        return "HST" if self.instrument else ""

    @property
    def detkey(self) -> str:
        """``<instrument>_<detector>``, e.g. ``acs_wfc``: the key of config/detectors.yaml."""
        return f"{self.instrument}_{self.detector}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExposureRecord:
        data = dict(data)
        data["chips"] = [ChipRecord(**c) for c in data.get("chips", [])]
        return cls(**data)


def write_record(record: ExposureRecord, path: str | os.PathLike) -> None:
    """Write ``record`` as JSON to ``path`` atomically."""
    from mvmflow.workflow import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True) + "\n")


def read_record(path: str | os.PathLike) -> ExposureRecord:
    """Read an :class:`ExposureRecord` written by :func:`write_record`."""
    return ExposureRecord.from_dict(json.loads(Path(path).read_text()))
