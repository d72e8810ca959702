#!/usr/bin/env python
"""mvmflow against the reference (drizzlepac 3.11.0 ``hapmultisequencer``): speed, memory and
products, on several workloads, in one command and one table.

Workloads (``--workloads``, default ``tiny,demo,fullframe``), each simulated once
(``mvmflow.simulate``, not timed):

- ``tiny``: the ``tiny_noerr`` preset (4 small exposures), sky cells ``skycell-p0081x14y14``
  and ``x15y14``;
- ``demo``: the ``demo`` preset (17 exposures of four detectors), the same two sky cells;
- ``fullframe``: the ``fullframe_cr`` preset (4 full-frame ACS/WFC F814W exposures, unflagged
  cosmic rays), its one sky cell ``skycell-p0081x14y14``.

Per workload and round (``--repeat N`` rounds, alternating):

- **reference**: for each sky cell, a fresh directory with copies of the inputs (the reference
  renames and deletes its copies) and an MVM poller file (:mod:`mvmflow.poller`), processed
  by ``drizzlepac.hapmultisequencer.run_mvm_processing`` in its own Python process; the sky
  cells run side by side, at most ``--cores`` at a time. It has no switches: one run serves
  every mode of ours;
- **ours**, once per mode (``--modes``, default ``like,defaults``): one ``snakemake --cores N``
  run of this repository's Snakefile restricted to the same sky cells, with

  - ``like`` (like for like, as the reference runs): alignment off,
    ``cosmic_rays: {default: never}`` (trust the inputs' flags) and ``products: {previews:
    false}`` (the reference makes no previews);
  - ``defaults``: the workflow's defaults (alignment on, cosmic-ray rejection ``auto``), the
    alignment's absolute reference being the simulation's catalogue (what ``align.reference:
    auto`` picks for the simulated demo inputs; for other inputs it means Gaia, over the
    network).

Each run is timed from the first start to the last exit. Memory is measured two ways:
``RUSAGE_CHILDREN`` ``ru_maxrss`` reported by a small wrapper process per command (the
largest single process, waited-for descendants included: for ours, the largest of snakemake
and its job processes, not their sum) and the peak over time of the summed PSS of every
live process of the run, sampled every 0.1 s with psutil.

Printed: one table with a row per (workload, mode) (wall time, largest process, whole-run
PSS, each ours / reference, the number of snakemake jobs, the load average before the
round); per (workload, mode), where our run's time went, per rule, from its snakemake
benchmark records (``results/logs/benchmarks/<rule>/...tsv``); and, per layer both produced, the
comparison of the products (frame, flux ratio, ``|SCI_ours - SCI_ref| / ERR``; see
benchmarks/README.md). Everything also goes to ``<out>/vs_reference_<workloads>_<reference
sky>.json``.

Run with the project's virtual environment (drizzlepac installed)::

    .venv/bin/python benchmarks/vs_reference.py                       # all three, ~20-30 min
    .venv/bin/python benchmarks/vs_reference.py --workloads tiny      # ~2-3 min
    .venv/bin/python benchmarks/vs_reference.py --preset align --skycells skycell-p0081x14y14
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from astropy.io import fits
from measure import REFERENCE, WRAPPER, versions  # benchmarks/measure.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CELLS = ("skycell-p0081x14y14", "skycell-p0081x15y14")
FULLFRAME_CELL = "skycell-p0081x14y14"  # mvmflow.simulate.presets.FULLFRAME_SKYCELL
LAYER_RE = re.compile(r"hst_(skycell-p\d{4}x\d{2}y\d{2})_([a-z0-9]+)_([a-z0-9]+)_(.+)_"
                      r"(all|coarse-all)_(dr[cz])\.fits$")
IR_READNOISE = 12.0  # e-, WFC3/IR up-the-ramp effective read noise (the header's is per read)


@dataclass(frozen=True)
class Workload:
    name: str
    preset: str
    skycells: tuple[str, ...]


WORKLOADS = {
    "tiny": Workload("tiny", "tiny_noerr", DEFAULT_CELLS),
    "demo": Workload("demo", "demo", DEFAULT_CELLS),
    "fullframe": Workload("fullframe", "fullframe_cr", (FULLFRAME_CELL,)),
}
"""The workloads of ``--workloads``."""

MODES = {
    "like": "like for like: alignment off, cosmic_rays {default: never}, no previews",
    "defaults": "the workflow's defaults: alignment on (reference: the simulated catalogue), "
                "cosmic_rays as configured (auto)",
}
"""The modes of ``--modes``: how ours is configured (see :func:`mode_config`)."""


def mode_config(mode: str, data: Path) -> dict:
    """Our configuration keys of ``mode`` (on top of ``config/config.yaml``)."""
    if mode == "like":  # as the reference's MVM: no alignment (skip_gaia_alignment), no CR,
        # and only the products the reference makes (no previews)
        return {"align": {"enabled": False}, "cosmic_rays": {"default": "never"},
                "products": {"previews": False}}
    if mode == "defaults":  # auto would mean Gaia (the network) for inputs that are not 'demo'
        return {"align": {"enabled": True, "reference": str(data / "truth" / "refcat.ecsv")}}
    raise ValueError(f"unknown mode {mode!r}")


# The reference, run in a fresh interpreter per sky cell. With 'match', skypac's sky
# matching gets back the SphericalPolygon.iter_polygons_flat it calls, which
# spherical_geometry 1.4 removed (it is the flat iteration the class now does in __iter__);
# without it the sky step raises, and AstroDrizzle falls back to 'localmin', which
# subtracts each exposure's own absolute sky.


def _names(text: str, known: dict, what: str, p: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        p.error(f"--{what}: unknown {', '.join(bad) or '(none given)'}; known: "
                f"{', '.join(known)}")
    return list(dict.fromkeys(names))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run drizzlepac's MVM and mvmflow on the same simulated sky cells, for "
                    "several workloads and configurations of ours, and compare wall time, "
                    "peak memory, where our time goes (per rule) and the products.")
    p.add_argument("--workloads", default="tiny,demo,fullframe",
                   help="comma-separated, of: tiny (tiny_noerr preset, 2 sky cells), demo "
                        "(demo preset, 2 sky cells), fullframe (fullframe_cr preset: 4 full-"
                        "frame ACS/WFC exposures with unflagged cosmic rays, 1 sky cell); "
                        "default %(default)s")
    p.add_argument("--modes", default="like,defaults",
                   help="comma-separated configurations of ours, each against the same "
                        "reference run: like (alignment off, cosmic_rays never: as the "
                        "reference), defaults (the workflow's defaults); default %(default)s")
    p.add_argument("--preset", default=None,
                   help="instead of --workloads, one workload of this simulation preset "
                        "(mvmflow simulate --list) on --skycells (default: the two of tiny)")
    p.add_argument("--seed", type=int, default=None, help="simulation seed (default: presets')")
    p.add_argument("--cores", type=int, default=2,
                   help="snakemake --cores, and reference sky cells run at once (default 2)")
    p.add_argument("--skycells", nargs="+", default=None, metavar="CELL",
                   help="sky cells to process, for every workload (default: the workload's: "
                        f"{' '.join(DEFAULT_CELLS)} for tiny and demo, {FULLFRAME_CELL} for "
                        "fullframe)")
    p.add_argument("--reference-sky", choices=("match", "installed"), default="match",
                   help="'match' (default): the reference's sky matching as in operations "
                        "(with a compatibility alias for skypac, see benchmarks/README.md); "
                        "'installed': as installed here, where skypac's match fails and "
                        "AstroDrizzle falls back to localmin")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="per workload, N rounds of the reference and every mode, alternately; "
                        "report the fastest wall time of each and the largest memory peaks "
                        "(default 1)")
    p.add_argument("--pss-interval", type=float, default=PSS_INTERVAL, metavar="S",
                   help="seconds between samples of the whole run's PSS (default "
                        f"{PSS_INTERVAL:g}; each sample reads every process's smaps_rollup, "
                        "CPU the measured runs lose: 0.1 s slowed our full-frame run by "
                        "5-11 s)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the temporary working directory goes (default: the system's "
                        "temporary directory; fullframe needs about 5 GB)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out",
                   help="directory for the JSON figures (default benchmarks/out)")
    p.add_argument("--keep", action="store_true",
                   help="keep the working directory (inputs, every round's products and logs; "
                        "without it, each workload's directory goes once it is measured)")
    args = p.parse_args(argv)
    args.modes = _names(args.modes, MODES, "modes", p)
    if args.preset:
        known = {w.preset: w for w in WORKLOADS.values()}
        base = known.get(args.preset, Workload(args.preset, args.preset, DEFAULT_CELLS))
        args.workloads = [Workload(base.name, args.preset, base.skycells)]
    else:
        args.workloads = [WORKLOADS[n] for n in _names(args.workloads, WORKLOADS,
                                                       "workloads", p)]
    if args.skycells:
        args.workloads = [Workload(w.name, w.preset, tuple(args.skycells))
                          for w in args.workloads]
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


# ------------------------------------------------------------------------------------------
# running and measuring


def _tree_memory(wrappers: list[psutil.Process]) -> float:
    """Summed PSS (RSS where PSS is unreadable) of the processes under ``wrappers``, bytes."""
    total = 0
    for wrapper in wrappers:
        try:
            procs = wrapper.children(recursive=True)
        except psutil.Error:
            continue
        for proc in procs:
            try:
                total += proc.memory_full_info().pss
            except psutil.AccessDenied:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            except psutil.Error:
                pass
    return total


PSS_INTERVAL = 1.0
"""Seconds between samples of the whole run's PSS (``--pss-interval``)."""


