#!/usr/bin/env python
"""mvmflow against the reference (drizzlepac 3.11.0 ``hapmultisequencer``) on the same inputs.

Simulates a data set (``mvmflow simulate``), then, outside the simulation's time:

- **reference**: for each sky cell, a fresh directory with copies of the inputs (the reference
  renames and deletes its copies) and an MVM poller file (:mod:`mvmflow.poller`), processed
  by ``drizzlepac.hapmultisequencer.run_mvm_processing`` in its own Python process; the sky
  cells run side by side, at most ``--cores`` at a time;
- **ours**: one ``snakemake --cores N`` run of this repository's Snakefile restricted to the
  same sky cells.

Each side is timed from the first start to the last exit. Memory is measured two ways:
``RUSAGE_CHILDREN`` ``ru_maxrss`` reported by a small wrapper process per command (the
largest single process, waited-for descendants included: for ours, the largest of snakemake
and its job processes, not their sum) and the peak over time of the summed PSS of every
live process of the run, sampled every 0.1 s with psutil.

Then every layer both produced is compared: frame (NAXIS, CRPIX, CRVAL, CD), total flux over
the common pixels, and ``|SCI_ours - SCI_ref| / ERR`` with ERR a noise model derived from
the reference's WHT (see benchmarks/README.md). A table goes to stdout and the figures to
``<out>/vs_reference_<preset>_<reference sky>.json``.

Run with the project's virtual environment (drizzlepac installed)::

    .venv/bin/python benchmarks/vs_reference.py [--preset tiny_noerr] [--cores 2]
"""

from __future__ import annotations

import argparse
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

import numpy as np
import psutil
from astropy.io import fits
from measure import REFERENCE, WRAPPER, versions  # benchmarks/measure.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CELLS = ("skycell-p0081x14y14", "skycell-p0081x15y14")
LAYER_RE = re.compile(r"hst_(skycell-p\d{4}x\d{2}y\d{2})_([a-z0-9]+)_([a-z0-9]+)_(.+)_"
                      r"(all|coarse-all)_(dr[cz])\.fits$")
IR_READNOISE = 12.0  # e-, WFC3/IR up-the-ramp effective read noise (the header's is per read)

# The reference, run in a fresh interpreter per sky cell. With 'match', skypac's sky
# matching gets back the SphericalPolygon.iter_polygons_flat it calls, which
# spherical_geometry 1.4 removed (it is the flat iteration the class now does in __iter__);
# without it the sky step raises, and AstroDrizzle falls back to 'localmin', which
# subtracts each exposure's own absolute sky.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run drizzlepac's MVM and mvmflow on the same simulated sky cells and "
                    "compare frames, fluxes, wall time and peak memory.")
    p.add_argument("--preset", default="tiny_noerr",
                   help="simulation preset (mvmflow simulate --list; default tiny_noerr, "
                        "~1.5 min on 2 cores; demo ~3.5 min)")
    p.add_argument("--seed", type=int, default=None, help="simulation seed (default: preset's)")
    p.add_argument("--cores", type=int, default=2,
                   help="snakemake --cores, and reference sky cells run at once (default 2)")
    p.add_argument("--skycells", nargs="+", default=list(DEFAULT_CELLS), metavar="CELL",
                   help="sky cells to process (default: %(default)s)")
    p.add_argument("--reference-sky", choices=("match", "installed"), default="match",
                   help="'match' (default): the reference's sky matching as in operations "
                        "(with a compatibility alias for skypac, see benchmarks/README.md); "
                        "'installed': as installed here, where skypac's match fails and "
                        "AstroDrizzle falls back to localmin")
    p.add_argument("--align", action="store_true",
                   help="let ours align the exposures where the workflow can (default off, "
                        "as the reference's MVM, which skips alignment)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run both sides N times, alternately, and report the fastest wall "
                        "time of each and the largest memory peaks (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out",
                   help="directory for the JSON figures (default benchmarks/out)")
    p.add_argument("--keep", action="store_true",
                   help="keep the working directory (inputs, both runs' products and logs)")
    return p.parse_args(argv)


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


