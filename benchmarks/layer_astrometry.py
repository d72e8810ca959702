#!/usr/bin/env python
"""Astrometry of the drizzled layers of a simulated run, against the simulator's truth.

For every fine layer of a finished run (``<outdir>/skycells/*/hst_*_all_dr[cz].fits``; with
``--exposure-level`` also the exposure-level products ``..._all-<ipppssoo>_dr[cz].fits``,
with ``--coarse`` the coarse WFC3/IR layers) this measures the stars the simulator drew and
prints one table: per layer the number of stars used and the median and robust scatter
(1.4826 MAD) of ``measured - truth`` in ``RA cos(Dec)`` and ``Dec``, in mas.

Truth (``<inputs>/truth/``, :mod:`mvmflow.simulate.truth`): ``sources.ecsv`` holds every
source at epoch 2016.0 with its proper motion; ``exposures.ecsv`` the epoch (Julian year at
mid-exposure) and exposure time of every input. Each star is propagated
(:func:`mvmflow.simulate.scene.positions_at`) to the exposure-time-weighted epoch of the
layer's inputs (``IN###NAM`` of the product) that cover it (their true chip footprints,
:func:`mvmflow.simulate.truth.true_wcs`), so a star seen by one visit only is compared at
that visit's epoch.

Stars used: isolated (no other source within ``--isolation`` arcsec brighter than
``--contrast`` times the star in that filter), unsaturated (the predicted peak of every input
below half the detector's full well), well exposed (the WHT over the fitting box at least half
its value at the star, so no input's edge crosses it; predicted S/N above ``--min-snr``).

Centroids (``--centroid``, default both):

- ``gauss``: a 2-D circular Gaussian plus a constant, least-squares fitted to a box of
  ``+-1.5`` native PSF FWHM (at least 3 layer pixels) around the predicted position;
- ``xwin``: the Gaussian-windowed centroid (SExtractor ``XWIN``) with the window that defines
  a simulated star's position, 2 native pixels (:data:`mvmflow.simulate.psf.WINDOW_SIGMA`),
  converted to layer pixels, after subtracting the median of an annulus.

Usage::

    .venv/bin/python benchmarks/layer_astrometry.py RUN_DIR          # a finished run
    .venv/bin/python benchmarks/layer_astrometry.py --run DIR        # run the demo in DIR first
    .venv/bin/python benchmarks/layer_astrometry.py RUN_DIR --exposure-level --centroid gauss

``RUN_DIR`` is the run's working directory (``--directory``); products are looked up under
``RUN_DIR/<outdir>/skycells`` (``--outdir``, default ``results``) and the truth under
``RUN_DIR/resources/demo/truth`` (``--truth``). ``--run DIR`` runs
``python -m snakemake --cores 2 --directory DIR --config outdir=results`` (plus
``--configfile`` when given) from this repository's Snakefile first.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy import optimize
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]

NATIVE_SCALE = {"acs_wfc": 0.05, "acs_hrc": 0.025, "acs_sbc": 0.032, "wfc3_uvis": 0.0396,
                "wfc3_ir": 0.1283}
"""Native pixel scale (arcsec) per detector."""

_LAYER = re.compile(r"hst_(?P<cell>skycell-p\d{4}x\d\dy\d\d)_(?P<inst>[a-z0-9]+)_(?P<det>[a-z]+)_"
                    r"(?P<filt>[a-z0-9]+)_(?P<label>[a-z0-9-]+?)(?:-(?P<exp>[a-z0-9]{8}))?"
                    r"_dr[cz]\.fits$")


def run_demo(workdir: Path, configfile: Path | None) -> None:
    """Run the workflow's demo in ``workdir`` (2 cores)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2",
           "--directory", str(workdir), "--config", "outdir=results"]
    if configfile is not None:
        cmd[cmd.index("--config"):cmd.index("--config")] = ["--configfile", str(configfile)]
    subprocess.run(cmd, check=True)


def find_layers(skycells: Path, exposure_level: bool, coarse: bool) -> list[tuple[Path, dict]]:
    """The layer products under ``skycells`` with their name parts."""
    out = []
    for path in sorted(skycells.glob("*/hst_*_dr[cz].fits")):
        m = _LAYER.match(path.name)
        if m is None:
            continue
        parts = m.groupdict()
        if parts["exp"] and not exposure_level:
            continue
        if parts["label"].startswith("coarse") and not coarse:
            continue
        out.append((path, parts))
    return out


