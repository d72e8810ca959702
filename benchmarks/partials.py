#!/usr/bin/env python
"""Bytes and write/read times of a partial file (:mod:`mvmflow.partials`).

Simulates one full-frame exposure (ACS/WFC F814W by default, 2 x 2048 x 4096 pixels, at the
position angle of ``benchmarks/cr.py``'s setup, 40 degrees, so the chips are rotated on the
sky and their box has large zero corners), drizzles it onto sky cell p0081x14y14 at 0.04"
(:func:`mvmflow.resample.drizzle_exposure`, not timed) and measures, best of ``--repeat``:

- ``box``: layout 1 (before ``PARTVER = 2``): the three box-sized images FLUX (float32),
  WEIGHT (float32), NCHIPS (uint8), written with astropy and read back whole;
- ``spans``: :func:`mvmflow.partials.write_partial` with no byte plane compressed (the row
  spans alone);
- ``partial``: :func:`mvmflow.partials.write_partial` as it is (spans and zlib-compressed
  high byte planes), read back whole (:meth:`~mvmflow.partials.PartialFile.read`), a
  1024 x 1024 window (:meth:`~mvmflow.partials.PartialFile.window`) and a 256-row strip of
  FLUX and WEIGHT (:meth:`~mvmflow.partials.PartialFile.rows`, the median's read).

Bytes per input pixel are the file's size over the exposure's pixels. Timings are wall clock
and CPU time in this process; reads are timed with a warm page cache (the file was just
written: the encoding's cost) and from the disk (the file's pages evicted with
``posix_fadvise``). On a busy machine compare the CPU times. Every layout is checked to read back the same bits.

    .venv/bin/python benchmarks/partials.py
    .venv/bin/python benchmarks/partials.py --detector wfc3_uvis --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKYCELL = "skycell-p0081x14y14"


def best(fn, repeat: int):
    """The fastest of ``repeat`` calls, as ``(wall s, CPU s)``, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        out = None  # free the previous result first
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(times), out


