"""Custom mosaic and cutouts of the shared run (tests/conftest.py): the cutout box at the
corner of the four sky cells gives cutouts from all four and one combined cutout per layer;
the combined cutouts equal the same box of the mosaic; the mosaic equals every sky-cell layer
over its footprint; the tiled mosaic equals an untiled one bit for bit (and, in
test_workflow_run.py, a rerun with another tile size writes the same bytes).

The shared run has alignment off: the comparisons are between our own products, and the
alignment is tested in test_workflow_align.py."""

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage
from wfrun import run_snakemake

from mvmflow.aligned import load_record
from mvmflow.cutouts import _read_box, cutout_box
from mvmflow.grid import Frame
from mvmflow.headers import member_headers
from mvmflow.mosaic import tile_boxes
from mvmflow.names import CombinedName, CutoutName, LayerName, parse_default_prefix
from mvmflow.runplan import RunPlan
from mvmflow.simulate.presets import DEMO_CENTER
from mvmflow.skygroup import read_sky_offsets
from mvmflow.tiles import reduce_tile, write_tile, write_tiled_layer

RA, DEC = DEMO_CENTER  # where sky cells x14y14, x15y14, x14y15 and x15y15 of p0081 meet
SIZE = 3.0


@pytest.fixture(scope="module")
def run(shared_run):
    return shared_run["out"]


@pytest.fixture(scope="module")
def plan(run):
    return RunPlan.load(run / "plan" / "plan.json")


def _cut_dir(run, kind):
    (found,) = (run / "cutouts").glob(f"*/{kind}")
    return found


def test_mosaic_names_and_manifest(run, plan):
    mosaic = plan.mosaic
    pc, _, _ = parse_default_prefix(mosaic.prefix)
    assert pc == mosaic.projection_cell == 81
    layers = [lay.name for lay in mosaic.layers]
    # the sky cells' layers, one of each
    skycell = {LayerName.parse(lay.name).with_prefix(mosaic.prefix).filename
               for lay in plan.layers()}
    assert set(layers) == skycell and len(layers) == 3  # ACS F814W, IR F110W fine and coarse
    manifest = (run / "mosaic" / f"{mosaic.prefix}_manifest.txt").read_text().split()
    assert manifest == [n for name in layers for n in (name, name.rsplit("_", 1)[0] + "_trl.txt")]
    for name in manifest:
        assert (run / "mosaic" / name).is_file()
    with fits.open(run / "mosaic" / layers[0]) as hdul:
        assert hdul[0].header["FILENAME"] == layers[0]
        assert "SCELLID" not in hdul[0].header
        assert hdul[0].header["DRIZPARS"] == layers[0].rsplit("_", 1)[0] + "_trl.txt"
    assert any(len(lay.tiles) > 1 for lay in mosaic.layers)


def _mosaic_window(mosaic_path, frame: Frame):
    """SCI and WHT of the mosaic over ``frame`` (a window of the same plane and scale)."""
    with fits.open(mosaic_path) as hdul:
        h = hdul["SCI"].header
        mframe = Frame(int(h["PCELLID"]), frame.scale, h["CRPIX1"], h["CRPIX2"],
                       h["NAXIS1"], h["NAXIS2"])
        dx, dy = mframe.integer_offset_of(frame)
        sci = _read_box(hdul["SCI"], dx, dy, frame.nx, frame.ny, np.nan)
        wht = _read_box(hdul["WHT"], dx, dy, frame.nx, frame.ny, 0.0)
    return sci, wht


def _drizzle_set(params):
    return json.dumps({k: v for k, v in params.items() if k != "n"}, sort_keys=True)


def _edge_weights(a: float, n: int, length: int) -> tuple[int, np.ndarray]:
    """First pixel and per-pixel overlaps of the interval [a, a + length) with pixels
    [i - 0.5, i + 0.5)."""
    lo = int(np.floor(a + 0.5))
    edges = np.arange(lo, lo + length + 2) - 0.5
    w = np.clip(np.minimum(edges[1:], a + length) - np.maximum(edges[:-1], a), 0, 1)
    return lo, w


