#!/usr/bin/env python
"""Scale benchmarks: planning 1,000-5,000 exposures, and whole sky cells end to end.

Two modes (``--help`` of each gives every option):

``plan``: how long Snakemake takes to build the whole DAG (``snakemake -n``) for
header-only data sets of N exposures over projection cell 81 (``mvmflow simulate
--header-set N``). For each N:

1. the header set is written (:func:`mvmflow.simulate.simulate` with ``headers_only``;
   reused when ``--workdir`` already holds it);
2. the checkpoints' outputs are made, so that the dry run sees the whole DAG (Snakemake stops
   at a pending checkpoint): with ``--prepare library`` (default) the inputs table, one
   screen record and one headers file per exposure and the screening report are written by
   the library's own functions (:func:`mvmflow.inputs.write_input_table`,
   :func:`mvmflow.screen.screen_exposure` + :func:`mvmflow.records.write_record`,
   :func:`mvmflow.headers.write_exposure_headers`, :func:`mvmflow.screen.collect_records`),
   in dependency order and in ``--cores`` processes, then the ``plan`` checkpoint is run by
   Snakemake itself (``snakemake --until plan``); with ``--prepare snakemake`` Snakemake runs
   everything up to the plan (one screen job per exposure: slow, see benchmarks/README.md);
3. ``snakemake -n --cores C`` is timed (fastest of ``--repeat``), its output in a log file.

It prints, per N, the seconds of each step, the number of jobs of the DAG and the ratio of
the dry run's time to a linear extrapolation from the smallest N.

``run``: the workflow end to end on a simulated whole sky cell (``fullcell``, 64 full-frame
exposures) with ``--cores C``, for three cases: ``quarter`` (the exposures pointed in the
south-west quarter of the sky cell), ``whole`` (all of them) and ``mosaic`` (a custom mosaic
over about 2 x 2 sky cells: ``fullcell_2x2``), each with ``keep_intermediates`` true and
false. Per run: wall time, the largest job's peak RSS (exact: every job's Python process
reports its ``VmHWM`` through a ``sitecustomize`` hook; and snakemake's sampled ``max_rss``
of the ``results/logs/benchmarks`` records), the largest process (snakemake included), and the
disk of the intermediates (partials/, partials_cr/, cr/, tiles/, mosaic/partials,
mosaic/tiles) at their peak during the run (sampled) and at the end, per input exposure.
``--reference`` also runs drizzlepac's ``run_mvm_processing`` on the whole sky cell (as
benchmarks/vs_reference.py does), with a timeout and an address-space limit.

Figures go to ``benchmarks/out/scale_<mode>.json`` (git-ignored). Run with the project's
virtual environment::

    .venv/bin/python benchmarks/scale.py plan --sizes 1000,5000
    .venv/bin/python benchmarks/scale.py run --data /tmp/scale/fullcell --workdir /tmp/scale
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import PEAK_ENV, PEAK_HOOK, REFERENCE, WRAPPER, versions  # benchmarks/measure.py

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
INTERMEDIATES = ("partials", "partials_cr", "cr", "tiles", "mosaic/partials", "mosaic/tiles")
"""Directories of intermediate files under the run's outdir."""
SKYCELL = "skycell-p0081x14y14"
"""The sky cell of the ``fullcell`` preset (mvmflow.simulate.presets.FULLCELL_SKYCELL)."""



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Scale benchmarks of mvmflow: DAG building for 1,000-5,000 exposures "
                    "(plan), and whole sky cells end to end (run).")
    sub = p.add_subparsers(dest="mode", required=True)

    q = sub.add_parser(
        "plan",
        help="time `snakemake -n` on header-only sets of N exposures",
        description="Write header-only data sets of N exposures over projection cell 81, make "
                    "the checkpoints' outputs, and time `snakemake -n` on the whole DAG.")
    q.add_argument("--sizes", default="1000,5000",
                   help="numbers of exposures, comma-separated (default %(default)s)")
    q.add_argument("--seed", type=int, default=1, help="layout of the header sets (default %(default)s)")
    q.add_argument("--cores", type=int, default=2,
                   help="snakemake --cores, and processes writing and screening headers "
                        "(default %(default)s)")
    q.add_argument("--prepare", choices=("library", "snakemake"), default="library",
                   help="make inputs/screen outputs with the library (then `snakemake --until "
                        "plan`; default), or run every screen job through snakemake")
    q.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="time the dry run R times; the fastest counts (default 1)")
    q.add_argument("--workdir", type=Path, default=None,
                   help="where header sets and runs go (kept and reused; default: a "
                        "temporary directory, removed at the end unless --keep)")
    q.add_argument("--fresh", action="store_true",
                   help="redo the checkpoints' outputs even if --workdir has them")
    q.add_argument("--replan", action="store_true",
                   help="rerun the plan checkpoint (the code or rules changed) but keep the "
                        "screening outputs")
    q.add_argument("--cosmic-rays", choices=("auto", "always", "never"), default=None,
                   help="cosmic_rays.default of the runs (default: the workflow's, auto; "
                        "the header-only files carry no cosmic-ray flags, so auto rejects "
                        "cosmic rays wherever exposures overlap); a run of another value "
                        "reuses the screening outputs of one made before")
    q.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    q.add_argument("--out", type=Path, default=OUT, help="directory of the JSON figures (default benchmarks/out)")

    r = sub.add_parser(
        "run",
        help="run the workflow end to end on a quarter, a whole and 2x2 sky cells",
        description="Run the workflow end to end (alignment off) on simulated whole sky "
                    "cells and report wall time, the largest job's peak memory and disk.")
    r.add_argument("--preset", default="fullcell",
                   help="data of the quarter and whole cases (default %(default)s; tiny: a "
                        "quick check of this script)")
    r.add_argument("--data", type=Path, default=None,
                   help="an existing directory of the preset (from `mvmflow simulate`, with "
                        "truth/); default: simulate into the working directory")
    r.add_argument("--mosaic-preset", default=None,
                   help="data of the mosaic case (default fullcell_2x2 for fullcell, else the "
                        "same as --preset)")
    r.add_argument("--mosaic-data", type=Path, default=None,
                   help="an existing directory of --mosaic-preset")
    r.add_argument("--mosaic-scale", choices=("auto", "fine", "coarse"), default=None,
                   help="mosaic.scale of the mosaic case (default: the workflow's, auto: fine "
                        "for ACS and UVIS); at fine scale a 2 x 2-sky-cell mosaic layer is "
                        "about 1.4 Gpx, some 20 GB on disk")
    r.add_argument("--mosaic-only", action="store_true",
                   help="in the mosaic case make the mosaic alone (snakemake --until plan, "
                        "then the mosaic's manifest as the target: partials, sky offsets and "
                        "the mosaic's jobs, no sky-cell layer products)")
    r.add_argument("--skycell", default=SKYCELL,
                   help="the sky cell of the quarter and whole cases (default %(default)s)")
    r.add_argument("--cases", default="quarter,whole,mosaic",
                   help="comma-separated: quarter, whole, mosaic (default all three)")
    r.add_argument("--intermediates", default="keep,drop",
                   help="comma-separated: keep (keep_intermediates: true), drop (false); "
                        "default both")
    r.add_argument("--cores", type=int, default=2, help="snakemake --cores (default %(default)s)")
    r.add_argument("--cosmic-rays", choices=("auto", "always", "never"), default=None,
                   help="cosmic_rays.default of the runs (default: the workflow's)")
    r.add_argument("--sim-workers", type=int, default=2,
                   help="processes simulating the data when it is made here (default "
                        "%(default)s)")
    r.add_argument("--reference", action="store_true",
                   help="also run drizzlepac's run_mvm_processing on the whole sky cell")
    r.add_argument("--reference-timeout", type=float, default=4 * 3600.0, metavar="S",
                   help="seconds before the reference is stopped (default %(default)s)")
    r.add_argument("--reference-mem-gb", type=float, default=18.0, metavar="GB",
                   help="address-space limit of the reference's process, so that running "
                        "out of memory fails it alone on a shared machine (0: none; default "
                        "%(default)s)")
    r.add_argument("--sample", type=float, default=5.0, metavar="S",
                   help="seconds between disk samples (default %(default)s)")
    r.add_argument("--workdir", type=Path, default=None,
                   help="where data and runs go (default: a temporary directory, removed at "
                        "the end unless --keep)")
    r.add_argument("--keep", action="store_true",
                   help="keep every run's directory (default: each is removed once measured, "
                        "to save disk)")
    r.add_argument("--out", type=Path, default=OUT, help="directory of the JSON figures (default benchmarks/out)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------
# running and measuring


def measured(argv: list[str], cwd: Path, log: Path, env: dict | None = None,
             timeout: float | None = None, sample=None, every: float = 5.0) -> dict:
    """Run ``argv`` under the measuring wrapper (benchmarks/measure.py); output to ``log``.

    Returns the wrapper's figures (``returncode``, ``wall_s``, ``maxrss_kb``: the largest
    process, ``user_s``, ``sys_s``); ``sample()`` is called every ``every`` seconds while it
    runs. On ``timeout`` the command's process group is killed and ``returncode`` is
    ``'timeout'``.
    """
    stats = log.with_suffix(".rusage.json")
    stats.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(stats), *argv], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        timed_out = False
        while proc.poll() is None:
            if sample is not None:
                sample()
            if timeout is not None and time.perf_counter() - start > timeout:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                timed_out = True
                proc.wait()
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=every if sample is not None else 1.0)
    wall = time.perf_counter() - start
    if sample is not None:
        sample()
    res = json.loads(stats.read_text()) if stats.is_file() else {
        "returncode": proc.returncode, "maxrss_kb": 0}
    res["wall_s"] = wall if timed_out or "wall_s" not in res else res["wall_s"]
    if timed_out:
        res["returncode"] = "timeout"
    return res


