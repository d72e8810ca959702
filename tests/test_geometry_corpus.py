"""Exposures at the awkward places of the sky: across RA = 0/360, over a pole, on the edge of a
projection cell (issue 17, "Bad and unusual inputs").

Three small simulated sets (ACS/WFC F814W on the 512-px subarray, two dithered exposures each,
no pointing errors, so the header WCS is the truth):

- ``wrap``: centred on RA = 0 at Dec +0.3: the chips' corners lie on both sides of RA 0/360,
  and the field is in the top row of projection cell 1232 (band Dec 0) and the bottom rows of
  projection cell 1322 (the next band north);
- ``pole``: pointed at Dec +89.998, 7" from the north pole, which lies on the chips: the
  pole's projection cell is 2643 (the one-cell band at the pole, docs/design.md);
- ``edge``: centred on projection cell 81's fine pixel x = 450794 (the outer edge of its last
  sky-cell column, x21: ``20 * 21442 + 21954``), halfway up the y14/y15 overlap, so half of
  the field lies beyond every sky cell of projection cell 81 and must go to projection cell
  80's sky cells (X grows toward lower RA; ``mvmflow.grid``).

The sky cells the screening footprints give (:func:`mvmflow.plan.plan_skycells`) are checked
against an independent computation - a dense grid of chip pixels mapped to the sky with the
exposure's full WCS (distortion included), then to every nearby projection cell's plane and
its sky cells' pixel windows - and against the names worked out by hand. One workflow run on
the three sets then must make the layers in exactly those sky cells, with the stars at their
true positions and fluxes (the tolerances of tests/test_workflow_run.py), and S_REGION
outlines that hold the exposures (the pole inside the pole's layer's outline).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from test_workflow_run import _centroid, _isolated_bright, _star_ratios, _truth_positions
from wfrun import run_snakemake

from mvmflow import grid
from mvmflow.plan import plan_skycells
from mvmflow.screen import screen_exposure

#: Where each set is centred (RA, Dec, deg) and its 3-character program (rootname) code.
EDGE_X = 20 * grid.SC_STEP + grid.SC_SIZE  # projection-cell pixel just past sky cell x21


def _edge_center() -> tuple[float, float]:
    ra, dec = grid.ProjectionCell(81).wcs.pixel_to_world_values(EDGE_X, 300443.5)
    return float(ra), float(dec)


CASES = {
    "wrap": (0.0, 0.3, "r01"),
    "pole": (0.0, 89.998, "p01"),
    "edge": (*_edge_center(), "e01"),
}

#: The sky cells of each set, worked out from the grid by hand (see the module docstring).
EXPECTED = {
    "wrap": ["skycell-p1232x11y21", "skycell-p1322x11y04"],
    "pole": ["skycell-p2643x11y11"],
    "edge": ["skycell-p0080x05y15", "skycell-p0081x21y14", "skycell-p0081x21y15"],
}

#: Random seed of each set: chosen so that each has isolated bright stars well inside its
#: exposures (the star pattern is random; the flux test needs a few stars 7" from any other).
SEEDS = {"wrap": 1, "pole": 3, "edge": 1}


def geometry_preset(case: str):
    """A two-exposure ACS/WFC set centred on ``CASES[case]``, sparse bright stars."""
    from mvmflow.simulate import PRESETS
    from mvmflow.simulate.presets import ExposureSpec, Preset, VisitSpec

    ra, dec, program = CASES[case]
    scene = dataclasses.replace(PRESETS["tiny_noerr"].scene, star_density=30.0,
                                mag_range=(17.5, 20.0), bright_stars=0, galaxy_density=0.0)
    visit = VisitSpec(instrument="ACS", proposid=10583, program=program, visit="01",
                      start="2006-03-14T05:21:17", pa=32.0,
                      exposures=tuple(ExposureSpec("WFC", "F814W", 300.0, "WFC1-512", d)
                                      for d in ((0.0, 0.0), (0.87, 0.62))))
    return Preset(name=f"geometry_{case}", description=f"issue 17: {case}", ra=ra, dec=dec,
                  seed=SEEDS[case], visits=(visit,), scene=scene, max_shift_arcsec=0.0,
                  max_rotation_deg=0.0, render="sparse")


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, list[Path]]:
    """The three simulated sets: {case: exposure paths}; each set's truth in its truth/."""
    from mvmflow.simulate import simulate

    base = tmp_path_factory.mktemp("geometry")
    return {case: [Path(p) for p in simulate(geometry_preset(case), base / case).exposures]
            for case in CASES}


@pytest.fixture(scope="module")
def records(sets):
    return {case: [screen_exposure(p) for p in paths] for case, paths in sets.items()}