def evicted(path: Path) -> Path:
    """``path`` with its pages dropped from the page cache (written out first), so the next
    read comes from the disk (``posix_fadvise(DONTNEED)``: this file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return path


def write_box(p, path: Path) -> Path:
    """Layout 1: PRIMARY, then FLUX, WEIGHT, NCHIPS as box-sized images."""
    from astropy.io import fits

    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(np.asarray(getattr(p, n)), name=n.upper())
                                  for n in ("flux", "weight", "nchips")]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def read_box(path: Path) -> dict:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        return {n: np.asarray(hdul[n.upper()].data).astype(hdul[n.upper()].data.dtype
                                                          .newbyteorder("="))
                for n in ("flux", "weight", "nchips")}


def same(p, arrays: dict) -> bool:
    return all(np.asarray(getattr(p, n)).tobytes() == arrays[n].tobytes()
               for n in ("flux", "weight", "nchips"))


def simulate_one(detector: str, work: Path) -> tuple[Path, int]:
    """One full-frame exposure (``benchmarks/cr.py``'s setup); its path and pixel count."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cr import make_preset

    from mvmflow.exposure import Exposure
    from mvmflow.simulate import simulate

    sim = simulate(make_preset(detector, 1, 150.0, 31), work / "data")
    path = Path(sim.exposures[0])
    exposure = Exposure.open(path)
    npix = sum(int(np.prod(exposure.data(v).shape)) for v in exposure.extvers)
    return path, npix


def run(args, work: Path) -> dict:
    from mvmflow import partials
    from mvmflow.grid import SkyCell
    from mvmflow.partials import PartialFile, write_partial
    from mvmflow.resample import drizzle_file

    print("simulating and drizzling one exposure (not timed)...", flush=True)
    exposure, npix = simulate_one(args.detector, work)
    frame = SkyCell.from_name(SKYCELL).frame
    params = {"kernel": "square", "pixfrac": 1.0, "final_bits": "64,16", "stepsize": 10,
              "wht_type": "EXP", "static_mask": False}
    p = drizzle_file(exposure, frame, params)
    covered = (p.flux.view(np.uint32) != 0) | (p.weight.view(np.uint32) != 0) | (p.nchips != 0)
    result = {"exposure": exposure.name, "input_pixels": npix, "box": list(p.shape[::-1]),
              "box_pixels": int(p.flux.size), "covered_fraction": float(covered.mean()),
              "repeat": args.repeat, "layouts": {}}
    del covered

    def record(name, path, write_s, read_s, ok, **extra):
        size = os.path.getsize(path)
        result["layouts"][name] = {"bytes": size, "bytes_per_input_pixel": size / npix,
                                   "write_s": write_s[0], "write_cpu_s": write_s[1],
                                   "read_s": read_s[0], "read_cpu_s": read_s[1], "exact": ok,
                                   **{k: v[0] for k, v in extra.items()}}

    t_w, path = best(lambda: write_box(p, work / "box.fits"), args.repeat)
    t_r, arrays = best(lambda: read_box(path), args.repeat)
    t_cold, arrays = best(lambda: read_box(evicted(path)), args.repeat)
    record("box", path, t_w, t_r, same(p, arrays), cold_read_s=t_cold)
    del arrays

    planes = partials.ZLIB_PLANES
    partials.ZLIB_PLANES = {"flux": (), "weight": (), "nchips": ()}
    try:
        t_w, path = best(lambda: write_partial(p, work / "spans.fits"), args.repeat)
    finally:
        partials.ZLIB_PLANES = planes
    t_r, back = best(lambda: PartialFile.open(path).read(), args.repeat)
    record("spans", path, t_w, t_r, same(p, vars(back)))
    del back

    t_w, path = best(lambda: write_partial(p, work / "partial.fits"), args.repeat)
    t_r, back = best(lambda: PartialFile.open(path).read(), args.repeat)
    t_cold, back = best(lambda: PartialFile.open(evicted(path)).read(), args.repeat)
    ok = same(p, vars(back))
    del back
    ny, nx = p.shape
    window = frame.window(p.box_x0 + nx // 2 - 512, p.box_y0 + ny // 2 - 512, 1024, 1024)
    t_win, part = best(lambda: PartialFile.open(path).window(window), args.repeat)
    ok &= part.flux.tobytes() == p.flux[ny // 2 - 512:ny // 2 + 512,
                                        nx // 2 - 512:nx // 2 + 512].tobytes()
    t_rows, strip = best(lambda: PartialFile.open(path).rows(ny // 2, ny // 2 + 256,
                                                             ("flux", "weight")), args.repeat)
    ok &= strip["weight"].tobytes() == p.weight[ny // 2:ny // 2 + 256].tobytes()
    record("partial", path, t_w, t_r, bool(ok), cold_read_s=t_cold, window_1024_s=t_win,
           rows_256_s=t_rows)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", choices=("acs_wfc", "wfc3_uvis"), default="acs_wfc")
    parser.add_argument("--repeat", type=int, default=3, help="timings: best of N (default 3)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mvmflow_partials_bench_", dir=args.workdir))
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{result['exposure']}: {result['input_pixels']} input pixels, box "
          f"{result['box'][0]} x {result['box'][1]} ({result['covered_fraction']:.1%} covered)")
    print("| layout | MB | bytes / input px | write s (CPU s) | read s (CPU s) | exact |")
    print("|---|---|---|---|---|---|")
    for name, r in result["layouts"].items():
        print(f"| {name} | {r['bytes'] / 2**20:.1f} | {r['bytes_per_input_pixel']:.2f} | "
              f"{r['write_s']:.2f} ({r['write_cpu_s']:.2f}) | {r['read_s']:.2f} "
              f"({r['read_cpu_s']:.2f}) | {'yes' if r['exact'] else 'NO'} |")
    r = result["layouts"]["partial"]
    print(f"read from the disk (file evicted from the page cache): box "
          f"{result['layouts']['box']['cold_read_s']:.2f} s, partial {r['cold_read_s']:.2f} s")
    print(f"partial: 1024 x 1024 window {r['window_1024_s']:.3f} s, 256-row strip of flux and "
          f"weight {r['rows_256_s']:.3f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "partials.json").write_text(json.dumps(result, indent=1))
    return 0 if all(r["exact"] for r in result["layouts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
