"""What the benchmark scripts share: the wrapper that measures one command.

``WRAPPER`` runs in a small fresh process (``python -c WRAPPER STATS CMD...``), runs ``CMD``
and writes to ``STATS`` its return code, wall time, and the peak RSS, user and system time
of its descendants (``RUSAGE_CHILDREN``; the wrapper is a child subreaper, so the workflow's
job server, which its launcher leaves orphaned, is among them). Measuring from the benchmark's own process would
be wrong: a child forked from a large process inherits its RSS high-water mark at exec,
which ``ru_maxrss`` then reports.
"""

WRAPPER = """
import ctypes, json, os, resource, subprocess, sys, time
# a child subreaper: the workflow's job server (mvmflow.runner), which leaves Snakemake's
# process tree, is reparented here and waited for, so its jobs' peaks count below
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
start = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if os.waitpid(-1, os.WNOHANG) == (0, 0):
            time.sleep(0.02)
    except ChildProcessError:
        break
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": rc, "wall_s": wall, "maxrss_kb": usage.ru_maxrss,
               "user_s": usage.ru_utime, "sys_s": usage.ru_stime}, f)
sys.exit(rc)
"""


PEAK_ENV = "MVMFLOW_JOB_PEAKS"
"""Environment variable naming the file :data:`PEAK_HOOK` appends to."""

PEAK_HOOK = """
import atexit, os


def _mvmflow_job_peak():
    import sys

    import __main__

    # a script run by snakemake's script: (its __main__), or a job of mvmflow.runner
    job = getattr(__main__, "snakemake", None) or getattr(
        sys.modules.get("mvmflow.runner"), "current_job", None)
    rule = getattr(job, "rule", None)
    if isinstance(rule, str) and os.environ.get("MVMFLOW_JOB_PEAKS"):
        with open("/proc/self/status") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
        with open(os.environ["MVMFLOW_JOB_PEAKS"], "a") as f:
            f.write(f"{rule}\\t{kb}\\n")


atexit.register(_mvmflow_job_peak)
"""
"""A ``sitecustomize.py`` for the workflow runs' ``PYTHONPATH``: every job's Python process
appends its rule and its peak RSS (``VmHWM``, exact) to the file named by :data:`PEAK_ENV`
when it exits (a job forked by ``mvmflow.runner`` runs its exit handlers too, and inherits
this one from the fork server). Nothing in the workflow changes."""

REFERENCE = """
import resource, sys
# argv: poller file, sky ("match": sky matching with the skypac alias, else as installed),
# address-space limit in GB (0: none), so that running out of memory fails the reference alone
limit = int(float(sys.argv[3]) * 2**30) if len(sys.argv) > 3 else 0
if limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
if sys.argv[2] == "match":
    from spherical_geometry.polygon import SingleSphericalPolygon, SphericalPolygon
    if not hasattr(SphericalPolygon, "iter_polygons_flat"):
        SingleSphericalPolygon.iter_polygons_flat = SingleSphericalPolygon.__iter__
        SphericalPolygon.iter_polygons_flat = SphericalPolygon.__iter__
from drizzlepac import hapmultisequencer
sys.exit(0 if hapmultisequencer.run_mvm_processing(sys.argv[1]) == 0 else 1)
"""
"""The reference's MVM on one poller file, run as ``python -c REFERENCE POLLER SKY
[LIMIT_GB]`` (benchmarks/vs_reference.py and benchmarks/scale.py)."""


def versions(dists) -> dict:
    """The project tree (commit, and whether it has uncommitted changes) and the versions of
    the installed distributions ``dists`` (those missing are left out)."""
    import contextlib
    import subprocess
    from importlib import metadata
    from pathlib import Path

    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    out = {"mvmflow tree": f"{head}{' + uncommitted changes' if dirty else ''}"}
    for dist in dists:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