def snakemake_argv(work: Path, config: Path, *extra: str, cores: int = 2) -> list[str]:
    # targets and options before --configfile, which takes every word after it
    return [sys.executable, "-m", "snakemake", *extra, "-s", str(ROOT / "Snakefile"),
            "--directory", str(work), "--cores", str(cores), "--configfile", str(config)]


def tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def load_average() -> float:
    return os.getloadavg()[0]


def write_config(path: Path, config: dict) -> Path:
    # a file, not --config: --config align={enabled: false} passes the string 'false'
    path.write_text(json.dumps(config, indent=1) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# plan mode


def header_set(n: int, seed: int, where: Path, workers: int) -> tuple[Path, float | None]:
    """The header-only set of ``n`` exposures in ``where`` (made unless it is there);
    returns its directory and the seconds it took to make (None when reused)."""
    from mvmflow.simulate import simulate
    from mvmflow.simulate.presets import header_set_preset

    d = where / f"headers_{n}_seed{seed}"
    done = d / "truth" / "exposures.ecsv"
    if done.is_file():
        return d, None
    start = time.perf_counter()
    simulate(header_set_preset(n, seed=seed), d, headers_only=True, workers=workers)
    return d, time.perf_counter() - start


def reuse_screening(work: Path, tag: str, run: Path) -> Path | None:
    """Hard-link the inputs table and the screening outputs of another run of the same header
    set (``<tag>*``) into ``run``; links keep the files' times, hence their order."""
    if (run / "results" / "screen" / "accepted.ecsv").is_file():
        return None
    for other in sorted(work.glob(f"{tag}*")):
        src = other / "results"
        if other == run or not (src / "screen" / "accepted.ecsv").is_file():
            continue
        dst = run / "results"
        dst.mkdir(parents=True, exist_ok=True)
        os.link(src / "inputs.tsv", dst / "inputs.tsv")
        shutil.copytree(src / "screen", dst / "screen", copy_function=os.link)
        return other
    return None


def _screen_one(key_path: tuple[str, str, str]) -> tuple[str, bool, str]:
    """Screen one exposure and write its record and headers file (the screen job's work)."""
    from mvmflow.headers import write_exposure_headers
    from mvmflow.records import write_record
    from mvmflow.screen import screen_exposure

    key, path, outdir = key_path
    # A header-only exposure's arrays are constant: the image-based trail test finds no
    # source in them, so it can only accept; it is skipped (0.75 s per exposure).
    record = screen_exposure(path, check_trails=False)
    write_exposure_headers(path, f"{outdir}/screen/headers/{key}.json", required=record.accepted)
    write_record(record, f"{outdir}/screen/records/{key}.json")
    return key, record.accepted, record.reason


def prepare_library(spec: str, work: Path, outdir: str, workers: int) -> dict:
    """The outputs of the ``inputs`` checkpoint, the ``screen`` jobs and ``screen_report``,
    written by the library's own functions, in dependency order (so their times are in
    order too and Snakemake finds them up to date)."""
    from mvmflow.inputs import resolve_inputs, write_input_table
    from mvmflow.screen import collect_records

    out = work / outdir
    t0 = time.perf_counter()
    table = resolve_inputs(spec)
    write_input_table(table, out / "inputs.tsv")
    jobs = [(key, path, str(out)) for key, path in table.items()]
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(_screen_one, jobs, chunksize=16))
    t1 = time.perf_counter()
    rejected = [(k, reason) for k, ok, reason in results if not ok]
    collect_records([out / "screen" / "records" / f"{k}.json" for k in table],
                    out / "screen" / "accepted.ecsv", out / "screen" / "rejected.ecsv")
    return {"exposures": len(table), "rejected": len(rejected),
            "rejected_reasons": sorted({r for _, r in rejected})[:5],
            "screen_s": t1 - t0, "report_s": time.perf_counter() - t1}


