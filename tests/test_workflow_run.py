"""The whole workflow on simulated exposures: products, science against truth, overlaps,
bit-identical reruns, bad inputs among good ones, and resuming a killed run.

The tests read the shared run (tests/conftest.py, tests/wfrun.py): a sparse, bright variant
of the ``tiny_noerr`` preset (no pointing errors, so the header WCS is the truth; few enough
stars that many are isolated over a 6" box; no galaxies) with six bad files and an FLT twin
added, exposure-level products, a custom mosaic and a cutout box.
"""

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from wfrun import SHARED_UMASK, run_snakemake, shared_config

from mvmflow.grid import sky_cells_for_footprint
from mvmflow.names import LayerName


def snakemake(workdir: Path, inputs: str, outdir: str = "results", *extra: str,
              popen: bool = False, **config):
    """Another run in the shared run's directory (and under its umask: the logs are shared)."""
    return run_snakemake(workdir, {**shared_config(inputs, outdir), **config}, *extra,
                         popen=popen, umask=SHARED_UMASK)


@pytest.fixture(scope="module")
def run(shared_run):
    return shared_run


def products(out: Path, exposures: bool = False) -> dict[str, Path]:
    """Layer products (or, with ``exposures``, exposure-level products) by name."""
    return {p.name: p for p in sorted((out / "skycells").glob("*/hst_*_dr?.fits"))
            if LayerName.parse(p.name).is_exposure == exposures}


def test_bad_inputs_rejected_run_completes(run):
    rejected = Table.read(run["out"] / "screen" / "rejected.ecsv")
    reasons = {Path(f).name: r for f, r in zip(rejected["file"], rejected["reason"], strict=True)}
    assert set(reasons) == set(run["bad"])
    for name, word in run["bad"].items():
        assert word.lower() in reasons[name].lower(), (name, reasons[name])
    accepted = Table.read(run["out"] / "screen" / "accepted.ecsv")
    assert sorted(Path(f).name for f in accepted["file"]) == sorted(p.name for p in run["good"])


def test_flt_left_out_of_flc_layer_is_reported(run):
    dropped = Table.read(run["out"] / "plan" / "dropped.ecsv")
    rows = [r for r in dropped if r["file"] == run["twin"].name]
    assert rows, "the FLT twin is not reported"
    assert all("_acs_wfc_f814w_all_drc" in r["layer"] and "FLC" in r["reason"].upper()
               for r in rows)
    for path in _acs_layers(run):
        assert fits.getheader(path)["NUMEXP"] == 2  # the twin is not drizzled


def test_every_expected_layer_of_every_sky_cell(run):
    # sky cells from the exposures' own footprints, computed independently of the plan
    cells = set()
    for path in run["good"]:
        with fits.open(path) as hdul:
            for h in hdul:
                if h.name == "SCI":
                    w = WCS(h.header, hdul)
                    cells.update(sky_cells_for_footprint(w.calc_footprint(undistort=False)))
    expected = set()
    for cell in cells:
        expected |= {
            f"hst_{cell}_acs_wfc_f814w_all_drc.fits",
            f"hst_{cell}_wfc3_ir_f110w_all_drz.fits",
            f"hst_{cell}_wfc3_ir_f110w_coarse-all_drz.fits",
        }
    got = products(run["out"])
    assert set(got) == expected
    for cell in cells:
        d = run["out"] / "skycells" / cell
        manifest = (d / f"{cell}_manifest.txt").read_text().split()
        exposure_level = [n for n in products(run["out"], exposures=True) if cell in n]
        assert exposure_level
        assert sorted(manifest) == sorted(
            [n for n in expected if cell in n] + [LayerName.parse(n).trailer for n in expected
                                                   if cell in n] + exposure_level)
        poller = (d / f"{cell}_input.out").read_text()
        assert not poller.endswith("\n") and all(
            len(line.split(",")) == 10 for line in poller.split("\n"))


def test_layers_of_a_sky_cell_share_one_frame_per_scale(run):
    by_cell: dict[tuple, set] = {}
    for name, path in products(run["out"]).items():
        h = fits.getheader(path, "SCI")
        scale = "coarse" if "coarse" in name else "fine"
        by_cell.setdefault((name.split("_")[1], scale), set()).add(
            (h["NAXIS1"], h["NAXIS2"], h["CRPIX1"], h["CRPIX2"]))
    assert all(len(v) == 1 for v in by_cell.values()), by_cell