class Truth:
    """The simulator's truth tables and the true chip WCSs of the inputs."""

    def __init__(self, truth_dir: Path):
        from mvmflow.simulate.truth import read_truth

        self.dir = truth_dir
        self.sources = read_truth(truth_dir, "sources")
        self.exposures = read_truth(truth_dir, "exposures")
        self.chips = read_truth(truth_dir, "chips")
        self._wcs: dict[str, list[tuple[WCS, tuple[int, int]]]] = {}

    def exposure(self, name: str):
        rows = self.exposures[self.exposures["file"] == name]
        if len(rows) != 1:
            raise SystemExit(f"{self.dir}/exposures.ecsv: no row for input {name}")
        return rows[0]

    def chip_wcs(self, name: str) -> list[tuple[WCS, tuple[int, int]]]:
        """``[(true WCS, (ny, nx)), ...]`` of the SCI extensions of input ``name``."""
        from mvmflow.simulate.truth import true_wcs

        if name not in self._wcs:
            path = self.dir.parent / name
            rows = self.chips[self.chips["file"] == name]
            out = []
            with fits.open(path) as hdul:
                for extver in rows["extver"]:
                    hdr = hdul["SCI", int(extver)].header
                    out.append((true_wcs(path, int(extver), self.dir),
                                (int(hdr["NAXIS2"]), int(hdr["NAXIS1"]))))
            self._wcs[name] = out
        return self._wcs[name]

    def covers(self, name: str, ra: np.ndarray, dec: np.ndarray, margin: float) -> np.ndarray:
        """Whether each position lies on a chip of input ``name``, ``margin`` px inside."""
        inside = np.zeros(ra.size, dtype=bool)
        for wcs, (ny, nx) in self.chip_wcs(name):
            x, y = wcs.all_world2pix(ra, dec, 0, quiet=True)
            inside |= (x > margin) & (x < nx - 1 - margin) & (y > margin) & (y < ny - 1 - margin)
        return inside


def gauss_centroid(cut: np.ndarray, x0: float, y0: float, sigma0: float):
    """Least-squares 2-D circular Gaussian + constant; returns ``(x, y, ok)`` in cut pixels."""
    yy, xx = np.indices(cut.shape, dtype=np.float64)
    bg0 = float(np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])))
    amp0 = float(cut.max() - bg0)

    def resid(q):
        a, x, y, s, b = q
        return (a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s)) + b - cut).ravel()

    try:
        fit = optimize.least_squares(resid, [amp0, x0, y0, sigma0, bg0], method="lm")
    except (ValueError, RuntimeError):
        return np.nan, np.nan, False
    a, x, y, s, _ = fit.x
    ok = bool(fit.success and a > 0 and 0.2 * sigma0 < s < 5 * sigma0
              and abs(x - x0) < 2 * sigma0 and abs(y - y0) < 2 * sigma0)
    return float(x), float(y), ok


def xwin_centroid(image: np.ndarray, x: float, y: float, sigma: float):
    """Windowed centroid after subtracting the median of an annulus of 6-9 sigma."""
    from mvmflow.simulate.psf import windowed_centroid

    half = int(np.ceil(9 * sigma))
    ix, iy = int(round(x)), int(round(y))
    if ix - half < 0 or iy - half < 0 or ix + half >= image.shape[1] or (
            iy + half >= image.shape[0]):
        return np.nan, np.nan, False
    cut = np.asarray(image[iy - half:iy + half + 1, ix - half:ix + half + 1], dtype=np.float64)
    yy, xx = np.indices(cut.shape)
    r = np.hypot(xx - (x - ix + half), yy - (y - iy + half))
    ring = (r > 6 * sigma) & (r < 9 * sigma) & np.isfinite(cut)
    cut = np.nan_to_num(cut - np.median(cut[ring]))
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty window: NaN, dropped
        cx, cy = windowed_centroid(cut, x - ix + half, y - iy + half, sigma=sigma)
    ok = np.isfinite(cx) and np.hypot(cx - (x - ix + half), cy - (y - iy + half)) < 2 * sigma
    return cx + ix - half, cy + iy - half, bool(ok)


