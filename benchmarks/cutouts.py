#!/usr/bin/env python
"""Time and peak memory of cutting and combining: mvmflow against astrocut (hapcut's engine).

**Cut.** Builds (or takes with ``--product``) a large uncompressed layer-like product:
``hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits``, a ``--npix`` square window (default
8000 x 8000) of the sky cell's fine frame ending at the sky cell's top-right corner, with
SCI and WHT (float32), a 2-d int32 CTX of 8 inputs and an HDRTAB of 16 chips, as
:func:`mvmflow.products.write_layer` writes them. For each box size (``--boxes``, arcsec;
default 3, 30 and 100, i.e. 75, 750 and 2500 fine pixels) at the window's centre, it runs

- ours: :func:`mvmflow.cutouts.cut_product` (reads the box with ``HDU.section``, cuts
  SCI, WHT and CTX, copies HDRTAB and *writes* the cutout file);
- astrocut: ``astrocut.fits_cut([product], coords, size, extension=[1, 2],
  correct_wcs=False, single_outfile=False, memory_only=True,
  cutout_prefix="hst_cutout_skycell-")``, the call of hapcut's ``make_the_cut`` (SCI and
  WHT only, kept in memory, not written),

and, as ``astrocut+write``, the same followed by writing the cutout (as ``make_the_cut``
does; the ratio column compares ours with the in-memory call, which favours astrocut), and
checks that SCI and WHT are the same pixels. astrocut's box is ours or one pixel further
left/down, depending on the fraction of ``x - (n - 1) / 2`` (``mvmflow.cutouts``
docstring), so the arrays are compared over the common part after that shift, which is
reported. The position is 0.23 and 0.31 px right of and above a pixel centre: there the odd
boxes coincide and the even ones are shifted.

**Combine.** Four cutouts of one 100" box at the corner where sky cells x14y14, x15y14,
x14y15 and x15y15 meet (the first from the large product, the others from products of the
three neighbours covering the corner), combined by :func:`mvmflow.cutcombine.combine_cutouts`
(weighted, and mean; reads the four, writes the result) and by astrocut's
``CutoutsCombiner(files, exts=slice(1, 3)).combine(memory_only=True)`` (the reference's
combine; ``exts`` because astrocut 1.4.0 cannot combine the CTX and HDRTAB extensions), and
that followed by writing the result (as ``mvm_combine``). Checks: our ``mean`` gives
astrocut's SCI; our ``weighted`` WHT, where the four cutouts overlap with the same
exposures, is each input's WHT, not their sum.

**How it measures.** Every measurement runs in a fresh Python process, started by a small
wrapper process that reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after the
worker exits: the worker's peak RSS, with no other run's memory in it. The worker times its
operation alone (``time.perf_counter`` after the imports) and the wrapper the whole process.
A process doing only the imports gives each side's baseline RSS. With ``--repeat N`` every
measurement runs N times, ours and astrocut alternating; the fastest operation time and the
largest peak RSS are reported. The product building is not timed.

Run with the project's virtual environment::

    .venv/bin/python benchmarks/cutouts.py --repeat 3
    .venv/bin/python benchmarks/cutouts.py --npix 4000 --boxes 3 30 --repeat 1
    .venv/bin/python benchmarks/cutouts.py --product my_drz.fits --skip-combine

The table goes to stdout and to ``benchmarks/out/cutouts.txt`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import WRAPPER  # benchmarks/measure.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CELLS = ("skycell-p0081x14y14", "skycell-p0081x15y14", "skycell-p0081x14y15",
         "skycell-p0081x15y15")
CORNER = 300444  # fine projection-cell pixel (both axes) in the middle of the 4-cell overlap
NEXP = 8
PREFIX = "hst_cutout_skycell-"



# ------------------------------------------------------------------------------------------
# products


def _layer_name(skycell: str) -> str:
    return f"hst_{skycell}_wfc3_ir_f160w_all_drz.fits"


def build_product(directory: Path, skycell: str, window: tuple[int, int, int, int]) -> Path:
    """Write a layer-like product: a window of ``skycell``'s fine frame.

    SCI and WHT are smooth functions of the projection-cell pixel (so neighbouring sky
    cells agree in their overlap); input k of 8 covers projection-cell columns with
    ``(X // 997) % 8 != k`` (CTX bit k), two chips each in HDRTAB.
    """
    import numpy as np
    from astropy.io import fits

    from mvmflow.grid import SkyCell
    from mvmflow.headers import ChipRow, hdrtab

    frame = SkyCell.from_name(skycell).frame.window(*window)
    X = np.arange(frame.nx) + int(frame.x0)
    Y = np.arange(frame.ny) + int(frame.y0)
    sci = np.add.outer(np.cos(Y / 50.0), np.sin(X / 70.0)).astype(np.float32)
    sci += np.float32(10)
    wht = np.broadcast_to(np.float32(100) + (X % 13).astype(np.float32), sci.shape)
    ctx_row = np.zeros(frame.nx, dtype=np.int32)
    for k in range(NEXP):
        ctx_row |= np.where((X // 997) % NEXP != k, np.int32(1 << k), np.int32(0))
    ctx = np.broadcast_to(ctx_row, sci.shape)
    hdr = frame.header()
    del hdr["NAXIS1"], hdr["NAXIS2"]
    sci_hdr = hdr.copy()
    sci_hdr.update(PCELLID=frame.projection_cell, PCX0=frame.x0, PCY0=frame.y0)
    name = _layer_name(skycell)
    primary = fits.PrimaryHDU()
    primary.header.update(TELESCOP="HST", INSTRUME="WFC3", DETECTOR="IR", FILTER="F160W",
                          FILENAME=name, SCELLID=skycell[8:])
    rows = [ChipRow(f"ib2v{k:02d}abq_flt.fits", ext,
                    {"ROOTNAME": f"ib2v{k:02d}abq", "FILENAME": f"ib2v{k:02d}abq_flt.fits",
                     "CTXBIT": k})
            for k in range(NEXP) for ext in (1, 2)]
    path = directory / name
    fits.HDUList([primary, fits.ImageHDU(sci, header=sci_hdr, name="SCI"),
                  fits.ImageHDU(np.ascontiguousarray(wht), header=hdr, name="WHT"),
                  fits.ImageHDU(np.ascontiguousarray(ctx), header=hdr, name="CTX"),
                  hdrtab(rows)]).writeto(path)
    return path


def corner_windows(npix: int) -> dict[str, tuple[int, int, int, int]]:
    """The large window of x14y14 (ending at its top-right corner) and, for the three
    neighbours, 2800-pixel windows around the four-cell corner clipped to the sky cell."""
    from mvmflow.grid import SkyCell

    out = {}
    for cell in CELLS:
        frame = SkyCell.from_name(cell).frame
        if cell == CELLS[0]:
            out[cell] = (frame.nx - npix, frame.ny - npix, npix, npix)
            continue
        x0 = max(CORNER - 1400 - int(frame.x0), 0)
        y0 = max(CORNER - 1400 - int(frame.y0), 0)
        x1 = min(CORNER + 1400 - int(frame.x0), frame.nx)
        y1 = min(CORNER + 1400 - int(frame.y0), frame.ny)
        out[cell] = (x0, y0, x1 - x0, y1 - y0)
    return out


def centre_of(path: Path) -> tuple[float, float]:
    """(RA, Dec) near the centre of a product: 0.23 and 0.31 px off a pixel centre.

    Off pixel edges and centres, where astrocut's rounding of ``x - n / 2`` is decided by
    floating-point error.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    hdr = fits.getheader(path, "SCI")
    ra, dec = WCS(hdr).pixel_to_world_values(hdr["NAXIS1"] // 2 + 0.23, hdr["NAXIS2"] // 2 + 0.31)
    return float(ra), float(dec)


def corner_position() -> tuple[float, float]:
    from mvmflow.grid import ProjectionCell

    ra, dec = ProjectionCell(81).wcs.pixel_to_world_values(CORNER, CORNER)
    return float(ra), float(dec)


# ------------------------------------------------------------------------------------------
# workers (each in its own process)


def _work_cut(spec: dict) -> None:
    if spec["side"] == "ours":
        from mvmflow.cutouts import cut_product

        start = time.perf_counter()
        out = cut_product(spec["product"], spec["ra"], spec["dec"], spec["size"], spec["out"])
        assert out is not None
    else:
        import astrocut
        from astropy import units as u

        start = time.perf_counter()
        hduls = astrocut.fits_cut([spec["product"]], f"{spec['ra']} {spec['dec']}",
                                  spec["size"] * u.arcsec, extension=[1, 2],
                                  correct_wcs=False, single_outfile=False, memory_only=True,
                                  cutout_prefix=PREFIX)
        assert hduls[0][1].data.size > 0
        if spec.get("write"):  # as make_the_cut, which writes each cutout
            os.makedirs(spec["out"], exist_ok=True)
            hduls[0].writeto(os.path.join(spec["out"], "cutout.fits"), overwrite=True)
    _report(time.perf_counter() - start)


def _work_combine(spec: dict) -> None:
    if spec["side"] == "ours":
        from mvmflow.cutcombine import combine_cutouts

        start = time.perf_counter()
        written, skipped = combine_cutouts(spec["cutouts"], spec["out"], spec["method"])
        assert len(written) == 1 and not skipped, skipped
    else:
        import astrocut

        start = time.perf_counter()
        hdul = astrocut.CutoutsCombiner(spec["cutouts"], exts=slice(1, 3)).combine(
            memory_only=True)
        assert hdul[1].data.size > 0
        if spec.get("write"):  # as mvm_combine, which writes the combined file
            os.makedirs(spec["out"], exist_ok=True)
            hdul.writeto(os.path.join(spec["out"], "combined.fits"), overwrite=True)
    _report(time.perf_counter() - start)


def _work_imports(spec: dict) -> None:
    start = time.perf_counter()
    if spec["side"] == "ours":
        import mvmflow.cutcombine  # noqa: F401
        import mvmflow.cutouts  # noqa: F401
    else:
        import astrocut  # noqa: F401
    _report(time.perf_counter() - start)


def _report(seconds: float) -> None:
    print(json.dumps({"op_s": seconds}))


WORKERS = {"cut": _work_cut, "combine": _work_combine, "imports": _work_imports}


def measure(kind: str, spec: dict, work: Path) -> dict:
    """Run one worker under the wrapper; return its operation time, wall time and peak RSS."""
    spec_path = work / "spec.json"
    stats = work / "stats.json"
    spec_path.write_text(json.dumps(spec))
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(spec_path)]
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(stats), *argv],
                          capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        sys.exit(f"{kind} {spec.get('side')} failed:\n{proc.stdout}\n{proc.stderr}")
    usage = json.loads(stats.read_text())
    op = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"op_s": op["op_s"], "wall_s": usage["wall_s"], "rss_mb": usage["maxrss_kb"] / 1024}