def run_measured(jobs: list[tuple[list[str], Path, Path]], parallel: int) -> dict:
    """Run ``(argv, cwd, logfile)`` jobs, ``parallel`` at a time; time and measure them."""
    pending, running, results = list(jobs), [], []
    peak_tree = 0.0
    # the files the previous run wrote go to disk first, not during this run (untimed)
    os.sync()
    t0 = time.perf_counter()
    sampled = -math.inf
    while pending or running:
        while pending and len(running) < parallel:
            argv, cwd, logfile = pending.pop(0)
            stats = logfile.with_suffix(".rusage.json")
            with open(logfile, "w") as log:
                proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(stats), *argv],
                                        cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            running.append((proc, psutil.Process(proc.pid), time.perf_counter(), cwd, stats))
        if time.perf_counter() - sampled >= PSS_INTERVAL:  # reading smaps costs CPU
            sampled = time.perf_counter()
            peak_tree = max(peak_tree, _tree_memory([r[1] for r in running]))
        for item in list(running):
            proc, _, start, cwd, stats = item
            if proc.poll() is None:
                continue
            running.remove(item)
            usage = json.loads(stats.read_text()) if stats.is_file() else {"maxrss_kb": 0}
            results.append({"cwd": str(cwd), "returncode": proc.returncode,
                            "wall_s": time.perf_counter() - start,
                            "maxrss_mb": usage["maxrss_kb"] / 1024.0,
                            "cpu_s": usage.get("user_s", 0.0) + usage.get("sys_s", 0.0)})
        time.sleep(0.1)
    return {"wall_s": time.perf_counter() - t0,
            "peak_rss_largest_mb": max(r["maxrss_mb"] for r in results),
            "peak_pss_tree_mb": peak_tree / 2**20,
            "cpu_s": sum(r["cpu_s"] for r in results),
            "processes": results,
            "ok": all(r["returncode"] == 0 for r in results)}