_JOBS_RE = re.compile(r"^total\s+(\d+)\s*$", re.M)


def dag_jobs(log: Path) -> dict:
    """Jobs per rule of a dry run, from its job-stats table."""
    text = log.read_text(errors="replace")
    block = text[text.rfind("Job stats:"):] if "Job stats:" in text else ""
    rules = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            rules[parts[0]] = int(parts[1])
        elif not parts:
            break
    return rules


def run_plan(args) -> int:
    from mvmflow.runplan import RunPlan

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mvm_scale_plan_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working directory {work}")
    rows = []
    try:
        for n in sizes:
            print(f"\n== {n} exposures", flush=True)
            data, gen_s = header_set(n, args.seed, work, args.cores)
            print(f"header set {data}: " + (f"written in {gen_s:.1f} s" if gen_s is not None
                                             else "reused"), flush=True)
            tag = f"run_{n}_seed{args.seed}_{args.prepare}"
            run = work / (tag + (f"_cr-{args.cosmic_rays}" if args.cosmic_rays else ""))
            if args.fresh and run.exists():
                shutil.rmtree(run)
            run.mkdir(exist_ok=True)
            config = {"inputs": f"{data}/*_fl?.fits", "outdir": "results",
                      "align": {"enabled": False}}
            if args.cosmic_rays:
                config["cosmic_rays"] = {"default": args.cosmic_rays, "wfc3_ir": "never",
                                         "acs_sbc": "never"}
            config = write_config(run / "benchmark.json", config)
            row = {"n": n, "header_set": str(data), "generate_s": gen_s,
                   "cosmic_rays": args.cosmic_rays or "(workflow default)",
                   "load_average_start": load_average()}
            plan_json = run / "results" / "plan" / "plan.json"
            if args.replan and plan_json.is_file():
                shutil.rmtree(plan_json.parent)
            reused = None
            if not plan_json.is_file() and args.prepare == "library":
                reused = reuse_screening(work, tag, run)
                if reused:
                    print(f"screening outputs linked from {reused}", flush=True)
                    row["screening_from"] = str(reused)
            if not plan_json.is_file():
                if args.prepare == "library" and not reused and not (
                        run / "results" / "screen" / "accepted.ecsv").is_file():
                    t = time.perf_counter()
                    row["library"] = prepare_library(str(config_inputs(config)), run,
                                                     "results", args.cores)
                    row["library"]["total_s"] = time.perf_counter() - t
                    print(f"inputs, {n} screen records and headers, screening report by the "
                          f"library: {row['library']['total_s']:.1f} s "
                          f"({row['library']['rejected']} rejected)", flush=True)
                res = measured(snakemake_argv(run, config, "--until", "plan",
                                              cores=args.cores), run, run / "until_plan.log")
                row["until_plan"] = res
                print(f"snakemake --until plan: {res['wall_s']:.1f} s, rc {res['returncode']}",
                      flush=True)
                if res["returncode"] != 0 or not plan_json.is_file():
                    print(f"failed; end of {run / 'until_plan.log'}:\n"
                          f"{tail(run / 'until_plan.log')}")
                    row["error"] = "snakemake --until plan failed"
                    rows.append(row)
                    continue
            else:
                print(f"checkpoints' outputs reused from {run}")
            plan = RunPlan.load(plan_json)
            row["skycells"] = len(plan.skycells)
            row["layers"] = len(plan.layers())
            row["plan_jobs"] = sum(len(plan.jobs(lay.name)) for lay in plan.layers())
            dry = []
            for i in range(args.repeat):
                log = run / f"dryrun_{i + 1}.log"
                load = load_average()
                res = measured(snakemake_argv(run, config, "-n", cores=args.cores), run, log)
                res["load_average"] = load
                res["jobs"] = dag_jobs(log)
                dry.append(res)
                print(f"snakemake -n ({i + 1}/{args.repeat}, load {load:.2f}): "
                      f"{res['wall_s']:.1f} s, rc {res['returncode']}, "
                      f"{res['jobs'].get('total', '?')} jobs, largest process "
                      f"{res['maxrss_kb'] / 1024:.0f} MB", flush=True)
                if res["returncode"] != 0:
                    print(f"failed; end of {log}:\n{tail(log)}")
                    break
            row["dry_runs"] = dry
            ok = [d for d in dry if d["returncode"] == 0]
            if ok:
                best = min(ok, key=lambda d: d["wall_s"])
                row["dry_run_s"] = best["wall_s"]
                row["dag_jobs"] = best["jobs"].get("total")
                row["dry_run_maxrss_mb"] = best["maxrss_kb"] / 1024
            else:
                row["error"] = "snakemake -n failed"
            rows.append(row)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif args.workdir is None:
            print(f"kept {work}")
    timed = [r for r in rows if "dry_run_s" in r]
    base = timed[0] if timed else None
    for r in timed:
        r["ratio_to_linear"] = r["dry_run_s"] / (base["dry_run_s"] * r["n"] / base["n"])
    print("\nsnakemake -n on header-only sets (alignment off)")
    print(f"{'N':>6s} {'sky cells':>9s} {'layers':>6s} {'DAG jobs':>9s} {'generate s':>10s} "
          f"{'prepare s':>9s} {'plan s':>7s} {'dry run s':>9s} {'vs linear':>9s} "
          f"{'max RSS MB':>10s}")
    for r in rows:
        lib = r.get("library", {}).get("total_s")
        until = r.get("until_plan", {}).get("wall_s")
        def f(v, fmt):
            return format(v, fmt) if isinstance(v, int | float) else "-"
        print(f"{r['n']:6d} {f(r.get('skycells'), '9d')} {f(r.get('layers'), '6d')} "
              f"{f(r.get('dag_jobs'), '9d')} {f(r.get('generate_s'), '10.1f')} "
              f"{f(lib, '9.1f')} {f(until, '7.1f')} {f(r.get('dry_run_s'), '9.1f')} "
              f"{f(r.get('ratio_to_linear'), '9.2f')} {f(r.get('dry_run_maxrss_mb'), '10.0f')}"
              + (f"  {r['error']}" if "error" in r else ""))
    result = {"mode": "plan", "prepare": args.prepare, "cores": args.cores, "seed": args.seed,
              "cosmic_rays": args.cosmic_rays or "(workflow default)",
              "versions": versions(("snakemake", "numpy", "astropy", "drizzlepac")), "sizes": rows,
              "targets": {"5000 exposures in at most 60 s": any(
                  r["n"] >= 5000 and r.get("dry_run_s", 1e9) <= 60 for r in rows)}}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("scale_plan.json" if not args.cosmic_rays
                       else f"scale_plan_cr-{args.cosmic_rays}.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nfigures written to {path}")
    return 0 if timed and len(timed) == len(rows) else 1