def measure_layer(path: Path, parts: dict, truth: Truth, args) -> dict:
    """Measure one layer product; returns its row of the table (and the per-star values)."""
    from mvmflow.catalogs import DETECTOR_FWHM
    from mvmflow.simulate.detectors import detector
    from mvmflow.simulate.psf import WINDOW_SIGMA, load_psf
    from mvmflow.simulate.scene import positions_at

    detkey = f"{parts['inst']}_{parts['det']}"
    with fits.open(path) as hdul:
        phdr = hdul[0].header
        sci = hdul["SCI"].data.astype(np.float64)
        wht = hdul["WHT"].data.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(hdul["SCI"].header)
    names = [phdr[f"IN{k:03d}NAM"] for k in range(1, int(phdr["NINPUTS"]) + 1)]
    rows = [truth.exposure(n) for n in names]
    fkey = str(rows[0]["filter_key"])
    scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
    native = NATIVE_SCALE[detkey]
    zoom = native / scale  # layer pixels per native pixel
    fwhm = DETECTOR_FWHM[detkey] * zoom
    half = max(3, int(np.ceil(1.5 * DETECTOR_FWHM[detkey] * zoom)))

    src = truth.sources
    rate = np.asarray(src[f"rate_{fkey}"], dtype=np.float64)
    # positions at 2016.0 to select and to find coverage (proper motions move < 0.1")
    ra0, dec0 = positions_at(src, 2016.0)
    x0, y0 = wcs.all_world2pix(ra0, dec0, 0, quiet=True)
    ny, nx = sci.shape
    onframe = (x0 > half + 2) & (x0 < nx - half - 3) & (y0 > half + 2) & (y0 < ny - half - 3)
    star = np.asarray(src["type"]) == "star"
    cand = np.flatnonzero(onframe & star)
    # isolation against every source (stars and galaxies) in the layer's frame
    iso_px = args.isolation / scale
    tree = cKDTree(np.column_stack([x0, y0]))
    isolated = np.ones(cand.size, dtype=bool)
    for k, i in enumerate(cand):
        near = tree.query_ball_point([x0[i], y0[i]], iso_px)
        others = [j for j in near if j != i]
        if others and (rate[others] > args.contrast * rate[i]).any():
            isolated[k] = False
    cand = cand[isolated]
    # coverage by the inputs and exposure-time-weighted epoch per star
    cover = np.array([truth.covers(n, ra0[cand], dec0[cand], margin=3 * DETECTOR_FWHM[detkey])
                      for n in names])  # (inputs, stars)
    texp = np.array([float(r["exptime"]) for r in rows])
    epochs = np.array([float(r["epoch"]) for r in rows])
    tsum = (cover * texp[:, None]).sum(axis=0)
    keep = tsum > 0
    # saturation and signal: the predicted peak charge in the input with the longest exposure
    det = detector(detkey)
    psf = load_psf(str(_psf_name(fkey)))
    peak_frac = float(psf.image.max())
    longest = np.where(cover, texp[:, None], 0).max(axis=0)
    charge = rate[cand] * longest
    keep &= peak_frac * charge < 0.5 * det.full_well
    # a rough S/N: total counts over the noise of a 2-FWHM aperture (sky ~ 1 e-/s/px at most)
    snr = rate[cand] * tsum / np.sqrt(rate[cand] * tsum + (np.pi * DETECTOR_FWHM[detkey] ** 2)
                                      * (tsum + 30.0 ** 2))
    keep &= snr > args.min_snr
    cand, tsum = cand[keep], tsum[keep]
    cover = cover[:, keep]
    epoch = (cover * (texp * epochs)[:, None]).sum(axis=0) / tsum

    res = {m: ([], []) for m in args.centroid}
    used = 0
    for k, i in enumerate(cand):
        ra_t, dec_t = positions_at(src[i:i + 1], float(epoch[k]))
        xt, yt = wcs.all_world2pix(ra_t, dec_t, 0)
        xt, yt = float(xt[0]), float(yt[0])
        ix, iy = int(round(xt)), int(round(yt))
        box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        w = wht[box]
        wc = wht[iy, ix]
        if not (wc > 0 and (w >= 0.5 * wc).all() and np.isfinite(sci[box]).all()):
            continue
        meas = {}
        for method in args.centroid:
            if method == "gauss":
                gx, gy, ok = gauss_centroid(sci[box], xt - ix + half, yt - iy + half,
                                            fwhm / 2.3548)
                gx, gy = gx + ix - half, gy + iy - half
            else:
                gx, gy, ok = xwin_centroid(sci, xt, yt, WINDOW_SIGMA * zoom)
            if not ok:
                break
            meas[method] = (gx, gy)
        if len(meas) != len(args.centroid):
            continue
        used += 1
        cosd = np.cos(np.radians(dec_t[0]))
        for method, (gx, gy) in meas.items():
            ra_m, dec_m = wcs.all_pix2world(gx, gy, 0)
            dra = ((ra_m - ra_t[0] + 180.0) % 360.0 - 180.0) * cosd * 3.6e6
            ddec = (dec_m - dec_t[0]) * 3.6e6
            res[method][0].append(float(dra))
            res[method][1].append(float(ddec))
    out = {"layer": path.name, "skycell": parts["cell"], "detector": detkey,
           "filter": parts["filt"], "label": parts["label"] + (
               f"-{parts['exp']}" if parts["exp"] else ""),
           "scale": round(scale, 4), "n": used,
           "epoch_mean": float(np.sum(texp * epochs) / texp.sum())}
    for method, (dra, ddec) in res.items():
        dra, ddec = np.array(dra), np.array(ddec)
        out[method] = {
            "ra_med": _med(dra), "dec_med": _med(ddec), "ra_sig": _rsig(dra),
            "dec_sig": _rsig(ddec), "tot": float(np.hypot(_med(dra), _med(ddec))),
        }
    return out