def _member_cells(data: Path, files: list[str]) -> dict[str, list[str]]:
    """Sky cell -> member files, by the reference's own ``get_sky_cells``."""
    from drizzlepac.haputils import cell_utils

    with contextlib.chdir(data):
        cells = cell_utils.get_sky_cells(files)
    return {name: sorted(cell.members) for name, cell in cells.items()}


def run_reference(data: Path, members: dict[str, list[str]], cells: list[str], work: Path,
                  cores: int, sky: str) -> dict:
    from mvmflow.poller import make_poller, write_poller

    jobs = []
    for cell in cells:
        d = work / "ref" / cell
        d.mkdir(parents=True)
        for name in members[cell]:
            shutil.copy2(data / name, d / name)
        poller = f"{cell}_input.out"
        write_poller(make_poller([d / n for n in members[cell]], "mvm", cell), d / poller, "mvm")
        jobs.append(([sys.executable, "-c", REFERENCE, poller, sky], d, d / "run.log"))
    result = run_measured(jobs, cores)
    result["members"] = {c: members[c] for c in cells}
    return result


def rule_times(run: Path) -> dict:
    """Per rule, from the run's snakemake benchmark records (``results/logs/benchmarks/<rule>.tsv`` or
    ``.../<rule>/.../*.tsv``; column ``s`` is a job's wall seconds): jobs, total
    and longest seconds. (Their ``max_rss`` is not read: a job run by mvmflow.runner is
    recorded as part of snakemake's process tree.)"""
    bench = run / "results" / "logs" / "benchmarks"
    rules: dict[str, dict] = {}
    for tsv in sorted(bench.rglob("*.tsv")) if bench.is_dir() else []:
        head, *body = tsv.read_text().splitlines() or [""]
        if not body:
            continue
        row = dict(zip(head.split("\t"), body[-1].split("\t"), strict=False))
        rule = tsv.relative_to(bench).parts[0].removesuffix(".tsv")
        r = rules.setdefault(rule, {"jobs": 0, "s_total": 0.0, "s_max": 0.0})
        s = float(row.get("s", "nan"))
        r["jobs"] += 1
        r["s_total"] += s
        r["s_max"] = max(r["s_max"], s)
    total = sum(r["s_total"] for r in rules.values())
    for r in rules.values():
        r["share"] = r["s_total"] / total if total else 0.0
    return dict(sorted(rules.items(), key=lambda kv: -kv[1]["s_total"]))


