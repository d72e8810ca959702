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
its jobs and per-exposure files. Two inputs with the same key would make it ambiguous which
one a product came from: in a workflow run the first (in the glob's sorted order, or the
list's order) is used and the others are *skipped*, as are the names a glob matches that are
not regular files (a directory, a dangling symbolic link); :func:`write_input_table`
records them, with the reason, as rows without a key in the same table (so the ``inputs``
checkpoint keeps one output and an output directory of an earlier version needs no new
file), and the screening report lists them among the rejected inputs (issue 17,
docs/design.md "The workflow"). Without a ``skipped`` list, :func:`resolve_inputs` raises on
a duplicate name instead.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "check_inputs", "exposure_key", "resolve_inputs", "write_input_table", "read_input_table",
    "is_archive_spec", "inputs_from_records", "read_skipped",
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


def _not_a_file(path: Path) -> str:
    """Why a name a glob matched is not an exposure file (``''`` if it is a regular file)."""
    if path.is_file():
        return ""
    if path.is_symlink() and not path.exists():
        return f"dangling symbolic link: its target {os.readlink(path)} does not exist"
    if path.is_dir():
        return "not a regular file: a directory"
    return "not a regular file"


def resolve_inputs(spec: str, demo_truth: str | os.PathLike | None = None,
                   skipped: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """Resolve the ``inputs`` config value to ``{key: absolute path}``, sorted by key.

    Parameters
    ----------
    spec : str
        The ``inputs`` value (``demo``, a glob pattern, a list file or an exposure).
    demo_truth : path, optional
        The demo set's ``truth/exposures.ecsv`` (for ``demo``).
    skipped : list, optional
        If given, ``(path, reason)`` is appended for every name a glob matched that is not
        a regular file and for every input whose key an earlier input already has (the
        first is used), instead of raising for a duplicate key.

    Raises
    ------
    ValueError
        If nothing matches, or two inputs share a key (without ``skipped``).
    FileNotFoundError
        If a listed file does not exist.
    """
    if spec == "demo":
        if demo_truth is None:
            raise ValueError("inputs 'demo' needs the demo truth table")
        files = _from_demo(Path(demo_truth))
    elif any(c in spec for c in _GLOB_CHARS):
        files = []
        for name in sorted(glob.glob(spec, recursive=True)):
            why = _not_a_file(Path(name))
            if not why:
                files.append(Path(name))
            elif skipped is not None:
                skipped.append((str(Path(name).absolute()), why))
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
            if skipped is None:
                raise ValueError(f"inputs: two exposures share the name {key}: {table[key]} "
                                 f"and {full}")
            skipped.append((full, f"same file name as {table[key]}, which is used (two "
                                  "inputs of one name would be ambiguous)"))
            continue
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
        resolve_inputs(spec, skipped=[])
    except UnicodeDecodeError:
        raise ValueError(f"inputs: {spec!r} is not a text list of exposures (nor a .fits "
                         "file)") from None
    except (OSError, ValueError) as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        if isinstance(error, OSError) and error.filename:
            text = f"{error.filename}: {text}"
        text = " ".join(text.split())
        raise ValueError(text if text.startswith("inputs:") else f"inputs: {text}") from None


def write_input_table(table: dict[str, str], path: str | os.PathLike,
                      skipped: Sequence[tuple[str, str]] = ()) -> None:
    """Write ``{key: path}`` as a two-column TSV, atomically, then one row per skipped input:
    an empty key, its path and the reason (:func:`read_skipped`)."""
    from mvmflow.workflow import atomic_path

    rows = [f"{k}\t{v}\n" for k, v in table.items()]
    rows += [f"\t{f}\t{' '.join(r.split())}\n" for f, r in skipped]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(rows))


def _rows(path: str | os.PathLike) -> list[list[str]]:
    return [line.split("\t") for line in Path(path).read_text().splitlines() if line.strip()]


def read_skipped(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The skipped inputs, ``(path, reason)``, of a table written by
    :func:`write_input_table`."""
    return [(row[1], "\t".join(row[2:])) for row in _rows(path) if not row[0]]


def read_input_table(path: str | os.PathLike) -> dict[str, str]:
    """Read ``{key: path}`` from a table written by :func:`write_input_table`."""
    return {row[0]: row[1] for row in _rows(path) if row[0]}
