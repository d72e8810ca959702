"""The WFC3 and WFPC2 PSF databases: sources measured by hst1pass, and cutouts of them made by
MAST (docs/archive.md, "HAP products and PSF databases").

- :func:`query`: the notebook's service request (``{"columns": ..., "filters": [{"paramName":
  ..., "values": [...]}]}``) to one of :data:`SERVICES`, through astroquery's
  ``Mast.service_request`` on a client pointed at the configured server;
- :func:`data_uri`: the dataURI of one source's cutout, as the notebook builds it
  (``mast:<WFC3|WFPC2>PSF/url/cgi-bin/fitscut.cgi?red=<rootname>_<suffix>[<ext>]&size=<n>&x=<x>&y=<y>&format=fits/<file>``);
- :func:`download`: the cutouts, by single requests, bundles or a bounded pool of parallel
  requests, through :mod:`mvmflow.archive.download` (temporary names, FITS structure
  checked, retries, safe bundle extraction); a cutout already in the destination is never
  requested again, so an interrupted download resumes where it stopped.

Differences from the notebook (``mast_api_psf.py``)
---------------------------------------------------
- A user's ``filter`` for WFPC2 becomes ``filter_1`` in the filters and the columns (the
  notebook changes only a filter whose *value* is the string ``"filter"``).
- Subarray sources (``subarray != 0``) are counted and left out before any URI is made;
  UVIS rows whose chip is neither 1 nor 2 are refused rather than given no extension.
- Bundles are checked (HTTP status, tar structure) and extracted member by member with no
  absolute path, ``..`` or link; the notebook writes any answer to disk and extracts it
  wholesale. The parallel pool is threads, interruptible with Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from mvmflow.archive import service
from mvmflow.archive.hap import ArchiveError, _request_error, portal_client
from mvmflow.workflow import atomic_path

__all__ = ["SERVICES", "SUFFIXES", "DEFAULT_SIZES", "METHODS", "detector_name", "filter_list",
           "column_list", "request_params", "query", "write_table", "read_table", "data_uri",
           "cutout_name", "data_uris", "subarray_count", "download", "parse_filter"]

log = logging.getLogger(__name__)

#: The MAST catalogue service of each detector's database.
SERVICES = {"UVIS": "Mast.Catalogs.Filtered.Wfc3Psf.Uvis",
            "IR": "Mast.Catalogs.Filtered.Wfc3Psf.Ir",
            "WFPC2": "Mast.Catalogs.Filtered.Wfpc2Psf.Uvis"}

#: The file suffixes whose cutouts each database serves.
SUFFIXES = {"UVIS": ("raw", "flt", "flc"), "IR": ("raw", "flt"), "WFPC2": ("d0m", "c0m")}

#: Cutout sides in pixels: (unsaturated sources, qfit > 0; saturated ones).
DEFAULT_SIZES = (51, 101)

#: Download methods of :func:`download`.
METHODS = ("single", "bundle", "pool")

#: dataURIs per bundle request (MAST loads at most 50,000 per request).
BUNDLE_SIZE = 5000


def detector_name(detector: str) -> str:
    """``UVIS``, ``IR`` or ``WFPC2`` from any case; ValueError otherwise."""
    name = str(detector).strip().upper()
    if name not in SERVICES:
        raise ValueError(f"unknown PSF database detector {detector!r}: use one of "
                         f"{', '.join(SERVICES)}")
    return name


def _column(detector: str, name: str) -> str:
    return "filter_1" if detector == "WFPC2" and name == "filter" else name


def _plain(value):
    """A JSON-ready scalar (numpy scalars to Python)."""
    return value.item() if isinstance(value, np.generic) else value


def filter_list(detector: str, filters: Mapping | None) -> list[dict]:
    """The service's filter list from ``{column: condition}``.

    A condition is a value, a list of values (any of them matches) or a range
    ``{"min": a, "max": b}``; they become ``{"paramName": column, "values": [v, ...]}`` and
    ``{"paramName": column, "values": [{"min": a, "max": b}]}``, as in the notebook. For
    WFPC2, ``filter`` is the database's ``filter_1``.
    """
    detector = detector_name(detector)
    out = []
    for name, cond in (filters or {}).items():
        column = _column(detector, str(name))
        if isinstance(cond, Mapping):
            if set(cond) != {"min", "max"}:
                raise ValueError(f"PSF filter {name}: a range is {{min: A, max: B}}, not {cond!r}")
            values = [{"min": _plain(cond["min"]), "max": _plain(cond["max"])}]
        elif isinstance(cond, str) or not isinstance(cond, Iterable):
            values = [_plain(cond)]
        else:
            values = [_plain(v) for v in cond]
            if not values:
                raise ValueError(f"PSF filter {name}: no value given")
        out.append({"paramName": column, "values": values})
    return out


def column_list(detector: str, columns: str | Sequence[str] = "*") -> str:
    """``"*"`` or ``"a,b,c"`` (``filter`` -> ``filter_1`` for WFPC2)."""
    detector = detector_name(detector)
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    columns = [_column(detector, c) for c in columns]
    if not columns or "*" in columns:
        return "*"
    return ",".join(columns)


def request_params(detector: str, filters: Mapping | None = None,
                   columns: str | Sequence[str] = "*") -> dict:
    """The ``params`` of the service request: ``{"columns": ..., "filters": [...]}``."""
    return {"columns": column_list(detector, columns), "filters": filter_list(detector, filters)}


def parse_filter(text: str) -> tuple[str, object]:
    """``NAME=V1[,V2...]`` (values) or ``NAME=MIN:MAX`` (a range, numbers) from the command line."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise ValueError(f"--filter {text!r}: use NAME=VALUE[,VALUE...] or NAME=MIN:MAX")
    if ":" in value:
        low, _, high = value.partition(":")
        try:
            return name, {"min": _number(low), "max": _number(high)}
        except ValueError:
            raise ValueError(f"--filter {text!r}: a range MIN:MAX needs two numbers") from None
    return name, [v.strip() for v in value.split(",") if v.strip()]


