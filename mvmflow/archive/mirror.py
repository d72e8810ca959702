"""Filling the local mirror ahead of a run: ``mvmflow fetch`` (docs/archive.md, "Region
queries and the workflow").

On a machine with the network, ``mvmflow fetch --configfile run.yaml`` asks the archive for
the run's region (or reads a product table, or takes ``--ra --dec --radius``) and fetches
every file to fetch into the mirror (``<resources>/mast/``) with a bounded pool of
transfers; the answer of the query is kept there too. A workflow run of the same region
afterwards, even on a machine without the network, makes no request.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["fill_mirror", "add_fetch_arguments", "run_fetch"]


def fill_mirror(table, mirror: str | os.PathLike, url: str, *, workers: int = 4,
                retries: int = 4, backoff: float = 1.0, timeout: float = 60.0,
                log: logging.Logger | None = None) -> dict[str, str | None]:
    """Fetch every ``fetch`` row of a product table into ``mirror``.

    Returns
    -------
    dict
        ``{file name: None}`` for a file in the mirror (verified), ``{file name: message}``
        (one line naming the file and the reason) for one that could not be fetched.
    """
    from mvmflow.archive.download import Transfer, fetch_all
    from mvmflow.archive.service import file_url
    from mvmflow.archive.table import mirror_path, to_fetch

    transfers = [Transfer(file_url(url, r["dataURI"]), mirror_path(mirror, r["filename"]),
                          r["size"], r["checksum"]) for r in to_fetch(table)]
    outcome = fetch_all(transfers, workers=workers, retries=retries, backoff=backoff,
                        timeout=timeout, log=log)
    return {dest.name: (None if error is None else str(error))
            for dest, error in outcome.items()}


def add_fetch_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``mvmflow fetch``."""
    source = p.add_argument_group("what to fetch (one of)")
    source.add_argument("--configfile", action="append", default=None, metavar="FILE",
                        dest="configfiles",
                        help="a workflow config whose inputs is a region ({mast: ...}) or a "
                             "product table; later files override earlier ones")
    source.add_argument("--table", default=None, help="a product table (<outdir>/mast/"
                        "query.ecsv of a region run)")
    source.add_argument("--ra", default=None, help="right ascension (degrees, or 5h39m41s)")
    source.add_argument("--dec", default=None, help="declination (degrees, or -69d09m00s)")
    shape = source.add_mutually_exclusive_group()
    shape.add_argument("--radius", default=None,
                       help="cone radius: arcsec, or with a unit ('2 arcmin')")
    shape.add_argument("--size", nargs="+", default=None, metavar="W",
                       help="box width [height]: arcsec, or with a unit")
    source.add_argument("--skycell", default=None, help="a sky cell, e.g. skycell-p0081x14y14")
    p.add_argument("--instruments", nargs="+", default=None,
                   help="instrument_name values (default: ACS/WFC ACS/HRC ACS/SBC WFC3/UVIS "
                        "WFC3/IR)")
    p.add_argument("--filters", nargs="+", default=None, help="filters (default: all)")
    p.add_argument("--mirror", default=None, metavar="DIR",
                   help="the mirror (default: <resources>/mast of the config, else "
                        "resources/mast)")
    p.add_argument("--mast-url", default=None, metavar="URL",
                   help="the archive's base URL (default: env MVMFLOW_MAST_URL, config "
                        "archive.mast_url, https://mast.stsci.edu)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="transfers at the same time (default: config archive.transfers, 4)")
    p.add_argument("--requery", action="store_true",
                   help="ask the archive again instead of reusing the kept answer")


def _config(files) -> dict:
    import yaml

    from mvmflow.params import deep_merge

    config: dict = {}
    for path in files or ():
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from None
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: not a YAML mapping")
        config = deep_merge(config, loaded)
    return config


def _region_spec(args: argparse.Namespace) -> dict | None:
    spec: dict = {}
    if args.skycell:
        spec["skycell"] = args.skycell
    for key in ("ra", "dec", "radius"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.size:
        if len(args.size) > 2:
            raise ValueError("--size takes one value (a square) or two (width height)")
        spec["size"] = args.size if len(args.size) == 2 else args.size[0]
    if args.instruments:
        spec["instruments"] = args.instruments
    if args.filters:
        spec["filters"] = args.filters
    return spec or None


def _logger() -> logging.Logger:
    logger = logging.getLogger("mvmflow.archive")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("mvmflow fetch: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return logger


def run_fetch(args: argparse.Namespace) -> int:
    """``mvmflow fetch``: exit status 0 when every file to fetch is in the mirror, 1 when
    some could not be fetched (each named on stderr), 2 for a usage or query error."""
    from mvmflow.archive.download import verify
    from mvmflow.archive.query import QueryError, cached_query, parse_region
    from mvmflow.archive.service import mast_url
    from mvmflow.archive.table import mirror_path, read_table, to_fetch
    from mvmflow.inputs import is_archive_spec

    region_spec = _region_spec(args)
    sources = [s for s in (args.configfiles, args.table, region_spec) if s]
    if len(sources) != 1:
        raise ValueError("give one of --configfile, --table, or a region (--ra --dec "
                         "--radius|--size, or --skycell)")
    config = _config(args.configfiles)
    archive = config.get("archive") or {}
    if args.configfiles:
        spec = config.get("inputs")
        if not is_archive_spec(spec):
            raise ValueError(f"the config's inputs ({spec!r}) is neither a region "
                             "({mast: ...}) nor a product table (.ecsv)")
    else:
        spec = args.table or {"mast": region_spec}
    url = mast_url(args.mast_url, configured=archive.get("mast_url") or None)
    mirror = Path(args.mirror or Path(config.get("resources") or "resources") / "mast")
    workers = args.workers or int(archive.get("transfers") or 4)
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    log = _logger()
    if isinstance(spec, Mapping):
        region = parse_region(spec)
        try:
            table, kept = cached_query(region, url, mirror / "queries", requery=args.requery)
        except QueryError as exc:
            print(f"mvmflow fetch: {exc}", file=sys.stderr)
            return 2
        print(f"{region.describe()}: {len(table)} files "
              f"({'the answer kept from ' + str(table.meta.get('queried')) if kept else 'asked ' + url})",
              file=sys.stderr)
    else:
        table = read_table(spec)
    rows = to_fetch(table)
    present = sum(1 for r in rows
                  if verify(mirror_path(mirror, r["filename"]), r["size"], r["checksum"]) is None)
    outcome = fill_mirror(table, mirror, url, workers=workers,
                          retries=int(archive.get("retries", 4)),
                          backoff=float(archive.get("backoff", 1.0)),
                          timeout=float(archive.get("timeout", 60)), log=log)
    failed = {name: error for name, error in outcome.items() if error}
    statuses = [str(s).split(":")[0] for s in table["status"]]
    print(f"mvmflow fetch: {len(rows) - len(failed)} of {len(rows)} files in {mirror} "
          f"({present} already there, {len(rows) - len(failed) - present} fetched); "
          f"{statuses.count('proprietary')} proprietary and {statuses.count('skipped')} "
          f"skipped (not fetched); {len(failed)} failed", file=sys.stderr)
    for error in failed.values():
        print(f"mvmflow fetch: failed: {error}", file=sys.stderr)
    return 1 if failed else 0
