#!/usr/bin/env python
"""Time and peak memory of the cosmic-ray steps, per exposure and for one layer.

Simulates one layer of ``--n`` dithered full-frame exposures of one detector and filter
(ACS/WFC F814W or WFC3/UVIS F555W, 400 s, cosmic rays left unflagged, no pointing errors),
screens and plans them as the workflow does (``mvmflow.screen``, ``mvmflow.plan``; one sky
cell, one layer), then runs the steps of the cosmic-ray path the way the workflow's jobs do,
each in its own fresh Python process, one at a time:

- ``drizzle`` (map, per exposure): the separate drizzle, i.e. the exposure's partial on its
  box of the sky cell (``scripts/drizzle.py``);
- ``cr_median`` (reduce, per layer): :func:`mvmflow.median.median_layer` of all partials on
  the layer frame, strip by strip within ``--max-memory-mb`` (``scripts/cr_median.py``);
- ``cr_mask`` (map, per exposure): :func:`mvmflow.crreject.cr_mask_exposure` against the
  median, with the exposure's partial;
- ``drizzle_cr`` (map, per exposure): the final drizzle without the masked pixels
  (:func:`mvmflow.resample.drizzle_exposure` with the mask file);
- ``cr_drizzle`` (map, per exposure): the workflow's job, the two steps above in one process
  (:func:`mvmflow.crreject.cr_mask_and_drizzle`, ``scripts/cr_drizzle.py``); its mask file
  is checked to be identical to theirs, and its partial too with ``--final drizzle`` (by
  default it is the separate partial minus the masked pixels, :mod:`mvmflow.crsubtract`,
  equal to float32 rounding);
- ``final_compare`` (with ``--compare-final REPEATS``, per exposure): both ways of making
  the final partial on the same inputs in one process, timed by CPU time, and their
  differences.

Each step runs under a small wrapper process that times the step (wall clock, from its start
to its exit, interpreter start-up and imports included, as a workflow job) and reports
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: the step process's peak RSS. A step of
only the imports gives the interpreter's share. The simulation, screening and planning are
not timed. A table goes to stdout and the figures to ``<out>/cr.json``.

Run with the project's virtual environment::

    .venv/bin/python benchmarks/cr.py                      # 20 ACS/WFC full frames
    .venv/bin/python benchmarks/cr.py --n 3 --detector wfc3_uvis
    .venv/bin/python benchmarks/cr.py --n 4 --compare-final 3   # final partial both ways
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import WRAPPER  # benchmarks/measure.py

ROOT = Path(__file__).resolve().parents[1]
SKYCELL = "skycell-p0081x14y14"  # mvmflow.simulate.presets.FULLFRAME_SKYCELL
DETECTORS = ("acs_wfc", "wfc3_uvis")


def setups() -> dict:
    """What is simulated per detector: full-frame aperture, filter, exposure time, visit data
    (``mvmflow.simulate.presets.FULLFRAME_SETUPS``; imported here, not at the top, so the
    measured steps, which run this file, do not import the simulator).

    The layer is :func:`mvmflow.simulate.presets.fullframe_cr_preset`: visits of a 4-point
    dither (about 3 arcsec); successive visits turn by 2 degrees and move by a few arcsec,
    so the layer is a typical stack, not one pointing. (The ``fullframe_cr`` preset is its
    4-exposure ACS/WFC layer, rendered sparse.)
    """
    from mvmflow.simulate.presets import FULLFRAME_SETUPS

    return FULLFRAME_SETUPS

# Rough disk use per exposure (MB): input file, separate and final partials.
DISK_MB_PER_EXPOSURE = 170 + 2 * 150  # a full-frame partial is ~130 MB (mvmflow.partials)



# ------------------------------------------------------------------------------------------
# the steps (each runs in its own process: `cr.py _step <kind> <spec.json>`)


def _frame(data):
    from mvmflow.grid import Frame

    return Frame(**data)


def step_imports(spec: dict) -> dict:
    """Only the imports of the steps below (the interpreter's share of every step)."""
    import mvmflow.crreject  # noqa: F401
    import mvmflow.median  # noqa: F401
    import mvmflow.partials  # noqa: F401
    import mvmflow.resample  # noqa: F401

    return {}


def step_drizzle(spec: dict) -> dict:
    """scripts/drizzle.py without alignment: the separate (or, with a mask, final) drizzle."""
    from mvmflow.crreject import read_cr_masks
    from mvmflow.partials import write_partial
    from mvmflow.resample import drizzle_exposure, load_chips

    chips = load_chips(spec["exposure"])
    masks = None
    if spec.get("crmask"):
        masks = read_cr_masks(spec["crmask"], chips)
    partial = drizzle_exposure(chips, _frame(spec["frame"]), spec["params"], cr_masks=masks)
    write_partial(partial, spec["output"])
    out = {"window": None if partial.empty else [partial.window.nx, partial.window.ny]}
    if masks is not None:
        out["masked"] = sum(int(m.sum()) for m in masks if m is not None)
    return out


def step_median(spec: dict) -> dict:
    """scripts/cr_median.py with zero sky offsets."""
    from mvmflow.crreject import exposure_readnoise
    from mvmflow.median import median_layer

    readnoise = {Path(p).name: exposure_readnoise(p) for p in spec["exposures"]}
    info = median_layer(spec["partials"], _frame(spec["frame"]), spec["params"],
                        spec["output"], sky={}, readnoise=readnoise,
                        max_memory_mb=spec["max_memory_mb"])
    return {"ninputs": info.ninputs, "strip_rows": info.strip_rows, "nstrips": info.nstrips,
            "covered": info.covered, "seconds": info.seconds,
            "peak_strip_mb": info.peak_strip_mb}


def step_cr_mask(spec: dict) -> dict:
    """scripts/cr_mask.py without alignment and with zero sky offset."""
    from mvmflow.crreject import cr_mask_exposure

    info = cr_mask_exposure(spec["exposure"], spec["median"], None, spec["params"],
                            spec["output"], solution=None, sky=0.0, partial=spec["partial"])
    return {"ncr": info.ncr, "ntested": sum(c["ntested"] for c in info.chips),
            "seconds": info.seconds}


def step_cr_drizzle(spec: dict) -> dict:
    """scripts/cr_drizzle.py without alignment and with zero sky offset."""
    from mvmflow.crreject import cr_mask_and_drizzle
    from mvmflow.partials import write_partial

    info, final = cr_mask_and_drizzle(spec["exposure"], spec["median"], _frame(spec["frame"]),
                                      spec["params"], spec["drizzle_params"], spec["mask"],
                                      partial=spec["partial"], final=spec["final"])
    write_partial(final, spec["output"])
    return {"ncr": info.ncr}


def step_final_compare(spec: dict) -> dict:
    """The cr_drizzle job's final partial both ways on the same inputs, in one process: the
    masks (with the blot's maps kept, not timed), then ``--repeats`` times each the full
    re-drizzle (``resample.drizzle_exposure`` with the masks) and the subtraction (read the
    separate partial + ``crsubtract.subtract_masked``), timed by ``time.process_time``
    (CPU time of this process: a shared machine's load changes it less than wall time);
    and the differences of the two partials."""
    import numpy as np

    from mvmflow.crreject import _mask_inputs, chip_cr_mask
    from mvmflow.crsubtract import subtract_masked
    from mvmflow.partials import PartialFile
    from mvmflow.resample import drizzle_exposure

    frame = _frame(spec["frame"])
    chips, crp, readnoise, own = _mask_inputs(spec["exposure"], spec["median"], spec["params"],
                                              None, None, spec["partial"])
    kept, masks = [], []
    for chip in chips:
        masks.append(chip_cr_mask(chip, spec["median"], spec["params"], readnoise=readnoise,
                                  own=own, crp=crp, maps=kept)[0])
    t_old, t_new = [], []
    for _ in range(spec["repeats"]):
        t0 = time.process_time()
        old = drizzle_exposure(chips, frame, spec["drizzle_params"], cr_masks=masks)
        t1 = time.process_time()
        new = subtract_masked(PartialFile.open(spec["partial"]).read(), chips, frame,
                              spec["drizzle_params"], masks, kept=kept, copy=False)
        t2 = time.process_time()
        t_old.append(t1 - t0)
        t_new.append(t2 - t1)
    sep = PartialFile.open(spec["partial"]).read()
    w_sep = sep.weight.astype(np.float64)
    wn, wo = new.weight.astype(np.float64), old.weight.astype(np.float64)
    fn, fo = new.flux.astype(np.float64), old.flux.astype(np.float64)
    both = (wn > 0) & (wo > 0) & ((wn != wo) | (fn != fo))
    rw = np.abs(wn - wo)[both] / wo[both]
    rf = np.abs(fn - fo)[both] / np.maximum(np.abs(fo[both]), 1e-30)
    dropped = (wo > 0) & (wn == 0)
    return {
        "old_cpu_s": t_old, "new_cpu_s": t_new,
        "masked": sum(int(m.sum()) for m in masks),
        "kept_map_px": [0 if k is None else int(k.index.size) for k in kept],
        "pixels_differ": int(np.count_nonzero((wn != wo) | (fn != fo))),
        "pixels_covered": int(np.count_nonzero(wo > 0)),
        "weight_rel_max": float(rw.max(initial=0)),
        "weight_rel_p99": float(np.percentile(rw, 99)) if rw.size else 0.0,
        "flux_rel_max": float(rf.max(initial=0)),
        "flux_rel_p99": float(np.percentile(rf, 99)) if rf.size else 0.0,
        "weight_abs_over_separate_max": float(
            (np.abs(wn - wo)[both] / w_sep[both]).max(initial=0)),
        "dropped_slivers": int(dropped.sum()),
        "dropped_rel_max": float((wo[dropped] / w_sep[dropped]).max(initial=0)),
        "added": int(np.count_nonzero((wn > 0) & (wo == 0))),
        "nchips_differ": int(np.count_nonzero(new.nchips != old.nchips)),
        "records_equal": new.chips == old.chips,
    }


STEPS = {"imports": step_imports, "drizzle": step_drizzle, "drizzle_cr": step_drizzle,
         "cr_median": step_median, "cr_mask": step_cr_mask, "cr_drizzle": step_cr_drizzle,
         "final_compare": step_final_compare}


def run_step_here(kind: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = STEPS[kind](spec)
    Path(spec["result"]).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------
# setup: simulate, screen, plan (one child process, not timed)


def make_preset(detkey: str, n: int, star_density: float, seed: int):
    """The simulated layer: :func:`mvmflow.simulate.presets.fullframe_cr_preset`."""
    from mvmflow.simulate.presets import fullframe_cr_preset

    s = setups()[detkey]
    return fullframe_cr_preset(
        n, detkey, star_density=star_density, seed=seed, name=f"cr_bench_{detkey}_{n}",
        description=f"{n} full-frame {s['instrument']}/{s['detector']} {s['filter']} "
                    "exposures with unflagged cosmic rays (benchmarks/cr.py)")


def run_setup(spec_path: str) -> None:
    import dataclasses

    from mvmflow.crreject import cr_mode_applies
    from mvmflow.params import layer_parameters, load_defaults, resolve_table
    from mvmflow.plan import plan_skycells
    from mvmflow.screen import screen_exposure
    from mvmflow.simulate import simulate

    spec = json.loads(Path(spec_path).read_text())
    preset = make_preset(spec["detector"], spec["n"], spec["star_density"], spec["seed"])
    t0 = time.perf_counter()
    sim = simulate(preset, spec["data"])
    t1 = time.perf_counter()
    records = [screen_exposure(p, check_trails=False) for p in sim.exposures]
    bad = [f"{r.filename}: {r.reason}" for r in records if not r.accepted]
    if bad:
        sys.exit("screening rejected: " + "; ".join(bad))
    plan = plan_skycells(records, skycells=[SKYCELL])
    t2 = time.perf_counter()
    layers = [lay for lay in plan.layers if lay.scale == "fine"]
    if len(layers) != 1:
        sys.exit(f"expected one fine layer, got {[lay.name for lay in plan.layers]}")
    layer = layers[0]
    if len(layer.members) != spec["n"]:
        sys.exit(f"layer {layer.name} has {len(layer.members)} members, not {spec['n']}")
    table = resolve_table(load_defaults(ROOT / "config" / "detectors.yaml"))
    detkey = f"{layer.instrument}_{layer.detector}"
    params = layer_parameters(table, detkey, layer.filter, layer.coverage.meannexp)
    flagged = {r.filename: r.cr_flagged for r in records}
    params["cosmic_rays"] = cr_mode_applies(
        "auto", [flagged.get(m.filename, False) for m in layer.members],
        layer.coverage.maxnexp)
    drizzle_params = {k: v for k, v in params.items() if k not in ("n", "cosmic_rays", "cr")}
    jobs = [j for j in plan.jobs if j.layer == layer.name]
    out = {
        "preset": dataclasses.asdict(preset),
        "skycell": SKYCELL, "layer": layer.name, "frame": dataclasses.asdict(layer.frame),
        "coverage": layer.coverage.to_dict(), "params": params,
        "drizzle_params": drizzle_params,
        "exposures": [{"file": j.file, "filename": j.filename, "box": j.box,
                       "frame": dataclasses.asdict(j.frame),
                       "size_mb": os.path.getsize(j.file) / 2**20} for j in jobs],
        "simulate_s": t1 - t0, "screen_plan_s": t2 - t1,
    }
    Path(spec["result"]).write_text(json.dumps(out, indent=1, default=str))


# ------------------------------------------------------------------------------------------
# running and measuring


def run_measured(kind: str, spec: dict, work: Path, tag: str) -> dict:
    """Run one step in a fresh process under the wrapper; its wall time, peak RSS, result."""
    steps = work / "steps"
    steps.mkdir(exist_ok=True)
    spec_path = steps / f"{tag}.json"
    spec = {**spec, "result": str(steps / f"{tag}.result.json")}
    spec_path.write_text(json.dumps(spec))
    stats, log = steps / f"{tag}.rusage.json", steps / f"{tag}.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "_step", kind, str(spec_path)]
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-c", WRAPPER, str(stats), *argv],
                             stdout=f, stderr=subprocess.STDOUT, cwd=work)
    if rc != 0:
        print(f"step {tag} failed (exit {rc}); end of {log}:", file=sys.stderr)
        print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        sys.exit(1)
    usage = json.loads(stats.read_text())
    return {"step": kind, "tag": tag, "wall_s": usage["wall_s"],
            "cpu_s": usage["user_s"] + usage["sys_s"],
            "peak_rss_mb": usage["maxrss_kb"] / 1024.0,
            **json.loads(Path(spec["result"]).read_text())}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _summary(rows: list[dict]) -> dict:
    wall = [r["wall_s"] for r in rows]
    rss = [r["peak_rss_mb"] for r in rows]
    cpu = [r["cpu_s"] for r in rows]
    return {"runs": len(rows), "wall_median_s": statistics.median(wall), "wall_max_s": max(wall),
            "wall_total_s": sum(wall), "cpu_median_s": statistics.median(cpu),
            "cpu_total_s": sum(cpu), "rss_median_mb": statistics.median(rss),
            "rss_max_mb": max(rss)}


def _git() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               check=True).stdout.strip()
        return head + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time and peak RSS of the cosmic-ray steps (separate drizzle, median, "
                    "mask, final drizzle) on one simulated layer of full-frame exposures.")
    p.add_argument("--n", type=int, default=20, help="exposures in the layer (default 20)")
    p.add_argument("--detector", choices=DETECTORS, default="acs_wfc",
                   help="acs_wfc (F814W, aperture WFC; default) or wfc3_uvis (F555W, UVIS)")
    p.add_argument("--max-memory-mb", type=float, nargs="+", default=[256.0],
                   help="median strip budget(s), MB; the median runs once per value and "
                        "the masks use the first (default 256, the workflow's)")
    p.add_argument("--star-density", type=float, default=150.0,
                   help="stars per square arcminute (default 150)")
    p.add_argument("--seed", type=int, default=31, help="simulation seed (default 31)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the temporary working directory goes (default: the system's "
                        "temporary directory)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out",
                   help="directory of cr.json (default benchmarks/out)")
    p.add_argument("--final", choices=("subtract", "drizzle"), default="subtract",
                   help="how the cr_drizzle job makes the final partial "
                        "(mvmflow.crreject.cr_mask_and_drizzle; default subtract)")
    p.add_argument("--compare-final", type=int, default=0, metavar="REPEATS",
                   help="also time both ways of making the final partial on the same "
                        "inputs, REPEATS times each, in one process per exposure "
                        "(CPU time), and report their differences (default 0: off)")
    p.add_argument("--keep", action="store_true",
                   help="keep the working directory (inputs, partials, median, masks, logs)")
    args = p.parse_args(argv)
    if args.n < 2:
        p.error("--n must be at least 2 (a median needs overlapping exposures)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    need_mb = args.n * DISK_MB_PER_EXPOSURE + 1024
    free_mb = shutil.disk_usage(base).free / 2**20
    if free_mb < need_mb:
        sys.exit(f"{base}: {free_mb / 1024:.1f} GB free, about {need_mb / 1024:.1f} GB needed "
                 f"for {args.n} exposures; use --workdir or a smaller --n")
    work = Path(tempfile.mkdtemp(prefix="mvmflow_cr_bench_", dir=base))
    print(f"working directory {work} ({free_mb / 1024:.0f} GB free, about "
          f"{need_mb / 1024:.1f} GB needed)", flush=True)
    try:
        return _run(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path) -> int:
    s = setups()[args.detector]
    print(f"simulating {args.n} x {s['instrument']}/{s['detector']} {s['filter']} "
          f"({s['aperture']}), screening and planning (not timed)...", flush=True)
    setup_spec = work / "setup.json"
    setup_result = work / "setup.result.json"
    setup_spec.write_text(json.dumps({
        "detector": args.detector, "n": args.n, "star_density": args.star_density,
        "seed": args.seed, "data": str(work / "data"), "result": str(setup_result)}))
    log = work / "setup.log"
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, str(Path(__file__).resolve()), "_setup",
                              str(setup_spec)], stdout=f, stderr=subprocess.STDOUT, cwd=work)
    if rc != 0:
        print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        return 1
    setup = json.loads(setup_result.read_text())
    frame, exposures = setup["frame"], setup["exposures"]
    n = len(exposures)
    print(f"{n} exposures ({statistics.mean(e['size_mb'] for e in exposures):.0f} MB each) "
          f"in {setup['simulate_s']:.0f} s; layer {setup['layer']}: frame "
          f"{frame['nx']} x {frame['ny']}, mean chips per pixel "
          f"{setup['coverage']['meannexp']:.2f}, parameter set {setup['params']['set']}, "
          f"cosmic-ray rejection under 'auto': {setup['params']['cosmic_rays']}", flush=True)

    load_before = os.getloadavg()
    rows: dict[str, list[dict]] = {"imports": [], "drizzle": [], "cr_median": [],
                                   "cr_mask": [], "drizzle_cr": [], "cr_drizzle": []}
    same_as_two_steps, compare = [], []
    t_start = time.perf_counter()
    rows["imports"].append(run_measured("imports", {}, work, "imports"))
    parts_dir, cr_dir, final_dir = work / "partials", work / "cr", work / "partials_cr"
    for d in (parts_dir, cr_dir, final_dir):
        d.mkdir()
    partials = []
    for i, e in enumerate(exposures):
        stem = Path(e["filename"]).stem
        part = parts_dir / f"{stem}.fits"
        r = run_measured("drizzle", {"exposure": e["file"], "frame": e["frame"],
                                     "params": setup["drizzle_params"], "output": str(part)},
                         work, f"drizzle_{stem}")
        r["file_mb"] = part.stat().st_size / 2**20
        rows["drizzle"].append(r)
        partials.append(part)
        print(f"  drizzle    {i + 1:2d}/{n} {stem}: {r['wall_s']:6.1f} s "
              f"{r['peak_rss_mb']:6.0f} MB (partial {r['file_mb']:.0f} MB)", flush=True)
    medians = []
    for k, budget in enumerate(args.max_memory_mb):
        path = cr_dir / f"median_{k}.fits"
        r = run_measured("cr_median", {
            "exposures": [e["file"] for e in exposures], "partials": [str(p) for p in partials],
            "frame": frame, "params": setup["params"], "output": str(path),
            "max_memory_mb": budget}, work, f"cr_median_{k}")
        r["max_memory_mb"] = budget
        r["file_mb"] = path.stat().st_size / 2**20
        rows["cr_median"].append(r)
        medians.append(path)
        print(f"  cr_median  budget {budget:.0f} MB: {r['wall_s']:6.1f} s "
              f"{r['peak_rss_mb']:6.0f} MB ({r['nstrips']} strips of {r['strip_rows']} rows)",
              flush=True)
    same_medians = None
    if len(medians) > 1:
        same_medians = len({_sha256(p) for p in medians}) == 1
    finals = []
    for i, (e, part) in enumerate(zip(exposures, partials, strict=True)):
        stem = Path(e["filename"]).stem
        mask = cr_dir / f"{stem}_crmask.fits"
        r = run_measured("cr_mask", {"exposure": e["file"], "median": str(medians[0]),
                                     "params": setup["params"], "output": str(mask),
                                     "partial": str(part)}, work, f"cr_mask_{stem}")
        rows["cr_mask"].append(r)
        print(f"  cr_mask    {i + 1:2d}/{n} {stem}: {r['wall_s']:6.1f} s "
              f"{r['peak_rss_mb']:6.0f} MB ({r['ncr']} cosmic-ray pixels)", flush=True)
        final = final_dir / f"{stem}.fits"
        r = run_measured("drizzle_cr", {"exposure": e["file"], "frame": e["frame"],
                                        "params": setup["drizzle_params"], "output": str(final),
                                        "crmask": str(mask)}, work, f"drizzle_cr_{stem}")
        rows["drizzle_cr"].append(r)
        finals.append(final)
        print(f"  drizzle_cr {i + 1:2d}/{n} {stem}: {r['wall_s']:6.1f} s "
              f"{r['peak_rss_mb']:6.0f} MB", flush=True)
        one_mask, one_final = cr_dir / f"{stem}_crmask_1.fits", final_dir / f"{stem}_1.fits"
        r = run_measured("cr_drizzle", {
            "exposure": e["file"], "median": str(medians[0]), "frame": e["frame"],
            "params": setup["params"], "drizzle_params": setup["drizzle_params"],
            "mask": str(one_mask), "output": str(one_final), "partial": str(part),
            "final": args.final}, work, f"cr_drizzle_{stem}")
        rows["cr_drizzle"].append(r)
        # the partial is the same to the bit when drizzled again (--final drizzle); by
        # subtraction it differs at float32 rounding (--compare-final reports how much)
        same_as_two_steps.append(_sha256(one_mask) == _sha256(mask) and (
            args.final != "drizzle" or _sha256(one_final) == _sha256(final)))
        one_mask.unlink()
        one_final.unlink()
        print(f"  cr_drizzle {i + 1:2d}/{n} {stem}: {r['wall_s']:6.1f} s "
              f"{r['peak_rss_mb']:6.0f} MB (same files as the two steps: "
              f"{same_as_two_steps[-1]})", flush=True)
        if args.compare_final:
            r = run_measured("final_compare", {
                "exposure": e["file"], "median": str(medians[0]), "frame": e["frame"],
                "params": setup["params"], "drizzle_params": setup["drizzle_params"],
                "partial": str(part), "repeats": args.compare_final}, work,
                f"final_compare_{stem}")
            compare.append(r)
            print(f"  final      {i + 1:2d}/{n} {stem}: CPU s drizzle again "
                  f"{statistics.median(r['old_cpu_s']):.2f}, subtract "
                  f"{statistics.median(r['new_cpu_s']):.2f}; {r['pixels_differ']} pixels "
                  f"differ, weight rel. max {r['weight_rel_max']:.2g} (99% "
                  f"{r['weight_rel_p99']:.2g}), flux rel. max {r['flux_rel_max']:.2g} (99% "
                  f"{r['flux_rel_p99']:.2g}), {r['dropped_slivers']} slivers dropped",
                  flush=True)
    elapsed = time.perf_counter() - t_start
    load_after = os.getloadavg()

    summaries = {k: _summary(v) for k, v in rows.items() if v}
    frame_px = frame["nx"] * frame["ny"]
    stack_mb = n * frame_px * 4 / 2**20
    med = rows["cr_median"][0]
    per_exposure = ["drizzle", "cr_mask", "drizzle_cr", "cr_drizzle"]
    cr_total = sum(summaries[k]["wall_total_s"] for k in ("cr_median", "cr_mask",
                                                         "drizzle_cr"))
    cr_total -= sum(r["wall_s"] for r in rows["cr_median"][1:])
    all_total = cr_total + summaries["drizzle"]["wall_total_s"]
    imports = rows["imports"][0]

    print()
    print(f"{n} x {s['instrument']}/{s['detector']} {s['filter']} full frame "
          f"({s['aperture']}, {s['exptime']:.0f} s); layer frame {frame['nx']} x "
          f"{frame['ny']} = {frame_px / 1e6:.1f} Mpx; each step in its own process, one at "
          f"a time; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{os.cpu_count()} CPUs; tree {_git()}")
    print()
    print(f"{'step (per exposure)':<22}{'runs':>5}{'wall s median':>15}{'max':>8}"
          f"{'total':>9}{'CPU s median':>14}{'peak RSS MB median':>20}{'max':>8}")
    for k in per_exposure:
        sm = summaries[k]
        print(f"{k:<22}{sm['runs']:>5}{sm['wall_median_s']:>15.1f}{sm['wall_max_s']:>8.1f}"
              f"{sm['wall_total_s']:>9.1f}{sm['cpu_median_s']:>14.1f}"
              f"{sm['rss_median_mb']:>20.0f}{sm['rss_max_mb']:>8.0f}")
    for label, steps in (("drizzle+mask+final", per_exposure[:3]),
                         ("drizzle+cr_drizzle", ["drizzle", "cr_drizzle"])):
        print(f"{label:<22}{'':>5}{sum(summaries[k]['wall_median_s'] for k in steps):>15.1f}"
              f"{'':>8}{sum(summaries[k]['wall_total_s'] for k in steps):>9.1f}"
              f"{sum(summaries[k]['cpu_median_s'] for k in steps):>14.1f}")
    print(f"{'(imports only)':<22}{1:>5}{imports['wall_s']:>15.1f}{'':>8}{'':>9}"
          f"{imports['cpu_s']:>14.1f}{imports['peak_rss_mb']:>20.0f}")
    print()
    print(f"{'step (per layer)':<22}{'budget MB':>10}{'wall s':>8}{'CPU s':>7}{'peak RSS MB':>13}"
          f"{'strips x rows':>15}{'est. strip MB':>15}{'median file MB':>16}")
    for r in rows["cr_median"]:
        print(f"{'cr_median':<22}{r['max_memory_mb']:>10.0f}{r['wall_s']:>8.1f}{r['cpu_s']:>7.1f}"
              f"{r['peak_rss_mb']:>13.0f}{str(r['nstrips']) + ' x ' + str(r['strip_rows']):>15}"
              f"{r['peak_strip_mb']:>15.0f}{r['file_mb']:>16.0f}")
    print()
    print(f"median memory: peak RSS {med['peak_rss_mb']:.0f} MB = imports "
          f"{imports['peak_rss_mb']:.0f} MB + {med['peak_rss_mb'] - imports['peak_rss_mb']:.0f}"
          f" MB, against a strip budget of {med['max_memory_mb']:.0f} MB; the whole stack "
          f"(n x frame x 4 bytes, one float32 image per exposure) would be {stack_mb:.0f} MB")
    if same_medians is not None:
        print(f"median files of the {len(medians)} budgets identical: {same_medians}")
    ncr = [r["ncr"] for r in rows["cr_mask"]]
    print(f"cosmic-ray pixels per exposure: median {statistics.median(ncr):.0f} "
          f"(min {min(ncr)}, max {max(ncr)}); masked in the final drizzle: "
          f"{sum(r['masked'] for r in rows['drizzle_cr'])} in all")
    what = "mask file and partial" if args.final == "drizzle" else "mask file"
    print(f"cr_drizzle (the workflow's job, final partial by {args.final}) wrote the same "
          f"{what} as cr_mask + drizzle_cr for {sum(same_as_two_steps)} of {n} exposures")
    print(f"totals (wall, sum over steps): cosmic-ray steps (median + masks + final "
          f"drizzles) {cr_total:.1f} s, with the separate drizzles {all_total:.1f} s "
          f"({all_total / n:.1f} s per exposure); whole measured run {elapsed:.1f} s; "
          f"largest process {max(r['peak_rss_mb'] for v in rows.values() for r in v):.0f} MB")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "tree": _git(), "host": platform.node(),
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "load_before": load_before, "load_after": load_after,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workdir": str(work), "n": n, "detector": args.detector, "setup": setups()[args.detector],
        "layer": setup["layer"], "frame": frame, "coverage": setup["coverage"],
        "params_set": setup["params"]["set"], "cr_params": setup["params"].get("cr"),
        "cosmic_rays_auto": setup["params"]["cosmic_rays"],
        "simulate_s": setup["simulate_s"], "screen_plan_s": setup["screen_plan_s"],
        "input_mb": [e["size_mb"] for e in exposures],
        "stack_mb": stack_mb, "median_identical_across_budgets": same_medians,
        "summary": summaries, "cr_drizzle_same_files": same_as_two_steps,
        "cr_total_s": cr_total, "total_s": all_total,
        "elapsed_s": elapsed, "steps": rows, "final_compare": compare,
    }
    path = args.out / "cr.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"figures written to {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_step":
        run_step_here(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 2 and sys.argv[1] == "_setup":
        run_setup(sys.argv[2])
    else:
        sys.exit(main())