def _quiet_box(sci: np.ndarray, cy: int, cx: int, n: int, reach: int) -> tuple[int, int]:
    """The centre within ``reach`` px of (cy, cx) whose n x n box has the faintest edge: the
    comparison below spreads a pixel's flux evenly over it, so a star cut by the box's edge
    (sharp, undersampled) would bias the sum; the sky is flat enough."""
    best, where = np.inf, (cy, cx)
    for y in range(cy - reach, cy + reach + 1, 2):
        for x in range(cx - reach, cx + reach + 1, 2):
            box = sci[y - n // 2 - 1:y + n // 2 + 1, x - n // 2 - 1:x + n // 2 + 1]
            if box.shape != (n + 2, n + 2) or not np.isfinite(box).all():
                continue
            ring = np.concatenate([box[:3].ravel(), box[-3:].ravel(), box[:, :3].ravel(),
                                   box[:, -3:].ravel()])
            lumpy = float(np.sum(np.abs(ring - np.median(ring))))
            if lumpy < best:
                best, where = lumpy, (y, x)
    return where


def _check_coarse_flux(mosaic: Path, layer: Path):
    """The flux in square boxes of a coarse sky-cell layer equals the mosaic's over the same
    area of sky (pixels weighted by their overlap with the box): boxes of 40 to 80 px as
    deep in the data as can be, placed (within a few pixels) where no star crosses their
    edge, within 0.1% in the median and 0.2% each (measured: 0.0002-0.002%; a star on a
    box edge gave up to 1%, and boxes of 100-120 px, which reach the edges of exposures where
    SCI, a weighted mean, changes inputs, 0.2-0.3%; misplacing a box by one pixel gives up
    to 2%)."""
    with fits.open(layer) as lay, fits.open(mosaic) as m:
        sci, msci = lay["SCI"].data, m["SCI"].data
        dx = lay["SCI"].header["PCX0"] - m["SCI"].header["PCX0"]
        dy = lay["SCI"].header["PCY0"] - m["SCI"].header["PCY0"]
    assert abs(dx - round(dx)) > 0.3 or abs(dy - round(dy)) > 0.3  # really off-grid
    full = np.isfinite(sci)
    depth = ndimage.distance_transform_cdt(np.pad(full, 1), "chessboard")[1:-1, 1:-1]
    cy0, cx0 = np.unravel_index(np.argmax(depth), depth.shape)
    reach = 12
    sizes = [n for n in (40, 50, 60, 70, 80) if n <= 2 * (depth[cy0, cx0] - 1 - reach - 2)]
    assert len(sizes) >= 2, depth[cy0, cx0]
    diffs = []
    for n in sizes:
        cy, cx = _quiet_box(sci, cy0, cx0, n, reach)
        box = sci[cy - n // 2:cy + n // 2, cx - n // 2:cx + n // 2]
        assert box.shape == (n, n) and np.isfinite(box).all()
        x0, wx = _edge_weights(cx - n // 2 - 0.5 + dx, n, n)
        y0, wy = _edge_weights(cy - n // 2 - 0.5 + dy, n, n)
        part = msci[y0:y0 + len(wy), x0:x0 + len(wx)]
        assert np.isfinite(part).all()
        diffs.append(np.sum(part * np.outer(wy, wx)) / np.sum(box) - 1)
    assert np.median(np.abs(diffs)) < 1e-3 and np.max(np.abs(diffs)) < 2e-3, diffs


def test_mosaic_equals_each_skycell_layer(run, plan):
    """Same partials (up to the rounding of the pixel map's CRPIX), same drizzle parameters
    and the same sky offsets (the sky group is shared): equal to float precision. Coarse
    layers are compared by flux only: coarse sky cells' grids are offset from the projection
    cell's coarse grid by 1/3 px (21442 fine px is not a multiple of 3), by the grid's design."""
    mosaic = plan.mosaic
    compared, coarse = 0, 0
    for cell in plan.skycells:
        for lay in cell.layers:
            name = LayerName.parse(lay.name).with_prefix(mosaic.prefix).filename
            # the same drizzle (n may differ: it comes from each frame's own coverage)
            assert _drizzle_set(plan.layer_params(lay.name)) == \
                _drizzle_set(plan.layer_params(name, mosaic=True))
            product = run / "skycells" / cell.name / lay.name
            with fits.open(product) as hdul:
                sci, wht = hdul["SCI"].data, hdul["WHT"].data
            frame = lay.frame
            if lay.scale == "coarse":
                _check_coarse_flux(run / "mosaic" / name, product)
                coarse += 1
                continue
            msci, mwht = _mosaic_window(run / "mosaic" / name, frame)
            assert np.array_equal(np.isfinite(sci), np.isfinite(msci)), lay.name
            good = np.isfinite(sci)
            assert good.sum() > 1000
            scale = np.nanpercentile(np.abs(sci), 99)
            np.testing.assert_allclose(msci[good], sci[good], rtol=1e-5, atol=1e-6 * scale)
            np.testing.assert_allclose(mwht, wht, rtol=1e-5, atol=1e-6 * wht.max())
            compared += 1
    assert (compared, coarse) == (8, 4)  # 2 fine layers and 1 coarse in each sky cell


def test_cutouts_from_all_four_skycells_and_one_combined_per_layer(run, plan):
    cutouts = sorted(_cut_dir(run, "cutouts").glob("*.fits"))
    names = [CutoutName.parse(p) for p in cutouts]
    by_group = {}
    for n in names:
        by_group.setdefault(n.group_key, set()).add(n.skycell)
    cells = {c.name for c in plan.skycells}
    assert len(cells) == 4
    # every group, layers and exposure-level products alike, is cut from all four cells
    assert all(v == cells for v in by_group.values()), by_group
    layers = [key for key in by_group if key[-1] is None]  # key[-1]: ipppssoo
    assert len(layers) == 3 and len(by_group) > len(layers), by_group
    combined = sorted(_cut_dir(run, "combined").glob("*.fits"))
    keys = [(c.instrument, c.detector, c.filter, c.scale, c.exptime_class, c.year, c.ipppssoo)
            for c in map(CombinedName.parse, combined)]
    assert sorted(keys, key=str) == sorted(by_group, key=str)


def test_combined_cutout_equals_the_mosaic_box(run, plan):
    """Fine layers: the combined cutout is the mosaic's box pixel for pixel (SCI and WHT, to
    float precision): overlap strips hold the same exposures, counted once."""
    mosaic = plan.mosaic
    checked = 0
    for path in sorted(_cut_dir(run, "combined").glob("*.fits")):
        c = CombinedName.parse(path)
        if c.scale != "fine" or c.ipppssoo:  # layers only: the mosaic has no exposure level
            continue
        layer = LayerName(mosaic.prefix, c.instrument, c.detector, c.filter,
                          product_type="drc" if c.detector != "ir" else "drz")
        with fits.open(path) as hdul:
            sci, wht = hdul["SCI"].data, hdul["WHT"].data
        with fits.open(run / "mosaic" / layer.filename) as hdul:
            box = cutout_box(WCS(hdul["SCI"].header), RA, DEC, SIZE)
            msci = _read_box(hdul["SCI"], *box, np.nan)
            mwht = _read_box(hdul["WHT"], *box, 0.0)
        assert sci.shape == msci.shape == (75, 75)
        assert np.array_equal(np.isfinite(sci), np.isfinite(msci)), path.name
        good = np.isfinite(sci)
        assert good.sum() > 100
        np.testing.assert_allclose(sci[good], msci[good], rtol=1e-5,
                                   atol=1e-6 * np.abs(msci[good]).max())
        np.testing.assert_allclose(wht, mwht, rtol=1e-5, atol=1e-6 * mwht.max())
        checked += 1
    assert checked == 2  # ACS/WFC F814W and WFC3/IR F110W


def test_tiled_mosaic_equals_untiled_bit_for_bit(run, plan, tmp_path):
    """Rebuild the largest layer from the workflow's own partials as one tile: the file is
    byte-identical to the workflow's tiled product."""
    mosaic = plan.mosaic
    lay = max(mosaic.layers, key=lambda x: len(x.tiles))
    assert len(lay.tiles) > 1
    jobs = sorted((j for j in mosaic.jobs if j.layer == lay.name), key=lambda j: j.order)
    root = lay.name[: -len(".fits")]
    members = [(j.filename, lay.members[j.order].exptime) for j in jobs]
    partials = {j.filename: run / "mosaic" / "partials" / root / j.filename for j in jobs}
    offsets = read_sky_offsets(run / "sky" / f"{lay.sky_group}.json", [f for f, _ in members],
                               lay.frame.scale)
    sky = {f: offsets.get(f, 0.0) for f, _ in members}
    box = tile_boxes(lay.frame.nx, lay.frame.ny, 10**6)[0]
    tile = write_tile(tmp_path / "t.fits", reduce_tile(lay.frame, members, partials, sky), box)
    records = [load_record(run / "screen" / "records" / f"{f[:-5]}.json", [])
               for f, _ in members]
    out = tmp_path / lay.name
    headers = member_headers(records, [run / "screen" / "headers" / f"{f[:-5]}.json"
                                       for f, _ in members])
    write_tiled_layer(out, lay.frame, [(box, tile)], LayerName.parse(lay.name), records,
                      plan.layer_params(lay.name, mosaic=True), [t for _, t in members],
                      [sky[f] for f, _ in members], [f for f, _ in members],
                      input_headers=headers)
    assert out.read_bytes() == (run / "mosaic" / lay.name).read_bytes()


@pytest.mark.slow
def test_rerun_with_another_tile_size_gives_the_same_files(tmp_path):
    """Changing mosaic.tile_size on an existing run replans (jobs of the old plan are
    dropped, not failed) and rewrites the mosaic as one tile: the same bytes."""
    from mvmflow.simulate import simulate

    simulate("tiny_noerr", tmp_path / "data")
    config = {"inputs": f"{tmp_path / 'data'}/*_fl?.fits", "align": {"enabled": False},
              "mosaic": {"enabled": True, "tile_size": 256}}
    run_snakemake(tmp_path, config)
    out = tmp_path / "results"
    mosaic = RunPlan.load(out / "plan" / "plan.json").mosaic
    assert any(len(lay.tiles) > 1 for lay in mosaic.layers)
    before = {lay.name: (out / "mosaic" / lay.name).read_bytes() for lay in mosaic.layers}
    config["mosaic"]["tile_size"] = 100000
    run_snakemake(tmp_path, config)
    new = RunPlan.load(out / "plan" / "plan.json").mosaic
    assert all(len(lay.tiles) == 1 for lay in new.layers)
    for name, data in before.items():
        assert (out / "mosaic" / name).read_bytes() == data, name


@pytest.mark.slow
def test_mosaic_command_with_a_user_prefix(tmp_path):
    """``mvmflow mosaic FILES --prefix mymosaic_`` runs the workflow: every mosaic file,
    the manifest included, carries the prefix (one trailing '_' dropped)."""
    from mvmflow.cli import main
    from mvmflow.simulate import simulate

    data = simulate("tiny_noerr", tmp_path / "data")
    files = sorted(str(p) for p in data.exposures)
    out = tmp_path / "run"
    assert main(["mosaic", *files, "--prefix", "mymosaic_", "--no-align", "--outdir", str(out),
                 "--tile-size", "256", "--", "--quiet"]) == 0
    names = sorted(p.name for p in (out / "mosaic").glob("*.*"))
    assert "mymosaic_manifest.txt" in names
    products = [n for n in names if n.endswith(".fits")]
    assert products and all(n.startswith("mymosaic_") for n in products)
    manifest = (out / "mosaic" / "mymosaic_manifest.txt").read_text().split()
    assert sorted(manifest) == sorted(n for n in names if n != "mymosaic_manifest.txt")
    assert (out / "skycells").is_dir()  # the sky-cell layers are made too
