#!/usr/bin/env python
"""Peak memory per job of a custom mosaic as it grows: tiled, untiled, and the reference.

For each ``n`` of ``--sizes``, simulates an ``n x n`` grid of WFC3/IR F110W full-frame
exposures (300 s, one per grid position, 120 arcsec apart so neighbours overlap by a few
arcsec; no pointing errors, a sparse scene) around the demo centre, all on projection cell
81, and runs the whole workflow on it (``snakemake --cores N``: sky-cell layers and a custom
mosaic at the coarse scale, 0.12"/px, in tiles of at most ``--tile-size`` pixels a side;
alignment off). Per rule it then reports the number of jobs, the sum and the largest of
their seconds and two peak RSS figures of the largest job:

- exact: every job's Python process appends its rule and its ``VmHWM`` (the high-water mark
  of its own resident set, from ``/proc/self/status``) to a file when it exits, through a
  ``sitecustomize`` hook put on the runs' ``PYTHONPATH`` (nothing in the workflow changes);
- sampled: the ``max_rss`` column of snakemake's own records
  (``<workdir>/results/logs/benchmarks/<rule>/...tsv``, the ``benchmark:`` directive), which polls
  the job's processes every 0.5 s for 15 s and every 30 s after that, so it can miss a
  short peak.

The rules are the mosaic's map (``mosaic_drizzle``: one exposure onto its own box), reduce
(``mosaic_tile``: one tile) and write (``mosaic_layer``: the product, tile by tile), and for
context the sky-cell path (``drizzle``, ``sky``, ``layer``). With them: the mosaic's size
(pixels, bytes of the product, tiles), the sky-cell layers, the run's wall time and its
largest single process (``/usr/bin/time -v`` around snakemake: the largest of snakemake and
its jobs).

For the ``--untiled`` largest sizes, the mosaic is made again with ``tile_size`` equal to
its larger side (one tile): the tiled product is set aside, the tiled run's records are
moved to ``results/logs/benchmarks_tiled``, and snakemake is asked for the mosaic product only, so
the plan, the sky offsets (they depend on the plan file), the tile and the product are
redone and the exposures' partials are reused. The plan file is deleted first: with it in
place, snakemake builds the DAG from the old plan's tiles and fails after rerunning the
plan. The two products are compared byte for byte (the design promises the same file for
any tile size).

With ``--reference`` (default on), drizzlepac's ``make_custom_mosaic.perform(<glob>,
skip_gaia_alignment=True)`` runs on the smallest set in its own directory, on copies of the
inputs, under ``/usr/bin/time -v`` (peak RSS of its largest process, wall time), with the
same skypac compatibility alias as ``vs_reference.py``, and is stopped after
``--reference-timeout`` seconds. A failure is reported with its reason.

The simulation is not timed. Tables go to stdout and to ``<out>/mosaic_memory.txt``.

Run with the project's virtual environment::

    .venv/bin/python benchmarks/mosaic_memory.py                      # 1,2,4,8; ~20 min
    .venv/bin/python benchmarks/mosaic_memory.py --sizes 1,2 --no-reference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import PEAK_ENV, PEAK_HOOK  # benchmarks/measure.py

ROOT = Path(__file__).resolve().parents[1]
SPACING = 120.0  # arcsec between grid positions (the IR field is about 139" x 122" at PA 0)
RULES = ("mosaic_drizzle", "mosaic_tile", "mosaic_layer", "drizzle", "sky", "layer")
MOSAIC_RULES = ("mosaic_tile", "mosaic_layer")

# The reference in a fresh interpreter: skypac's sky matching gets back the
# SphericalPolygon.iter_polygons_flat that spherical_geometry 1.4 removed (as in
# vs_reference.py; without it AstroDrizzle falls back to 'localmin').
REFERENCE = """
import sys
from spherical_geometry.polygon import SingleSphericalPolygon, SphericalPolygon
if not hasattr(SphericalPolygon, "iter_polygons_flat"):
    SingleSphericalPolygon.iter_polygons_flat = SingleSphericalPolygon.__iter__
    SphericalPolygon.iter_polygons_flat = SphericalPolygon.__iter__