def config_inputs(config: Path) -> str:
    return json.loads(config.read_text())["inputs"]


# ------------------------------------------------------------------------------------------
# run mode


def simulated(preset: str, given: Path | None, work: Path, workers: int) -> tuple[Path, dict]:
    """The data directory of ``preset`` (``given``, or simulated into ``work``)."""
    if given is not None:
        if not (given / "truth" / "exposures.ecsv").is_file():
            sys.exit(f"{given} has no truth/exposures.ecsv: not a `mvmflow simulate` output")
        return given, {"simulated": False}
    from mvmflow.simulate import simulate

    d = work / f"data_{preset}"
    if (d / "truth" / "exposures.ecsv").is_file():
        return d, {"simulated": False, "reused": True}
    start = time.perf_counter()
    simulate(preset, d, workers=workers)
    return d, {"simulated": True, "simulate_s": time.perf_counter() - start,
               "bytes": sum(p.stat().st_size for p in d.glob("*.fits"))}


def quarter_files(data: Path, skycell: str) -> list[Path]:
    """The exposures pointed in the south-west quarter of the data's pointings on ``skycell``
    (pixel x and y of the pointing below their medians; at least one exposure)."""
    import numpy as np
    from astropy.table import Table

    from mvmflow.grid import SkyCell

    table = Table.read(data / "truth" / "exposures.ecsv", format="ascii.ecsv")
    x, y = SkyCell.from_name(skycell).wcs.world_to_pixel_values(
        np.asarray(table["ra"]), np.asarray(table["dec"]))
    pick = (x <= np.median(x)) & (y <= np.median(y))
    if not pick.any():
        pick[int(np.argmin(x + y))] = True
    return [data / str(name) for name in table["file"][pick]]


