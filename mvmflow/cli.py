"""The ``mvmflow`` command line.

Subcommands::

    mvmflow which-skycell RA DEC [--frame F]
                                          sky cells containing a position, one per line
    mvmflow skycell NAME [--scale coarse]  the WCS of a sky cell, as FITS header cards
    mvmflow simulate --preset NAME --out DIR [--seed N]
                                          write a simulated data set with its truth
    mvmflow poller FILES... --skycell NAME -o OUT
                                          write an MVM (or --svm) poller file
    mvmflow params [--configfile FILE ...] -o OUT
                                          write a run's fully resolved parameters
    mvmflow cut FILES... --ra RA --dec DEC --size W [H] [-o DIR]
                                          cutouts of layer products at a position
    mvmflow combine CUTOUTS... [-o DIR] [--method weighted|mean]
                                          combine cutouts of neighbouring sky cells
    mvmflow mosaic FILES... [--prefix P] [--tile-size N] [--outdir DIR] [-- SNAKEMAKE...]
                                          run the workflow with a custom mosaic of FILES
    mvmflow query-products --ra RA --dec DEC --size W [H] [-o DIR]
                                          the archive's MVM products in a box (ECSV table)
    mvmflow retrieve TABLE [-o DIR] [--clobber]
                                          download the products of such a table
    mvmflow archive-cutouts --ra RA --dec DEC --size W [H] [-o DIR]
                                          cutouts of the archive's MVM layers (MAST's Hapcut)
    mvmflow psf query --detector UVIS|IR|WFPC2 [--filter NAME=V|NAME=MIN:MAX ...] -o TABLE
    mvmflow psf download TABLE --suffix flt,flc [--size 51,101] [--method single|bundle|pool]
                                          the WFC3/WFPC2 PSF databases and their cutouts
    mvmflow fetch [--configfile FILE | --table TABLE | --ra RA --dec DEC --radius R]
                                          fill the local mirror from MAST ahead of a run
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence

#: Frames ``which-skycell --frame`` accepts (astropy names) and their coordinate names.
FRAMES = {"icrs": ("RA", "Dec"), "fk5": ("RA", "Dec"), "fk4": ("RA", "Dec"),
          "galactic": ("l", "b")}

#: A token starting like a negative number (``-69.15``, ``-69:09:00``, ``-69d09m00s``) is a
#: value, not an option: argparse only knows plain negative numbers.
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def _angle(text: str, unit, what: str) -> float:
    """``text`` in degrees: a plain number is degrees, anything else is read by astropy's
    ``Angle`` with ``unit`` as the default (units written in the text win)."""
    import warnings

    from astropy.coordinates import Angle

    try:
        value = float(text)
    except ValueError:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. IllegalHourWarning: the range check says it
                value = float(Angle(text.strip(), unit=unit).degree)
        except Exception as exc:  # noqa: BLE001 - astropy raises ValueError and its own errors
            raise ValueError(f"cannot read {what} {text!r}: {exc}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not a finite number")
    return value


def sky_position(ra: str, dec: str, frame: str = "icrs") -> tuple[float, float]:
    """ICRS (RA, Dec) in degrees of a position given as text, as ``SkyCoord`` reads it.

    A plain number is degrees (``84.92``, ``-69.15``). Other text is read by astropy's
    ``Angle``: RA with hours as the default unit (``5h39m41s``, ``05:39:41.0``,
    ``05 39 41``, as ``SkyCoord(..., unit=(hourangle, deg))``), Dec with degrees
    (``-69d09m00s``, ``-69:09:00``); a unit written in the text wins (``84.92deg``,
    ``84d55m12s``, ``1.48rad``). The values are checked before any wrapping: RA (or l)
    in [0, 360) degrees, i.e. [0h, 24h), Dec (or b) in [-90, 90]. ``frame`` is one of
    :data:`FRAMES`; the position is converted to ICRS.

    Raises
    ------
    ValueError
        Naming the value that cannot be read or is out of range.
    """
    from astropy import units as u

    if frame not in FRAMES:
        raise ValueError(f"unknown frame {frame!r}: use one of {', '.join(FRAMES)}")
    lon_name, lat_name = FRAMES[frame]
    lon = _angle(ra, u.hourangle, lon_name)
    lat = _angle(dec, u.deg, lat_name)
    if not 0.0 <= lon < 360.0 - 1e-9:  # 24:00:00 reads as 359.99999999999994
        shown = "" if _is_number(ra) else f" (= {lon:.9g} deg)"
        raise ValueError(f"{lon_name} {ra}{shown} is outside [0, 360) degrees")
    if not -90.0 <= lat <= 90.0:
        shown = "" if _is_number(dec) else f" (= {lat:.9g} deg)"
        raise ValueError(f"{lat_name} {dec}{shown} is outside [-90, 90] degrees")
    if frame == "icrs":
        return lon, lat
    from astropy.coordinates import SkyCoord

    icrs = SkyCoord(lon * u.deg, lat * u.deg, frame=frame).icrs
    return float(icrs.ra.deg), float(icrs.dec.deg)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cmd_which_skycell(args: argparse.Namespace) -> int:
    from mvmflow.grid import sky_cells_at

    ra, dec = sky_position(args.ra, args.dec, args.frame)
    names = sky_cells_at(ra, dec)
    for name in names:
        print(name)
    if not names:
        print(f"no sky cell contains ICRS ({ra}, {dec})", file=sys.stderr)
        return 1
    return 0


def _cmd_skycell(args: argparse.Namespace) -> int:
    from mvmflow.grid import SkyCell

    cell = SkyCell.from_name(args.name, scale=args.scale)
    header = cell.frame.header()
    header["SCELLID"] = (cell.scellid, "sky cell identifier")
    print(header.tostring(sep="\n", padding=False, endcard=False).rstrip())
    return 0


def _add_simulate(sub) -> None:
    try:  # the simulator may extend its own options
        from mvmflow.simulate.cli import add_simulate_arguments, run_simulate
    except ImportError:  # pragma: no cover - simulator without a cli module
        add_simulate_arguments = run_simulate = None
    p = sub.add_parser("simulate", help="write a simulated HST data set with its truth")
    if add_simulate_arguments is not None:
        add_simulate_arguments(p)
        p.set_defaults(func=run_simulate)
        return
    p.add_argument("--preset", required=True, help="preset name, e.g. demo or tiny")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: preset's)")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:  # pragma: no cover - fallback
    from mvmflow.simulate import simulate

    result = simulate(args.preset, args.out, seed=args.seed)
    print(f"wrote {len(result.exposures)} exposures to {args.out}")
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    import yaml

    from mvmflow.params import deep_merge, dump_resolved, load_defaults
    from mvmflow.switches import resolve_switches

    config: dict = {}
    for path in args.configfile:
        try:
            loaded = yaml.safe_load(open(path)) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from exc
        config = deep_merge(config, loaded)
    config.update(resolve_switches(config))
    dump_resolved(config, load_defaults(args.detectors), args.output)
    print(f"wrote the resolved parameters to {args.output}; "
          f"use them with: snakemake --configfile {args.output}")
    return 0


def _cmd_cut(args: argparse.Namespace) -> int:
    from mvmflow.cutouts import make_cutouts

    written, failed = make_cutouts(args.files, args.ra, args.dec, args.size, args.out_dir)
    for path in written:
        print(path)
    for path, reason in failed:
        print(f"mvmflow cut: {path}: {reason}", file=sys.stderr)
    if not written and not failed:
        print(f"no product overlaps the box at ({args.ra}, {args.dec})", file=sys.stderr)
    return 1 if failed else 0


def _cmd_combine(args: argparse.Namespace) -> int:
    from mvmflow.cutcombine import run_combine

    report = run_combine(args.files, args.out_dir, args.method)
    for path in report.written:
        print(path)
    for group, reason in report.skipped:
        print(f"mvmflow combine: skipped {group}: {reason}", file=sys.stderr)
    for item, reason in report.failed:
        print(f"mvmflow combine: cannot combine {item}: {reason}", file=sys.stderr)
    if not (report.written or report.skipped or report.failed):
        print("mvmflow combine: nothing to combine", file=sys.stderr)
    return 1 if report.failed else 0


# ---- the archive's MVM products, HAP cutouts and PSF databases (docs/archive.md)


def _archive_logging() -> None:
    """Progress and notes of the archive modules on stderr, once."""
    import logging

    class _Stderr(logging.StreamHandler):  # the current sys.stderr, even if replaced later
        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("mvmflow.archive")
    if not logger.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("mvmflow: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _report_failures(command: str, exc) -> int:
    """One line per file that failed (ArchiveError.failed), else the error; exit status 1."""
    for reason in getattr(exc, "failed", {}).values() or [str(exc)]:
        print(f"mvmflow {command}: {reason}", file=sys.stderr)
    return 1


def _cmd_query_products(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mvmflow.archive.hap import query_products
    from mvmflow.names import query_filename

    _archive_logging()
    table = query_products(args.ra, args.dec, args.size, url=args.mast_url, out_dir=args.out_dir)
    if not len(table):
        print(f"mvmflow query-products: no MVM product in the box at ({args.ra}, {args.dec})",
              file=sys.stderr)
        return 1
    print(Path(args.out_dir) / query_filename(args.ra, args.dec, args.size))
    return 0


def _downloads(command: str, fetch) -> tuple[list, int]:
    """``fetch()``'s files and exit status: 0, or 1 with every failed file reported (the
    files that did arrive are still returned); other errors propagate."""
    from mvmflow.archive.hap import ArchiveError

    try:
        return fetch(), 0
    except ArchiveError as exc:
        if not hasattr(exc, "failed"):
            raise
        return exc.done, _report_failures(command, exc)


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from mvmflow.archive.hap import retrieve

    _archive_logging()
    paths, status = _downloads("retrieve", lambda: retrieve(
        args.table, args.out_dir, clobber=args.clobber, url=args.mast_url,
        workers=args.workers))
    for path in paths:
        print(path)
    return status


def _cmd_archive_cutouts(args: argparse.Namespace) -> int:
    from mvmflow.archive.hap import archive_cutouts

    _archive_logging()
    paths = archive_cutouts(args.ra, args.dec, args.size, args.out_dir, url=args.mast_url)
    for path in paths:
        print(path)
    if not paths:
        print(f"mvmflow archive-cutouts: no MVM layer at ({args.ra}, {args.dec})",
              file=sys.stderr)
    return 0


def _cmd_psf_query(args: argparse.Namespace) -> int:
    from mvmflow.archive import psf

    _archive_logging()
    filters: dict = {}
    for text in args.filter:
        name, value = psf.parse_filter(text)
        filters[name] = value
    table = psf.query(args.detector, filters, args.columns, url=args.mast_url)
    psf.write_table(table, args.output)
    n_sub = psf.subarray_count(table)
    print(f"{args.output}: {len(table)} sources, {n_sub} on subarrays (no cutouts)",
          file=sys.stderr)
    return 0


def _integers(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N or N,M") from None


def _cmd_psf_download(args: argparse.Namespace) -> int:
    from mvmflow.archive import psf

    _archive_logging()
    table = psf.read_table(args.table)
    suffixes = [s.strip() for s in args.suffix.split(",") if s.strip()]
    if len(args.size) not in (1, 2):
        raise ValueError("--size takes N (every source) or N,M (unsaturated, saturated)")
    sizes = args.size[0] if len(args.size) == 1 else tuple(args.size)
    paths, status = _downloads("psf download", lambda: psf.download(
        table, suffixes, sizes, args.out_dir, method=args.method, workers=args.workers,
        url=args.mast_url, detector=args.detector))
    n_sub = psf.subarray_count(table)
    if n_sub:
        print(f"mvmflow psf download: {n_sub} subarray sources not requested "
              "(the database has cutouts of full-frame sources only)", file=sys.stderr)
    print(f"{len(paths)} cutouts in {args.out_dir}", file=sys.stderr)
    return status


def _add_archive_commands(sub) -> None:
    """``query-products``, ``retrieve``, ``archive-cutouts`` and ``psf query|download``."""
    url_help = ("the archive's base URL (default: $MVMFLOW_MAST_URL, else "
                "https://mast.stsci.edu)")

    def position(p, what):
        p.add_argument("--ra", type=float, required=True, help="right ascension in degrees")
        p.add_argument("--dec", type=float, required=True, help="declination in degrees")
        p.add_argument("--size", type=float, nargs="+", required=True, metavar="ARCSEC",
                       help=f"{what} size in arcsec: one value (square) or W H (W along RA)")
        p.add_argument("-o", "--out-dir", default=".", help="output directory (default: .)")
        p.add_argument("--mast-url", default=None, help=url_help)

    p = sub.add_parser("query-products", help="the archive's MVM layer products in a box "
                       "(writes mvm_query-ra..-dec.._<radius>_cutout.ecsv)")
    position(p, "box")
    p.set_defaults(func=_cmd_query_products)

    p = sub.add_parser("retrieve", help="download the products of a query-products table")
    p.add_argument("table", help="mvm_query-..._cutout.ecsv")
    p.add_argument("-o", "--out-dir", default=".", help="output directory (default: .)")
    p.add_argument("--clobber", action="store_true", help="replace files already there")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default: 4)")
    p.add_argument("--mast-url", default=None, help=url_help)
    p.set_defaults(func=_cmd_retrieve)

    p = sub.add_parser("archive-cutouts", help="cutouts of the archive's MVM layers made by "
                       "MAST's HAP cutout service")
    position(p, "cutout")
    p.set_defaults(func=_cmd_archive_cutouts)

    p = sub.add_parser("psf", help="the WFC3 and WFPC2 PSF databases: query, download cutouts")
    psub = p.add_subparsers(dest="psf_command", required=True, metavar="ACTION",
                            help="query or download; 'mvmflow psf ACTION --help' for options")
    q = psub.add_parser("query", help="query a database into an ECSV table of sources")
    q.add_argument("--detector", required=True, type=str.upper,
                   choices=["UVIS", "IR", "WFPC2"], help="the database")
    q.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                   help="NAME=V1[,V2...] (any of the values) or NAME=MIN:MAX (a range); "
                        "repeatable; WFPC2's filter is filter_1 (filter works too)")
    q.add_argument("--columns", default="*", help="columns, comma-separated (default: *)")
    q.add_argument("-o", "--output", required=True, help="output ECSV table")
    q.add_argument("--mast-url", default=None, help=url_help)
    q.set_defaults(func=_cmd_psf_query)
    d = psub.add_parser("download", help="download the cutouts of a table's sources")
    d.add_argument("table", help="a table written by 'mvmflow psf query'")
    d.add_argument("--suffix", required=True, help="file suffixes, comma-separated: raw, flt, "
                   "flc (UVIS) for WFC3; d0m, c0m for WFPC2")
    d.add_argument("--size", type=_integers, default=[51, 101], metavar="N[,M]",
                   help="cutout side for unsaturated (qfit > 0) and saturated sources "
                        "(default: 51,101)")
    d.add_argument("--method", default="single", choices=["single", "bundle", "pool"],
                   help="single requests (default), tar.gz bundles, or a pool of --workers")
    d.add_argument("--workers", type=int, default=4, help="parallel requests of the pool")
    d.add_argument("--detector", default=None, type=str.upper,
                   choices=["UVIS", "IR", "WFPC2"], help="default: the table's")
    d.add_argument("-o", "--out-dir", default=".", help="output directory (default: .)")
    d.add_argument("--mast-url", default=None, help=url_help)
    d.set_defaults(func=_cmd_psf_download)


def mosaic_command(args: argparse.Namespace) -> list[str]:
    """The snakemake command line of ``mvmflow mosaic`` (writes the input list file)."""
    from pathlib import Path

    import yaml

    files = [Path(f).resolve() for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no such exposure(s): {', '.join(missing)}")
    out = Path(args.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    listfile = out / "mosaic_inputs.txt"
    listfile.write_text("".join(f"{f}\n" for f in files))
    mosaic = {"enabled": True, "prefix": args.prefix, "scale": args.scale,
              "tile_size": args.tile_size,
              "projection_cell": "auto" if args.projection_cell is None else args.projection_cell}
    config = {"inputs": str(listfile), "outdir": str(out), "mosaic": mosaic}
    if args.no_align:
        config["align"] = {"enabled": False}
    configfile = out / "mosaic_config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=True))
    snakefile = Path(__file__).resolve().parents[1] / "Snakefile"
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory",
            str(out), "--cores", str(args.cores), "--configfile", str(configfile),
            *args.snakemake]


def _cmd_mosaic(args: argparse.Namespace) -> int:
    import subprocess

    cmd = mosaic_command(args)
    print("running:", " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mvmflow`` command."""
    from mvmflow import __version__

    parser = argparse.ArgumentParser(
        prog="mvmflow",
        description="Hubble multi-visit mosaics on the HAP sky-cell grid.",
    )
    parser.add_argument("--version", action="version", version=f"mvmflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="run 'mvmflow COMMAND --help' for a command's options")

    p = sub.add_parser(
        "which-skycell", help="sky cells containing a sky position",
        description="Print every sky cell containing a sky position, one per line.",
        epilog="A plain number is degrees (84.92 -69.15). Sexagesimal RA is hours "
               "(5h39m41s, 05:39:41.0, as astropy's SkyCoord with unit=(hourangle, deg)), "
               "sexagesimal Dec degrees (-69d09m00s, -69:09:00); a unit written in the value "
               "wins (84.92deg, 84d55m12s). RA must be in [0, 360) degrees, Dec in [-90, 90].")
    p.add_argument("ra", metavar="RA", help="right ascension: degrees (84.92, 84.92deg) or "
                   "hours (5h39m41s, 05:39:41.0)")
    p.add_argument("dec", metavar="DEC", help="declination: degrees (-69.15, -69d09m00s, "
                   "-69:09:00)")
    p.add_argument("--frame", default="icrs", choices=list(FRAMES),
                   help="frame of RA DEC (default: icrs; galactic takes l b)")
    if hasattr(p, "_negative_number_matcher"):  # -69:09:00 is a value, not an option
        p._negative_number_matcher = _NEGATIVE_VALUE
    p.set_defaults(func=_cmd_which_skycell)

    p = sub.add_parser("skycell", help="print the WCS of a sky cell")
    p.add_argument("name", help="sky-cell name, e.g. skycell-p0081x14y14")
    p.add_argument("--scale", default="fine", choices=["fine", "coarse"],
                   help="pixel scale: fine (0.04\"/px, default) or coarse (0.12\"/px)")
    p.set_defaults(func=_cmd_skycell)

    _add_simulate(sub)

    from mvmflow.poller import add_poller_arguments, run_poller

    p = sub.add_parser("poller", help="write an MVM or SVM poller file from exposures")
    add_poller_arguments(p)
    p.set_defaults(func=run_poller)

    p = sub.add_parser(
        "params",
        help="write a run's fully resolved configuration (editable, feeds back as --configfile)",
    )
    p.add_argument("--configfile", action="append", default=None,
                   help="config file(s), later ones override (default: config/config.yaml)")
    p.add_argument("--detectors", default="config/detectors.yaml",
                   help="per-detector defaults (default: config/detectors.yaml)")
    p.add_argument("-o", "--output", required=True, help="output YAML file")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser(
        "cut", help="cutouts of layer products (SCI and WHT) at a sky position",
        epilog="Each file is opened and identified by its name checked against its header "
               "(SCELLID, INSTRUME, DETECTOR, FILTER, WCS scale, ROOTNAME), or by its header "
               "alone when renamed. A file that cannot be cut is reported on stderr as "
               "'mvmflow cut: FILE: reason' and the others are cut; the exit status is 1 if "
               "any file failed, 2 for a usage error.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="layer products (ours or the archive's MVM files, renamed or not)")
    p.add_argument("--ra", type=float, required=True, help="right ascension in degrees")
    p.add_argument("--dec", type=float, required=True, help="declination in degrees")
    p.add_argument("--size", type=float, nargs="+", required=True, metavar="ARCSEC",
                   help="box size in arcsec: one value (square) or W H (W along RA)")
    p.add_argument("-o", "--out-dir", default=".", help="output directory (default: .)")
    p.set_defaults(func=_cmd_cut)

    p = sub.add_parser("combine", help="combine cutouts of one position from neighbouring sky "
                                       "cells (WHT-weighted, each exposure counted once)")
    p.add_argument("files", nargs="+", help="cutouts (mvmflow cut's or the reference's)")
    p.add_argument("-o", "--out-dir", default=".", help="output directory (default: .)")
    p.add_argument("--method", default="weighted", choices=["weighted", "mean"],
                   help="weighted (default): sum(w*s)/sum(w), WHT summed, no exposure counted "
                        "twice; mean: the reference's unweighted mean, WHT averaged")
    p.set_defaults(func=_cmd_combine)

    p = sub.add_parser("mosaic", help="run the workflow with a custom mosaic of the given "
                                      "exposures (plus their sky-cell layers)",
                       epilog="Arguments after -- go to snakemake, e.g. "
                              "'mvmflow mosaic FILES -- -n' for a dry run.")
    p.add_argument("files", nargs="+", help="calibrated exposures (_flt.fits / _flc.fits)")
    p.add_argument("--prefix", default=None, help="file-name prefix of the mosaic's files "
                   "(default: hst_skycell-p<PPPP>-ra<##>d<####>-dec<n|s><##>d<####>)")
    p.add_argument("--projection-cell", type=int, default=None, metavar="P",
                   help="projection cell (default: the one nearest the observations' centre)")
    p.add_argument("--scale", default="auto", choices=["auto", "fine", "coarse"],
                   help="pixel scale: auto (default: as the sky cells, fine plus coarse for "
                        "IR), fine (0.04\"/px) or coarse (0.12\"/px)")
    p.add_argument("--tile-size", type=int, default=4096, metavar="N",
                   help="largest tile side in pixels (default: 4096)")
    p.add_argument("--outdir", default="mosaic_run", help="where everything goes "
                   "(default: mosaic_run; products in OUTDIR/mosaic/)")
    p.add_argument("--cores", type=int, default=2, metavar="N",
                   help="CPU cores snakemake may use (default: 2)")
    p.add_argument("--no-align", action="store_true",
                   help="skip the alignment: drizzle with the exposures' header WCS")
    p.set_defaults(func=_cmd_mosaic, snakemake=[])

    _add_archive_commands(sub)

    from mvmflow.archive.mirror import add_fetch_arguments, run_fetch

    p = sub.add_parser("fetch", help="fill the local mirror with a region's exposures from MAST "
                       "ahead of a run",
                       epilog="Exit status 0 when every file to fetch is in the mirror, 1 when "
                              "some could not be fetched (named on stderr), 2 for a usage or "
                              "query error. Proprietary files and FLTs of fetched FLCs are "
                              "listed, not fetched.")
    add_fetch_arguments(p)
    p.set_defaults(func=run_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mvmflow`` command; return its exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        command = next((a for a in argv[:cut] if not a.startswith("-")), None)
        if command == "mosaic":  # the rest goes to snakemake
            argv, extra = argv[:cut], argv[cut + 1:]
        # otherwise -- keeps argparse's meaning: what follows is not an option
    args = parser.parse_args(argv)
    if extra:
        args.snakemake = extra
    if getattr(args, "configfile", "unset") is None:
        args.configfile = ["config/config.yaml"]
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mvmflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