from drizzlepac import make_custom_mosaic
sys.exit(make_custom_mosaic.perform(sys.argv[1], skip_gaia_alignment=True))
"""




def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Peak memory and time per job of a tiled custom mosaic of n x n WFC3/IR "
                    "exposures, for growing n; an untiled rerun; the reference.")
    p.add_argument("--sizes", default="1,2,4,8",
                   help="grid sizes n (n x n exposures), comma-separated (default 1,2,4,8)")
    p.add_argument("--tile-size", type=int, default=2048,
                   help="mosaic.tile_size of the tiled runs (default 2048)")
    p.add_argument("--untiled", type=int, default=2, metavar="K",
                   help="rerun the mosaic untiled (one tile) for the K largest sizes "
                        "(default 2; 0: never)")
    p.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    p.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="run drizzlepac's make_custom_mosaic on the smallest set (default on)")
    p.add_argument("--reference-timeout", type=float, default=600.0,
                   help="stop the reference after this many seconds (default 600)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the temporary working directory goes (default: the system's "
                        "temporary directory)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out",
                   help="directory of mosaic_memory.txt (default benchmarks/out)")
    p.add_argument("--keep", action="store_true",
                   help="keep the working directory (inputs, products, partials, logs); by "
                        "default each size's files are deleted once measured")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        p.error("--sizes must be positive")
    return args


# ------------------------------------------------------------------------------------------
# simulating


def simulate_grid(n: int, out: Path, seed: int) -> list[Path]:
    """An n x n grid of WFC3/IR F110W full frames around the demo centre (PA 0, no errors)."""
    from mvmflow.simulate import simulate
    from mvmflow.simulate.presets import DEMO_CENTER, ExposureSpec, Preset, VisitSpec
    from mvmflow.simulate.scene import SceneSpec

    visits = []
    for j in range(n):
        for i in range(n):
            k = j * n + i
            visits.append(VisitSpec(
                instrument="WFC3", proposid=17000, program="m0s", visit=f"{k + 1:02d}",
                start=f"2022-01-{1 + k // 8:02d}T{2 * (k % 8):02d}:00:00", pa=0.0,
                offset=((i - (n - 1) / 2) * SPACING, (j - (n - 1) / 2) * SPACING),
                exposures=(ExposureSpec("IR", "F110W", 302.93, "IR"),)))
    preset = Preset(
        name=f"mosaic_grid_{n}x{n}", description=f"{n} x {n} WFC3/IR full frames",
        ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], visits=tuple(visits), seed=seed,
        scene=SceneSpec(star_density=30.0, mag_range=(18.0, 24.5), bright_stars=0,
                        galaxy_density=1.0),
        max_shift_arcsec=0.0, max_rotation_deg=0.0)
    return simulate(preset, out, seed=seed).exposures


# ------------------------------------------------------------------------------------------
# running and measuring


def _time_v(path: Path) -> dict:
    """Peak RSS (MB) and wall time (s) from a ``/usr/bin/time -v -o`` report."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    out = {}
    if m := re.search(r"Maximum resident set size \(kbytes\): (\d+)", text):
        out["max_rss_mb"] = int(m.group(1)) / 1024.0
    if m := re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text):
        out["wall_s"] = sum(float(v) * 60**k for k, v in enumerate(reversed(m.group(1).split(":"))))
    return out


def run_timed(argv: list[str], cwd: Path, log: Path, timeout: float | None = None,
              env: dict | None = None) -> dict:
    """Run ``argv`` under ``/usr/bin/time -v``; exit status, wall time, peak RSS."""
    report = log.with_suffix(".time.txt")
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(report), *argv], cwd=cwd,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 15)  # the session this run started, nothing else
            proc.wait()
            rc = "timeout"
    wall = time.perf_counter() - start
    return {"returncode": rc, "wall_s": wall, **_time_v(report)}


def run_workflow(work: Path, config: dict, cores: int, tag: str,
                 targets: tuple[str, ...] = ()) -> dict:
    cfg = work / f"{tag}.json"  # a file: --config would turn false into the string 'false'
    cfg.write_text(json.dumps(config, indent=1))
    hook = work / "peak_hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(PEAK_HOOK)
    pythonpath = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath,
           PEAK_ENV: str(work / f"{tag}_peaks.tsv")}
    # targets first: --configfile takes every word after it
    argv = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"),
            "--directory", str(work), "--cores", str(cores), "--configfile", str(cfg)]
    res = run_timed(argv, work, work / f"{tag}.log", env=env)
    res["rules"] = rule_stats(work / "results" / "logs" / "benchmarks", work / f"{tag}_peaks.tsv")
    return res