def all_files(data: Path) -> list[Path]:
    from astropy.table import Table

    table = Table.read(data / "truth" / "exposures.ecsv", format="ascii.ecsv")
    return [data / str(name) for name in table["file"]]


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def rule_peaks(work: Path, peaks: Path) -> dict:
    """Per rule: jobs, exact peak RSS (VmHWM, MB), snakemake's sampled max_rss (MB), total
    and longest seconds."""
    exact: dict[str, float] = {}
    for line in peaks.read_text().splitlines() if peaks.is_file() else []:
        rule, kb = line.split("\t")
        exact[rule] = max(exact.get(rule, 0.0), int(kb) / 1024.0)
    bench = work / "results" / "logs" / "benchmarks"
    rows: dict[str, list[dict]] = {}
    for tsv in sorted(bench.rglob("*.tsv")) if bench.is_dir() else []:
        head, *body = tsv.read_text().splitlines()
        if not body:
            continue
        rule = tsv.relative_to(bench).parts[0].removesuffix(".tsv")
        row = dict(zip(head.split("\t"), body[-1].split("\t"), strict=False))
        rows.setdefault(rule, []).append(row)
    out = {}
    for rule in sorted(set(rows) | set(exact)):
        rs = rows.get(rule, [])

        def num(r, key):
            with contextlib.suppress(KeyError, ValueError):
                return float(r[key])
            return float("nan")
        secs = [num(r, "s") for r in rs]
        sampled = [num(r, "max_rss") for r in rs]
        out[rule] = {"jobs": len(rs), "peak_mb": exact.get(rule),
                     "max_rss_mb": max(sampled) if sampled else None,
                     "s_total": sum(secs), "s_max": max(secs) if secs else None}
    return out