def repeated(kind: str, specs: dict[str, dict], work: Path, repeat: int) -> dict[str, dict]:
    """Each side ``repeat`` times, alternating; fastest operation, largest peak RSS."""
    runs: dict[str, list[dict]] = {side: [] for side in specs}
    for r in range(repeat):
        order = list(specs) if r % 2 == 0 else list(specs)[::-1]
        for side in order:
            shutil.rmtree(work / "o", ignore_errors=True)
            runs[side].append(measure(kind, {**specs[side], "out": str(work / "o")}, work))
    return {side: {"op_s": min(x["op_s"] for x in rs), "wall_s": min(x["wall_s"] for x in rs),
                   "rss_mb": max(x["rss_mb"] for x in rs)} for side, rs in runs.items()}


# ------------------------------------------------------------------------------------------
# pixel checks (in this process, not timed)


def compare_pixels(product: Path, ra: float, dec: float, size: float, work: Path) -> str:
    """'identical', 'identical after shift (dx, dy)' or a description of the difference."""
    import astrocut
    import numpy as np
    from astropy import units as u
    from astropy.io import fits

    from mvmflow.cutouts import cut_product

    ours = cut_product(product, ra, dec, size, work / "check")
    theirs = astrocut.fits_cut([str(product)], f"{ra} {dec}", size * u.arcsec,
                               extension=[1, 2], correct_wcs=False, single_outfile=False,
                               memory_only=True, cutout_prefix=PREFIX)[0]
    with fits.open(ours) as hdul:
        a = [hdul["SCI"].data, hdul["WHT"].data]
        crpix_a = np.array([hdul["SCI"].header["CRPIX1"], hdul["SCI"].header["CRPIX2"]])
    b = [theirs[1].data, theirs[2].data]
    crpix_b = np.array([theirs[1].header["CRPIX1"], theirs[1].header["CRPIX2"]])
    shutil.rmtree(work / "check")
    if a[0].shape != b[0].shape:
        return f"shapes differ: {a[0].shape} vs {b[0].shape}"
    dx, dy = (int(round(v)) for v in crpix_a - crpix_b)  # astrocut's box origin - ours
    ny, nx = a[0].shape
    # ours[i] = theirs[i - d] over the common part
    ours_part = (slice(max(dy, 0), ny + min(dy, 0)), slice(max(dx, 0), nx + min(dx, 0)))
    theirs_part = (slice(max(-dy, 0), ny + min(-dy, 0)), slice(max(-dx, 0), nx + min(-dx, 0)))
    same = all(np.array_equal(x[ours_part], y[theirs_part]) for x, y in zip(a, b, strict=True))
    if not same:
        return "DIFFERENT"
    if (dx, dy) == (0, 0):
        return "identical"
    return f"identical after astrocut's ({dx:+d}, {dy:+d}) px box shift"