def failure_report(work: Path, log: Path) -> str:
    """The failed rules of a snakemake run, with the end of each one's log file."""
    text = log.read_text(errors="replace")
    lines = [f"snakemake failed; end of {log}:", *text.splitlines()[-15:]]
    for m in re.finditer(r"Error in rule (\w+):(.*?)(?:\n\n|\Z)", text, re.S):
        lines.append(f"--- rule {m.group(1)}")
        if lm := re.search(r"log: (\S+)", m.group(2)):
            path = work / lm.group(1)
            tail = path.read_text(errors="replace").splitlines()[-25:] if path.is_file() else []
            lines += [f"log {path}:", *tail]
    return "\n".join(lines)


def rule_stats(bench: Path, peaks: Path) -> dict:
    """Per rule: jobs, largest sampled max_rss and exact peak RSS (MB), total and largest
    seconds, from snakemake's records and the jobs' own peaks."""
    hwm: dict[str, float] = {}
    for line in peaks.read_text().splitlines() if peaks.is_file() else []:
        rule, kb = line.split("\t")
        hwm[rule] = max(hwm.get(rule, 0.0), int(kb) / 1024.0)
    out = {}
    for rule in RULES:
        rows = []
        for tsv in sorted((bench / rule).rglob("*.tsv")):
            head, *body = tsv.read_text().splitlines()
            cols = head.split("\t")
            rows += [dict(zip(cols, line.split("\t"), strict=True)) for line in body[-1:]]
        if rows:
            secs = [float(r["s"]) for r in rows]
            out[rule] = {"jobs": len(rows), "max_rss_mb": max(float(r["max_rss"]) for r in rows),
                         "peak_mb": hwm.get(rule, float("nan")),
                         "s_total": sum(secs), "s_max": max(secs)}
    out["_all_jobs"] = len(list(bench.rglob("*.tsv")))
    return out