def mosaic_target(run: Path) -> list[str]:
    """The mosaic's manifest (it needs every mosaic product), from the run's plan."""
    from mvmflow.runplan import RunPlan

    plan = RunPlan.load(run / "results" / "plan" / "plan.json")
    return [f"results/mosaic/{plan.mosaic.manifest}"]


def run_case(name: str, files: list[Path], work: Path, args, keep: bool, extra: dict,
             mosaic_only: bool = False) -> dict:
    """One end-to-end run; returns its figures. ``mosaic_only``: snakemake ``--until plan``,
    then the mosaic's manifest as the target (its name comes from the plan), timed as one."""
    d = work / f"run_{name}_{'keep' if keep else 'drop'}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    listing = d / "inputs.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    config = {"inputs": str(listing), "outdir": "results", "align": {"enabled": False},
              "keep_intermediates": keep, **extra}
    if args.cosmic_rays:
        config["cosmic_rays"] = {"default": args.cosmic_rays, "wfc3_ir": "never",
                                 "acs_sbc": "never"}
    cfg = write_config(d / "benchmark.json", config)
    hook = d / "peak_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PEAK_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        PEAK_ENV: str(d / "peaks.tsv")}
    out = d / "results"
    peak = {"intermediates": 0, "outdir": 0}

    def sample():
        if out.is_dir():
            inter = sum(_tree_bytes(out / sub) for sub in INTERMEDIATES)
            peak["intermediates"] = max(peak["intermediates"], inter)
            peak["outdir"] = max(peak["outdir"], _tree_bytes(out))

    load = load_average()
    print(f"  {name}, keep_intermediates {keep}: {len(files)} exposures, snakemake --cores "
          f"{args.cores} (load {load:.2f}) ...", flush=True)
    steps = [("--until", "plan"), mosaic_target] if mosaic_only else [()]
    targets: list[str] = []
    res = {"returncode": 0, "wall_s": 0.0, "maxrss_kb": 0}
    for k, step in enumerate(steps):
        step = step(d) if callable(step) else list(step)
        targets += step
        part = measured(snakemake_argv(d, cfg, *step, cores=args.cores), d,
                        d / f"run{'' if k == 0 else k + 1}.log", env=env, sample=sample,
                        every=args.sample)
        res = {"returncode": part["returncode"], "wall_s": res["wall_s"] + part["wall_s"],
               "maxrss_kb": max(res["maxrss_kb"], part.get("maxrss_kb", 0))}
        if part["returncode"] != 0:
            break
    rules = rule_peaks(d, d / "peaks.tsv")
    jobs = {r: v for r, v in rules.items() if v["peak_mb"] or v["max_rss_mb"]}
    largest = max(jobs.items(), key=lambda kv: max(kv[1]["peak_mb"] or 0,
                                                   kv[1]["max_rss_mb"] or 0), default=None)
    end = {sub: _tree_bytes(out / sub) for sub in INTERMEDIATES if (out / sub).exists()}
    n = len(files)
    fig = {
        "case": name, "keep_intermediates": keep, "exposures": n,
        "input_bytes": sum(p.stat().st_size for p in files), "config": config,
        "snakemake_arguments": list(targets),
        "load_average_start": load, "returncode": res["returncode"], "wall_s": res["wall_s"],
        "largest_process_mb": res.get("maxrss_kb", 0) / 1024,
        "largest_job": None if largest is None else {
            "rule": largest[0], "peak_mb": largest[1]["peak_mb"],
            "max_rss_mb": largest[1]["max_rss_mb"]},
        "rules": rules,
        "jobs": sum(v["jobs"] for v in rules.values()),
        "disk": {"intermediates_peak": peak["intermediates"],
                 "intermediates_end": sum(end.values()), "intermediates_end_by_dir": end,
                 "outdir_peak": peak["outdir"], "outdir_end": _tree_bytes(out),
                 "intermediates_peak_per_exposure": peak["intermediates"] / n,
                 "intermediates_end_per_exposure": sum(end.values()) / n},
    }
    job_mb = max((fig["largest_job"] or {}).get("peak_mb") or 0,
                 (fig["largest_job"] or {}).get("max_rss_mb") or 0)
    print(f"    {res['wall_s']:.0f} s, rc {res['returncode']}, {fig['jobs']} jobs, largest "
          f"job {job_mb:.0f} MB ({(fig['largest_job'] or {}).get('rule')}), intermediates "
          f"peak {peak['intermediates'] / 2**20:.0f} MB, end "
          f"{fig['disk']['intermediates_end'] / 2**20:.0f} MB", flush=True)
    if res["returncode"] != 0:
        log = max(d.glob("run*.log"), key=lambda f: f.stat().st_mtime)
        print(f"    failed; end of {log}:\n{tail(log)}")
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    else:
        fig["directory"] = str(d)
    return fig