def run_measured(jobs: list[tuple[list[str], Path, Path]], parallel: int) -> dict:
    """Run ``(argv, cwd, logfile)`` jobs, ``parallel`` at a time; time and measure them."""
    pending, running, results = list(jobs), [], []
    peak_tree = 0.0
    t0 = time.perf_counter()
    while pending or running:
        while pending and len(running) < parallel:
            argv, cwd, logfile = pending.pop(0)
            stats = logfile.with_suffix(".rusage.json")
            with open(logfile, "w") as log:
                proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(stats), *argv],
                                        cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            running.append((proc, psutil.Process(proc.pid), time.perf_counter(), cwd, stats))
        peak_tree = max(peak_tree, _tree_memory([r[1] for r in running]))
        for item in list(running):
            proc, _, start, cwd, stats = item
            if proc.poll() is None:
                continue
            running.remove(item)
            usage = json.loads(stats.read_text()) if stats.is_file() else {"maxrss_kb": 0}
            results.append({"cwd": str(cwd), "returncode": proc.returncode,
                            "wall_s": time.perf_counter() - start,
                            "maxrss_mb": usage["maxrss_kb"] / 1024.0})
        time.sleep(0.1)
    return {"wall_s": time.perf_counter() - t0,
            "peak_rss_largest_mb": max(r["maxrss_mb"] for r in results),
            "peak_pss_tree_mb": peak_tree / 2**20,
            "processes": results,
            "ok": all(r["returncode"] == 0 for r in results)}


def _member_cells(data: Path, files: list[str]) -> dict[str, list[str]]:
    """Sky cell -> member files, by the reference's own ``get_sky_cells``."""
    from drizzlepac.haputils import cell_utils

    with contextlib.chdir(data):
        cells = cell_utils.get_sky_cells(files)
    return {name: sorted(cell.members) for name, cell in cells.items()}


def run_reference(data: Path, files: list[str], cells: list[str], work: Path, cores: int,
                  sky: str) -> dict:
    from mvmflow.poller import make_poller, write_poller

    members = _member_cells(data, files)
    missing = [c for c in cells if c not in members]
    if missing:
        sys.exit(f"no input falls on {', '.join(missing)}; cells with data: "
                 f"{', '.join(sorted(members))}")
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


def _best(runs) -> dict:
    """Several rounds of one side: the fastest round's record, the largest memory peaks."""
    runs = list(runs)
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    for key in ("peak_rss_largest_mb", "peak_pss_tree_mb"):
        best[key] = max(r[key] for r in runs)
    best["wall_s_rounds"] = [r["wall_s"] for r in runs]
    best["ok"] = all(r["ok"] for r in runs)
    return best


def _config_keys() -> set[str]:
    import yaml

    return set(yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["properties"])


def run_ours(data: Path, cells: list[str], work: Path, cores: int, align: bool) -> dict:
    d = work / "ours"
    d.mkdir()
    config = {"inputs": f"{data}/*_fl?.fits", "outdir": "results", "skycells": cells}
    if "align" in _config_keys():  # like the reference's MVM (skip_gaia_alignment=True)
        config["align"] = {"enabled": align}
    (d / "benchmark.json").write_text(json.dumps(config))  # --config turns false into 'false'
    argv = [sys.executable, "-m", "snakemake", "--cores", str(cores),
            "-s", str(ROOT / "Snakefile"), "--directory", str(d),
            "--configfile", str(d / "benchmark.json")]
    result = run_measured([(argv, d, d / "run.log")], 1)
    # snakemake's own per-job records (rule benchmark: directives): how the time is spent
    jobs = [float(f.read_text().splitlines()[-1].split("\t")[0])
            for f in (d / "logs" / "benchmarks").rglob("*.tsv")]
    result["snakemake_jobs"] = len(jobs)
    result["snakemake_job_s_sum"] = sum(jobs)
    return result


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
    with fits.open(ref) as r, fits.open(ours) as o:
        fr, fo = _frame(r["SCI"].header), _frame(o["SCI"].header)
        sr, wr = r["SCI"].data.astype(np.float64), r["WHT"].data.astype(np.float64)
        so, wo = o["SCI"].data.astype(np.float64), o["WHT"].data.astype(np.float64)
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
    sr, so, wr, wo = sr[common], so[common], wr[common], wo[common]
    # ERR of a drizzled count-rate pixel with EXP weights (README): a = (s_out / s_in)^2 is
    # the output pixel's area in input pixels, each input adds a * EXPTIME to WHT, so
    # ERR^2 = a^2 S / WHT + n a^4 rn^2 / WHT^2 with S the signal incl. sky and n inputs.
    nz = noise[(instr, det, filt)]
    scale_out = abs(fr["cd"][1][1]) * 3600.0
    a = (scale_out / nz["scale_in"]) ** 2
    signal = np.maximum(np.maximum(sr, so), 0.0)
    n = np.maximum(wr / (a * nz["exptime"]), 1.0)
    err = np.sqrt(a**2 * signal / wr + n * a**4 * nz["readnoise"] ** 2 / wr**2)
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