def check_combine(cutouts: list[str]) -> dict[str, str]:
    """Our mean against astrocut's combiner; our weighted WHT against the inputs'.

    The four products hold the same exposures wherever they overlap, so the weighted WHT
    must be each covering input's WHT (a plain sum would multiply it by up to 4).
    """
    import astrocut
    import numpy as np
    from astropy.io import fits

    from mvmflow.cutcombine import combine_group

    mean = combine_group(cutouts, method="mean")
    theirs = astrocut.CutoutsCombiner(cutouts, exts=slice(1, 3)).combine(memory_only=True)
    same = np.array_equal(mean["SCI"].data, theirs[1].data.astype(np.float32), equal_nan=True)
    weighted = combine_group(cutouts)
    whts = np.array([fits.getdata(c, "WHT") for c in cutouts])
    ncover = (whts > 0).sum(axis=0)
    once = np.array_equal(weighted["WHT"].data, whts.max(axis=0))
    return {"mean": f"SCI {'identical to' if same else 'DIFFERS from'} astrocut's",
            "weighted": (f"WHT {'= each input' if once else 'DIFFERS from inputs'} where "
                         f"{ncover.max()} overlap, not summed")}


# ------------------------------------------------------------------------------------------
# main


def _fmt_row(cells, widths) -> str:
    return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [_fmt_row(header, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join([*lines, *(_fmt_row(r, widths) for r in rows)])


def _ratio_cells(res: dict) -> list:
    ours, theirs, wrote = res["ours"], res["astrocut"], res.get("astrocut+write")
    return [f"{ours['op_s'] * 1e3:.0f}", f"{theirs['op_s'] * 1e3:.0f}",
            f"{wrote['op_s'] * 1e3:.0f}" if wrote else "",
            f"{ours['op_s'] / theirs['op_s']:.2f}",
            f"{ours['rss_mb']:.0f}", f"{theirs['rss_mb']:.0f}",
            f"{ours['rss_mb'] / theirs['rss_mb']:.2f}"]


HEADER = ["operation", "pixels", "ours ms", "astrocut ms", "astrocut+write ms",
          "time ours/astrocut", "ours peak MB", "astrocut peak MB", "memory ours/astrocut",
          "pixels check"]


def _sides(spec: dict) -> dict[str, dict]:
    """ours, astrocut (in memory, as timed in the ratio) and astrocut with the file write."""
    return {"ours": {**spec, "side": "ours"}, "astrocut": {**spec, "side": "astrocut"},
            "astrocut+write": {**spec, "side": "astrocut", "write": True}}


def run(args: argparse.Namespace) -> str:
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="mvm_cutbench_", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        windows = corner_windows(args.npix)
        product = Path(args.product) if args.product else build_product(
            work, CELLS[0], windows[CELLS[0]])
        print(f"product {product.name}: {product.stat().st_size / 2**20:.0f} MB "
              f"(built in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        ra, dec = centre_of(product)
        rows = []
        base = repeated("imports", {"ours": {"side": "ours"}, "astrocut": {"side": "astrocut"}},
                        work, args.repeat)
        rows.append(["imports only", "", *_ratio_cells(base), ""])
        for size in args.boxes:
            spec = {"product": str(product), "ra": ra, "dec": dec, "size": size}
            res = repeated("cut", _sides(spec), work, args.repeat)
            n = int(np.floor(size / 0.04 + 0.5))
            check = compare_pixels(product, ra, dec, size, work)
            rows.append([f'cut {size:g}"', f"{n}x{n}", *_ratio_cells(res), check])
            print(rows[-1], file=sys.stderr)
        if not args.skip_combine and not args.product:
            rows += combine_rows(work, product, windows, args)
        text = table(rows, HEADER)
        return text
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def combine_rows(work: Path, product: Path, windows: dict, args) -> list[list]:
    """Four 100" cutouts at the four-cell corner, combined by both sides."""
    from mvmflow.cutouts import cut_product

    ra, dec = corner_position()
    products = [product] + [build_product(work, cell, windows[cell]) for cell in CELLS[1:]]
    cutouts = [str(cut_product(p, ra, dec, args.combine_box, work / "cutouts"))
               for p in products]
    checks = check_combine(cutouts)
    rows = []
    n = int(round(args.combine_box / 0.04))
    for method in ("weighted", "mean"):
        res = repeated("combine", _sides({"cutouts": cutouts, "method": method}), work,
                       args.repeat)
        rows.append([f"combine 4 x {args.combine_box:g}\" ({method})", f"{n}x{n}",
                     *_ratio_cells(res), checks[method]])
        print(rows[-1], file=sys.stderr)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--product", help="an existing uncompressed layer product to cut "
                                     "(default: build one; the combine needs the built ones)")
    p.add_argument("--npix", type=int, default=8000, help="side of the built product (8000)")
    p.add_argument("--boxes", type=float, nargs="+", default=[3.0, 30.0, 100.0],
                   metavar="ARCSEC", help="cutout sizes (default: 3 30 100)")
    p.add_argument("--combine-box", type=float, default=100.0, metavar="ARCSEC",
                   help="size of the four combined cutouts (default: 100)")
    p.add_argument("--skip-combine", action="store_true", help="only time the cuts")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (default: 3)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "cutouts.txt"),
                   help="where the table is written (default: benchmarks/out/cutouts.txt)")
    p.add_argument("--tmp", default=None, help="directory for the products (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        kind, spec = args.worker
        WORKERS[kind](json.loads(Path(spec).read_text()))
        return 0
    if args.repeat < 1:
        sys.exit("--repeat must be at least 1")
    text = run(args)
    import astrocut

    from mvmflow import __version__

    command = "python benchmarks/cutouts.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (f"command: {command.strip()}\n"
            f"mvmflow {__version__}, astrocut {astrocut.__version__}, Python "
            f"{platform.python_version()}, {platform.machine()} x{os.cpu_count()}, "
            f"load {load:.2f} before the report; fastest of {args.repeat} for times, "
            f"largest of {args.repeat} for peak RSS\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(note + "\n" + text + "\n")
    print(note)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
