"""Cosmic-ray rejection in the workflow, on the simulator's ``cr`` preset.

Four dithered WFC3/UVIS F555W exposures with unflagged cosmic rays, and the very same
exposures without them. The workflow runs on each (alignment off: no pointing errors), with
``cosmic_rays: auto``, which applies to both (no DQ 4096 flags, exposures overlap), and once
more on the cosmic-ray set with ``cosmic_rays: never`` (the reference's behaviour).

- the plan turns rejection on, and the median, the masks and the masked partials are files;
- at the layer pixels where the unrejected layer shows a cosmic ray (above 3 sigma over the
  cosmic-ray-free layer, covered by three or more exposures), fewer than 1% keep a residual
  above 3 sigma after rejection;
- isolated star fluxes (covered by three or more exposures) differ by less than 0.5% from
  the cosmic-ray-free run.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from wfrun import run_snakemake

from mvmflow.runplan import RunPlan
from mvmflow.simulate import PRESETS, simulate

LAYER = "*_wfc3_uvis_f555w_all_drc.fits"


def snakemake(workdir: Path, data: Path, outdir: str, mode: str, **extra) -> None:
    run_snakemake(workdir, {"inputs": f"{data}/*_fl?.fits", "align": {"enabled": False},
                            "cosmic_rays": {"default": mode}, "outdir": outdir, **extra})


# a scenario of three runs (with, without and never rejecting cosmic rays): run in CI when
# time allows, not by `make test`; the rejection itself is tested in test_crreject.py
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow_cr")
    preset = PRESETS["cr"]
    sim = simulate(preset, base / "crs")
    simulate(dataclasses.replace(preset, cosmic_rays=False), base / "clean")
    snakemake(base, base / "crs", "rejected", "auto",
              mosaic={"enabled": True, "tile_size": 512})
    snakemake(base, base / "clean", "clean", "auto")
    snakemake(base, base / "crs", "kept", "never")
    yield {"base": base, "truth": sim.truth_dir}
    shutil.rmtree(base, ignore_errors=True)


def _layers(out: Path) -> list[Path]:
    return sorted(out.glob(f"skycells/*/{LAYER}"))


def test_rejection_runs_as_rules(runs):
    out = runs["base"] / "rejected"
    plan = RunPlan.load(out / "plan" / "plan.json")
    names = [lay.name for lay in plan.layers() if "f555w" in lay.name]
    assert names and all(plan.rejects_cosmic_rays(n) for n in names)
    assert len(list(out.glob("cr/*/*_median.fits"))) == len(names)
    assert len(list(out.glob("cr/*/*/*_crmask.fits"))) >= 4
    assert len(list(out.glob("partials_cr/*/*/*.fits"))) >= 4
    # the final partials are the separate ones minus the masked pixels (mvmflow.crsubtract)
    logs = list(runs["base"].glob("**/logs/cr_drizzle/**/*.log"))
    assert len(logs) >= 4 and all("by subtraction" in p.read_text() for p in logs)
    never = RunPlan.load(runs["base"] / "kept" / "plan" / "plan.json")
    assert not any(never.rejects_cosmic_rays(n) for n in names)
    assert not (runs["base"] / "kept" / "cr").exists()


def _nexp(ctx: np.ndarray) -> np.ndarray:
    """Exposures per pixel from a context image (bits set, over all planes)."""
    ctx = np.ascontiguousarray(ctx, dtype=np.uint32)
    if ctx.ndim == 2:
        ctx = ctx[None]
    bits = np.unpackbits(ctx.view(np.uint8).reshape(*ctx.shape, 4), axis=-1)
    return bits.sum(axis=(0, -1))


def _sigma(clean: np.ndarray, nexp: np.ndarray) -> np.ndarray:
    """Noise per layer pixel: the clean layer's robust sky scatter, plus Poisson noise."""
    ok = np.isfinite(clean) & (nexp >= 3)
    sky = np.median(clean[ok])
    mad = 1.4826 * np.median(np.abs(clean[ok] - sky))
    signal = np.clip(np.nan_to_num(clean) - sky, 0, None)
    return np.sqrt(mad**2 + signal * mad**2 / max(sky, 1e-6))


def _residuals(rej, clean, kept, nexp) -> tuple[int, int]:
    """(CR pixels injected, CR pixels left above 3 sigma after rejection)."""
    sigma = _sigma(clean, nexp)
    covered = (nexp >= 3) & np.isfinite(clean) & np.isfinite(kept) & np.isfinite(rej)
    injected = covered & ((kept - clean) > 3 * sigma)
    residual = injected & (np.abs(rej - clean) > 3 * sigma)
    return int(injected.sum()), int(residual.sum())