def _number(text: str):
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


def query(detector: str, filters: Mapping | None = None, columns: str | Sequence[str] = "*",
          url: str | None = None) -> Table:
    """Query a PSF database.

    Parameters
    ----------
    detector : str
        ``UVIS``, ``IR`` or ``WFPC2`` (:data:`SERVICES`).
    filters : mapping, optional
        ``{column: value | [values] | {"min": a, "max": b}}`` (:func:`filter_list`).
    columns : str or list of str
        ``"*"`` (all) or the columns wanted.
    url : str, optional
        The archive (:func:`mvmflow.archive.service.mast_url`).

    Returns
    -------
    astropy.table.Table
        The sources; ``meta`` holds ``detector``, ``service`` and the request ``params``, so
        that :func:`download` and a later reader know what the table is.

    Raises
    ------
    ArchiveError
        When the request fails (naming the service and URL).
    """
    from astroquery.exceptions import NoResultsWarning
    from astroquery.mast import MastClass

    detector = detector_name(detector)
    params = request_params(detector, filters, columns)
    client = portal_client(MastClass, url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            table = client.service_request(SERVICES[detector], params)
    except Exception as exc:  # noqa: BLE001 - requests, astroquery and JSON errors alike
        raise _request_error(exc, f"PSF database query {SERVICES[detector]}") from None
    table.meta.update(detector=detector, service=SERVICES[detector], params=params)
    log.info("%d sources from %s", len(table), SERVICES[detector])
    return table


def write_table(table: Table, path: str | os.PathLike) -> Path:
    """Write a source table as ECSV, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def read_table(path: str | os.PathLike) -> Table:
    """Read a source table written by :func:`write_table`; :class:`ArchiveError` names the file."""
    path = Path(path)
    try:
        return Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - astropy's readers raise many kinds
        raise ArchiveError(f"{path}: not an ECSV table: {' '.join(str(exc).split())}") from None


def _sizes(size) -> tuple[int, int]:
    if np.isscalar(size):
        size = (size, size)
    unsat, sat = (int(s) for s in size)
    if unsat <= 0 or sat <= 0:
        raise ValueError(f"cutout sizes must be positive, not {size!r}")
    return unsat, sat


def _value(row, name: str):
    value = row[name]
    if np.ma.is_masked(value):
        raise ValueError(f"source {row['id'] if 'id' in row.colnames else '?'}: no {name}")
    return value


def data_uri(row, detector: str, suffix: str, size=DEFAULT_SIZES) -> str:
    """The dataURI of one source's cutout, as the notebook builds it.

    ``mast:<WFC3|WFPC2>PSF/url/cgi-bin/fitscut.cgi?red=<rootname>_<suffix>[<ext>]&size=<n>&x=<x>&y=<y>&format=fits/<rootname>_<id>_<filter>_<suffix>_cutout.fits``
    with ``x, y = psf_x_center - 1, psf_y_center - 1``; UVIS chip 2 is extension 1, chip 1
    extension 4 with ``y -= 2048`` when ``y >= 2051``; IR and WFPC2 use ``ext = chip``;
    ``n`` is ``size[0]`` (51) when ``qfit > 0``, else ``size[1]`` (101).

    Parameters
    ----------
    row : astropy.table.Row or mapping
        A source of the database (``id``, ``rootname``, ``filter`` or WFPC2's ``filter_1``,
        ``psf_x_center``, ``psf_y_center``, ``chip``, ``qfit``, ``subarray``).
    detector : str
        ``UVIS``, ``IR`` or ``WFPC2``.
    suffix : str
        ``raw``, ``flt``, ``flc`` (UVIS only); WFPC2 ``d0m``, ``c0m``.
    size : int or (int, int)
        Cutout side for unsaturated and saturated sources.

    Raises
    ------
    ValueError
        For a subarray source, a suffix the detector has not, a UVIS chip other than 1 or 2.
    """
    detector = detector_name(detector)
    if suffix not in SUFFIXES[detector]:
        raise ValueError(f"suffix {suffix!r} is not one of {detector}'s: "
                         f"{', '.join(SUFFIXES[detector])}")
    unsat, sat = _sizes(size)
    iden = _value(row, "id")
    if int(_value(row, "subarray")) != 0:
        raise ValueError(f"source {iden} is on a subarray: the database has no cutout of it")
    root = _value(row, "rootname")
    filt = _value(row, "filter_1" if detector == "WFPC2" else "filter")
    x = _value(row, "psf_x_center") - 1
    y = _value(row, "psf_y_center") - 1
    chip = _value(row, "chip")
    n = unsat if _value(row, "qfit") > 0 else sat
    if detector == "UVIS":
        if str(chip).strip() == "2":
            ext = 1
        elif str(chip).strip() == "1":
            ext = 4
            if y >= 2051:
                y -= 2048
        else:
            raise ValueError(f"source {iden}: UVIS chip {chip!r} is neither 1 nor 2")
    else:
        ext = chip
    instrument = "WFPC2" if detector == "WFPC2" else "WFC3"
    return (f"mast:{instrument}PSF/url/cgi-bin/fitscut.cgi?red={root}_{suffix}[{ext}]"
            f"&size={n}&x={x}&y={y}&format=fits/{root}_{iden}_{filt}_{suffix}_cutout.fits")


def cutout_name(uri: str) -> str:
    """The file name a dataURI gives its cutout (its last ``/`` component)."""
    name = uri.rsplit("/", 1)[-1]
    if not name or name in (".", "..") or "\\" in name:
        raise ValueError(f"dataURI {uri!r} names no file")
    return name


def subarray_count(table: Table) -> int:
    """How many sources of ``table`` are on a subarray (``subarray != 0``)."""
    if "subarray" not in table.colnames or not len(table):
        return 0
    return int(np.count_nonzero(np.asarray(table["subarray"]) != 0))


def _detector_of(table: Table, detector: str | None) -> str:
    if detector is not None:
        return detector_name(detector)
    if "detector" in table.meta:
        return detector_name(table.meta["detector"])
    raise ValueError("the table does not say which database it is from (no 'detector' in "
                     "its metadata): give the detector")


def data_uris(table: Table, suffixes: Iterable[str], size=DEFAULT_SIZES,
              detector: str | None = None) -> tuple[list[str], int]:
    """The dataURIs of every full-frame source and suffix, and the number of subarray sources.

    The order is the table's, each source's suffixes in the given order.
    """
    detector = _detector_of(table, detector)
    suffixes = list(suffixes)
    for suffix in suffixes:
        if suffix not in SUFFIXES[detector]:
            raise ValueError(f"suffix {suffix!r} is not one of {detector}'s: "
                             f"{', '.join(SUFFIXES[detector])}")
    n_sub = subarray_count(table)
    uris = [data_uri(row, detector, suffix, size) for row in table
            if int(row["subarray"]) == 0 for suffix in suffixes]
    return uris, n_sub


def download(table: Table | str | os.PathLike, suffixes: Iterable[str],
             sizes=DEFAULT_SIZES, dest_dir: str | os.PathLike = ".", method: str = "single",
             workers: int = 4, url: str | None = None, detector: str | None = None,
             retries: int = 4, timeout: float = 60.0) -> list[Path]:
    """Download the cutouts of a source table into ``dest_dir``, named as the database names
    them (``<rootname>_<id>_<filter>_<suffix>_cutout.fits``).

    A cutout already in ``dest_dir`` that is a complete FITS file is not requested again;
    so a second call makes no request, and an interrupted one resumes.

    Parameters
    ----------
    table : Table or path
        Sources from :func:`query` (or its ECSV file).
    suffixes : iterable of str
        File suffixes (:data:`SUFFIXES`).
    sizes : int or (int, int)
        Cutout sides for unsaturated and saturated sources (default 51, 101).
    dest_dir : path
        Where the cutouts go.
    method : str
        ``single`` (one request at a time), ``pool`` (``workers`` requests at a time) or
        ``bundle`` (``tar.gz`` bundles of up to :data:`BUNDLE_SIZE` cutouts, extracted
        safely).
    workers : int
        Parallel requests of the ``pool`` method.
    url : str, optional
        The archive (:func:`mvmflow.archive.service.mast_url`).
    detector : str, optional
        The database; default the table's ``meta["detector"]``.
    retries, timeout
        Per file (or bundle), as :func:`mvmflow.archive.download.fetch`.

    Returns
    -------
    list of Path
        Every cutout now in ``dest_dir``, in table order.

    Raises
    ------
    ArchiveError
        After every cutout was tried, when some could not be downloaded (``failed`` maps
        them to their one-line errors, ``done`` lists the files present); at once for a bad
        bundle (an unsafe member is named).
    """
    from mvmflow.archive.download import (
        DownloadError,
        Transfer,
        fetch_all,
        fetch_bundle,
        verify,
    )

    if method not in METHODS:
        raise ValueError(f"unknown download method {method!r}: use one of {', '.join(METHODS)}")
    if not isinstance(table, Table):
        table = read_table(table)
    uris, n_sub = data_uris(table, suffixes, sizes, detector)
    if n_sub:
        log.info("%d subarray source%s not requested (the database has cutouts of full-frame "
                 "sources only)", n_sub, "" if n_sub == 1 else "s")
    base = service.mast_url(url)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    wanted: dict[Path, str] = {}
    for uri in uris:
        wanted.setdefault(dest_dir / cutout_name(uri), uri)
    missing = {p: u for p, u in wanted.items() if verify(p) is not None}
    log.info("%d cutouts: %d already here, %d to fetch (%s)", len(wanted),
             len(wanted) - len(missing), len(missing), method)
    failed: dict[Path, str] = {}
    if missing and method in ("single", "pool"):
        transfers = [Transfer(service.file_url(base, u), p) for p, u in missing.items()]
        results = fetch_all(transfers, workers=1 if method == "single" else workers,
                            retries=retries, timeout=timeout, log=log)
        failed = {p: str(e) for p, e in results.items() if e is not None}
    elif missing:
        items = list(missing.items())
        for start in range(0, len(items), BUNDLE_SIZE):
            chunk = items[start:start + BUNDLE_SIZE]
            staging = Path(tempfile.mkdtemp(prefix=".mvmflow-bundle-", dir=dest_dir))
            try:
                try:
                    got = fetch_bundle(service.bundle_url(base), [u for _, u in chunk],
                                       staging, retries=retries)
                except DownloadError as exc:
                    raise ArchiveError(f"{dest_dir}: {exc}") from None
                by_name = {p.name: p for p in got}
                for path, _ in chunk:
                    member = by_name.get(path.name)
                    problem = "not in the bundle" if member is None else verify(member)
                    if problem is None:
                        os.replace(member, path)
                    else:
                        failed[path] = f"{path.name}: {problem} ({service.bundle_url(base)})"
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            log.info("bundles: %d of %d cutouts", min(start + BUNDLE_SIZE, len(items)),
                     len(items))
    done = [p for p in wanted if p not in failed]
    if failed:
        error = ArchiveError(f"{len(failed)} of {len(wanted)} cutouts not downloaded: "
                             + "; ".join(failed.values()))
        error.failed, error.done = failed, done
        raise error
    return done
