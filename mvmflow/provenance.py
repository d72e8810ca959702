"""Provenance of a product: software versions, configuration digest, inputs and checksums.

Written into the primary header of every layer product (:mod:`mvmflow.products`) as:

- ``VMVMFLOW``, ``VNUMPY``, ``VSCIPY``, ``VASTROPY``, ``VDRIZZLE``: package versions;
- ``CFGDGST``: sha256 of the canonical JSON (sorted keys, no whitespace) of the resolved
  parameters of the layer (:func:`mvmflow.params.config_digest`);
- ``NINPUTS`` and one card pair per input, ``IN###NAM`` (file name) and ``IN###SHA``
  (sha256 of the file), ``###`` = 1 + the input's context bit. FITS keyword names stop at
  999; later inputs are in the ``HDRTAB`` column ``INSHA256`` (which holds every input's
  checksum anyway).

Nothing here depends on the time of the run, so a rerun gives identical cards.

The trailer of a product (``<rootname>_trl.txt``, :func:`trailer_lines`, written by
:func:`mvmflow.products.write_trailer`) holds its name, summary keywords and the log of the
job that made it *without* the log's wall-clock times, so a rerun gives an identical trailer
too; the logs under ``logs/`` keep their times.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata

from mvmflow.params import config_digest

__all__ = ["SOFTWARE", "TRAILER_KEYS", "Provenance", "collect", "file_sha256",
           "software_versions", "trailer_lines", "untimed"]

SOFTWARE = (
    ("VMVMFLOW", "mvmflow"),
    ("VNUMPY", "numpy"),
    ("VSCIPY", "scipy"),
    ("VASTROPY", "astropy"),
    ("VDRIZZLE", "drizzle"),
)
"""(keyword, distribution) of the recorded software versions."""

MAX_INPUT_CARDS = 999


def software_versions() -> dict[str, str]:
    """``{distribution: version}`` of :data:`SOFTWARE` (``'unknown'`` if not installed)."""
    out = {}
    for _, dist in SOFTWARE:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Provenance:
    """What made a product.

    Attributes
    ----------
    software : tuple of (str, str)
        ``(distribution, version)`` pairs, in :data:`SOFTWARE` order.
    config_digest : str
        sha256 of the canonical JSON of the resolved parameters.
    inputs : tuple of (str, str)
        ``(file name, sha256)`` per input, in layer (context-bit) order.
    """

    software: tuple[tuple[str, str], ...]
    config_digest: str
    inputs: tuple[tuple[str, str], ...]

    def version_of(self, dist: str) -> str:
        return dict(self.software).get(dist, "unknown")

    def cards(self) -> list[tuple[str, object, str]]:
        """Primary-header cards ``(keyword, value, comment)``."""
        versions = dict(self.software)
        cards = [(kw, versions.get(dist, "unknown"), f"{dist} version")
                 for kw, dist in SOFTWARE]
        cards.append(("CFGDGST", self.config_digest, ""))  # no room for a comment
        cards.append(("NINPUTS", len(self.inputs), "number of input exposures"))
        for k, (name, sha) in enumerate(self.inputs[:MAX_INPUT_CARDS], start=1):
            cards.append((f"IN{k:03d}NAM", name, "input file"))
            cards.append((f"IN{k:03d}SHA", sha, ""))
        return cards


def collect(params: Mapping, records: Sequence) -> Provenance:
    """Build the provenance of a layer from its parameters and its input records.

    Parameters
    ----------
    params : mapping
        The resolved layer parameters (JSON-serialisable).
    records : sequence of ExposureRecord
        In layer order; ``sha256`` should be set by the screen stage (empty otherwise).
    """
    versions = software_versions()
    return Provenance(
        software=tuple((dist, versions[dist]) for _, dist in SOFTWARE),
        config_digest=config_digest(params),
        inputs=tuple(
            (r.filename or os.path.basename(str(r.file)), r.sha256 or "") for r in records
        ),
    )


TRAILER_KEYS = ("NUMEXP", "NDRIZIM", "NPIXFRAC", "MEANEXPT", "MEDEXPT", "MEANNEXP", "MEDNEXP",
                "MEANWHT", "MEDWHT", "CFGDGST")
"""Primary-header keywords a trailer summarises, in this order (those the header has)."""

# the wall-clock time that starts every record of a rule log
# (mvmflow.workflow.rule_logging: "%(asctime)s %(levelname)s %(name)s: %(message)s")
_LOG_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (?=[A-Z]+ \S+: )")


def untimed(line: str) -> str:
    """A rule-log line without its leading wall-clock time (other lines unchanged)."""
    return _LOG_TIME.sub("", line, count=1)


def trailer_lines(product: str, header: Mapping, log_text: str | None = None) -> list[str]:
    """The lines of a product's trailer, identical on every rerun that makes the same product.

    Parameters
    ----------
    product : str
        The product's file name.
    header : mapping
        Its primary header (:data:`TRAILER_KEYS` are summarised).
    log_text : str, optional
        The log of the job that wrote it (:func:`mvmflow.workflow.rule_logging`); its
        records are kept without their wall-clock times.

    Returns
    -------
    list of str
        For :func:`mvmflow.products.write_trailer`.
    """
    lines = [product] + [f"{k} = {header[k]}" for k in TRAILER_KEYS if k in header]
    if log_text is not None:
        lines += ["", "Processing log:"] + [untimed(line) for line in log_text.splitlines()]
    return lines