def _truth_positions(truth_dir: Path, epoch: float, column: str):
    src = Table.read(truth_dir / "sources.ecsv")
    src = src[src["type"] == "star"]
    dt = epoch - np.asarray(src["epoch"])
    dec = np.asarray(src["dec"]) + np.asarray(src["pmdec"]) * dt / 3.6e6
    ra = np.asarray(src["ra"]) + np.asarray(src["pmra"]) * dt / 3.6e6 / np.cos(np.radians(dec))
    return ra, dec, np.asarray(src[column])


def _isolated_bright(x, y, rate, box, floor):
    """Indices of stars brighter than ``floor`` with no other star within ``box`` pixels."""
    keep = []
    for i in np.flatnonzero(rate > floor):
        d = np.hypot(x - x[i], y - y[i])
        near = (d < box) & (d > 0)
        if not near.any():
            keep.append(i)
    return keep


def _acs_layers(run):
    return [p for n, p in products(run["out"]).items() if "acs_wfc_f814w_all_drc" in n]


def _epoch(run, prefix):
    t = Table.read(run["data"] / "truth" / "exposures.ecsv")
    return float(np.mean([e for f, e in zip(t["file"], t["epoch"], strict=True)
                          if f.startswith(prefix)]))


def _star_ratios(path: Path, ra, dec, rate, max_holes: float = 0.0) -> list[float]:
    """Measured / true count rate of the isolated bright stars of a product (6.4" boxes,
    local sky from a surrounding ring; up to ``max_holes`` of the box may be masked, away
    from the core, and is filled with the sky)."""
    half = 80  # 161 px = 6.4": the model PSF stamp is 6.0" wide
    with fits.open(path) as hdul:
        sci, wht = hdul["SCI"].data.astype(float), hdul["WHT"].data
        w = WCS(hdul["SCI"].header)
    x, y = w.world_to_pixel_values(ra, dec)
    ratios = []
    for i in _isolated_bright(x, y, rate, 1.4 * half, 300.0):
        xi, yi = int(round(x[i])), int(round(y[i]))
        y0, y1, x0, x1 = yi - half - 30, yi + half + 31, xi - half - 30, xi + half + 31
        if y0 < 0 or x0 < 0 or y1 > sci.shape[0] or x1 > sci.shape[1]:
            continue
        cut = sci[y0:y1, x0:x1]
        inner = cut[30:-30, 30:-30]
        holes = ~(wht[y0 + 30:y1 - 30, x0 + 30:x1 - 30] > 0)
        if holes.mean() > max_holes or holes[half - 8:half + 9, half - 8:half + 9].any():
            continue  # masked pixels (one exposure alone has some) must be few, off the core
        ring = np.concatenate([cut[:25].ravel(), cut[-25:].ravel(),
                               cut[25:-25, :25].ravel(), cut[25:-25, -25:].ravel()])
        ring = ring[np.isfinite(ring)]
        if ring.size < 2000:
            continue
        sky = np.median(ring)
        inner = np.where(holes, sky, inner)
        ratios.append((inner.sum() - sky * inner.size) / rate[i])
    return ratios


def test_star_fluxes_match_truth(run):
    """Total count rate of isolated stars in the ACS layers equals the truth within 1%."""
    ratios = []
    for path in _acs_layers(run):
        ra, dec, rate = _truth_positions(run["data"] / "truth", _epoch(run, "j"),
                                         "rate_acs_wfc_f814w")
        ratios += _star_ratios(path, ra, dec, rate)
    assert len(ratios) >= 4, f"only {len(ratios)} isolated bright stars measured"
    ratios = np.array(ratios)
    assert abs(np.median(ratios) - 1) < 0.01, ratios
    assert np.all(np.abs(ratios - 1) < 0.03), ratios