def run_reference(files: list[Path], skycell: str, work: Path, args) -> dict:
    """drizzlepac's run_mvm_processing on ``skycell`` with copies of ``files``."""
    from mvmflow.poller import make_poller, write_poller

    d = work / "reference" / skycell
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for p in files:  # copies: the reference renames, updates and deletes its inputs
        shutil.copy2(p, d / p.name)
    poller = f"{skycell}_input.out"
    write_poller(make_poller([d / p.name for p in files], "mvm", skycell), d / poller, "mvm")
    load = load_average()
    print(f"  reference run_mvm_processing on {skycell}, {len(files)} exposures (timeout "
          f"{args.reference_timeout:.0f} s, address space {args.reference_mem_gb:g} GB, load "
          f"{load:.2f}) ...", flush=True)
    res = measured([sys.executable, "-c", REFERENCE, poller, "match",
                    str(args.reference_mem_gb)], d, d / "run.log",
                   timeout=args.reference_timeout)
    text = (d / "run.log").read_text(errors="replace") if (d / "run.log").is_file() else ""
    failure = None
    if res["returncode"] == "timeout":
        failure = f"stopped after {args.reference_timeout:.0f} s"
    elif res["returncode"] != 0:
        found = re.findall(r"(MemoryError|Killed|\w+Error: .*)", text)
        failure = found[-1] if found else f"exit status {res['returncode']}"
    fig = {"returncode": res["returncode"], "wall_s": res["wall_s"],
           "largest_process_mb": res.get("maxrss_kb", 0) / 1024, "failure": failure,
           "load_average_start": load,
           "products": sorted(p.name for p in d.glob("hst_*_dr[cz].fits"))}
    print(f"    {res['wall_s']:.0f} s, rc {res['returncode']}, largest process "
          f"{fig['largest_process_mb']:.0f} MB" + (f", {failure}" if failure else ""), flush=True)
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    return fig


