"""Tests of mvmflow.mosaic (make_custom_mosaic's planning, spec processing.md 4), on
hand-made exposure records (no FITS files)."""

import numpy as np
import pytest
from test_plan import record

from mvmflow.grid import ProjectionCell, SkyCell
from mvmflow.mosaic import (
    MosaicPlan,
    choose_projection_cell,
    observation_center,
    plan_mosaic,
    tile_boxes,
)
from mvmflow.names import LayerName, parse_default_prefix
from mvmflow.plan import plan_skycells

CORNER = (21000.25, 21000.25)  # near where x14y14, x15y14, x14y15, x15y15 of p0081 meet


def corner_records():
    """A UVIS exposure over the four-cell corner and an IR one beside it."""
    return [
        record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, (*CORNER, 1001, 1001)),
        record("ib2v03b1q_flt.fits", "ir", "F160W", 250.0, (21500.5, 20500.5, 600, 500)),
    ]


def plan_of(records, **kwargs):
    return plan_mosaic(records, plan_skycells(records), **kwargs)


def test_layers_frames_and_names():
    recs = corner_records()
    plan = plan_of(recs, tile_size=256)
    assert plan.projection_cell == 81
    pc, ra, dec = parse_default_prefix(plan.prefix)
    assert pc == 81
    names = [lay.name for lay in plan.layers]
    # detectors in drizzle order (EXPTIME ascending), coarse before fine
    assert names == [f"{plan.prefix}_wfc3_ir_f160w_coarse-all_drz.fits",
                     f"{plan.prefix}_wfc3_ir_f160w_all_drz.fits",
                     f"{plan.prefix}_wfc3_uvis_f606w_all_drc.fits"]
    assert plan.manifest == f"{plan.prefix}_manifest.txt"
    fine = plan.layers[2].frame
    # one frame over both exposures, on the sky cells' pixel grid: x14y14's pixel (x, y)
    # is the mosaic's (x - 21000, y - 20500), edges truncated as the sky-cell frames
    sc = SkyCell.from_name("skycell-p0081x14y14").frame
    assert sc.integer_offset_of(fine) == (21000, 20500)
    assert (fine.nx, fine.ny) == (22099 - 21000, 22000 - 20500)
    assert plan.layers[1].frame == fine  # every fine layer shares the frame
    # the default prefix is the fine frame's centre, to 4 decimals
    c_ra, c_dec = fine.wcs.pixel_to_world_values((fine.nx - 1) / 2, (fine.ny - 1) / 2)
    assert (ra, dec) == (pytest.approx(float(c_ra), abs=6e-5), pytest.approx(float(c_dec), abs=6e-5))
    # coarse: the projection cell's own coarse grid
    coarse = plan.layers[0].frame
    pcc = ProjectionCell(81).frame("coarse")
    dx, dy = pcc.integer_offset_of(coarse)
    assert dx > 0 and dy > 0
    # tiles cover each frame exactly once
    for lay in plan.layers:
        cover = np.zeros(lay.frame.shape, int)
        for x0, y0, w, h in lay.tiles:
            assert w <= 256 and h <= 256
            cover[y0:y0 + h, x0:x0 + w] += 1
        assert (cover == 1).all()
    # each job's box is the exposure's box on the plane, whatever the frame
    jobs = {(j.layer, j.filename): j for j in plan.jobs}
    j = jobs[(names[2], "ib2v03acq_flc.fits")]
    assert j.frame.nx == j.box[2] and fine.window(j.box[0], j.box[1], 1, 1).crpix1 == \
        j.frame.crpix1


def test_round_trip_and_sky_groups():
    plan = plan_of(corner_records())
    again = MosaicPlan.from_dict(plan.to_dict())
    assert again.to_dict() == plan.to_dict()
    assert plan.layers[2].sky_group == "p0081_wfc3_uvis_f606w_all"
    assert plan.layers[2].skycell_layers == [
        f"hst_skycell-p0081x{x}y{y}_wfc3_uvis_f606w_all_drc.fits"
        for x, y in (("14", "14"), ("14", "15"), ("15", "14"), ("15", "15"))]


def test_user_prefix_is_applied_to_every_name():
    plan = plan_of(corner_records(), prefix="mymosaic_")
    assert plan.prefix == "mymosaic"  # one trailing '_' dropped (the reference cuts two)
    assert all(lay.name.startswith("mymosaic_wfc3_") for lay in plan.layers)
    assert LayerName.parse(plan.layers[2].name).prefix == "mymosaic"
    assert plan.manifest == "mymosaic_manifest.txt"
    with pytest.raises(ValueError, match="prefix"):
        plan_of(corner_records(), prefix="bad/prefix")


def test_scale_choices():
    fine = plan_of(corner_records(), scale="fine")
    assert [lay.scale for lay in fine.layers] == ["fine", "fine"]
    coarse = plan_of(corner_records(), scale="coarse")
    assert [lay.name.split("_")[-2] for lay in coarse.layers] == ["coarse-all", "coarse-all"]
    with pytest.raises(ValueError, match="scale"):
        plan_of(corner_records(), scale="0.1")