# ------------------------------------------------------------------------------------------
# report


def print_report(res: dict) -> None:
    print(f"\npreset {res['preset']} (seed {res['seed']}), sky cells {', '.join(res['skycells'])},"
          f" --cores {res['cores']}, reference sky: {res['reference_sky']}, ours aligns: "
          f"{'yes' if res['align'] else 'no'}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    print("\nFrames (ours - reference; OK = NAXIS, CRPIX, CRVAL and CD all equal)")
    print(f"{'sky cell / layer':58s} {'frame':5s} {'dNAXIS':>7s} {'dCRPIX':>7s} "
          f"{'dCRVAL':>7s} {'dCD':>7s}  shift  ref sky")
    for r in res["layers"]:
        d = r["frame_diff"]
        print(f"{r['skycell'] + ' ' + r['layer']:58s} {'OK' if r['frame_equal'] else 'DIFF':5s} "
              f"{d['naxis']:7.0f} {d['crpix']:7.3g} {d['crval']:7.1e} {d['cd']:7.1e}  "
              f"{str(tuple(r.get('shift_ours_minus_ref', ()))):6s} {r['ref_sky']}")
    print("\nPixels (common: finite SCI and WHT > 0 in both; delta = ours - reference)")
    print(f"{'sky cell / layer':58s} {'common':>7s} {'flux':>8s} {'levelled':>8s} "
          f"{'WHT':>8s} {'med dlt':>9s} {'med|d|/E':>8s} {'p99|d|/E':>8s}")
    for r in res["layers"]:
        if "error" in r:
            print(f"{r['skycell'] + ' ' + r['layer']:58s} {r['error']}")
            continue
        print(f"{r['skycell'] + ' ' + r['layer']:58s} {r['common_pixels']:7d} "
              f"{r['flux_ratio']:8.5f} {r['flux_ratio_sky_levelled']:8.5f} {r['wht_ratio']:8.5f} "
              f"{r['median_delta']:9.2e} {r['median_abs_delta_over_err']:8.4f} "
              f"{r['p99_abs_delta_over_err']:8.4f}")
    for side in ("only_ref", "only_ours"):
        if res[side]:
            print(f"{side.replace('_', ' in ')}: {', '.join(res[side])}")
    t = res["timing"]
    print(f"\nRuns (simulation excluded; fastest of {len(t['rounds'])} round(s), load averages "
          + ", ".join(f"{r['load_average']:.2f}" for r in t["rounds"]) + ")")
    print(f"{'run':10s} {'wall s':>8s} {'peak RSS MB':>12s} {'peak PSS MB':>12s}   "
          f"(RSS: largest process; PSS: all processes of the run, sampled)")
    for side in ("reference", "ours"):
        s = t[side]
        print(f"{side:10s} {s['wall_s']:8.1f} {s['peak_rss_largest_mb']:12.0f} "
              f"{s['peak_pss_tree_mb']:12.0f}   {'ok' if s['ok'] else 'FAILED'}, rounds: "
              + ", ".join(f"{w:.1f}" for w in s["wall_s_rounds"]) + " s")
    r = t["ratio_ours_over_ref"]
    print(f"{'ours/ref':10s} {r['wall_s']:8.2f} {r['peak_rss_largest_mb']:12.2f} "
          f"{r['peak_pss_tree_mb']:12.2f}")
    print(f"ours ran {t['ours']['snakemake_jobs']} snakemake jobs taking "
          f"{t['ours']['snakemake_job_s_sum']:.1f} s in all (their benchmark records)")
    print("\nTargets")
    for name, ok in res["targets"].items():
        print(f"  {name:38s} {'yes' if ok else 'NO'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import drizzlepac  # noqa: F401
    except ImportError:
        sys.exit("drizzlepac is not installed: run with the project's .venv/bin/python")
    from mvmflow.simulate import simulate

    work = Path(tempfile.mkdtemp(prefix="mvm_vs_reference_"))
    try:
        print(f"working directory {work}")
        sim = simulate(args.preset, work / "inputs", seed=args.seed)
        data = work / "inputs"
        files = sorted(p.name for p in sim.exposures)
        print(f"simulated {len(files)} exposures ({sim.preset}, seed {sim.seed})")
        rounds = []
        for i in range(args.repeat):
            base = work / f"round{i + 1}"
            load = os.getloadavg()[0]
            print(f"round {i + 1}/{args.repeat} (load average {load:.2f}): reference, "
                  f"{len(args.skycells)} sky cell(s), {args.cores} at a time ...", flush=True)
            ref = run_reference(data, files, args.skycells, base, args.cores,
                                args.reference_sky)
            print(f"  {ref['wall_s']:.1f} s, {'ok' if ref['ok'] else 'FAILED'}")
            print(f"  ours: snakemake --cores {args.cores} ...", flush=True)
            ours = run_ours(data, args.skycells, base, args.cores, args.align)
            print(f"  {ours['wall_s']:.1f} s, {'ok' if ours['ok'] else 'FAILED'}")
            rounds.append({"load_average": load, "reference": ref, "ours": ours})
            for side, run in (("reference", ref), ("ours", ours)):
                for proc in run["processes"]:
                    if proc["returncode"]:
                        log = Path(proc["cwd"]) / "run.log"
                        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                        print(f"{side} failed in {proc['cwd']}; end of {log}:\n{tail}")
                        args.keep = True
                        return 1
        ref, ours = _best(r["reference"] for r in rounds), _best(r["ours"] for r in rounds)
        last = base  # compare the last round's products

        noise = _input_noise(data, files)
        layers, only_ref, only_ours = [], [], []
        for cell in args.skycells:
            ref_files = {p.name: p for p in (last / "ref" / cell).glob("hst_*_dr[cz].fits")}
            our_files = {p.name: p for p in
                         (last / "ours" / "results" / "skycells" / cell).glob("hst_*_dr[cz].fits")}
            only_ref += sorted(set(ref_files) - set(our_files))
            only_ours += sorted(set(our_files) - set(ref_files))
            for name in sorted(set(ref_files) & set(our_files)):
                row = compare_layer(ref_files[name], our_files[name], noise)
                row["ref_sky"] = _ref_sky_mode(ref_files[name].with_name(
                    name[:-len("_drc.fits")] + "_trl.txt"))
                layers.append(row)
        ratio = {k: ours[k] / ref[k] for k in ("wall_s", "peak_rss_largest_mb",
                                               "peak_pss_tree_mb")}
        compared = [r for r in layers if "error" not in r]
        res = {
            "preset": sim.preset, "seed": sim.seed, "cores": args.cores,
            "skycells": args.skycells, "reference_sky": args.reference_sky,
            "align": args.align and "align" in _config_keys(),
            "versions": versions(("mvmflow", "drizzlepac", "drizzle", "snakemake", "stsci.skypac",
                                  "spherical_geometry", "numpy", "astropy", "psutil")), "layers": layers,
            "only_ref": only_ref, "only_ours": only_ours,
            "timing": {"reference": ref, "ours": ours, "ratio_ours_over_ref": ratio,
                       "rounds": rounds},
            "targets": {
                "identical frames": bool(layers) and all(r["frame_equal"] for r in layers),
                "flux ratio within 0.1%": bool(compared) and all(
                    abs(r["flux_ratio"] - 1) <= 1e-3 for r in compared),
                "faster (wall time)": ratio["wall_s"] < 1,
                "leaner (peak RSS, largest process)": ratio["peak_rss_largest_mb"] < 1,
                "leaner (peak PSS, whole run)": ratio["peak_pss_tree_mb"] < 1,
            },
        }
        print_report(res)
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"vs_reference_{sim.preset}_{args.reference_sky}.json"
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(f"\nfigures written to {path}")
        return 0 if ref["ok"] and ours["ok"] else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