def run_run(args) -> int:
    from mvmflow.simulate.presets import FULLCELL_SKYCELL

    assert FULLCELL_SKYCELL == SKYCELL
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mvm_scale_run_"))
    work.mkdir(parents=True, exist_ok=True)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    keeps = [{"keep": True, "drop": False}[k.strip()] for k in args.intermediates.split(",")
             if k.strip()]
    mosaic_preset = args.mosaic_preset or ("fullcell_2x2" if args.preset == "fullcell"
                                           else args.preset)
    print(f"working directory {work}; free disk {shutil.disk_usage(work).free / 2**30:.0f} GB")
    result = {"mode": "run", "preset": args.preset, "mosaic_preset": mosaic_preset,
              "cores": args.cores, "versions": versions(("snakemake", "numpy", "astropy", "drizzlepac")),
              "runs": [], "data": {}}
    try:
        data = mosaic_data = None
        if {"quarter", "whole"} & set(cases) or args.reference:
            data, info = simulated(args.preset, args.data, work, args.sim_workers)
            result["data"][args.preset] = {"directory": str(data), **info}
            print(f"data {args.preset}: {data} {info}", flush=True)
        if "mosaic" in cases:
            mosaic_data, info = simulated(mosaic_preset, args.mosaic_data, work,
                                          args.sim_workers)
            result["data"][mosaic_preset] = {"directory": str(mosaic_data), **info}
            print(f"data {mosaic_preset}: {mosaic_data} {info}", flush=True)
        for case in cases:
            if case == "quarter":
                files = quarter_files(data, args.skycell)
                extra = {"skycells": [args.skycell]}
            elif case == "whole":
                files = all_files(data)
                extra = {"skycells": [args.skycell]}
            elif case == "mosaic":
                files = all_files(mosaic_data)
                mosaic = {"enabled": True}
                if args.mosaic_scale:
                    mosaic["scale"] = args.mosaic_scale
                extra = {"skycells": [], "mosaic": mosaic}
            else:
                sys.exit(f"unknown case {case!r} (quarter, whole, mosaic)")
            for keep in keeps:
                free = shutil.disk_usage(work).free
                result["runs"].append({**run_case(
                    case, files, work, args, keep, extra,
                    mosaic_only=case == "mosaic" and args.mosaic_only),
                    "free_disk_start": free})
        if args.reference:
            result["reference"] = run_reference(all_files(data), args.skycell, work, args)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_run(result)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scale_run_{args.preset}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nfigures written to {path}")
    return 0 if all(r["returncode"] == 0 for r in result["runs"]) else 1


def print_run(result: dict) -> None:
    gb = 2**30
    print(f"\nEnd-to-end runs (alignment off), --cores {result['cores']}")
    print(f"{'case':8s} {'interm.':7s} {'exp':>4s} {'wall s':>7s} {'jobs':>5s} "
          f"{'largest job MB':>14s} {'(rule)':18s} {'largest proc MB':>15s} "
          f"{'interm. peak GB':>15s} {'per exp MB':>10s} {'end GB':>7s} {'out GB':>7s}")
    for r in result["runs"]:
        lj = r["largest_job"] or {}
        job_mb = max(lj.get("peak_mb") or 0, lj.get("max_rss_mb") or 0)
        disk = r["disk"]
        print(f"{r['case']:8s} {'keep' if r['keep_intermediates'] else 'drop':7s} "
              f"{r['exposures']:4d} {r['wall_s']:7.0f} {r['jobs']:5d} {job_mb:14.0f} "
              f"{str(lj.get('rule')):18s} {r['largest_process_mb']:15.0f} "
              f"{disk['intermediates_peak'] / gb:15.2f} "
              f"{disk['intermediates_peak_per_exposure'] / 2**20:10.0f} "
              f"{disk['intermediates_end'] / gb:7.2f} {disk['outdir_end'] / gb:7.2f}"
              + ("" if r["returncode"] == 0 else f"  FAILED ({r['returncode']})"))
    ok = [r for r in result["runs"] if r["returncode"] == 0 and r["largest_job"]]
    if ok:
        peaks = [max(r["largest_job"].get("peak_mb") or 0, r["largest_job"].get("max_rss_mb")
                     or 0) for r in ok]
        result["targets"] = {"largest job <= 2 GB": max(peaks) <= 2048,
                             "flat (largest / smallest of the cases' largest jobs)":
                                 max(peaks) / max(min(peaks), 1)}
        print(f"largest job over the runs: {max(peaks):.0f} MB (target <= 2048); largest / "
              f"smallest case: {max(peaks) / max(min(peaks), 1):.2f}")
    if "reference" in result:
        ref = result["reference"]
        print(f"reference: {ref['wall_s']:.0f} s, largest process "
              f"{ref['largest_process_mb']:.0f} MB, "
              + (f"FAILED: {ref['failure']}" if ref["failure"] else "ok"))


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_plan(args) if args.mode == "plan" else run_run(args)


if __name__ == "__main__":
    sys.exit(main())