def test_auto_projection_cell_is_the_nearest_on_the_sky():
    """Exposures in the overlap of two projection cells: the one whose centre is nearer to
    the observations wins, and an explicit choice is honoured; exposures past the chosen
    cell's plane are clipped, exposures with no sky cell in it left out, by name."""
    pc81, pc82 = ProjectionCell(81), ProjectionCell(82)
    # a point between the two centres, nearer to p0082's
    c81, c82 = np.array(pc81.crval), np.array(pc82.crval)
    ra, dec = c81 + 0.6 * (c82 - c81)
    recs = []
    for k, (dra, ddec) in enumerate(((0.0, 0.0), (0.01, 0.0))):
        sc = ProjectionCell(82).wcs
        x, y = sc.world_to_pixel_values(ra + dra, dec + ddec)
        wcs = sc
        px = np.array([x, x + 800, x + 800, x])
        py = np.array([y, y, y + 800, y + 800])
        a, d = wcs.pixel_to_world_values(px, py)
        r = record(f"ib2v03a{k}q_flc.fits", "uvis", "F606W", 100.0, (0, 0, 10, 10))
        r.chips[0].footprint = [[float(u), float(v)] for u, v in zip(a, d, strict=True)]
        recs.append(r)
    cen = observation_center(recs)
    assert choose_projection_cell(recs)[0] == 82
    sep = [np.degrees(np.arccos(np.clip(np.dot(_u(*cen), _u(*p.crval)), -1, 1)))
           for p in (pc81, pc82)]
    assert sep[1] < sep[0]
    plan = plan_of(recs)
    assert plan.projection_cell == 82
    forced = plan_of(recs, projection_cell=81)
    assert forced.projection_cell == 81 and forced.prefix.startswith("hst_skycell-p0081-")
    # far away: another projection cell's exposure is left out by name
    far = record("ib2v09a0q_flc.fits", "uvis", "F606W", 100.0, (0, 0, 500, 500),
                 skycell="skycell-p0300x11y11")
    mixed = plan_of(recs + [far], projection_cell=82)
    assert mixed.left_out == ["ib2v09a0q_flc.fits"]
    assert any("ib2v09a0q_flc.fits left out" in n for n in mixed.notes)


def _u(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def test_clipping_at_the_projection_cell_edge_is_reported():
    """An exposure reaching past the plane's edge (x < 0) is clipped there and named."""
    sc = SkyCell.from_name("skycell-p0081x01y11").frame
    # x from -300 to +700 fine pixels of the sky cell, whose pixel 0 is the plane's pixel 0
    rec = record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, (-300.5, 5000.5, 1000, 800),
                 skycell="skycell-p0081x01y11")
    plan = plan_of([rec], projection_cell=81)
    assert plan.clipped == ["ib2v03acq_flc.fits"]
    assert any("clipped at the edge of projection cell p0081" in n for n in plan.notes)
    frame = plan.layers[0].frame
    assert ProjectionCell(81).frame().integer_offset_of(frame)[0] == 0  # starts at the edge
    assert sc.integer_offset_of(frame)[0] == 0


def test_tile_boxes():
    assert tile_boxes(5, 3, 2) == [[0, 0, 2, 2], [2, 0, 2, 2], [4, 0, 1, 2],
                                   [0, 2, 2, 1], [2, 2, 2, 1], [4, 2, 1, 1]]
    with pytest.raises(ValueError):
        tile_boxes(5, 3, 0)
    with pytest.raises(ValueError, match="tile_size"):
        plan_of(corner_records(), tile_size=10)


def test_mosaic_command_line(tmp_path):
    """``mvmflow mosaic`` writes the input list and the config, and passes options after --
    to snakemake; a missing file is an error naming it."""
    import yaml

    from mvmflow.cli import build_parser, main, mosaic_command

    a, b = tmp_path / "ib2v03acq_flc.fits", tmp_path / "ib2v03b1q_flt.fits"
    a.write_bytes(b""), b.write_bytes(b"")
    out = tmp_path / "run"
    args = build_parser().parse_args(["mosaic", str(a), str(b), "--prefix", "m_",
                                      "--tile-size", "512", "--outdir", str(out),
                                      "--projection-cell", "81", "--no-align"])
    cmd = mosaic_command(args)
    assert cmd[1:3] == ["-m", "snakemake"] and cmd[cmd.index("--directory") + 1] == str(out)
    config = yaml.safe_load((out / "mosaic_config.yaml").read_text())
    assert config["mosaic"] == {"enabled": True, "prefix": "m_", "projection_cell": 81,
                                "scale": "auto", "tile_size": 512}
    assert config["align"] == {"enabled": False}
    assert (out / "mosaic_inputs.txt").read_text().split() == [str(a), str(b)]
    assert main(["mosaic", str(tmp_path / "nope_flc.fits"), "--outdir", str(out)]) == 2
