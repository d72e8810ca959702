#!/usr/bin/env python
"""The map step of one exposure against its floor (issue 13: within 1.5x of the floor).

The map step is what a ``drizzle`` job does after start-up: read the exposure, make each
chip's pixel map, drizzle it, add it into the exposure's partial and write the partial file
(:func:`mvmflow.resample.drizzle_exposure` and :func:`mvmflow.partials.write_partial`, as
``scripts/drizzle.py``). The *floor* is the least any implementation on the same libraries
must do for the same output:

- **read**: the SCI and DQ arrays of every chip (``astropy.io.fits``, no checks, no WCS);
- **pixel map**: an *affine* map per chip (one multiply-add per pixel and axis, fitted to
  the chip's true map at three points), a lower bound on any map with distortion;
- **kernel**: ``drizzle``'s kernel (``Drizzle.add_image``) with that map, unit weights;
- **write**: the output's ``flux`` and ``weight`` arrays, raw, to a file.

Both run in this process after one untimed warm-up (imports excluded: the workflow's jobs
are forked from a preloaded server, docs/speed.md), fastest of ``--repeat``, with the jobs'
allocator settings (``mvmflow.runner.MALLOC_ENV``, config ``reuse_memory``). The exposures
are the ``fullframe_cr`` preset's (four full-frame ACS/WFC F814W exposures; simulated into a
temporary directory unless ``--data`` points at them), each onto its box of the sky cell
``skycell-p0081x14y14``, as the workflow plans it.

Run with the project's virtual environment::

    .venv/bin/python benchmarks/map_step.py
    .venv/bin/python benchmarks/map_step.py --data /tmp/ff --exposures 4 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from mvmflow.grid import SkyCell
from mvmflow.params import layer_parameters, load_defaults, resolve_table
from mvmflow.partials import write_partial
from mvmflow.resample import chip_box, drizzle_exposure, load_chips, nominal_scale, pixmap
from mvmflow.runner import MALLOC_ENV

ROOT = Path(__file__).resolve().parents[1]
SKYCELL = "skycell-p0081x14y14"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The drizzle map step against its floor.")
    p.add_argument("--data", type=Path, default=None,
                   help="directory of the fullframe_cr preset's exposures (default: simulate)")
    p.add_argument("--exposures", type=int, default=2, help="how many (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="fastest of N (default %(default)s)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    return p.parse_args(argv)


def map_frame(chips, cell_frame):
    """The union of the exposure's chip boxes on the sky cell (where drizzle_exposure places
    its partial; the workflow's plan adds a margin from the screening records,
    mvmflow.plan.exposure_box, which needs those records)."""
    boxes = [b for b in (chip_box(c.wcs, cell_frame, c.shape, 1.0) for c in chips) if b]
    box = boxes[0]
    for b in boxes[1:]:
        box = box.union(b)
    return cell_frame.window(box.x0, box.y0, box.nx, box.ny)


def ours(path: Path, frame, params, out: Path) -> dict:
    t0 = time.perf_counter()
    chips = load_chips(path)
    t1 = time.perf_counter()
    partial = drizzle_exposure(chips, frame, params)
    t2 = time.perf_counter()
    write_partial(partial, out)
    t3 = time.perf_counter()
    return {"read": t1 - t0, "drizzle": t2 - t1, "write": t3 - t2, "total": t3 - t0}


def _affine(true_map: np.ndarray) -> np.ndarray:
    """Coefficients of the affine map through three corners of a true map."""
    ny, nx = true_map.shape[:2]
    p00, p10, p01 = true_map[0, 0], true_map[0, nx - 1], true_map[ny - 1, 0]
    return np.array([p00, (p10 - p00) / (nx - 1), (p01 - p00) / (ny - 1)])


def floor(path: Path, frame, params, coeffs, out: Path) -> dict:
    from drizzle.resample import Drizzle

    t0 = time.perf_counter()
    with fits.open(path, memmap=False) as hdul:
        arrays = [(np.asarray(h.data, dtype=np.float32), np.asarray(hdul["DQ", h.ver].data))
                  for h in hdul if h.name == "SCI"]
    t1 = time.perf_counter()
    maps = []
    for (sci, _), (c0, cx, cy) in zip(arrays, coeffs, strict=True):
        ny, nx = sci.shape
        pm = np.empty((ny, nx, 2))
        x = np.arange(nx, dtype=np.float64)
        for k in range(2):
            col = c0[k] + cy[k] * np.arange(ny, dtype=np.float64)
            np.add(col[:, None], cx[k] * x[None, :], out=pm[..., k])
        maps.append(pm)
    t2 = time.perf_counter()
    driz = Drizzle(kernel="square", out_shape=frame.shape, fillval="INDEF", disable_ctx=True)
    for (sci, _), pm in zip(arrays, maps, strict=True):
        driz.add_image(sci, exptime=1.0, pixmap=pm, weight_map=np.ones_like(sci),
                       pixfrac=float(params.get("pixfrac", 1.0)), in_units="cps")
    t3 = time.perf_counter()
    with open(out, "wb") as f:
        driz.out_img.tofile(f)
        driz.out_wht.tofile(f)
    t4 = time.perf_counter()
    return {"read": t1 - t0, "pixmap": t2 - t1, "kernel": t3 - t2, "write": t4 - t3,
            "total": t4 - t0}


def main(argv=None) -> int:
    args = parse_args(argv)
    if argv is None and "MALLOC_MMAP_MAX_" not in os.environ:
        # the allocator settings of the workflow's jobs (config reuse_memory: true)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    with tempfile.TemporaryDirectory(prefix="mvmflow-map-") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from mvmflow.simulate import simulate
            from mvmflow.simulate.presets import get_preset

            data = tmp / "data"
            simulate(get_preset("fullframe_cr"), data, workers=1)
        paths = sorted(data.glob("*_fl?.fits"))[: args.exposures]
        if not paths:
            sys.exit(f"no exposures in {data}")
        cell = SkyCell.from_name(SKYCELL).frame
        table = resolve_table(load_defaults(ROOT / "config" / "detectors.yaml"))
        params = layer_parameters(table, "acs_wfc", "f814w", 4.0)  # the preset's 4 exposures
        rows = []
        for path in paths:
            chips = load_chips(path)
            frame = map_frame(chips, cell)
            coeffs = [_affine(pixmap(c.wcs, frame, c.shape)) for c in chips]
            ratio = frame.scale / nominal_scale(chips[0])
            del chips
            best_o, best_f = None, None
            for r in range(args.repeat + 1):  # round 0: warm-up
                o = ours(path, frame, params, tmp / "ours.fits")
                f = floor(path, frame, params, coeffs, tmp / "floor.raw")
                if r and (best_o is None or o["total"] < best_o["total"]):
                    best_o = o
                if r and (best_f is None or f["total"] < best_f["total"]):
                    best_f = f
            rows.append({"exposure": path.name, "frame": list(frame.shape),
                         "scale_ratio": ratio, "ours": best_o, "floor": best_f,
                         "ratio": best_o["total"] / best_f["total"]})
    print(f"map step of one exposure (s, fastest of {args.repeat}): ours against the floor")
    print(f"{'exposure':20s} {'ours':>6s} {'read':>6s} {'drizzle':>8s} {'write':>6s}   "
          f"{'floor':>6s} {'read':>6s} {'pixmap':>7s} {'kernel':>7s} {'write':>6s}  ratio")
    for r in rows:
        o, f = r["ours"], r["floor"]
        print(f"{r['exposure']:20s} {o['total']:6.2f} {o['read']:6.2f} {o['drizzle']:8.2f} "
              f"{o['write']:6.2f}   {f['total']:6.2f} {f['read']:6.2f} {f['pixmap']:7.2f} "
              f"{f['kernel']:7.2f} {f['write']:6.2f}  {r['ratio']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "map_step.json").write_text(json.dumps(rows, indent=1))
    print(f"figures written to {args.out / 'map_step.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