# -- independent geometry ----------------------------------------------------------------------


def _chip_samples(path: Path, n: int = 41) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RA, Dec) of an n x n grid of pixels over each chip, edges included, through the
    exposure's full WCS (SIP and lookup-table distortion)."""
    out = []
    with fits.open(path) as hdul:
        for hdu in hdul:
            if hdu.name != "SCI":
                continue
            ny, nx = hdu.data.shape
            y, x = np.mgrid[-0.5:ny - 0.5:n * 1j, -0.5:nx - 0.5:n * 1j]
            ra, dec = WCS(hdu.header, hdul).all_pix2world(x.ravel(), y.ravel(), 0)
            out.append((ra, dec))
    return out


def sampled_sky_cells(path: Path) -> list[str]:
    """The sky cells holding any sampled point of the exposure: each point projected on every
    projection cell within 4 deg (in front of its tangent plane) and tested against the sky
    cells' fine-pixel windows, ``(X - 1) * SC_STEP <= x <= (X - 1) * SC_STEP + SC_SIZE``."""
    cells = set()
    for ra, dec in _chip_samples(path):
        centre = grid.unit_vectors(ra, dec).mean(axis=0)
        cra = math.degrees(math.atan2(centre[1], centre[0])) % 360
        cdec = math.degrees(math.asin(centre[2] / np.linalg.norm(centre)))
        for index in grid.projection_cells_near(cra, cdec, 0.5):
            pc = grid.ProjectionCell(index)
            front = grid.unit_vectors(ra, dec) @ grid.unit_vectors(*pc.crval) > 0.5
            x, y = pc.wcs.world_to_pixel_values(ra[front], dec[front])
            for sx in range(1, grid.SC_NXY + 1):
                lo = (sx - 1) * grid.SC_STEP
                inx = (x >= lo) & (x <= lo + grid.SC_SIZE)
                for sy in range(1, grid.SC_NXY + 1):
                    low = (sy - 1) * grid.SC_STEP
                    if np.any(inx & (y >= low) & (y <= low + grid.SC_SIZE)):
                        cells.add(grid.SkyCell(pc, sx, sy).name)
    return sorted(cells)