def test_exposure_products_add_up_to_their_layer(run):
    """Exposure-level products (one per drizzled member, same frame) summed with their
    weights reproduce the layer."""
    exposure_level = products(run["out"], exposures=True)
    for name, path in products(run["out"]).items():
        layer = LayerName.parse(name)
        members = [p for n, p in exposure_level.items() if LayerName.parse(n).layer == layer]
        with fits.open(path) as hdul:
            assert len(members) == hdul[0].header["NUMEXP"] >= 1
            sci, wht = hdul["SCI"].data, hdul["WHT"].data
        wsum = np.zeros(wht.shape)
        fsum = np.zeros(wht.shape)
        for member in members:
            with fits.open(member) as hdul:
                assert hdul[0].header["NUMEXP"] == 1
                assert hdul["SCI"].data.shape == sci.shape
                w = hdul["WHT"].data.astype(float)
                wsum += w
                fsum += np.where(w > 0, np.nan_to_num(hdul["SCI"].data) * w, 0.0)
        np.testing.assert_allclose(wsum, wht, rtol=1e-6)
        on = wht > 0
        np.testing.assert_allclose(fsum[on] / wsum[on], sci[on], rtol=1e-5,
                                   atol=1e-6 * np.nanmax(np.abs(sci)))
        assert np.isnan(sci[~on]).all()


def test_exposure_product_fluxes_match_truth(run):
    """Isolated bright stars in each ACS exposure-level product hold their true count rate."""
    t = Table.read(run["data"] / "truth" / "exposures.ecsv")
    epochs = {f[:8]: e for f, e in zip(t["file"], t["epoch"], strict=True)}
    ratios = []
    for name, path in products(run["out"], exposures=True).items():
        ipppssoo = LayerName.parse(name).ipppssoo
        if "acs_wfc_f814w" not in name or ipppssoo not in epochs:
            continue
        ra, dec, rate = _truth_positions(run["data"] / "truth", epochs[ipppssoo],
                                         "rate_acs_wfc_f814w")
        ratios += _star_ratios(path, ra, dec, rate, max_holes=0.002)
    assert len(ratios) >= 4, f"only {len(ratios)} isolated bright stars measured"
    assert abs(np.median(ratios) - 1) < 0.01, ratios
    assert np.all(np.abs(np.array(ratios) - 1) < 0.03), ratios


def _centroid(img):
    """Iterative Gaussian-weighted centroid (sigma 1.5 px) of a small stamp."""
    ny, nx = img.shape
    yy, xx = np.mgrid[:ny, :nx]
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    img = img - np.median(img)
    for _ in range(30):
        wgt = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2)) * img
        cx, cy = (wgt * xx).sum() / wgt.sum(), (wgt * yy).sum() / wgt.sum()
    return cx, cy


def test_star_positions_match_truth(run):
    """With no pointing errors, bright isolated stars sit within 0.1 px of the truth."""
    offsets = []
    for path in _acs_layers(run):
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data.astype(float)
            w = WCS(hdul["SCI"].header)
        ra, dec, rate = _truth_positions(run["data"] / "truth", _epoch(run, "j"),
                                         "rate_acs_wfc_f814w")
        x, y = w.world_to_pixel_values(ra, dec)
        for i in _isolated_bright(x, y, rate, 40, 200.0):
            xi, yi = int(round(x[i])), int(round(y[i]))
            if not (10 <= xi < sci.shape[1] - 10 and 10 <= yi < sci.shape[0] - 10):
                continue
            stamp = sci[yi - 7:yi + 8, xi - 7:xi + 8]
            if not np.isfinite(stamp).all():
                continue
            cx, cy = _centroid(stamp)
            offsets.append((xi - 7 + cx - x[i], yi - 7 + cy - y[i]))
    assert len(offsets) >= 6
    offsets = np.array(offsets)
    assert np.all(np.abs(np.median(offsets, axis=0)) < 0.1), np.median(offsets, axis=0)
    assert np.median(np.hypot(*offsets.T)) < 0.1


