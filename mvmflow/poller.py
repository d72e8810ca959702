"""Poller files: the input lists of the HAP single-visit (SVM) and multi-visit (MVM) runs.

Writes and reads them exactly as drizzlepac 3.11.0 (``make_poller_files`` and
``poller_utils.build_poller_table``; ``spec/grid_and_names.md`` section 4).

Format
------
One line per exposure, comma-separated, no spaces, no header; lines joined by ``\\n`` and
**no trailing newline**.

- SVM, 8 columns: ``filename,PROPOSID,PPP,visit,EXPTIME,FILTER,DETECTOR,abspath``
- MVM, 10 columns: ``filename,PROPOSID,PPP,visit,EXPTIME,FILTER,DETECTOR,skycell,NEW|OLD,abspath``
- a 1-column list of file names is also read.

``PPP`` is characters 2-4 of the rootname token upper-cased (``ib2v01abq`` -> ``B2V``),
``visit`` characters 5-6 (``01``; the reference's LINENUM branch is dead code, see spec
4.1), ``EXPTIME`` is Python's ``str(float)`` (``602.937``, ``350.0``), ``FILTER`` the
upper-cased normalised filter (``F435W-POL0UV`` for ACS ``POL0UV;F435W``) and ``DETECTOR``
the upper-cased DETECTOR keyword. Example::

    ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,skycell-p0081x14y14,NEW,/data/ib2v01abq_flt.fits

Differences from the reference, by design
-----------------------------------------
- A bare file name that exists only under the search path (``$DATA_PATH``) is found; the
  reference never finds it (spec 7.17).
- Inputs that cannot be found are reported with a :class:`MissingInputWarning` (and in the
  log), never silently.
- A relative path with a directory is written as an absolute path (the reference writes it
  as given although the column is documented as absolute).
- ``EXPTIME`` is always ``str(float(...))``: an integer-typed card gives ``1000.0``, not
  ``1000``. Text read from an existing poller is kept verbatim.
- Reading is strict: a sky-cell name must match ``skycell-pPPPPxXXyYY`` exactly (the
  reference accepts trailing text), and a ``0``/``1`` (or anything but NEW/OLD) in column 9
  is a :class:`ValueError` naming the file, line and value (the reference crashes with an
  AttributeError, spec 7.10).
- Rows whose sky cell differs from the first row's are read as written; :func:`poller_skycell`
  warns about them instead of silently forcing them into the first sky cell (spec 7.6).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mvmflow import names

__all__ = [
    "KINDS",
    "STATUSES",
    "MissingInputWarning",
    "PollerRow",
    "add_poller_arguments",
    "format_poller",
    "locate_input",
    "make_poller",
    "parse_poller",
    "poller_skycell",
    "read_poller",
    "row_from_header",
    "row_from_record",
    "run_poller",
    "write_poller",
]

log = logging.getLogger(__name__)

KINDS = ("mvm", "svm")
"""Poller kinds: ``mvm`` (10 columns) and ``svm`` (8 columns)."""
STATUSES = ("NEW", "OLD")
"""Values of MVM column 9 (``skycell_new``)."""
_NCOLS = {"mvm": 10, "svm": 8}
_EXPOSURE_SUFFIXES = ("_flc.fits", "_flt.fits")


class MissingInputWarning(UserWarning):
    """An input named for a poller file could not be found; it is left out."""


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"poller kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return kind


def _check_status(value, where: str = "") -> str:
    text = str(value).strip()
    if text.upper() in STATUSES:
        return text.upper()
    hint = " (0/1 flags are not accepted)" if text in ("0", "1") else ""
    raise ValueError(
        f"{where}column 9 (skycell_new) is {text!r}: expected NEW or OLD, any case{hint}"
    )


def _exptime_text(value) -> str:
    """``str(float(value))``; text that is already a number is kept as written."""
    if isinstance(value, str):
        text = value.strip()
        try:
            float(text)
        except ValueError:
            raise ValueError(f"EXPTIME {value!r} is not a number") from None
        return text
    if isinstance(value, bool):
        raise ValueError(f"EXPTIME {value!r} is not a number")
    return str(float(value))


@dataclass(frozen=True)
class PollerRow:
    """One line of a poller file.

    Attributes
    ----------
    filename : str
        Column 1: the exposure's file name (for a 1-column list, the line as written).
    proposid, program_id, obset_id : str or None
        Columns 2-4: PROPOSID as text, ``PPP`` and the 2-character visit.
    exptime : str or None
        Column 5 as text (``str(float)`` when built from a number).
    filter, detector : str or None
        Columns 6-7, upper case (``F606W-POL60V``, ``WFC``).
    skycell, status : str or None
        MVM columns 8-9: sky-cell name and ``NEW``/``OLD`` (upper case).
    path : str or None
        Last column: the file's absolute path.
    """

    filename: str
    proposid: str | None = None
    program_id: str | None = None
    obset_id: str | None = None
    exptime: str | None = None
    filter: str | None = None
    detector: str | None = None
    skycell: str | None = None
    status: str | None = None
    path: str | None = None

    def __post_init__(self):
        if not isinstance(self.filename, str) or not self.filename or "," in self.filename:
            raise ValueError(f"invalid poller file name {self.filename!r}")
        if self.exptime is not None:
            object.__setattr__(self, "exptime", _exptime_text(self.exptime))
        if self.status is not None:
            object.__setattr__(self, "status", _check_status(self.status))
        if self.skycell is not None:
            names.parse_skycell(self.skycell)
        for key in ("proposid", "program_id", "obset_id", "filter", "detector", "path"):
            value = getattr(self, key)
            if value is not None and ("," in str(value) or "\n" in str(value)):
                raise ValueError(f"poller {key} {value!r} may not contain ',' or a newline")

    @property
    def kind(self) -> str | None:
        """``'mvm'`` (sky cell set), ``'svm'`` (full row, no sky cell) or None (file list)."""
        if self.skycell is not None:
            return "mvm"
        if self.path is not None and self.proposid is not None:
            return "svm"
        return None

    @property
    def exptime_value(self) -> float:
        """EXPTIME as a float (raises ValueError for a file-list row)."""
        if self.exptime is None:
            raise ValueError(f"row {self.filename!r} has no EXPTIME")
        return float(self.exptime)

    @property
    def is_new(self) -> bool:
        """True unless the row is marked OLD."""
        return self.status != "OLD"

    @property
    def filter_name(self) -> str:
        """The normalised lower-case filter name used in product names (``f606w-pol60v``)."""
        if self.filter is None:
            raise ValueError(f"row {self.filename!r} has no FILTER")
        return names.normalize_filter(self.filter)

    def columns(self, kind: str) -> list[str]:
        """The row's fields for a ``kind`` poller, in file order.

        Raises
        ------
        ValueError
            If a field needed by ``kind`` is missing.
        """
        _check_kind(kind)
        common = [self.filename, self.proposid, self.program_id, self.obset_id, self.exptime,
                  self.filter, self.detector]
        cols = common + ([self.skycell, self.status] if kind == "mvm" else []) + [self.path]
        missing = [i + 1 for i, v in enumerate(cols) if v is None]
        if missing:
            raise ValueError(
                f"row {self.filename!r} lacks column(s) {missing} of an {kind.upper()} poller"
            )
        return [str(c) for c in cols]

    def to_line(self, kind: str | None = None) -> str:
        """The poller line of this row (``kind`` defaults to :attr:`kind`)."""
        kind = kind or self.kind
        if kind is None:
            return self.filename
        return ",".join(self.columns(kind))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> PollerRow:
        return cls(**dict(data))


# ------------------------------------------------------------------------------------------
# building rows


def _card(header: Mapping, key: str, source: str):
    for k in (key, key.lower()):
        try:
            return header[k]
        except KeyError:
            continue
    raise ValueError(f"{source}: primary header has no {key} keyword")


def row_from_header(path: str | os.PathLike, header: Mapping, *, kind: str = "mvm",
                    skycell: str | None = None, status: str = "NEW") -> PollerRow:
    """Build the poller row of one exposure from its primary header.

    Parameters
    ----------
    path : str or os.PathLike
        The exposure file; column 1 is its base name, the last column its absolute path.
    header : Mapping
        The primary header (``astropy.io.fits.Header`` or a dict): PROPOSID, EXPTIME,
        DETECTOR, INSTRUME and the filter keywords (FILTER; FILTER1/2; FILTNAM1/2), and
        optionally ROOTNAME (the visit's source, as the reference; else the file name).
    kind : {'mvm', 'svm'}
    skycell : str, optional
        The sky-cell name, required for MVM.
    status : {'NEW', 'OLD'}
        MVM column 9.

    Returns
    -------
    PollerRow
    """
    _check_kind(kind)
    path = os.path.abspath(os.fspath(path))
    filename = os.path.basename(path)
    if kind == "mvm" and skycell is None:
        raise ValueError("an MVM poller needs a sky-cell name (skycell='skycell-pPPPPxXXyYY')")
    try:
        rootname = str(header.get("ROOTNAME") or header.get("rootname") or "").strip()
        visit = names.obset_id(rootname) if rootname else names.obset_id(filename)
    except ValueError:
        visit = names.obset_id(filename)
    try:
        filt = names.filter_from_header(header)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return PollerRow(
        filename=filename,
        proposid=str(_card(header, "PROPOSID", path)).strip(),
        program_id=names.program_id(filename),
        obset_id=visit,
        exptime=str(float(_card(header, "EXPTIME", path))),
        filter=filt.upper(),
        detector=str(_card(header, "DETECTOR", path)).strip().upper(),
        skycell=skycell if kind == "mvm" else None,
        status=status if kind == "mvm" else None,
        path=path,
    )


def row_from_record(record, *, kind: str = "mvm", skycell: str | None = None,
                    status: str = "NEW") -> PollerRow:
    """Build the poller row of an :class:`~mvmflow.records.ExposureRecord` (no file I/O).

    The record's ``filter`` may be raw (``F606W;POL60V``) or normalised (``f606w-pol60v``).
    """
    _check_kind(kind)
    if kind == "mvm" and skycell is None:
        raise ValueError("an MVM poller needs a sky-cell name (skycell='skycell-pPPPPxXXyYY')")
    path = os.path.abspath(record.file) if record.file else None
    filename = record.filename or os.path.basename(record.file)
    root = record.rootname or filename
    return PollerRow(
        filename=filename,
        proposid=str(record.proposid).strip(),
        program_id=names.program_id(root),
        obset_id=names.obset_id(root),
        exptime=str(float(record.exptime)),
        filter=names.poller_filter(record.filter),
        detector=str(record.detector).strip().upper(),
        skycell=skycell if kind == "mvm" else None,
        status=status if kind == "mvm" else None,
        path=path,
    )


def _as_dirs(search_path) -> list[Path]:
    if search_path is None:
        return []
    if isinstance(search_path, (str, os.PathLike)):
        parts = os.fspath(search_path).split(os.pathsep)
    else:
        parts = [os.fspath(p) for p in search_path]
    return [Path(p) for p in parts if p]


def _candidates(directory: Path, filename: str, root: str) -> list[Path]:
    """``<dir>/<file>`` then the archive layout ``<dir>/<root[:4]>/<root>/<file>``."""
    return [directory / filename, directory / root[:4] / root / filename]


def locate_input(item: str | os.PathLike, search_path=None) -> Path | None:
    """Find the exposure file named by a poller input.

    Parameters
    ----------
    item : str or os.PathLike
        A file name (``ib2v01abq_flt.fits``), a path with a directory (used as given), or a
        9-character rootname (``ib2v01abq``: ``<root>_flc.fits`` is preferred to
        ``<root>_flt.fits``).
    search_path : str, os.PathLike or sequence, optional
        Directories searched after the working directory (an ``os.pathsep``-separated
        string is split), each directly and in the archive layout ``<dir>/ib2v/ib2v01abq/``.

    Returns
    -------
    pathlib.Path or None
        The absolute path, or None if it is nowhere.
    """
    text = os.fspath(item).strip()
    if not text:
        return None
    if os.sep in text or (os.altsep and os.altsep in text):
        path = Path(text)
        return Path(os.path.abspath(path)) if path.is_file() else None
    if text.endswith(".fits"):
        try:
            root = names.rootname_token(text)
        except ValueError:
            root = text[:-5]
        filenames = [text]
    else:
        root = text.lower()
        filenames = [root + suffix for suffix in _EXPOSURE_SUFFIXES]
    dirs = [Path.cwd()] + _as_dirs(search_path)
    for filename in filenames:  # an FLC anywhere wins over an FLT
        for directory in dirs:
            for path in _candidates(directory, filename, root):
                if path.is_file():
                    return Path(os.path.abspath(path))
    return None


def make_poller(inputs: Iterable[str | os.PathLike], kind: str = "mvm",
                skycell: str | None = None, status: str = "NEW",
                search_path=None) -> list[PollerRow]:
    """Build poller rows from exposure files or rootnames, reading their primary headers.

    Parameters
    ----------
    inputs : iterable of str or os.PathLike
        File names, paths or 9-character rootnames (see :func:`locate_input`).
    kind : {'mvm', 'svm'}
    skycell : str, optional
        Sky-cell name; required for ``mvm``, refused for ``svm``.
    status : {'NEW', 'OLD'}
        Column 9 of every row (MVM).
    search_path : optional
        Directories searched after the working directory (see :func:`locate_input`).

    Returns
    -------
    list of PollerRow
        In input order. Inputs that cannot be found are left out with a
        :class:`MissingInputWarning`.
    """
    from astropy.io import fits

    _check_kind(kind)
    if kind == "mvm":
        if skycell is None:
            raise ValueError("an MVM poller needs a sky-cell name (skycell='skycell-pPPPPxXXyYY')")
        names.parse_skycell(skycell)
        status = _check_status(status)
    elif skycell is not None:
        raise ValueError("an SVM poller has no sky-cell column; do not pass skycell")
    rows = []
    for item in inputs:
        path = locate_input(item, search_path)
        if path is None:
            where = ", ".join(["the working directory"] + [str(d) for d in _as_dirs(search_path)])
            msg = f"poller input {os.fspath(item)!r} not found (searched {where}); left out"
            log.warning(msg)
            warnings.warn(msg, MissingInputWarning, stacklevel=2)
            continue
        header = fits.getheader(path, 0)
        rows.append(row_from_header(path, header, kind=kind, skycell=skycell, status=status))
    return rows


# ------------------------------------------------------------------------------------------
# text


def format_poller(rows: Iterable[PollerRow], kind: str | None = None) -> str:
    """The poller text: one line per row joined by ``\\n``, no trailing newline.

    Parameters
    ----------
    rows : iterable of PollerRow
    kind : {'mvm', 'svm'}, optional
        Column layout; by default each row's own :attr:`PollerRow.kind` (all must agree).
    """
    rows = list(rows)
    if kind is None:
        kinds = {r.kind for r in rows}
        if len(kinds) > 1:
            raise ValueError(f"rows of different poller kinds: {sorted(map(str, kinds))}")
        kind = kinds.pop() if kinds else None
    else:
        _check_kind(kind)
    return "\n".join(r.to_line(kind) for r in rows)


def write_poller(rows: Iterable[PollerRow], path: str | os.PathLike,
                 kind: str | None = None) -> None:
    """Write ``rows`` to ``path`` atomically (see :func:`format_poller`)."""
    from mvmflow.workflow import atomic_path

    text = format_poller(rows, kind)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _parse_line(fields: list[str], where: str) -> PollerRow:
    n = len(fields)
    if n == 1:
        return PollerRow(filename=fields[0])
    if n not in (8, 10):
        raise ValueError(f"{where}has {n} columns: expected 10 (MVM), 8 (SVM) or 1 (file list)")
    empty = [i + 1 for i, f in enumerate(fields) if not f]
    if empty:
        raise ValueError(f"{where}column(s) {empty} are empty")
    kw = dict(zip(("filename", "proposid", "program_id", "obset_id", "exptime", "filter",
                   "detector"), fields[:7], strict=True))
    kw["path"] = fields[-1]
    try:
        float(kw["exptime"])
    except ValueError:
        raise ValueError(f"{where}column 5 (EXPTIME) is {kw['exptime']!r}: not a number") from None
    if n == 10:
        try:
            names.parse_skycell(fields[7])
        except ValueError as err:
            raise ValueError(f"{where}column 8: {err}") from None
        kw["skycell"] = fields[7]
        kw["status"] = _check_status(fields[8], where)
    return PollerRow(**kw)


def parse_poller(text: str, source: str = "<poller>") -> list[PollerRow]:
    """Parse poller text (see :func:`read_poller`); ``source`` names it in errors."""
    rows, ncols = [], None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}, line {lineno}: "
        fields = [f.strip() for f in line.split(",")]
        if ncols is not None and len(fields) != ncols:
            raise ValueError(f"{where}has {len(fields)} columns but earlier lines have {ncols}")
        ncols = len(fields)
        rows.append(_parse_line(fields, where))
    return rows


def read_poller(path: str | os.PathLike) -> list[PollerRow]:
    """Read a poller file: 10 columns (MVM), 8 (SVM) or 1 (a list of file names).

    Blank lines (and a trailing newline) are ignored; fields are stripped of blanks.

    Returns
    -------
    list of PollerRow
        In file order; an empty file gives an empty list.

    Raises
    ------
    ValueError
        Naming the file and line: another column count, lines with different counts, an
        empty field, a non-numeric EXPTIME, a malformed sky-cell name, or a column 9 other
        than NEW/OLD (any case), including the 0/1 flags.
    """
    path = Path(path)
    return parse_poller(path.read_text(), source=str(path))


def poller_skycell(rows: Sequence[PollerRow]) -> str:
    """The sky cell of an MVM poller: the first row's, as the reference.

    Warns when later rows name another sky cell (the reference silently forces them into
    the first row's sky cell).
    """
    cells = [r.skycell for r in rows if r.skycell is not None]
    if not cells:
        raise ValueError("the poller has no sky-cell column (not an MVM poller)")
    others = sorted(set(cells) - {cells[0]})
    if others:
        msg = (f"poller rows name several sky cells; the first row's {cells[0]} governs "
               f"and {', '.join(others)} are ignored (as the reference)")
        log.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return cells[0]


# ------------------------------------------------------------------------------------------
# command line


def add_poller_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``mvmflow poller`` options to ``parser``."""
    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help="exposure files (_flt.fits/_flc.fits) or 9-character rootnames")
    parser.add_argument("--skycell", help="sky-cell name, e.g. skycell-p0081x14y14 (MVM)")
    parser.add_argument("--svm", action="store_true",
                        help="write an 8-column SVM poller instead of a 10-column MVM one")
    parser.add_argument("--old", nargs="+", default=[], metavar="FILE",
                        help="further inputs marked OLD (already processed; MVM only)")
    parser.add_argument("--search-path", action="append", default=None, metavar="DIR",
                        help="directory searched after the working directory, directly and "
                             "as <DIR>/<root[:4]>/<root>/ (repeatable; default: $DATA_PATH)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) if any input is not found")
    parser.add_argument("-o", "--output", default=None,
                        help="output poller file ('-' for stdout; default for MVM: "
                             "<skycell>_input.out)")


def run_poller(args: argparse.Namespace) -> int:
    """Run ``mvmflow poller``; return the exit status.

    Writes the poller, prints a summary to stderr, and returns 1 if no input was found (or,
    with ``--strict``, if any input was missing).
    """
    kind = "svm" if args.svm else "mvm"
    if kind == "mvm" and not args.skycell:
        raise ValueError("an MVM poller needs --skycell NAME (or use --svm)")
    if kind == "svm" and (args.skycell or args.old):
        raise ValueError("--skycell and --old only apply to MVM pollers, not with --svm")
    output = args.output
    if output is None:
        if kind == "svm":
            raise ValueError("give the SVM poller's name with -o OUT")
        output = names.poller_filename(args.skycell)
    search_path = args.search_path
    if search_path is None and os.environ.get("DATA_PATH"):
        search_path = os.environ["DATA_PATH"]
    requested = len(args.inputs) + len(args.old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingInputWarning)
        rows = make_poller(args.inputs, kind, args.skycell, "NEW", search_path)
        if args.old:
            rows += make_poller(args.old, kind, args.skycell, "OLD", search_path)
    for w in caught:
        print(f"mvmflow poller: warning: {w.message}", file=sys.stderr)
    if not rows:
        print("mvmflow poller: error: none of the inputs was found", file=sys.stderr)
        return 1
    if output == "-":
        sys.stdout.write(format_poller(rows, kind))
    else:
        write_poller(rows, output, kind)
        print(f"wrote {kind.upper()} poller {output} ({len(rows)} of {requested} inputs)",
              file=sys.stderr)
    return 1 if args.strict and len(rows) < requested else 0
