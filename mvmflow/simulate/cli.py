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
    parser.add_argument("--workers", type=int, default=1,
                        help="processes rendering exposures at once (default 1; the files do "
                             "not depend on it); a full-frame exposure needs about 1 GB")
    parser.add_argument("--headers-only", action="store_true",
                        help="write the exposures without pixels (HST constant-value "
                             "extensions: NPIX1/NPIX2 and PIXVALUE), same headers and WCS; "
                             "for planning (screening accepts them)")
    parser.add_argument("--header-set", type=int, metavar="N", default=None,
                        help="instead of a preset, write N header-only ACS/WFC and WFC3/UVIS "
                             "exposures in many visits over projection cell 81 (implies "
                             "--headers-only; --seed picks the layout)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")


def run_simulate(args: argparse.Namespace) -> int:
    """Run ``mvmflow simulate`` with parsed ``args``; return the exit status."""
    from mvmflow.simulate import PRESETS, get_preset, simulate
    from mvmflow.simulate.presets import header_set_preset

    if args.list:
        for name, preset in PRESETS.items():
            print(f"{name:14s} {preset.n_exposures:3d} exposures  {preset.description}")
        print(f"{'(--header-set N)':14s}   N exposures  header-only ACS/WFC and WFC3/UVIS "
              "exposures in many visits over projection cell 81, for planning at scale")
        return 0
    header_set = getattr(args, "header_set", None)
    if not (args.preset or header_set) or not args.out:
        print("mvmflow simulate: --out and --preset (or --header-set N) are required "
              "(or --list)")
        return 2
    if args.preset and header_set:
        print("mvmflow simulate: give --preset or --header-set, not both")
        return 2
    try:
        if header_set:
            preset = header_set_preset(header_set, seed=1 if args.seed is None else args.seed)
        else:
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
    headers_only = bool(header_set or getattr(args, "headers_only", False))
    result = simulate(preset, args.out, seed=args.seed, headers_only=headers_only,
                      workers=max(1, getattr(args, "workers", 1) or 1))
    kind = "header-only exposures" if headers_only else "exposures"
    print(f"wrote {len(result.exposures)} {kind} of preset {result.preset} "
          f"(seed {result.seed}) to {result.out}")
    if len(result.exposures) <= 100:
        for path in result.exposures:
            print(f"  {path}")
    print(f"truth in {result.truth_dir}:")
    for name, path in result.truth.items():
        print(f"  {name}: {path}")
    return 0