_STEPS_RE = re.compile(r"(\d+) of (\d+) steps")


def snakemake_jobs(run: Path) -> int | None:
    """The number of jobs snakemake ran, from the last ``N of M steps`` of its log."""
    logs = sorted((run / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    found = _STEPS_RE.findall(logs[-1].read_text(errors="replace"))
    return int(found[-1][1]) if found else None


def run_ours(data: Path, cells: list[str], run: Path, cores: int, mode: str) -> dict:
    run.mkdir(parents=True)
    config = {"inputs": f"{data}/*_fl?.fits", "outdir": "results", "skycells": cells,
              **mode_config(mode, data)}
    # a config file: --config turns false into the string 'false', which the schema rejects
    (run / "benchmark.json").write_text(json.dumps(config))
    argv = [sys.executable, "-m", "snakemake", "--cores", str(cores),
            "-s", str(ROOT / "Snakefile"), "--directory", str(run),
            "--configfile", str(run / "benchmark.json")]
    result = run_measured([(argv, run, run / "run.log")], 1)
    result["config"] = config
    result["rules"] = rule_times(run)
    records = sum(r["jobs"] for r in result["rules"].values())
    result["benchmark_records"] = records
    result["snakemake_jobs"] = snakemake_jobs(run) or records
    result["snakemake_job_s_sum"] = sum(r["s_total"] for r in result["rules"].values())
    return result


def _best(runs) -> dict:
    """Several rounds of one side: the fastest round's record, the largest memory peaks."""
    runs = list(runs)
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    for key in ("peak_rss_largest_mb", "peak_pss_tree_mb"):
        best[key] = max(r[key] for r in runs)
    best["wall_s_rounds"] = [r["wall_s"] for r in runs]
    best["ok"] = all(r["ok"] for r in runs)
    return best


def _failed(side: str, run: dict) -> bool:
    bad = False
    for proc in run["processes"]:
        if proc["returncode"]:
            log = Path(proc["cwd"]) / "run.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            print(f"{side} failed in {proc['cwd']}; end of {log}:\n{tail}", flush=True)
            bad = True
    return bad


# ------------------------------------------------------------------------------------------
# comparing


def _frame(header) -> dict:
    cd = [[header.get(f"CD{i}_{j}", 0.0) for j in (1, 2)] for i in (1, 2)]
    return {"naxis": [header["NAXIS1"], header["NAXIS2"]],
            "crpix": [header["CRPIX1"], header["CRPIX2"]],
            "crval": [header["CRVAL1"], header["CRVAL2"]], "cd": cd}


def _input_noise(data: Path, files: list[str]) -> dict:
    """(instrument, detector, filter) -> input pixel scale, read noise and mean EXPTIME."""
    from mvmflow import names

    groups: dict[tuple, list] = {}
    for name in files:
        with fits.open(data / name) as hdul:
            h0, h1 = hdul[0].header, hdul["SCI", 1].header
            key = (h0["INSTRUME"].lower(), h0["DETECTOR"].lower(),
                   names.normalize_filter(names.filter_from_header(h0)))
            rn = [h0[k] for k in ("READNSEA", "READNSEB", "READNSEC", "READNSED") if k in h0]
            if key[:2] == ("wfc3", "ir"):
                rn = [IR_READNOISE]
            groups.setdefault(key, []).append(
                (float(h1["IDCSCALE"]), float(np.mean(rn)) if rn else 0.0, float(h0["EXPTIME"])))
    return {k: {"scale_in": float(np.mean([v[0] for v in vals])),
                "readnoise": float(np.mean([v[1] for v in vals])),
                "exptime": float(np.mean([v[2] for v in vals]))} for k, vals in groups.items()}


def _ref_sky_mode(trailer: Path) -> str:
    """How the reference's sky step ran for a layer, from its own part of the trailer."""
    if not trailer.is_file():
        return "?"
    own = [ln for ln in trailer.read_text(errors="replace").splitlines() if ln.startswith("[")]
    text = "\n".join(own)
    if "Reverting sky computation" in text:
        return "localmin (match failed)"
    if re.search(r"skysub :\s+True", text):
        return "match"
    return "off"


def compare_layer(ref: Path, ours: Path, noise: dict) -> dict:
    cell, instr, det, filt, kind, _ = LAYER_RE.match(ref.name).groups()
    with fits.open(ref, memmap=False) as r, fits.open(ours, memmap=False) as o:
        fr, fo = _frame(r["SCI"].header), _frame(o["SCI"].header)
        sr, wr = r["SCI"].data, r["WHT"].data
        so, wo = o["SCI"].data, o["WHT"].data
    out = {"skycell": cell, "layer": ref.name.split(f"{cell}_")[1].removesuffix(".fits"),
           "frame_ref": fr, "frame_ours": fo}
    diff = {k: float(np.max(np.abs(np.subtract(fo[k], fr[k])))) for k in fr}
    out["frame_diff"] = diff
    out["frame_equal"] = fo == fr
    # Both are windows of the same projection-cell plane: ours[y + dy, x + dx] = ref[y, x].
    shift = np.subtract(fo["crpix"], fr["crpix"])
    if diff["crval"] or diff["cd"] or np.any(np.abs(shift - np.rint(shift)) > 1e-6):
        out["error"] = "frames are not integer shifts of one plane: pixels not compared"
        return out
    dx, dy = (int(v) for v in np.rint(shift))
    out["shift_ours_minus_ref"] = [dx, dy]
    (ny, nx), (nyo, nxo) = sr.shape, so.shape
    x0, x1, y0, y1 = max(0, -dx), min(nx, nxo - dx), max(0, -dy), min(ny, nyo - dy)
    sr, wr = sr[y0:y1, x0:x1], wr[y0:y1, x0:x1]
    so, wo = so[y0 + dy:y1 + dy, x0 + dx:x1 + dx], wo[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    common = np.isfinite(sr) & np.isfinite(so) & (wr > 0) & (wo > 0)
    covered_r, covered_o = int((wr > 0).sum()), int((wo > 0).sum())
    # float64 of the common pixels only (a full-frame layer is 50 Mpx)
    sr, so, wr, wo = (a[common].astype(np.float64) for a in (sr, so, wr, wo))
    # ERR of a drizzled count-rate pixel with EXP weights (README): a = (s_out / s_in)^2 is
    # the output pixel's area in input pixels, each input adds a * EXPTIME to WHT, so
    # ERR^2 = a^2 S / WHT + n a^4 rn^2 / WHT^2 with S the signal incl. sky and n inputs.
    nz = noise[(instr, det, filt)]
    scale_out = abs(fr["cd"][1][1]) * 3600.0
    a = (scale_out / nz["scale_in"]) ** 2
    signal = np.maximum(np.maximum(sr, so), 0.0)
    n = np.maximum(wr / (a * nz["exptime"]), 1.0)
    err = np.sqrt(a**2 * signal / wr + n * a**4 * nz["readnoise"] ** 2 / wr**2)
    del signal, n
    delta = so - sr
    ratio = np.abs(delta) / err
    sky = float(np.median(delta))
    out.update({
        "common_pixels": int(common.sum()),
        "covered_ref": covered_r, "covered_ours": covered_o,
        "flux_ref": float(sr.sum()), "flux_ours": float(so.sum()),
        "flux_ratio": float(so.sum() / sr.sum()),
        "flux_ratio_sky_levelled": float((so - sky).sum() / sr.sum()),
        "median_delta": sky,
        "wht_ratio": float(wo.sum() / wr.sum()),
        "median_abs_delta_over_err": float(np.median(ratio)),
        "p99_abs_delta_over_err": float(np.percentile(ratio, 99)),
        "median_err": float(np.median(err)),
        "noise_model": {"a": a, **nz},
    })
    return out


def compare_runs(ref_dir: Path, ours_dir: Path, cells: list[str], noise: dict) -> dict:
    """Every layer both runs made, compared; the layers only one made."""
    layers, only_ref, only_ours = [], [], []
    for cell in cells:
        ref_files = {p.name: p for p in (ref_dir / cell).glob("hst_*_dr[cz].fits")}
        our_files = {p.name: p for p in
                     (ours_dir / "results" / "skycells" / cell).glob("hst_*_dr[cz].fits")}
        only_ref += sorted(set(ref_files) - set(our_files))
        only_ours += sorted(set(our_files) - set(ref_files))
        for name in sorted(set(ref_files) & set(our_files)):
            row = compare_layer(ref_files[name], our_files[name], noise)
            row["ref_sky"] = _ref_sky_mode(ref_files[name].with_name(
                name[:-len("_drc.fits")] + "_trl.txt"))
            layers.append(row)
    return {"layers": layers, "only_ref": only_ref, "only_ours": only_ours}


# ------------------------------------------------------------------------------------------
# one workload


def run_workload(w: Workload, modes: list[str], args, work: Path) -> dict:
    """Simulate ``w``, run the reference and every mode of ours ``--repeat`` times, compare
    the last round's products; the workload's record (``ok`` False if a run failed)."""
    from mvmflow.simulate import simulate

    data = work / "inputs"
    t0 = time.perf_counter()
    sim = simulate(w.preset, data, seed=args.seed, workers=max(1, args.cores))
    sim_s = time.perf_counter() - t0
    files = sorted(p.name for p in sim.exposures)
    size = sum((data / f).stat().st_size for f in files)
    print(f"[{w.name}] simulated {len(files)} exposures ({sim.preset}, seed {sim.seed}, "
          f"{size / 2**20:.0f} MB) in {sim_s:.0f} s", flush=True)
    record = {"workload": w.name, "preset": sim.preset, "seed": sim.seed,
              "skycells": list(w.skycells), "exposures": len(files), "input_mb": size / 2**20,
              "simulate_s": sim_s, "rounds": [], "ok": True}
    members = _member_cells(data, files)
    missing = [c for c in w.skycells if c not in members]
    if missing:
        print(f"[{w.name}] no input falls on {', '.join(missing)}; cells with data: "
              f"{', '.join(sorted(members))}", flush=True)
        record.update(ok=False, error=f"no input on {', '.join(missing)}")
        return record
    cells = list(w.skycells)
    base = None
    for i in range(args.repeat):
        if base is not None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)  # an earlier round: measured, not compared
        base = work / f"round{i + 1}"
        load = os.getloadavg()[0]
        print(f"[{w.name}] round {i + 1}/{args.repeat} (load average {load:.2f}): reference, "
              f"{len(cells)} sky cell(s), {args.cores} at a time ...", flush=True)
        rnd = {"load_average": load,
               "reference": run_reference(data, members, cells, base, args.cores,
                                          args.reference_sky),
               "ours": {}}
        record["rounds"].append(rnd)
        print(f"  reference: {rnd['reference']['wall_s']:.1f} s, "
              f"{'ok' if rnd['reference']['ok'] else 'FAILED'}", flush=True)
        if _failed("reference", rnd["reference"]):
            record["ok"] = False
            return record
        for mode in modes:
            print(f"  ours ({mode}): snakemake --cores {args.cores} ...", flush=True)
            ours = run_ours(data, cells, base / f"ours_{mode}", args.cores, mode)
            rnd["ours"][mode] = ours
            print(f"  ours ({mode}): {ours['wall_s']:.1f} s, {ours['snakemake_jobs']} jobs, "
                  f"{'ok' if ours['ok'] else 'FAILED'}", flush=True)
            if _failed(f"ours ({mode})", ours):
                record["ok"] = False
                return record

    ref = _best(r["reference"] for r in record["rounds"])
    noise = _input_noise(data, files)
    record["reference"] = ref
    record["modes"] = {}
    for mode in modes:
        runs = [r["ours"][mode] for r in record["rounds"]]
        ours = _best(runs)
        fastest = min(range(len(runs)), key=lambda k: runs[k]["wall_s"])
        ratio = {k: ours[k] / ref[k] for k in ("wall_s", "peak_rss_largest_mb",
                                               "peak_pss_tree_mb")}
        products = compare_runs(base / "ref", base / f"ours_{mode}", cells, noise)
        compared = [r for r in products["layers"] if "error" not in r]
        record["modes"][mode] = {
            "config": ours["config"], "ours": ours, "ratio_ours_over_ref": ratio,
            "load_average": record["rounds"][fastest]["load_average"], **products,
            "targets": {
                "identical frames": bool(products["layers"]) and all(
                    r["frame_equal"] for r in products["layers"]),
                "flux ratio within 0.1%": bool(compared) and all(
                    abs(r["flux_ratio"] - 1) <= 1e-3 for r in compared),
                "faster (wall time)": ratio["wall_s"] < 1,
                "leaner (peak RSS, largest process)": ratio["peak_rss_largest_mb"] < 1,
                "leaner (peak PSS, whole run)": ratio["peak_pss_tree_mb"] < 1,
            }}
    return record


# ------------------------------------------------------------------------------------------
# report


def _short(cell: str) -> str:
    return cell.removeprefix("skycell-p0081")


def print_report(res: dict) -> None:
    print(f"\n--cores {res['cores']}, reference sky: {res['reference_sky']}, rounds: "
          f"{res['repeat']} (fastest wall, largest memory), simulation excluded")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    for mode in res["modes"]:
        print(f"mode {mode}: {MODES[mode]}")
    for w in res["workloads"]:
        print(f"workload {w['workload']}: preset {w['preset']} (seed {w['seed']}), "
              f"{w['exposures']} exposures, {w['input_mb']:.0f} MB, sky cells "
              f"{', '.join(w['skycells'])}")

    print("\nours against the reference (ratio = ours / reference; RSS: largest process; "
          "PSS: all processes of the run, sampled; jobs: snakemake's; load: 1-min load "
          "average before the round)")
    head = (f"{'workload':10s} {'mode':9s} {'ours s':>8s} {'ref s':>8s} {'ratio':>6s}  "
            f"{'RSS ours':>8s} {'ref':>6s} {'ratio':>6s}  {'PSS ours':>8s} {'ref':>6s} "
            f"{'ratio':>6s} {'jobs':>5s} {'load':>5s}")
    print(head)
    print(f"{'':10s} {'':9s} {'':>8s} {'':>8s} {'':>6s}  {'MB':>8s} {'MB':>6s} {'':>6s}  "
          f"{'MB':>8s} {'MB':>6s}")
    for w in res["workloads"]:
        if not w.get("modes"):
            print(f"{w['workload']:10s} {'':9s} FAILED ({w.get('error', 'a run failed')})")
            continue
        ref = w["reference"]
        for mode, m in w["modes"].items():
            o, r = m["ours"], m["ratio_ours_over_ref"]
            print(f"{w['workload']:10s} {mode:9s} {o['wall_s']:8.1f} {ref['wall_s']:8.1f} "
                  f"{r['wall_s']:6.2f}  {o['peak_rss_largest_mb']:8.0f} "
                  f"{ref['peak_rss_largest_mb']:6.0f} {r['peak_rss_largest_mb']:6.2f}  "
                  f"{o['peak_pss_tree_mb']:8.0f} {ref['peak_pss_tree_mb']:6.0f} "
                  f"{r['peak_pss_tree_mb']:6.2f} {o['snakemake_jobs']:5d} "
                  f"{m['load_average']:5.2f}")
    if res["repeat"] > 1:
        print("every round's wall s (reference; ours per mode):")
        for w in res["workloads"]:
            if w.get("modes"):
                print(f"  {w['workload']:10s} ref " + ", ".join(
                    f"{s:.1f}" for s in w["reference"]["wall_s_rounds"]) + "; " + "; ".join(
                    f"{mode} " + ", ".join(f"{s:.1f}" for s in m["ours"]["wall_s_rounds"])
                    for mode, m in w["modes"].items()))

    print("\nwhere our time goes, per rule (snakemake's benchmark records of the fastest "
          "round: wall s per job, interpreter start included; share of the summed job time)")
    for w in res["workloads"]:
        for mode, m in (w.get("modes") or {}).items():
            o = m["ours"]
            print(f"{w['workload']} / {mode}: {o['benchmark_records']} job records, "
                  f"{o['snakemake_job_s_sum']:.1f} s of job time in {o['wall_s']:.1f} s of "
                  f"wall ({o['snakemake_job_s_sum'] / o['wall_s'] / res['cores']:.0%} of "
                  f"{res['cores']} cores)")
            # (no memory column: see rule_times; the largest process is in the table above)
            print(f"  {'rule':16s} {'jobs':>5s} {'total s':>8s} {'max s':>7s} {'share':>6s}")
            for rule, r in o["rules"].items():
                print(f"  {rule:16s} {r['jobs']:5d} {r['s_total']:8.1f} {r['s_max']:7.1f} "
                      f"{r['share']:6.1%}")

    print("\nproducts, last round (frame: OK if NAXIS, CRPIX, CRVAL and CD equal; over the "
          "common pixels: flux = sum ours / sum ref, lev. = the same less the median "
          "difference, WHT = sum ratio, |d|/E median and 99th percentile)")
    print(f"{'workload':10s} {'mode':9s} {'cell':6s} {'layer':30s} {'frame':5s} {'flux':>8s} "
          f"{'lev.':>8s} {'WHT':>8s} {'med|d|/E':>8s} {'p99|d|/E':>8s}  ref sky")
    for w in res["workloads"]:
        for mode, m in (w.get("modes") or {}).items():
            for r in m["layers"]:
                lead = (f"{w['workload']:10s} {mode:9s} {_short(r['skycell']):6s} "
                        f"{r['layer']:30s} {'OK' if r['frame_equal'] else 'DIFF':5s}")
                if "error" in r:
                    print(f"{lead} {r['error']}")
                    continue
                print(f"{lead} {r['flux_ratio']:8.5f} {r['flux_ratio_sky_levelled']:8.5f} "
                      f"{r['wht_ratio']:8.5f} {r['median_abs_delta_over_err']:8.4f} "
                      f"{r['p99_abs_delta_over_err']:8.4f}  {r['ref_sky']}")
            for side in ("only_ref", "only_ours"):
                if m[side]:
                    print(f"{w['workload']:10s} {mode:9s} {side.replace('_', ' in ')}: "
                          f"{', '.join(m[side])}")


def main(argv=None) -> int:
    global PSS_INTERVAL
    args = parse_args(argv)
    PSS_INTERVAL = args.pss_interval
    try:
        import drizzlepac  # noqa: F401
    except ImportError:
        sys.exit("drizzlepac is not installed: run with the project's .venv/bin/python")

    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mvm_vs_reference_", dir=base))
    names = [w.name for w in args.workloads]
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "cores": args.cores,
           "cpus": os.cpu_count(), "reference_sky": args.reference_sky,
           "repeat": args.repeat, "pss_interval_s": args.pss_interval,
           "modes": {m: MODES[m] for m in args.modes},
           "versions": versions(("mvmflow", "drizzlepac", "drizzle", "snakemake",
                                 "stsci.skypac", "spherical_geometry", "numpy", "astropy",
                                 "psutil")),
           "workloads": []}
    ok = True
    try:
        print(f"working directory {work}; workloads {', '.join(names)}; modes "
              f"{', '.join(args.modes)}", flush=True)
        for w in args.workloads:
            wdir = work / w.name
            record = run_workload(w, args.modes, args, wdir)
            res["workloads"].append(record)
            if not record["ok"]:
                ok = False
                print(f"[{w.name}] failed: kept {wdir}", flush=True)
            elif not args.keep:
                shutil.rmtree(wdir, ignore_errors=True)
        print_report(res)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"vs_reference_{'+'.join(names)}_{args.reference_sky}.json"
        path.write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"\nfigures written to {path}")
        return 0 if ok else 1
    finally:
        if args.keep or not ok:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
