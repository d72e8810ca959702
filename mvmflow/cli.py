"""The ``mvmflow`` command line.

Subcommands::

    mvmflow which-skycell RA DEC          sky cells containing a position, one per line
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
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_which_skycell(args: argparse.Namespace) -> int:
    from mvmflow.grid import sky_cells_at

    names = sky_cells_at(args.ra, args.dec)
    for name in names:
        print(name)
    if not names:
        print(f"no sky cell contains ({args.ra}, {args.dec})", file=sys.stderr)
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
        print(f"mvmflow cut: cannot cut {path}: {reason}", file=sys.stderr)
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("which-skycell", help="sky cells containing a sky position")
    p.add_argument("ra", type=float, help="right ascension in degrees")
    p.add_argument("dec", type=float, help="declination in degrees")
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

    p = sub.add_parser("cut", help="cutouts of layer products (SCI and WHT) at a sky position")
    p.add_argument("files", nargs="+", help="layer products (ours or the archive's MVM files)")
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
                                      "exposures (plus their sky-cell layers)")
    p.add_argument("files", nargs="+", help="calibrated exposures (_flt.fits / _flc.fits)")
    p.add_argument("--prefix", default=None, help="file-name prefix of the mosaic's files "
                   "(default: hst_skycell-p<PPPP>-ra<##>d<####>-dec<n|s><##>d<####>)")
    p.add_argument("--projection-cell", type=int, default=None,
                   help="projection cell (default: the one nearest the observations' centre)")
    p.add_argument("--scale", default="auto", choices=["auto", "fine", "coarse"])
    p.add_argument("--tile-size", type=int, default=4096, help="largest tile side (pixels)")
    p.add_argument("--outdir", default="mosaic_run", help="where everything goes "
                   "(products in OUTDIR/mosaic/)")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--no-align", action="store_true", help="drizzle with the header WCS")
    p.set_defaults(func=_cmd_mosaic, snakemake=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mvmflow`` command; return its exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:  # the rest goes to snakemake (mvmflow mosaic)
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    if extra:
        if args.command != "mosaic":
            parser.error("options after -- are only for 'mvmflow mosaic'")
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