def mosaic_info(work: Path) -> dict:
    """The mosaic's product, frame and tiles, and the sky-cell layers, from the plan."""
    from mvmflow.runplan import RunPlan

    plan = RunPlan.load(work / "results" / "plan" / "plan.json")
    (layer,) = plan.mosaic_layers
    product = work / "results" / "mosaic" / layer.name
    fine = [lay.frame for lay in plan.layers() if lay.scale == "fine"]
    return {"name": layer.name, "product": product, "bytes": product.stat().st_size,
            "nx": layer.frame.nx, "ny": layer.frame.ny,
            "tiles": len(layer.tiles), "skycells": len(plan.skycells),
            "skycell_layers": len(plan.layers()),
            "largest_fine_layer_px": max(f.nx * f.ny for f in fine)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def fits_difference(a: Path, b: Path) -> str:
    """Where two products differ (when not byte-identical): headers or pixels, per HDU."""
    import numpy as np
    from astropy.io import fits

    notes = []
    with fits.open(a) as ha, fits.open(b) as hb:
        if len(ha) != len(hb):
            return f"{len(ha)} HDUs against {len(hb)}"
        for x, y in zip(ha, hb, strict=True):
            keys = [k for k in set(x.header) | set(y.header) if x.header.get(k) != y.header.get(k)]
            if keys:
                notes.append(f"{x.name} header: {', '.join(sorted(keys)[:8])}")
            if x.is_image and x.data is not None and not np.array_equal(x.data, y.data,
                                                                        equal_nan=True):
                notes.append(f"{x.name} pixels")
    return "; ".join(notes) or "same headers and pixels (padding or order differs)"


def run_untiled(work: Path, config: dict, info: dict, cores: int) -> dict:
    """Make the mosaic again as one tile; its records and the byte comparison."""
    tiled = info["product"].with_name("tiled_" + info["product"].name)
    info["product"].rename(tiled)
    shutil.rmtree(work / "results" / "mosaic" / "tiles", ignore_errors=True)
    # Without the plan file the DAG waits for the plan checkpoint. With the old one there,
    # snakemake builds the DAG from its tiles, reruns the plan (its params changed), then
    # fails re-evaluating the stale tile jobs: "InputFunctionException in rule mosaic_tile
    # ... IndexError: list index out of range" in mosaic_tile_box (tile=t0001).
    (work / "results" / "plan" / "plan.json").unlink()
    bench = work / "results" / "logs" / "benchmarks"
    bench.rename(bench.with_name("benchmarks_tiled"))
    size = max(info["nx"], info["ny"], 64)
    config = {**config, "mosaic": {**config["mosaic"], "tile_size": size}}
    target = str(info["product"].relative_to(work))
    res = run_workflow(work, config, cores, "untiled", (target,))
    res["tile_size"] = size
    if res["returncode"] != 0:
        res["error"] = failure_report(work, work / "untiled.log")
        return res
    res["bytes"] = info["product"].stat().st_size
    res["identical"] = sha256(tiled) == sha256(info["product"])
    if not res["identical"]:
        res["difference"] = fits_difference(tiled, info["product"])
    return res


def run_reference(inputs: list[Path], work: Path, timeout: float) -> dict:
    """drizzlepac's make_custom_mosaic on copies of ``inputs``; wall time, peak RSS, result."""
    d = work / "reference"
    d.mkdir()
    for path in inputs:  # the reference updates its inputs' headers
        shutil.copy2(path, d / path.name)
    argv = [sys.executable, "-c", REFERENCE, "*_fl?.fits"]
    res = run_timed(argv, d, d / "run.log", timeout)
    products = sorted(p.name for p in d.glob("*_dr[cz].fits"))
    res["products"] = products
    if res["returncode"] == "timeout":
        res["error"] = f"stopped after {timeout:.0f} s"
    elif res["returncode"] != 0 or not products:
        text = (d / "run.log").read_text(errors="replace").splitlines()
        errors = [ln for ln in text if re.search(r"Error|Exception|Traceback", ln)]
        res["error"] = (errors[-1] if errors else (text[-1] if text else "no output")).strip()
    return res


# ------------------------------------------------------------------------------------------
# report


def _rss(stats: dict, rule: str) -> str:
    if rule not in stats:
        return "-"
    return f"{stats[rule]['peak_mb']:.0f} ({stats[rule]['max_rss_mb']:.0f})"


def _secs(stats: dict, rule: str) -> str:
    if rule not in stats:
        return "-"
    s = stats[rule]
    return f"{s['jobs']} x {s['s_total']:.0f} ({s['s_max']:.0f})"


def report(rows: list[dict], reference: dict | None, args) -> str:
    ok = [r for r in rows if "error" not in r]
    cols = [(f"{r['n']}x{r['n']}", r["rules"]) for r in ok]
    for r in ok:
        if r.get("untiled", {}).get("rules"):
            cols.append((f"{r['n']}x{r['n']} 1 tile", r["untiled"]["rules"]))
    out = [f"custom mosaic of n x n WFC3/IR F110W full frames ({SPACING:g}\" apart), scale "
           f"coarse (0.12\"/px), tile_size {args.tile_size}, snakemake --cores {args.cores}, "
           f"load average before: " + ", ".join(f"{r['load']:.1f}" for r in rows), ""]
    out += ["| grid | exposures | mosaic px | Mpx | product MB | tiles | sky-cell layers "
            "(largest fine, Mpx) | jobs | wall s | largest process MB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['n']}x{r['n']} | {r['n'] ** 2} | FAILED: {r['error_rule']} "
                       "| | | | | | | |")
            continue
        m = r["mosaic"]
        out.append(f"| {r['n']}x{r['n']} | {r['n'] ** 2} | {m['nx']} x {m['ny']} | "
                   f"{m['nx'] * m['ny'] / 1e6:.1f} | {m['bytes'] / 1e6:.0f} | {m['tiles']} | "
                   f"{m['skycell_layers']} ({m['largest_fine_layer_px'] / 1e6:.0f}) | "
                   f"{r['rules']['_all_jobs']} | {r['wall_s']:.0f} | {r['max_rss_mb']:.0f} |")
    for title, cell in (("peak RSS of the largest job, MB: exact (VmHWM of the job's process) "
                         "and, in brackets, snakemake's sampled max_rss", _rss),
                        ("jobs x total seconds (longest job)", _secs)):
        out += ["", f"{title}:", "",
                "| rule | " + " | ".join(c for c, _ in cols) + " |",
                "|---|" + "---|" * len(cols)]
        out += [f"| {rule} | " + " | ".join(cell(s, rule) for _, s in cols) + " |"
                for rule in RULES]
    for r in ok:
        u = r.get("untiled")
        if not u:
            continue
        if "error" in u:
            out += ["", f"{r['n']}x{r['n']} untiled rerun FAILED:", u["error"]]
            continue
        same = ("byte-identical" if u["identical"] else
                f"NOT identical ({u['difference']})")
        out += ["", f"{r['n']}x{r['n']}: tiled ({r['mosaic']['tiles']} tiles of <= "
                f"{args.tile_size} px) vs untiled (tile_size {u['tile_size']}): products "
                f"{same}, {u['bytes']} bytes; untiled rerun (plan, sky, tile, product) "
                f"{u['wall_s']:.0f} s, largest process {u['max_rss_mb']:.0f} MB"]
    if reference is not None:
        out += [""] + reference_lines(reference, rows)
    return "\n".join(out) + "\n"


def reference_lines(ref: dict, rows: list[dict]) -> list[str]:
    n = ref["n"]
    head = (f"reference (drizzlepac make_custom_mosaic, skip_gaia_alignment=True) on the "
            f"{n}x{n} set:")
    if "error" in ref:
        return [f"{head} FAILED after {ref['wall_s']:.0f} s: {ref['error']}"]
    ours = next(r for r in rows if r["n"] == n)
    lines = [f"{head} {ref['wall_s']:.0f} s, largest process {ref['max_rss_mb']:.0f} MB, "
             f"products: {', '.join(ref['products'])}"]
    if "error" not in ours:
        lines.append(f"ours/reference (whole run, sky cells included): wall "
                     f"{ours['wall_s'] / ref['wall_s']:.2f}, largest process "
                     f"{ours['max_rss_mb'] / ref['max_rss_mb']:.2f}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mosaic_memory_", dir=base)).resolve()
    print(f"working directory {work}", flush=True)
    untiled = set(args.sizes[-args.untiled:]) if args.untiled > 0 else set()
    rows, reference, status = [], None, 0
    try:
        for n in args.sizes:
            d = work / f"n{n}"
            t0 = time.perf_counter()
            inputs = simulate_grid(n, d / "inputs", args.seed)
            print(f"{n}x{n}: simulated {len(inputs)} exposures in "
                  f"{time.perf_counter() - t0:.0f} s; running the workflow ...", flush=True)
            config = {"inputs": str(d / "inputs" / "*_flt.fits"), "outdir": "results",
                      "align": {"enabled": False},
                      "mosaic": {"enabled": True, "tile_size": args.tile_size,
                                 "scale": "coarse"}}
            row = {"n": n, "load": os.getloadavg()[0]}
            row.update(run_workflow(d, config, args.cores, "tiled"))
            if row["returncode"] != 0:
                row["error"] = failure_report(d, d / "tiled.log")
                row["error_rule"] = ", ".join(re.findall(r"Error in rule (\w+)", row["error"]))
                print(row["error"], flush=True)
                status = 1
            else:
                row["mosaic"] = mosaic_info(d)
                print(f"  {row['wall_s']:.0f} s, mosaic {row['mosaic']['nx']} x "
                      f"{row['mosaic']['ny']} in {row['mosaic']['tiles']} tiles", flush=True)
                if n in untiled:
                    print("  untiled rerun ...", flush=True)
                    row["untiled"] = run_untiled(d, config, row["mosaic"], args.cores)
                    status |= row["untiled"]["returncode"] != 0
                    print(f"  {row['untiled']['wall_s']:.0f} s, identical: "
                          f"{row['untiled'].get('identical')}", flush=True)
            rows.append(row)
            if not args.keep:  # the inputs of the smallest set stay for the reference
                for sub in ("results", ".snakemake"):
                    shutil.rmtree(d / sub, ignore_errors=True)
                if not (args.reference and n == args.sizes[0]):
                    shutil.rmtree(d / "inputs", ignore_errors=True)
        if args.reference:
            n = args.sizes[0]
            print(f"reference on the {n}x{n} set ...", flush=True)
            inputs = sorted((work / f"n{n}" / "inputs").glob("*_flt.fits"))
            reference = {"n": n, **run_reference(inputs, work / f"n{n}",
                                                 args.reference_timeout)}
        text = report(rows, reference, args)
        print("\n" + text)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mosaic_memory.txt").write_text(text)
        print(f"written to {args.out / 'mosaic_memory.txt'}")
        return status
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