def test_neighbouring_sky_cells_agree_in_their_overlap(run):
    layers = {p.parent.name: p for p in _acs_layers(run)}
    pairs = [(a, b) for a in layers for b in layers if a < b]
    compared = 0
    for a, b in pairs:
        ha, hb = fits.getheader(layers[a], "SCI"), fits.getheader(layers[b], "SCI")
        # a sky position at a-pixel x is at b-pixel x - dx (and likewise in y)
        dx = int(round(ha["CRPIX1"] - hb["CRPIX1"]))
        dy = int(round(ha["CRPIX2"] - hb["CRPIX2"]))
        sa, wa = fits.getdata(layers[a], "SCI"), fits.getdata(layers[a], "WHT")
        sb, wb = fits.getdata(layers[b], "SCI"), fits.getdata(layers[b], "WHT")
        ya0, xa0 = max(0, dy), max(0, dx)
        ya1, xa1 = min(sa.shape[0], sb.shape[0] + dy), min(sa.shape[1], sb.shape[1] + dx)
        if ya1 <= ya0 or xa1 <= xa0:
            continue
        A = sa[ya0:ya1, xa0:xa1]
        B = sb[ya0 - dy:ya1 - dy, xa0 - dx:xa1 - dx]
        WA = wa[ya0:ya1, xa0:xa1]
        WB = wb[ya0 - dy:ya1 - dy, xa0 - dx:xa1 - dx]
        both = (WA > 0) & (WB > 0)
        if both.sum() < 1000:
            continue
        compared += 1
        np.testing.assert_allclose(WA[both], WB[both], rtol=1e-5)
        np.testing.assert_allclose(A[both], B[both], rtol=1e-4,
                                   atol=1e-5 * np.nanmax(np.abs(A[both])))
    assert compared >= 2


def _digests(out: Path) -> dict[str, str]:
    """sha256 of every file a rerun must reproduce: products with their headers, trailers,
    manifests, poller files, mosaic, cutouts, screening and plan reports (not the
    intermediates)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("skycells", "mosaic", "cutouts", "screen", "plan")
            for p in sorted((out / top).rglob("*"))
            if p.is_file() and not {"partials", "tiles"} & set(p.parts)}


def test_rerun_is_bit_identical(run):
    """The run made again from nothing, in the same directory with the same configuration,
    writes the same bytes, headers included (the job logs, with their times, and the
    benchmark records are not compared). The rerun replaces the shared run's files with
    identical ones - the plan and the intermediates too - so the tests that read them are
    unaffected whatever their order, and the tests' disk use stays at one run. A product's
    independence of the mosaic's tile size is tested in test_tiles.py and, end to end, in
    test_workflow_mosaic.py (slow)."""
    first = _digests(run["out"])
    for suffix in ("_drc.fits", "_drz.fits", "_trl.txt", "_manifest.txt", "_input.out",
                   "rejected.ecsv", "dropped.ecsv"):
        assert any(name.endswith(suffix) for name in first), suffix
    assert any(name.startswith("mosaic/") and name.endswith(".fits") for name in first)
    assert any(name.startswith("cutouts/") and "combined" in name for name in first)
    plan = (run["out"] / "plan" / "plan.json").read_bytes()
    shutil.rmtree(run["out"])
    snakemake(run["base"], f"{run['data']}/*_fl?.fits", "results")
    second = _digests(run["out"])
    assert first.keys() == second.keys()
    differ = [name for name in first if first[name] != second[name]]
    assert not differ, differ
    assert (run["out"] / "plan" / "plan.json").read_bytes() == plan


@pytest.mark.slow
def test_killed_run_resumes_with_same_products(run):
    base = run["base"]
    proc = snakemake(base, f"{run['data']}/*_fl?.fits", "results_killed", popen=True)
    partials = base / "results_killed" / "partials"
    deadline = time.time() + 300
    while time.time() < deadline and not any(partials.rglob("*.fits")):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # the killed run left a locked, incomplete directory: unlock and resume, as a user would
    snakemake(base, f"{run['data']}/*_fl?.fits", "results_killed", "--unlock")
    for path in (base / "results_killed").rglob("*.fits"):  # no half-written product
        with fits.open(path) as hdul:
            hdul.verify("exception")
            [h.data for h in hdul]
    snakemake(base, f"{run['data']}/*_fl?.fits", "results_killed", "--rerun-incomplete")
    first = {**products(run["out"]), **products(run["out"], exposures=True)}
    resumed = {**products(base / "results_killed"),
               **products(base / "results_killed", exposures=True)}
    assert first.keys() == resumed.keys()
    for name in first:
        with fits.open(first[name]) as a, fits.open(resumed[name]) as b:
            for ext in ("SCI", "WHT", "CTX"):
                assert np.array_equal(a[ext].data, b[ext].data, equal_nan=True), (name, ext)
