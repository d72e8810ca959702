#!/usr/bin/env python
"""Alignment benchmark: error against the simulation's true WCS, and time per exposure.

For each preset (default ``align align_pair demo``):

1. ``mvmflow.simulate.simulate(preset)`` into a temporary directory, in a child process
   (not timed; kept out of this process so that its memory does not count below);
2. ``mvmflow.catalogs.make_catalog`` for every exposure (the ``catalog`` rule step), timed
   one exposure at a time;
3. the exposures are split into overlap-connected groups as the ``align_groups`` checkpoint
   does (``mvmflow.groups.overlap_groups`` of the header footprints, margin 2 arcsec), and
   ``mvmflow.align.align_group`` (the ``align`` rule step: solutions and report written) runs
   per group twice, timed: with the simulation's reference catalogue ``truth/refcat.ecsv``
   (absolute) and with ``none`` (relative only).

All timing and memory is measured in this process: wall time with ``time.perf_counter``
around each call; peak memory as ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the
call, with the process's high-water mark reset just before it (``echo 5 >
/proc/self/clear_refs``, Linux), so each figure is the peak RSS of this process during that
call, the interpreter and the modules already imported included (as in a workflow job). When
the reset is not possible the figures are the process's high-water mark so far (marked).

Errors are those of ``tests/test_align.py``: the RMS over a 10 x 10 grid of pixel positions
on every chip of the angular distance between two WCSs (``mvmflow.solution.corrected_chip_wcs``
of the solution against ``mvmflow.simulate.true_wcs``), in mas:

- ``before``: the header WCS against the true WCS (the injected pointing error);
- ``abs``: the absolutely aligned WCS against the true WCS;
- ``rel``: the relatively aligned WCS against the true WCS carried into the frame of the
  group's reference visit (which keeps its header WCS: its pointing error is the frame).
  Relative alignment aligns the *stars*, which move (LMC: about 1.9 mas/yr), so a visit
  ``dt`` years from the reference visit lands where the stars' motion puts it: ``rel-pm``
  also moves the expected positions by the median proper motion of the simulated LMC stars
  times ``dt`` (the figure relative alignment can reach); ``rel`` does not.

There is no reference figure to compare with: drizzlepac 3.11.0's MVM skips alignment by
default, and its alignment path (``skip_gaia_alignment=False``, ``run_align_to_gaia``)
crashes with a ``TypeError`` (spec ``processing.md`` 1.6).

    .venv/bin/python benchmarks/alignment.py [--presets align align_pair demo] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mvmflow.align import align_group
from mvmflow.catalogs import make_catalog, read_catalog
from mvmflow.exposure import Exposure
from mvmflow.groups import group_name, overlap_groups
from mvmflow.simulate import PRESETS, read_truth, simulate, true_wcs
from mvmflow.simulate.pointing import SkyTransform
from mvmflow.solution import corrected_chip_wcs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESETS = ("align", "align_pair", "demo")
GROUP_MARGIN = 2.0  # arcsec, the workflow's align.group_margin default
MIN_MATCHES = 12  # exposures with fewer catalogue matches are left out of the maximum
NO_REFERENCE = ("No reference to compare with: drizzlepac 3.11.0's MVM skips alignment by "
                "default and its alignment path (skip_gaia_alignment=False) crashes with a "
                "TypeError (spec processing.md 1.6); errors are against the simulation's "
                "true WCS")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Alignment error against the simulated true WCS (before, absolute, "
                    "relative only) and catalogue/alignment time and peak memory per "
                    "exposure, measured in this process. " + NO_REFERENCE + ".")
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), metavar="PRESET",
                   help="simulation presets (mvmflow simulate --list; default: "
                        f"{' '.join(DEFAULT_PRESETS)})")
    p.add_argument("--seed", type=int, default=None,
                   help="simulation seed (default: each preset's own)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out",
                   help="directory for alignment.json (default benchmarks/out)")
    p.add_argument("--verbose", action="store_true",
                   help="show mvmflow's log messages (default: errors only)")
    args = p.parse_args(argv)
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")
    return args


# ---------------------------------------------------------------------------------------------
# measuring


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20


def measured(func, *args, **kwargs):
    """``(result, wall seconds, peak RSS MB, peak was reset)`` of one call."""
    reset = _reset_peak()
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    return result, seconds, _peak_mb(), reset


def _simulate(preset: str, out: str, seed):
    result = simulate(preset, out, seed=seed)
    return result.seed, [str(p) for p in result.exposures]


# ---------------------------------------------------------------------------------------------
# errors against truth


def _grid(shape, n=10):
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return xx.ravel(), yy.ravel()


def rms_error(path: Path, solution, frame=None, pm_shift=None) -> float:
    """RMS (mas) over a 10 x 10 grid per chip of the distance between the solved WCS
    (``solution`` None: the header WCS) and the true WCS; the true positions are first moved
    by ``pm_shift`` ((east, north) mas) and then through ``frame`` (a SkyTransform) if
    given."""
    exposure = Exposure(path)
    out = []
    for extver in exposure.extvers:
        x, y = _grid(exposure.chip_shape(extver))
        ra_s, dec_s = corrected_chip_wcs(exposure, solution, extver).all_pix2world(x, y, 0)
        ra_t, dec_t = true_wcs(path, extver).all_pix2world(x, y, 0)
        if pm_shift is not None:
            dec_t = dec_t + pm_shift[1] / 3.6e6
            ra_t = ra_t + pm_shift[0] / 3.6e6 / np.cos(np.radians(dec_t))
        if frame is not None:
            ra_t, dec_t = frame(ra_t, dec_t)
        dra = (ra_s - ra_t + 180.0) % 360.0 - 180.0
        out.append(np.column_stack([dra * np.cos(np.radians(dec_t)) * 3.6e6,
                                    (dec_s - dec_t) * 3.6e6]))
    err = np.concatenate(out)
    return float(np.sqrt(np.mean(np.sum(err**2, axis=1))))


def _truth_row(table, name: str):
    rows = table[table["file"] == name]
    if len(rows) != 1:
        raise ValueError(f"no truth row for {name}")
    return rows[0]


def _stellar_pm(truth_dir: Path) -> tuple[float, float]:
    """Median proper motion (mas/yr) of the simulated LMC stars (foreground ones left out)."""
    src = read_truth(truth_dir, "sources")
    sel = (src["type"] == "star") & (src["population"] != "foreground")
    return float(np.median(src["pmra"][sel])), float(np.median(src["pmdec"][sel]))


# ---------------------------------------------------------------------------------------------
# one preset


def run_preset(name: str, seed, work: Path) -> dict:
    data = work / name
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        seed, paths = pool.submit(_simulate, name, str(data), seed).result()
    exposures = [Path(p) for p in paths]
    truth_dir = data / "truth"
    truth = read_truth(truth_dir, "exposures")
    refcat = truth_dir / "refcat.ecsv"
    pm = _stellar_pm(truth_dir)

    _reset_peak()
    baseline = _peak_mb()  # right after a reset: the current RSS
    rows = []
    catalogs = []
    for path in exposures:
        cat_path = data / "catalogs" / path.name.replace(".fits", "_cat.ecsv")
        cat_path.parent.mkdir(exist_ok=True)
        _, seconds, peak, reset = measured(make_catalog, path, cat_path)
        catalogs.append(cat_path)
        exposure = Exposure(path)
        rows.append({
            "file": path.name, "detector": f"{exposure.instrument}/{exposure.detector}",
            "filter": exposure.filter, "n_sources": len(read_catalog(cat_path)),
            "catalog_s": seconds, "catalog_peak_rss_mb": peak, "peak_reset": reset,
            "before_mas": rms_error(path, None),
        })

    footprints = [[Exposure(p).footprint(extver) for extver in Exposure(p).extvers]
                  for p in exposures]
    groups = []
    for members in overlap_groups(footprints, margin_arcsec=GROUP_MARGIN):
        gname = group_name([exposures[i].name for i in members])
        paths_g = [exposures[i] for i in members]
        cats_g = [catalogs[i] for i in members]
        group = {"name": gname, "files": [p.name for p in paths_g]}
        for mode, reference in (("abs", str(refcat)), ("rel", "none")):
            out = data / "align" / mode / gname
            out.mkdir(parents=True, exist_ok=True)
            sols = [out / p.name.replace(".fits", "_wcs.json") for p in paths_g]
            solutions, seconds, peak, reset = measured(
                align_group, paths_g, cats_g, sols, refcat=reference,
                report_path=out / "report.ecsv")
            group[f"{mode}_s"] = seconds
            group[f"{mode}_s_per_exposure"] = seconds / len(paths_g)
            group[f"{mode}_peak_rss_mb"] = peak
            group[f"{mode}_peak_reset"] = reset
            for i, sol in zip(members, solutions, strict=True):
                rows[i][mode] = {k: sol[k] for k in ("status", "fitgeom", "nmatches", "rms_ra",
                                                     "rms_dec", "wcsname", "flagged")}
                rows[i][mode]["notes"] = sol["notes"]
                rows[i][f"{mode}_solution"] = sol
        # absolute: against the true WCS
        for i in members:
            rows[i]["abs_mas"] = rms_error(exposures[i], rows[i].pop("abs_solution"))
        # relative: against the true WCS in the reference visit's frame
        refs = [i for i in members if rows[i]["rel"]["status"] == "reference"]
        group["reference_visit"] = rows[refs[0]]["rel_solution"]["visit"] if refs else None
        if refs:
            ref = _truth_row(truth, exposures[refs[0]].name)
            frame = SkyTransform(src=(ref["error_ra"], ref["error_dec"]),
                                 dst=(ref["error_ra"], ref["error_dec"]),
                                 rotation_deg=float(ref["rotation"]),
                                 shift_arcsec=(float(ref["offset_dx"]),
                                               float(ref["offset_dy"])))
            epoch0 = float(np.mean([_truth_row(truth, exposures[i].name)["epoch"]
                                    for i in refs]))
        for i in members:
            sol = rows[i].pop("rel_solution")
            if not refs:
                rows[i]["rel_mas"] = rows[i]["rel_pm_mas"] = float("nan")
                continue
            dt = float(_truth_row(truth, exposures[i].name)["epoch"]) - epoch0
            rows[i]["dt_yr"] = dt
            rows[i]["rel_mas"] = rms_error(exposures[i], sol, frame)
            rows[i]["rel_pm_mas"] = rms_error(exposures[i], sol, frame,
                                              (-pm[0] * dt, -pm[1] * dt))
        groups.append(group)

    n = len(exposures)
    good_abs = [r["abs_mas"] for r in rows if r["abs"]["status"].startswith("absolute")
                and r["abs"]["nmatches"] >= MIN_MATCHES]
    good_rel = [r for r in rows if r["rel"]["status"] in ("reference", "relative")]
    summary = {
        "rss_before_mb": baseline,
        "n_exposures": n,
        "n_groups": len(groups),
        "n_absolute_min_matches": len(good_abs),
        "max_abs_mas": max(good_abs) if good_abs else float("nan"),
        "median_abs_mas": float(np.median(good_abs)) if good_abs else float("nan"),
        "n_relative": len(good_rel),
        "max_rel_mas": max((r["rel_mas"] for r in good_rel), default=float("nan")),
        "max_rel_pm_mas": max((r["rel_pm_mas"] for r in good_rel), default=float("nan")),
        "max_before_mas": max(r["before_mas"] for r in rows),
        "median_catalog_s": float(np.median([r["catalog_s"] for r in rows])),
        "total_catalog_s": float(sum(r["catalog_s"] for r in rows)),
        "max_catalog_peak_rss_mb": max(r["catalog_peak_rss_mb"] for r in rows),
        "abs_s_per_exposure": sum(g["abs_s"] for g in groups) / n,
        "rel_s_per_exposure": sum(g["rel_s"] for g in groups) / n,
        "max_abs_peak_rss_mb": max(g["abs_peak_rss_mb"] for g in groups),
        "max_rel_peak_rss_mb": max(g["rel_peak_rss_mb"] for g in groups),
        "unaligned_abs": [r["file"] for r in rows if not r["abs"]["status"].startswith("abs")],
    }
    return {"preset": name, "seed": seed, "stellar_pm_mas_yr": pm, "exposures": rows,
            "groups": groups, "summary": summary}


# ---------------------------------------------------------------------------------------------
# printing


def _f(value, fmt=".1f", width=6) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return f"{'-':>{width}}"
    return format(value, fmt).rjust(width)


def _round(value, digits=1):
    return None if value is None else round(value, digits) + 0.0  # no "-0.0"


def print_preset(rec: dict) -> None:
    s = rec["summary"]
    print(f"\n== {rec['preset']} (seed {rec['seed']}): {s['n_exposures']} exposures, "
          f"{s['n_groups']} alignment group(s); LMC stars' median proper motion "
          f"({rec['stellar_pm_mas_yr'][0]:.2f}, {rec['stellar_pm_mas_yr'][1]:.2f}) mas/yr; "
          f"process RSS before the first call {s['rss_before_mb']:.0f} MB")
    head = (f"{'file':<19} {'detector':<10} {'filter':<6} {'nsrc':>5} {'cat s':>6} "
            f"{'cat MB':>6} | {'abs status':<14} {'fitgeom':<7} {'nmat':>4} {'rms_ra':>6} "
            f"{'rms_de':>6} {'before':>7} {'abs':>6} | {'rel status':<10} {'nmat':>4} "
            f"{'dt yr':>5} {'rel':>6} {'rel-pm':>6}")
    print(head)
    print("-" * len(head))
    for r in rec["exposures"]:
        a, b = r["abs"], r["rel"]
        print(f"{r['file']:<19} {r['detector']:<10} {r['filter']:<6} {r['n_sources']:>5d} "
              f"{r['catalog_s']:>6.2f} {r['catalog_peak_rss_mb']:>6.0f} | "
              f"{a['status']:<14} {a['fitgeom']:<7} {a['nmatches']:>4d} "
              f"{_f(a['rms_ra'])} {_f(a['rms_dec'])} {_f(r['before_mas'], width=7)} "
              f"{_f(r['abs_mas'])} | {b['status']:<10} {b['nmatches']:>4d} "
              f"{_f(_round(r.get('dt_yr')), '+.1f', 5)} {_f(r['rel_mas'])} {_f(r['rel_pm_mas'])}")
    for g in rec["groups"]:
        print(f"  group {g['name']} ({len(g['files'])} exposures, relative reference visit "
              f"{g['reference_visit']}): align_group {g['abs_s']:.2f} s absolute "
              f"({g['abs_peak_rss_mb']:.0f} MB peak), {g['rel_s']:.2f} s relative only "
              f"({g['rel_peak_rss_mb']:.0f} MB peak)")
    if s["unaligned_abs"]:
        print(f"  not aligned (absolute run): {', '.join(s['unaligned_abs'])}")
    print(f"SUMMARY {rec['preset']}: max abs error {_f(s['max_abs_mas'], '.2f', 0)} mas "
          f"(median {_f(s['median_abs_mas'], '.2f', 0)}) over the "
          f"{s['n_absolute_min_matches']} exposures with >= {MIN_MATCHES} matches "
          f"(before: up to {s['max_before_mas']:.0f} mas); relative only: max "
          f"{_f(s['max_rel_mas'], '.2f', 0)} mas, {_f(s['max_rel_pm_mas'], '.2f', 0)} mas with "
          f"the stars' motion ({s['n_relative']} aligned); catalogue median "
          f"{s['median_catalog_s']:.2f} s/exposure (peak {s['max_catalog_peak_rss_mb']:.0f} MB); "
          f"align {s['abs_s_per_exposure']:.3f} s/exposure absolute, "
          f"{s['rel_s_per_exposure']:.3f} s/exposure relative only")


def _clean(value):
    """JSON-ready: numpy scalars to Python, NaN to null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        logging.getLogger("mvmflow").setLevel(logging.ERROR)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": _commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "note": NO_REFERENCE,
        "peak_rss": "in-process: ru_maxrss after each call, high-water mark reset before it "
                    "(/proc/self/clear_refs); includes the interpreter and imported modules",
    }
    print("mvmflow alignment benchmark")
    print(f"  commit {meta['commit']}, Python {meta['python']}, {meta['cpus']} CPUs, load "
          f"average {', '.join(f'{v:.2f}' for v in meta['loadavg'] or [])}")
    print(f"  {NO_REFERENCE}.")
    print("  Timing and peak RSS are measured in this process, per call (make_catalog per "
          "exposure, align_group per group), the simulation excluded. Errors in mas: RMS "
          "over a 10x10 grid per chip of |solved WCS - true WCS|; 'before' = header WCS; "
          "'abs' = aligned to truth/refcat.ecsv; 'rel' = relative only, against the true WCS "
          "in the reference visit's frame; 'rel-pm' = the same with the LMC stars' median "
          "proper motion x dt added. rms_ra/rms_de: the fit's own RMS against the catalogue "
          "(mas).")
    records = {}
    with tempfile.TemporaryDirectory(prefix="mvmflow-alignment-") as tmp:
        for name in args.presets:
            rec = run_preset(name, args.seed, Path(tmp))
            print_preset(rec)
            records[name] = rec
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "alignment.json"
    path.write_text(json.dumps(_clean({"meta": meta, "presets": records}), indent=1,
                               allow_nan=False) + "\n")
    print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