def _psf_name(fkey: str) -> str:
    from mvmflow.simulate.data import filter_info

    inst, det, filt = fkey.split("_")
    return filter_info(inst.upper(), det.upper(), filt.upper()).psf


def _med(a: np.ndarray) -> float:
    return float(np.median(a)) if a.size else float("nan")


def _rsig(a: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(a - np.median(a)))) if a.size > 1 else float("nan")


def print_table(rows: list[dict], methods: list[str]) -> None:
    """One table: per layer and centroid, the median and scatter of the offsets (mas)."""
    head = f"{'sky cell':<20} {'layer':<32} {'n':>4}"
    for m in methods:
        head += (f" | {m + ' dRA*cosd':>14} {'dDec':>12} {'|med|':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['skycell']:<20} {r['detector'] + '_' + r['filter'] + '_' + r['label']:<32}"
                f" {r['n']:>4}")
        for m in methods:
            s = r[m]
            line += (f" | {s['ra_med']:+6.2f} ±{s['ra_sig']:5.2f} {s['dec_med']:+6.2f} "
                     f"±{s['dec_sig']:4.2f} {s['tot']:6.2f}")
        print(line)
    print("(mas: median of measured - truth, ± robust scatter per star; |med|: the offset)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a finished run's directory")
    parser.add_argument("--run", type=Path, metavar="DIR",
                        help="run the demo workflow in DIR first, then measure it")
    parser.add_argument("--configfile", type=Path, help="extra config file for --run")
    parser.add_argument("--outdir", default="results", help="the run's outdir (results)")
    parser.add_argument("--truth", type=Path,
                        help="truth directory (default RUN_DIR/resources/demo/truth)")
    parser.add_argument("--centroid", default="gauss,xwin",
                        help="comma-separated: gauss, xwin (default both)")
    parser.add_argument("--exposure-level", action="store_true",
                        help="also measure the exposure-level products")
    parser.add_argument("--coarse", action="store_true", help="also the coarse IR layers")
    parser.add_argument("--match", default="", help="only layers whose file name contains this")
    parser.add_argument("--isolation", type=float, default=0.8,
                        help="arcsec without a neighbour brighter than --contrast (0.8)")
    parser.add_argument("--contrast", type=float, default=0.01,
                        help="neighbour flux ratio that spoils isolation (0.01)")
    parser.add_argument("--min-snr", type=float, default=50.0, help="predicted S/N cut (50)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    args.centroid = [m.strip() for m in args.centroid.split(",") if m.strip()]
    for m in args.centroid:
        if m not in ("gauss", "xwin"):
            parser.error(f"--centroid: unknown method {m!r} (gauss, xwin)")
    if args.run is not None:
        run_demo(args.run, args.configfile)
        args.run_dir = args.run
    if args.run_dir is None:
        parser.error("give RUN_DIR or --run DIR")
    skycells = args.run_dir / args.outdir / "skycells"
    truth_dir = args.truth or args.run_dir / "resources" / "demo" / "truth"
    if not skycells.is_dir():
        parser.error(f"{skycells}: no such directory (a finished run?)")
    truth = Truth(truth_dir)
    layers = [(p, parts) for p, parts in find_layers(skycells, args.exposure_level, args.coarse)
              if args.match in p.name]
    rows = [measure_layer(p, parts, truth, args) for p, parts in layers]
    print_table(rows, args.centroid)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