def _inside(polygon: np.ndarray, point: tuple[float, float]) -> bool:
    """Even-odd test of a point in a polygon (pixel plane)."""
    x, y = point
    inside = False
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _tangent_plane(ra, dec, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic (x, y) in degrees of positions about (ra0, dec0)."""
    u = grid.unit_vectors(ra, dec)
    c = grid.unit_vectors(ra0, dec0)
    east = np.cross([0.0, 0.0, 1.0], c) if abs(dec0) < 89.9999 else np.array([0.0, 1.0, 0.0])
    east /= np.linalg.norm(east)
    north = np.cross(c, east)
    z = u @ c
    return np.degrees(np.column_stack([(u @ east) / z, (u @ north) / z]))


# -- screening and plan (no workflow) ----------------------------------------------------------


def test_the_footprints_cross_ra_zero_and_hold_the_pole(records, sets):
    for recs in records.values():
        assert all(r.accepted for r in recs), [(r.filename, r.reason) for r in recs]
    for rec in records["wrap"]:
        ra = np.concatenate([np.asarray(c.footprint)[:, 0] for c in rec.chips])
        assert ra.min() < 0.01 and ra.max() > 359.99, ra  # corners on both sides of 0/360
    for rec, path in zip(records["pole"], sets["pole"], strict=True):
        outline = np.asarray(rec.chips[0].footprint)
        assert _inside(_tangent_plane(outline[:, 0], outline[:, 1], 0.0, 89.998),
                       tuple(_tangent_plane(0.0, 90.0, 0.0, 89.998)[0]))
        with fits.open(path) as hdul:  # the pole is on the chip, by its own WCS
            x, y = WCS(hdul["SCI", 1].header, hdul).all_world2pix([[0.0, 90.0]], 0)[0]
            ny, nx = hdul["SCI", 1].data.shape
        assert 0 <= x < nx and 0 <= y < ny, (x, y)
    # the pole's projection cell is the polar cap, alone in its band
    assert grid.nearest_projection_cell(123.0, 90.0) == grid.N_PROJECTION_CELLS - 1 == 2643
    assert grid.band_of(2643).nband == 1


def test_the_plan_puts_each_exposure_in_the_right_sky_cells(records, sets):
    plan = plan_skycells([r for recs in records.values() for r in recs])
    assert not plan.notes, plan.notes
    for case, paths in sets.items():
        for path in paths:
            assert plan.exposures[path.name] == EXPECTED[case], (case, path.name)
            assert sampled_sky_cells(path) == EXPECTED[case], (case, path.name)
    assert sorted(s.name for s in plan.skycells) == sorted(
        c for cells in EXPECTED.values() for c in cells)
    # every exposure is a member of one layer in each of its sky cells
    for sc in plan.skycells:
        (layer,) = sc.layers
        assert sorted(m.filename for m in layer.members) == sorted(
            p.name for case, paths in sets.items() if sc.name in EXPECTED[case]
            for p in paths)


# -- the workflow on the three sets together ---------------------------------------------------


#: Cutout boxes {directory: (ra, dec, size, shape (ny, nx))}: one centred on RA 0, one
#: just west of it (its east half beyond 0/360), one centred on the pole.
BOXES = {
    "ra0d0-decn0d3_6x6": (0.0, 0.3, 6.0, (150, 150)),
    "ra359d999-decn0d3_8x4": (359.999, 0.3, [8.0, 4.0], (100, 200)),
    "ra0d0-decn90d0_6x6": (0.0, 90.0, 6.0, (150, 150)),
}


@pytest.fixture(scope="module")
def geometry_run(sets, tmp_path_factory):
    base = tmp_path_factory.mktemp("geometry_run")
    listing = base / "exposures.txt"
    listing.write_text("".join(f"{p}\n" for paths in sets.values() for p in paths))
    boxes = [{"ra": ra, "dec": dec, "size": size} for ra, dec, size, _ in BOXES.values()]
    out = run_snakemake(base, {"inputs": str(listing), "outdir": "results",
                               "align": {"enabled": False}, "keep_intermediates": False,
                               "products": {"previews": False}, "cutouts": boxes})
    return base / "results", out


def _layers(out: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in sorted((out / "skycells").glob("*/hst_*_drc.fits"))}


def test_the_layers_are_made_in_exactly_the_right_sky_cells(geometry_run):
    out, _ = geometry_run
    layers = _layers(out)
    expected = sorted(c for cells in EXPECTED.values() for c in cells)
    assert sorted(layers) == expected
    assert all(p.name == f"hst_{c}_acs_wfc_f814w_all_drc.fits" for c, p in layers.items())
    for cells in EXPECTED.values():
        for cell in cells:
            with fits.open(layers[cell]) as hdul:
                assert hdul[0].header["NUMEXP"] == 2, cell
                assert np.isfinite(hdul["SCI"].data).mean() > 0.3, cell
            manifest = (out / "skycells" / cell / f"{cell}_manifest.txt").read_text().split()
            assert layers[cell].name in manifest


#: Stars measured for their flux have no other star within this many arcsec: the sky ring of
#: the measurement (tests/test_workflow_run.py, 80-110 px from the star) must be free of
#: a neighbour's wings, which the helper's own 4.5" isolation does not ensure.
FLUX_ISOLATION_ARCSEC = 7.0
#: ... and a true count rate below this (e-/s): brighter stars saturate the peak pixel in
#: 300 s (about 16% of the light, 68,000 e-), and the MVM parameters count saturated pixels
#: (DQ 256) as good, as the reference does, so their flux comes out low by up to 10%.
FLUX_MAX_RATE = 1000.0


def measure_stars(out: Path, sets) -> tuple[dict, dict]:
    """{case: [measured / true flux]} and {case: [(dx, dy) centroid - truth, px]}."""
    layers = _layers(out)
    ratios, offsets = {}, {}
    for case, paths in sets.items():
        truth = paths[0].parent / "truth"
        epoch = float(np.mean(Table.read(truth / "exposures.ecsv")["epoch"]))
        ra, dec, rate = _truth_positions(truth, epoch, "rate_acs_wfc_f814w")
        u = grid.unit_vectors(ra, dec)
        np.fill_diagonal(near := np.degrees(np.arccos(np.clip(u @ u.T, -1, 1))) * 3600, 1e9)
        # the others stay in the list as neighbours, with a rate below the helper's floor
        alone = np.where((near.min(axis=1) > FLUX_ISOLATION_ARCSEC) & (rate < FLUX_MAX_RATE),
                         rate, 0.0)
        ratios[case], offsets[case] = [], []
        for cell in EXPECTED[case]:
            ratios[case] += _star_ratios(layers[cell], ra, dec, alone)
            offsets[case] += _offsets(layers[cell], ra, dec, rate)
    return ratios, offsets


def test_the_stars_land_where_the_truth_puts_them(geometry_run, sets, reliability_row):
    """Fluxes within 1% (median) and 3% (each) of the truth; positions within 0.1 px."""
    ratios, offsets = measure_stars(geometry_run[0], sets)
    counts = {case: (len(ratios[case]), len(offsets[case])) for case in CASES}
    print("geometry stars (fluxes, positions):", counts)
    assert all(n >= 1 and m >= 3 for n, m in counts.values()), counts
    every = np.concatenate([ratios[case] for case in CASES])
    assert len(every) >= 4, counts
    assert abs(np.median(every) - 1) < 0.01, ratios
    assert np.all(np.abs(every - 1) < 0.03), ratios
    for case in CASES:
        off = np.array(offsets[case])
        assert np.all(np.abs(np.median(off, axis=0)) < 0.1), (case, off)
        assert np.median(np.hypot(*off.T)) < 0.1, (case, off)
    what = {"wrap": "footprint across RA = 0/360", "pole": "footprint over the north pole",
            "edge": "footprint across a projection-cell edge"}
    for case in CASES:
        off = np.array(offsets[case])
        reliability_row(f"geometry: {what[case]}",
                        f"processed into {', '.join(EXPECTED[case])}",
                        f"layers in exactly those sky cells; {len(ratios[case])} flux stars "
                        f"within {np.max(np.abs(np.array(ratios[case]) - 1)) * 100:.1f}% of "
                        f"the truth, {len(off)} positions within "
                        f"{np.median(np.hypot(*off.T)):.3f} px (median)")


def _offsets(path: Path, ra, dec, rate) -> list[tuple[float, float]]:
    """Centroid minus true pixel position of the bright isolated stars of a layer."""
    with fits.open(path) as hdul:
        sci = hdul["SCI"].data.astype(float)
        x, y = WCS(hdul["SCI"].header).world_to_pixel_values(ra, dec)
    out = []
    for i in _isolated_bright(x, y, rate, 40, 200.0):
        xi, yi = int(round(x[i])), int(round(y[i]))
        if not (10 <= xi < sci.shape[1] - 10 and 10 <= yi < sci.shape[0] - 10):
            continue
        stamp = sci[yi - 7:yi + 8, xi - 7:xi + 8]
        if np.isfinite(stamp).all():
            cx, cy = _centroid(stamp)
            out.append((xi - 7 + cx - x[i], yi - 7 + cy - y[i]))
    return out


def test_the_s_region_outlines_hold_the_exposures(geometry_run, sets):
    """Every layer's S_REGION maps inside its frame, and the pole's layer outlines the pole:
    no vertex is thrown to the far side of RA 0/360 or of the pole."""
    out, _ = geometry_run
    for cell, path in _layers(out).items():
        header = fits.getheader(path, "SCI")
        words = header["S_REGION"].split()
        assert words[:2] == ["POLYGON", "ICRS"], words[:2]
        vertices = np.array(words[2:], dtype=float).reshape(-1, 2)
        assert np.all((vertices[:, 0] >= 0) & (vertices[:, 0] < 360)), cell
        x, y = WCS(header).world_to_pixel_values(vertices[:, 0], vertices[:, 1])
        nx, ny = header["NAXIS1"], header["NAXIS2"]
        assert np.all((x > -1) & (x < nx + 1) & (y > -1) & (y < ny + 1)), cell
        if cell == EXPECTED["pole"][0]:
            pole = WCS(header).world_to_pixel_values(0.0, 90.0)
            assert _inside(np.column_stack([x, y]), (float(pole[0]), float(pole[1])))


def test_cutouts_across_ra_zero_and_over_the_pole(geometry_run):
    """A box across RA 0/360 is cut from both sky cells of the wrap set and combined; a box
    on the pole from the pole's sky cell; each is centred on its box and fully covered."""
    out, _ = geometry_run
    for box, (ra, dec, _, shape) in BOXES.items():
        cells = EXPECTED["pole"] if dec == 90.0 else EXPECTED["wrap"]
        files = sorted((out / "cutouts" / box / "cutouts").glob("hst_cutout_*.fits"))
        assert [f.name.split("_")[2].rsplit("-", 2)[0] for f in files] == cells, files
        combined = sorted((out / "cutouts" / box / "combined").glob("hst_combined_*.fits"))
        assert len(combined) == (len(cells) > 1), combined
        for path in files + combined:
            with fits.open(path) as hdul:
                sci = hdul["SCI"]
                assert sci.data.shape == shape, path.name
                assert np.isfinite(sci.data).all(), path.name
                x, y = WCS(sci.header).world_to_pixel_values(ra, dec)
            centre = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
            assert abs(x - centre[0]) < 0.6 and abs(y - centre[1]) < 0.6, (path.name, x, y)