def _mosaic_window(mosaic: Path, layer: Path) -> np.ndarray:
    """The mosaic's SCI over a sky-cell layer's frame (same plane and scale)."""
    with fits.open(mosaic) as m, fits.open(layer) as lay:
        dx = int(round(lay["SCI"].header["PCX0"] - m["SCI"].header["PCX0"]))
        dy = int(round(lay["SCI"].header["PCY0"] - m["SCI"].header["PCY0"]))
        ny, nx = lay["SCI"].data.shape
        return m["SCI"].data[dy:dy + ny, dx:dx + nx]


def test_cosmic_ray_residuals_below_one_percent(runs):
    """In every sky-cell layer, and in the custom mosaic over each of them (its drizzle
    masks each exposure with the union of the masks its sky-cell layers found)."""
    b = runs["base"]
    checked = 0
    (mosaic,) = (b / "rejected" / "mosaic").glob(LAYER)
    for path in _layers(b / "rejected"):
        rel = path.relative_to(b / "rejected")
        with fits.open(path) as r, fits.open(b / "clean" / rel) as c, \
                fits.open(b / "kept" / rel) as k:
            rej, clean, kept = r["SCI"].data, c["SCI"].data, k["SCI"].data
            nexp = _nexp(c["CTX"].data)
        injected, residual = _residuals(rej, clean, kept, nexp)
        if injected < 50:
            continue
        checked += 1
        frac = residual / injected
        print(f"{path.name}: {injected} CR pixels, {residual} residual ({frac:.4%})")
        assert frac < 0.01
        window = _mosaic_window(mosaic, path)
        m_injected, m_residual = _residuals(window, clean, kept, nexp)
        print(f"  mosaic over it: {m_injected} CR pixels, {m_residual} residual "
              f"({m_residual / m_injected:.4%}); "
              f"{np.mean(np.isclose(window, rej, rtol=1e-5, equal_nan=True)):.4%} of pixels "
              "equal to the layer")
        assert m_injected == injected and m_residual / m_injected < 0.01
        assert np.mean(np.isclose(window, rej, rtol=1e-5, equal_nan=True)) > 0.99
    assert checked


def test_star_fluxes_unchanged_by_rejection(runs):
    """No clipped star cores: stars without a cosmic ray in the aperture keep their flux
    within 0.5%; over all stars the median change is below 0.5% (a cosmic ray on a star's
    core is sometimes kept: it cannot be told from a better-sampled core)."""
    b = runs["base"]
    src = Table.read(runs["truth"] / "sources.ecsv")
    src = src[src["type"] == "star"]
    rate = np.asarray(src["rate_wfc3_uvis_f555w"])
    hit, clean_stars = [], []
    for path in _layers(b / "rejected"):
        rel = path.relative_to(b / "rejected")
        with fits.open(path) as r, fits.open(b / "clean" / rel) as c, \
                fits.open(b / "kept" / rel) as k:
            images = [h["SCI"].data.astype(float) for h in (r, c, k)]
            w = WCS(c["SCI"].header)
            nexp = _nexp(c["CTX"].data)
        x, y = w.world_to_pixel_values(src["ra"], src["dec"])
        ny, nx = nexp.shape
        yy, xx = np.mgrid[-15:16, -15:16]
        r2 = xx**2 + yy**2
        for i in np.flatnonzero(rate > 30):
            near = (np.hypot(x - x[i], y - y[i]) < 15) & (rate > 0.01 * rate[i])
            xi, yi = int(round(x[i])), int(round(y[i]))
            if near.sum() > 1 or not (15 <= xi < nx - 15 and 15 <= yi < ny - 15):
                continue
            cut = (slice(yi - 15, yi + 16), slice(xi - 15, xi + 16))
            if not all(np.isfinite(img[cut]).all() for img in images):
                continue
            if nexp[cut].min() < 3:  # a pixel seen once or twice cannot be told from a CR
                continue
            flux = []
            for img in images:
                stamp = img[cut]
                sky = np.median(stamp[(r2 > 10**2) & (r2 <= 15**2)])
                flux.append(np.sum(stamp[r2 <= 5**2] - sky))
            rejected, clean, kept = flux
            (clean_stars if abs(kept / clean - 1) < 1e-3 else hit).append(rejected / clean)
    clean_stars, every = np.array(clean_stars), np.array(clean_stars + hit)
    print(f"{len(clean_stars)} stars without a CR in the aperture: max |r - 1| "
          f"{np.max(np.abs(clean_stars - 1)):.5f}; {len(hit)} with one: max |r - 1| "
          f"{np.max(np.abs(np.array(hit) - 1)) if hit else 0:.5f}")
    assert len(clean_stars) >= 5
    assert np.all(np.abs(clean_stars - 1) < 0.005), clean_stars
    assert abs(np.median(every) - 1) < 0.005 and np.all(np.abs(every - 1) < 0.02), every
