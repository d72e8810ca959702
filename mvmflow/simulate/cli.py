"""Options of ``mvmflow simulate`` (hooked into :mod:`mvmflow.cli`)."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["add_simulate_arguments", "run_simulate"]


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument("--preset", help="preset name (see --list), e.g. demo or tiny")
    parser.add_argument("--out", help="output directory (exposures; truth in OUT/truth)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: the preset's); same seed, same files")
    parser.add_argument("--unflagged-cr", action="store_true",
                        help="leave cosmic rays unflagged in the CCD DQ arrays (raw-pipeline "
                             "FLT/FLC instead of SVM-processed ones)")
    parser.add_argument("--no-cosmic-rays", action="store_true",
                        help="write the same exposures (same noise) without cosmic rays")
    parser.add_argument("--flt", action="store_true",
                        help="also write an _flt.fits beside every _flc.fits")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``mvmflow simulate`` with parsed ``args``; return the exit status."""
    from mvmflow.simulate import PRESETS, get_preset, simulate

    if args.list:
        for name, preset in PRESETS.items():
            print(f"{name:14s} {preset.n_exposures:3d} exposures  {preset.description}")
        return 0
    if not args.preset or not args.out:
        print("mvmflow simulate: --preset and --out are required (or --list)")
        return 2
    try:
        preset = get_preset(args.preset)
    except ValueError as err:
        print(f"mvmflow simulate: {err}")
        return 2
    if args.unflagged_cr:
        preset = dataclasses.replace(preset, flag_crs=False)
    if getattr(args, "no_cosmic_rays", False):
        preset = dataclasses.replace(preset, cosmic_rays=False)
    if args.flt:
        preset = dataclasses.replace(preset, write_flt=True)
    result = simulate(preset, args.out, seed=args.seed)
    print(f"wrote {len(result.exposures)} exposures of preset {result.preset} "
          f"(seed {result.seed}) to {result.out}")
    for path in result.exposures:
        print(f"  {path}")
    print(f"truth in {result.truth_dir}:")
    for name, path in result.truth.items():
        print(f"  {name}: {path}")
    return 0
