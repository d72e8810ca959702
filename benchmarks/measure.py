"""What the benchmark scripts share: the wrapper that measures one command.

``WRAPPER`` runs in a small fresh process (``python -c WRAPPER STATS CMD...``), runs ``CMD``
and writes to ``STATS`` its return code, wall time, and the peak RSS, user and system time
of its descendants (``RUSAGE_CHILDREN``). Measuring from the benchmark's own process would
be wrong: a child forked from a large process inherits its RSS high-water mark at exec,
which ``ru_maxrss`` then reports.
"""

WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"returncode": rc, "wall_s": wall, "maxrss_kb": usage.ru_maxrss,
               "user_s": usage.ru_utime, "sys_s": usage.ru_stime}, f)
sys.exit(rc)
"""
