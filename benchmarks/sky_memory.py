"""Peak memory and time of the sky step: every partial in memory vs overlaps read lazily.

``mvmflow.skygroup.group_sky`` (the partials read first, as the `sky` rule did) against
``group_sky_files`` (each overlap read from the files when it is measured, as it does now)
on the fine partials of each sky group of an existing run, each in its own process (peak
RSS from ``ru_maxrss``). Also checks that the offsets are the same.

    make demo                                           # or any run with sky matching
    .venv/bin/python benchmarks/sky_memory.py --run results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

WORKER = """
import json, resource, sys, time
from mvmflow.partials import PartialFile
from mvmflow.skygroup import group_sky, group_sky_files
mode, paths = sys.argv[1], json.loads(sys.argv[2])
t = time.perf_counter()
m = (group_sky([PartialFile.open(p).read() for p in paths]) if mode == "eager"
     else group_sky_files(paths))
print(json.dumps({"s": time.perf_counter() - t, "pairs": len(m.pairs), "offsets": m.offsets,
                  "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def groups(run: Path) -> dict[str, list[str]]:
    """Fine partial files per sky group, in the sky rule's order (the run plan's)."""
    from mvmflow.runplan import RunPlan

    plan = RunPlan.load(run / "plan" / "plan.json")
    return {group: [path for lay in plan.sky_group_layers(group)
                    for path in plan.partials(lay.name, str(run), final=False)]
            for group in plan.sky_groups}


def measure(mode: str, paths: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, mode, json.dumps(paths)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="results", help="a run's outdir (default: results)")
    args = parser.parse_args(argv)
    print("| group | partials | pairs | eager MB | lazy MB | memory lazy/eager | eager s | "
          "lazy s | time lazy/eager | same offsets |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, paths in sorted(groups(Path(args.run)).items()):
        e, lz = measure("eager", paths), measure("lazy", paths)
        print(f"| {key} | {len(paths)} | {e['pairs']} | {e['mb']:.0f} | {lz['mb']:.0f} | "
              f"{lz['mb'] / e['mb']:.2f} | {e['s']:.1f} | {lz['s']:.1f} | "
              f"{lz['s'] / e['s']:.1f} | {'yes' if e['offsets'] == lz['offsets'] else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
