"""The product table and the per-file download records: their one owner (docs/archive.md,
"Region queries and the workflow").

The **product table** (ECSV) is the run's record of what was asked and what is to be
fetched: one row per file with :data:`COLUMNS`, and the query (region, URL, time) in its
metadata. ``status`` is ``fetch``, ``proprietary`` or ``skipped: <reason>``. Kept with the
run (``<outdir>/mast/query.ecsv``), it is also a valid ``inputs`` value: the same set of
files again, without asking the archive.

A **download record** (JSON, one per file, ``<outdir>/mast/downloads/<file>.json``) says
whether the file arrived in the mirror (``<resources>/mast/<file>``) and, if not, why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "COLUMNS", "TABLE_FORMAT", "ProductTableError", "product_table", "write_table",
    "read_table", "is_product_table", "to_fetch", "mirror_path", "write_record",
    "read_record", "missing_rows", "write_missing", "read_missing",
]

#: The product table's columns, in order, with their types.
COLUMNS = (
    ("obs_id", str), ("rootname", str), ("instrument", str), ("detector", str),
    ("filter", str), ("exptime", float), ("date_obs", str), ("dataURI", str),
    ("filename", str), ("size", int), ("checksum", str), ("rights", str), ("release", str),
    ("status", str),
)

#: ``meta['format']`` of a product table (a version: readers refuse others).
TABLE_FORMAT = "mvmflow product table 1"


class ProductTableError(ValueError):
    """A file that is not a usable product table; the message names it."""


def product_table(rows: Sequence[Mapping], meta: Mapping | None = None):
    """An astropy Table of ``rows`` (dicts with the :data:`COLUMNS` keys) and ``meta``."""
    import numpy as np
    from astropy.table import Table

    columns = {}
    for name, kind in COLUMNS:
        values = [r.get(name) for r in rows]
        if kind is float:
            columns[name] = np.array([np.nan if v is None else float(v) for v in values], float)
        elif kind is int:
            columns[name] = np.array([-1 if v is None else int(v) for v in values], np.int64)
        else:
            columns[name] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    table = Table(columns, names=[n for n, _ in COLUMNS])
    table.meta = {"format": TABLE_FORMAT, **dict(meta or {})}
    return table


def write_table(table, path: str | os.PathLike) -> Path:
    """Write a product table as ECSV, atomically (docs/conventions.md, "Files written")."""
    from mvmflow.workflow import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def is_product_table(spec) -> bool:
    """Whether an ``inputs`` value names a product table (a string ending in ``.ecsv``)."""
    return isinstance(spec, str) and spec.strip().lower().endswith(".ecsv")


def read_table(path: str | os.PathLike):
    """Read a product table written by :func:`write_table`.

    Raises
    ------
    ProductTableError
        If the file is missing, unreadable or lacks the table's columns (one line naming
        the file and the reason).
    """
    from astropy.table import Table

    path = Path(path)
    try:
        table = Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise ProductTableError(f"{path}: no such product table") from None
    except Exception as exc:  # noqa: BLE001 - astropy's readers raise many kinds
        raise ProductTableError(f"{path}: not a product table ECSV "
                                f"({' '.join(str(exc).split())[:200]})") from None
    missing = [n for n, _ in COLUMNS if n not in table.colnames]
    if table.meta.get("format") != TABLE_FORMAT or missing:
        what = f"lacks the column {missing[0]!r}" if missing else \
            f"has format {table.meta.get('format')!r}, not {TABLE_FORMAT!r}"
        raise ProductTableError(f"{path}: not an mvmflow product table ({what}); write one with "
                                "a region query (inputs: {mast: ...}) or mvmflow fetch")
    for name in ("filename", "status", "dataURI", "checksum", "release"):
        table[name] = table[name].astype(str)
        if hasattr(table[name], "filled"):
            table[name] = table[name].filled("")
    return table


def to_fetch(table) -> list[dict]:
    """The rows whose status is ``fetch``, as dicts (file name, dataURI, size, checksum)."""
    out = []
    for row in table:
        if str(row["status"]) != "fetch":
            continue
        size = int(row["size"])
        out.append({"filename": str(row["filename"]), "dataURI": str(row["dataURI"]),
                    "size": size if size >= 0 else None,
                    "checksum": str(row["checksum"]).strip() or None})
    return out


def mirror_path(mirror: str | os.PathLike, filename: str) -> Path:
    """Where a file of the archive is kept: ``<mirror>/<filename>`` (flat: HST file names are
    unique). ``mirror`` is ``<resources>/mast``.

    Raises
    ------
    ValueError
        If ``filename`` is not a plain file name (a path, ``..``, empty).
    """
    name = str(filename)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"{filename!r} is not a plain file name")
    return Path(mirror) / name


def write_record(path: str | os.PathLike, filename: str, file: str | os.PathLike | None,
                 error: str | None = None) -> Path:
    """Write a download record: ``file`` arrived (the mirror path), or ``error`` says why
    not."""
    from mvmflow.workflow import atomic_path

    record = {"filename": filename, "path": str(Path(file).resolve()) if file else None,
              "status": "arrived" if error is None else "failed", "error": error}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return Path(path)


def read_record(path: str | os.PathLike) -> dict:
    """Read a download record (``filename``, ``path``, ``status``, ``error``)."""
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict) or record.get("status") not in ("arrived", "failed"):
        raise ValueError(f"{path}: not a download record")
    return record


def missing_rows(records: Sequence[Mapping]) -> list[tuple[str, str]]:
    """``(file name, reason)`` of every record whose file did not arrive, or is gone."""
    out = []
    for record in records:
        if record["status"] != "arrived":
            out.append((record["filename"], record.get("error") or "not fetched"))
        elif not record.get("path") or not Path(record["path"]).is_file():
            out.append((record["filename"], f"no longer in the mirror ({record.get('path')})"))
    return out


def write_missing(rows: Sequence[tuple[str, str, str]], path: str | os.PathLike) -> Path:
    """Write the report of the files a region run did not process: ``(file name, status,
    reason)`` rows (``failed``: could not be fetched; ``proprietary``: not public yet), as
    ECSV, atomically."""
    from astropy.table import Table

    from mvmflow.workflow import atomic_path

    table = Table(rows=[tuple(r) for r in rows] or None, names=("filename", "status", "reason"),
                  dtype=(str, str, str))
    path = Path(path)
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def read_missing(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(file name, reason)`` of the files a report (:func:`write_missing`) says could not
    be fetched (proprietary files are not counted)."""
    from astropy.table import Table

    table = Table.read(path, format="ascii.ecsv")
    return [(str(r["filename"]), str(r["reason"])) for r in table if r["status"] == "failed"]
