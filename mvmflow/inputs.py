"""The run's input exposures: the demo set, a glob pattern, or a list file.

The forms make_custom_mosaic accepts, plus the simulated demo:

- ``demo``: the exposures listed in the simulated demo set's ``truth/exposures.ecsv``;
- a glob pattern (``data/*_fl?.fits``, ``**`` allowed);
- a text file listing exposure paths, one per line (blank lines and ``#`` comments are
  skipped; relative paths are relative to the list file's directory);
- a region of the sky, ``{mast: {...}}``, or a product table (``.ecsv``) written by a region
  query: the files that arrived in the mirror (:func:`inputs_from_records`;
  docs/archive.md, "Region queries and the workflow");
- a poller file (the reference's 10-column MVM or 8-column SVM format, lines with commas):
  each row's last column is the exposure's path; a row whose path does not exist is looked
  up by file name beside the poller file and in the working directory (the reference
  needs its inputs there). NEW and OLD rows are both inputs: an OLD exposure is one the
  sky cell already holds, so its partials are reused where they exist (the reference
  drops OLD exposures from the re-drizzled layer, spec 1.11; we keep them, so an update
  equals a run from scratch).

Every input gets a *key*, its file name without ``.fits`` (``ib2v01abq_flc``), which names
its jobs and per-exposure files. Two inputs with the same key are an error: it would be
ambiguous which one a product came from.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "check_inputs", "exposure_key", "resolve_inputs", "write_input_table", "read_input_table",
    "is_archive_spec", "inputs_from_records",
]

_GLOB_CHARS = "*?["


def exposure_key(path: str | os.PathLike) -> str:
    """The key of an input exposure: its file name without ``.fits`` (or ``.fits.gz``)."""
    name = Path(path).name
    for ext in (".fits.gz", ".fits"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _is_poller(path: Path) -> bool:
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            return line.count(",") in (7, 9)
    return False


def _from_poller(path: Path) -> list[Path]:
    from mvmflow.poller import locate_input, read_poller

    files = []
    for n, row in enumerate(read_poller(path), start=1):
        given = Path(row.path) if row.path else None
        if given is not None and given.is_file():
            files.append(given)
            continue
        found = locate_input(row.filename, [path.parent])
        if found is None:
            raise FileNotFoundError(f"{path}, row {n}: exposure {row.filename} is neither at "
                                    f"{row.path} nor beside the poller file")
        files.append(found)
    return files


def _from_list(path: Path) -> list[Path]:
    if _is_poller(path):
        return _from_poller(path)
    files = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        p = Path(line)
        files.append(p if p.is_absolute() else path.parent / p)
        if not files[-1].exists():
            raise FileNotFoundError(f"{path}, line {n}: listed exposure {line} does not exist")
    return files


def _from_demo(truth_table: Path) -> list[Path]:
    from astropy.table import Table

    table = Table.read(truth_table, format="ascii.ecsv")
    base = truth_table.parent.parent
    return [base / str(name) for name in table["file"]]


def resolve_inputs(spec: str, demo_truth: str | os.PathLike | None = None) -> dict[str, str]:
    """Resolve the ``inputs`` config value to ``{key: absolute path}``, sorted by key.

    Raises
    ------
    ValueError
        If nothing matches, or two inputs share a key.
    FileNotFoundError
        If a listed file does not exist.
    """
    if spec == "demo":
        if demo_truth is None:
            raise ValueError("inputs 'demo' needs the demo truth table")
        files = _from_demo(Path(demo_truth))
    elif any(c in spec for c in _GLOB_CHARS):
        files = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
        if not files:
            raise ValueError(f"inputs: the pattern {spec!r} matches no file")
    else:
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"inputs: {spec!r} is neither 'demo', a glob pattern, "
                                    "nor an existing list file")
        if path.suffix.lower() == ".fits" or path.name.lower().endswith(".fits.gz"):
            files = [path]
        else:
            files = _from_list(path)
    table: dict[str, str] = {}
    for f in files:
        key = exposure_key(f)
        full = str(Path(f).resolve())
        if key in table and table[key] != full:
            raise ValueError(f"inputs: two exposures share the name {key}: {table[key]} and {full}")
        table[key] = full
    if not table:
        raise ValueError(f"inputs: {spec!r} lists no exposure")
    return dict(sorted(table.items()))


def is_archive_spec(spec) -> bool:
    """Whether the ``inputs`` value takes its files from MAST: a region mapping
    (``{mast: {...}}``) or a product table (a path ending in ``.ecsv``)."""
    from mvmflow.archive.table import is_product_table

    return isinstance(spec, Mapping) or is_product_table(spec)


def inputs_from_records(records: Sequence[str | os.PathLike]
                        ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The inputs of a region run: the files whose download records say they arrived.

    Parameters
    ----------
    records : sequence of paths
        Download records (:func:`mvmflow.archive.table.write_record`), one per file.

    Returns
    -------
    (dict, list)
        ``{key: path}`` of the files in the mirror, sorted by key, and ``(file name,
        reason)`` of those that are not (failed downloads, files gone from the mirror).
    """
    from mvmflow.archive.table import missing_rows, read_record

    loaded = [read_record(r) for r in records]
    missing = missing_rows(loaded)
    gone = {name for name, _ in missing}
    table = {exposure_key(r["filename"]): r["path"] for r in loaded if r["filename"] not in gone}
    return dict(sorted(table.items())), missing


