"""Peak memory and time of a layer's preview and coverage map on a full-size sky-cell layer.

    python benchmarks/preview_memory.py [--size 21954] [--dir /tmp/preview_bench]

Writes a synthetic layer product of ``size`` x ``size`` pixels (SCI float32, WHT float32,
CTX int32, as mvmflow.products writes them; 5.8 GB for a fine sky cell, as a sparse file:
a band of a quarter of the rows holds data, the rest reads as zeros, uncovered), then makes
its previews in a fresh process and reports that process's peak resident memory
(``VmHWM``) against a process that only imports the same libraries
(docs/design.md, "Previews and the report").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from mvmflow.grid import SkyCell


def write_sparse_layer(path: Path, size: int) -> Path:
    """A layer file of ``size``-square extensions with data in a band of rows."""
    frame = SkyCell.from_name("skycell-p0081x14y14").frame.window(0, 0, size, size)
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["INSTRUME"] = "ACS"
    hdus[0].header["EXPTIME"] = 1000.0
    for name, dtype in (("SCI", np.float32), ("WHT", np.float32), ("CTX", np.int32)):
        hdu = fits.ImageHDU(data=np.zeros((1, 1), dtype), name=name)
        hdu.header.update(frame.header())
        hdu.header["NAXIS1"], hdu.header["NAXIS2"] = size, size
        hdus.append(hdu)
    # headers first, then the data areas as holes in a sparse file
    with path.open("wb") as f:
        offsets = []
        for hdu in hdus:
            header = hdu.header.copy()
            if hdu.name == "PRIMARY":
                f.write(header.tostring().encode())
                continue
            f.write(header.tostring().encode())
            offsets.append(f.tell())
            nbytes = size * size * 4
            nbytes += (-nbytes) % 2880
            f.seek(nbytes, 1)
        f.truncate(f.tell())
    rng = np.random.default_rng(1)
    y0, y1 = size // 3, size // 3 + size // 4
    for offset, fill in zip(offsets, ("sci", "wht", "ctx"), strict=True):
        dtype = ">i4" if fill == "ctx" else ">f4"
        mm = np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=(size, size))
        for a in range(y0, y1, 512):
            b = min(y1, a + 512)
            if fill == "sci":
                mm[a:b] = rng.normal(1.0, 0.1, (b - a, size)).astype(np.float32)
            elif fill == "wht":
                mm[a:b] = 1000.0
            else:
                mm[a:b] = 0b111
        mm.flush()
        del mm
    return path


RUN = """
import sys, time
t = time.time()
{imports}
t1 = time.time()
{work}
# VmHWM, not ru_maxrss: Linux carries a parent's ru_maxrss over fork and exec
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(int(hwm) / 1024, t1 - t, time.time() - t1)
"""
IMPORTS = ("import mvmflow.preview, matplotlib.figure, matplotlib.backends.backend_agg, "
           "astropy.visualization.wcsaxes")


def measure(layer: Path, outdir: Path) -> dict:
    """Peak RSS (MB) and seconds of the previews, and of the imports alone."""
    work = (f"mvmflow.preview.layer_previews({str(layer)!r}, {str(outdir / 'p.png')!r}, "
            f"{str(outdir / 'c.png')!r})")
    out = {}
    for what, code in (("imports", "pass"), ("previews", work)):
        run = subprocess.run([sys.executable, "-c", RUN.format(imports=IMPORTS, work=code)],
                             capture_output=True, text=True, check=True)
        rss, t_import, t_work = (float(v) for v in run.stdout.split())
        out[what] = {"peak_rss_mb": round(rss, 1), "seconds": round(t_work, 2)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=21954)
    parser.add_argument("--dir", default="/tmp/preview_bench")
    args = parser.parse_args(argv)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    layer = d / f"hst_skycell-p0081x14y14_acs_wfc_f814w_all_drc_{args.size}.fits"
    t = time.time()
    write_sparse_layer(layer, args.size)
    print(f"layer {layer} ({layer.stat().st_size / 1e9:.1f} GB) written in {time.time() - t:.0f} s")
    result = {"size": args.size, **measure(layer, d)}
    result["extra_mb"] = round(result["previews"]["peak_rss_mb"]
                               - result["imports"]["peak_rss_mb"], 1)
    print(json.dumps(result))
    layer.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