def _check_archive_spec(spec) -> None:
    from mvmflow.archive.query import RegionError, parse_region
    from mvmflow.archive.table import ProductTableError, read_table

    try:
        if isinstance(spec, Mapping):
            parse_region(spec)
        else:
            read_table(spec)
    except RegionError as error:
        raise ValueError(str(error)) from None
    except ProductTableError as error:
        raise ValueError(f"inputs: {error}") from None


def check_inputs(spec: str | Mapping) -> None:
    """Check the ``inputs`` config value at start, before any job, by resolving it.

    ``demo`` is not checked (the workflow makes the demo set); a region is parsed and a
    product table read (:func:`is_archive_spec`); any other value is resolved with
    :func:`resolve_inputs`, so the check is exactly what the inputs job will do.

    Parameters
    ----------
    spec : str or Mapping
        The ``inputs`` config value; relative paths are relative to the working directory.

    Raises
    ------
    ValueError
        With a one-line message starting with ``inputs:`` that names the value and the
        reason (no match, missing list file or listed exposure, unreadable file, ...).
    """
    if spec == "demo":
        return
    if is_archive_spec(spec):
        _check_archive_spec(spec)
        return
    if not any(c in spec for c in _GLOB_CHARS) and Path(spec).is_dir():
        raise ValueError(f"inputs: {spec!r} is a directory; give a glob pattern such as "
                         f"'{Path(spec) / '*_fl?.fits'}' or a list file")
    try:
        resolve_inputs(spec)
    except UnicodeDecodeError:
        raise ValueError(f"inputs: {spec!r} is not a text list of exposures (nor a .fits "
                         "file)") from None
    except (OSError, ValueError) as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        if isinstance(error, OSError) and error.filename:
            text = f"{error.filename}: {text}"
        text = " ".join(text.split())
        raise ValueError(text if text.startswith("inputs:") else f"inputs: {text}") from None


def write_input_table(table: dict[str, str], path: str | os.PathLike) -> None:
    """Write ``{key: path}`` as a two-column TSV, atomically."""
    from mvmflow.workflow import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(f"{k}\t{v}\n" for k, v in table.items()))


def read_input_table(path: str | os.PathLike) -> dict[str, str]:
    """Read a table written by :func:`write_input_table`."""
    table = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            key, file = line.split("\t")
            table[key] = file
    return table
