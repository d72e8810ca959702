"""Tests of mvmflow.runplan: the typed run plan, its indexed look-ups, its one narrow error,
its file, and the cost of building and querying it (linear in the jobs)."""

import json
import random
import time

import numpy as np
import pytest
from test_mosaic import corner_records
from test_plan import SC, V8_NAMES, record, vector8

from mvmflow.grid import Frame
from mvmflow.mosaic import plan_mosaic
from mvmflow.plan import (
    PLAN_VERSION,
    LayerPlan,
    MapJob,
    Member,
    MvmPlan,
    SkyCellPlan,
    plan_skycells,
    tile_boxes,
    tile_memory_mb,
)
from mvmflow.runplan import PlanEntryMissing, PlanVersionError, RunPlan, tile_index, tile_name

OUT = "results"


def params_of(layers, *, cr=()):
    return {lay.name: {"set": "n2", "n": 2, "skysub": True, "skystat": "median",
                       "final_pixfrac": 1.0, "cosmic_rays": lay.name in cr, "cr": {"x": 1}}
            for lay in layers}


@pytest.fixture(scope="module")
def run8():
    """Vector 8's sky-cell plan (tiles of 64 px), its IR fine layer rejecting cosmic rays."""
    plan = plan_skycells(vector8(), tile_size=64)
    return RunPlan(plan, params_of(plan.layers, cr={V8_NAMES[1]}),
                   switches={"include_small": True})


@pytest.fixture(scope="module")
def corner():
    """Sky cells and a mosaic over the corner of four sky cells; UVIS rejects cosmic rays."""
    recs = corner_records()
    plan = plan_skycells(recs, tile_size=512)
    mosaic = plan_mosaic(recs, plan, tile_size=256)
    uvis = {lay.name for lay in plan.layers if lay.detector == "uvis"}
    mparams = params_of(mosaic.layers, cr={lay.name for lay in mosaic.layers
                                           if lay.detector == "uvis"})
    return RunPlan(plan, params_of(plan.layers, cr=uvis), mosaic=mosaic, mosaic_params=mparams)


# ------------------------------------------------------------------------------------------
# look-ups


def test_layers_by_name_and_root(run8):
    assert [lay.name for lay in run8.layers()] == V8_NAMES
    assert [lay.name for lay in run8.layers(SC)] == V8_NAMES
    lay = run8.layer(V8_NAMES[2])
    assert lay.skycell == SC and not lay.is_mosaic
    assert run8.layer_by_root(V8_NAMES[2][: -len("_drc.fits")]) is lay
    assert lay.root == V8_NAMES[2][: -len("_drc.fits")]
    entry = run8.layer_entry(V8_NAMES[2])
    assert entry == lay.to_dict() and entry["tiles"] == lay.tiles
    assert Frame.from_dict(entry["frame"]) == lay.frame
    assert run8.layer_entry(V8_NAMES[2]) is entry  # made once


def test_jobs_members_and_partials(run8):
    name = V8_NAMES[1]  # WFC3/IR fine: two members, 10 s before 602.9 s
    jobs = run8.jobs(name)
    assert [j.filename for j in jobs] == ["ib2v02abq_flt.fits", "ib2v01aaq_flt.fits"]
    assert [j.order for j in jobs] == [0, 1]
    assert run8.member_keys(name) == ["ib2v02abq_flt", "ib2v01aaq_flt"]
    assert run8.members(name) == [["ib2v02abq_flt.fits", 10.0], ["ib2v01aaq_flt.fits", 602.9]]
    assert run8.job(name, "ib2v01aaq_flt") is jobs[1]
    assert run8.job_of_ipppssoo(name, "ib2v01aa") is jobs[1]
    assert run8.map_frame(name, "ib2v01aaq_flt") == jobs[1].frame.to_dict()
    root = name[: -len(".fits")]
    # the layer rejects cosmic rays: its final partials are the masked ones
    assert run8.partials(name, OUT) == [
        f"{OUT}/partials_cr/{SC}/{root}/ib2v02abq_flt.fits",
        f"{OUT}/partials_cr/{SC}/{root}/ib2v01aaq_flt.fits"]
    assert run8.partials(name, OUT, final=False)[0] == f"{OUT}/partials/{SC}/{root}/ib2v02abq_flt.fits"
    other = V8_NAMES[2]
    assert run8.partials(other, OUT) == run8.partials(other, OUT, final=False)
    # the exposure-level product of a job is <root>-<ipppssoo>_<type>.fits
    for lay in run8.layers():
        for j in run8.jobs(lay.name):
            assert j.name == f"{lay.root}-{j.ipppssoo}_{lay.product_type}.fits"


def test_params(run8):
    name = V8_NAMES[1]
    assert run8.layer_params(name)["cosmic_rays"] is True
    assert run8.rejects_cosmic_rays(name) and not run8.rejects_cosmic_rays(V8_NAMES[0])
    assert run8.map_params(name) == {"set": "n2", "skysub": True, "skystat": "median",
                                     "final_pixfrac": 1.0}


def test_tiles_and_memory(run8):
    name = V8_NAMES[2]  # fine frame 499 x 399 in tiles of 64
    lay = run8.layer(name)
    assert run8.tiles(name) == tile_boxes(499, 399, 64) == lay.tiles
    assert len(lay.tiles) == 8 * 7
    assert run8.tile_names(name)[:2] == ["t0000", "t0001"]
    assert run8.tile(name, "t0009") == run8.tile(name, 9) == [64, 64, 64, 64]
    assert tile_name(12) == "t0012" and tile_index("t0012") == 12
    # the UVIS FLC's box: x 0..99 + margin, y 300..399 -> tiles in rows 4-6, columns 0-1
    (job,) = run8.jobs(name)
    reached = [i for i in range(len(lay.tiles)) if run8.tile_jobs(name, i)]
    assert reached == [r * 8 + c for r in (4, 5, 6) for c in (0, 1)]
    assert run8.tile_partials(name, reached[0], OUT) == [run8.partial_path(job, OUT)]
    assert run8.tile_jobs(name, 0) == []
    # (40 + 4 * planes) bytes per pixel of the largest tile, plus 500 MB
    assert run8.tile_mem_mb(name) == tile_memory_mb(64 * 64, 1) == int(500 + 44 * 4096 / 1e6)
    assert tile_memory_mb(4096 * 4096, 33) == int(500 + 48 * 4096**2 / 1e6)
    assert run8.tile_mem_mb(name, members=64) == int(500 + 48 * 4096 / 1e6)


def test_sky_groups_and_poller(run8):
    fine_ir = run8.layer(V8_NAMES[1])
    assert fine_ir.sky_group == "p0081_wfc3_ir_f160w_all"
    assert run8.sky_group(V8_NAMES[0]) == fine_ir.sky_group  # coarse and fine share it
    assert run8.sky_group_layers(fine_ir.sky_group) == [fine_ir]  # the fine layers only
    assert run8.sky_groups == [run8.layer(n).sky_group for n in V8_NAMES[1:]]
    assert run8.sky_params(fine_ir.sky_group) == {"skysub": True, "skystat": "median"}
    assert run8.poller(SC) == run8.skycell(SC).poller and run8.poller(SC).count("\n") >= 5
    # every member but the FLT left out of the drc layer
    assert run8.skycell_keys(SC) == sorted(r.filename[:-5] for r in vector8()
                                           if r.filename != "ib2v03adq_flt.fits")


def test_mosaic_look_ups(corner):
    (uvis,) = [lay for lay in corner.mosaic_layers if lay.detector == "uvis"]
    assert uvis.is_mosaic and uvis.skycell == ""
    assert corner.layer(uvis.name, mosaic=True) is uvis
    assert corner.layer_by_root(uvis.root, mosaic=True) is uvis
    with pytest.raises(PlanEntryMissing):
        corner.layer(uvis.name)  # not a sky-cell layer
    (job,) = corner.jobs(uvis.name, mosaic=True)
    assert job.skycell == "" and corner.job(uvis.name, job.key, mosaic=True) is job
    assert corner.partial_path(job, OUT) == \
        f"{OUT}/mosaic/partials/{uvis.name[:-5]}/ib2v03acq_flc.fits"
    assert corner.members(uvis.name, mosaic=True) == [["ib2v03acq_flc.fits", 350.0]]
    assert corner.sky_group(uvis.name, mosaic=True) == "p0081_wfc3_uvis_f606w_all"
    assert [lay.name for lay in corner.sky_group_layers(uvis.sky_group)] == uvis.skycell_layers
    # the masks of the four sky-cell layers that reject cosmic rays
    masks = corner.cr_mask_jobs(uvis.name, "ib2v03acq_flc")
    assert [j.layer for j in masks] == uvis.skycell_layers
    assert all(j.skycell and j.key == "ib2v03acq_flc" for j in masks)
    (ir,) = [lay for lay in corner.mosaic_layers if lay.detector == "ir" and lay.scale == "fine"]
    assert corner.cr_mask_jobs(ir.name, "ib2v03b1q_flt") == []
    tiles = corner.tiles(uvis.name, mosaic=True)
    assert len(tiles) > 1 and all(max(t[2], t[3]) <= 256 for t in tiles)
    assert corner.tile_mem_mb(uvis.name, mosaic=True) == tile_memory_mb(256 * 256, 1)


@pytest.mark.parametrize("look_up", [
    lambda p: p.layer("hst_nothing_drz.fits"),
    lambda p: p.layer(V8_NAMES[0], mosaic=True),
    lambda p: p.layer_by_root("hst_nothing"),
    lambda p: p.layer_entry("hst_nothing_drz.fits"),
    lambda p: p.layer_params("hst_nothing_drz.fits"),
    lambda p: p.map_params("hst_nothing_drz.fits"),
    lambda p: p.jobs("hst_nothing_drz.fits"),
    lambda p: p.job(V8_NAMES[1], "ib2v03acq_flc"),
    lambda p: p.job_of_ipppssoo(V8_NAMES[1], "ib2v03ac"),
    lambda p: p.members("hst_nothing_drz.fits"),
    lambda p: p.partials("hst_nothing_drz.fits", OUT),
    lambda p: p.tile(V8_NAMES[2], "t0056"),
    lambda p: p.tile(V8_NAMES[2], -1),
    lambda p: p.tile(V8_NAMES[2], "x1"),
    lambda p: p.tile_jobs(V8_NAMES[2], 999),
    lambda p: p.tile_mem_mb("hst_nothing_drz.fits"),
    lambda p: p.sky_group("hst_nothing_drz.fits"),
    lambda p: p.sky_group_layers("p0081_wfc3_ir_f999w_all"),
    lambda p: p.sky_params("p0081_wfc3_ir_f999w_all"),
    lambda p: p.skycell("skycell-p0081x01y01"),
    lambda p: p.poller("skycell-p0081x01y01"),
    lambda p: p.cr_mask_jobs(V8_NAMES[1], "ib2v01aaq_flt"),  # no mosaic
])
def test_a_missing_entry_is_one_narrow_error(run8, look_up):
    with pytest.raises(PlanEntryMissing) as info:
        look_up(run8)
    assert isinstance(info.value, LookupError) and not isinstance(info.value, KeyError)
    assert str(info.value)  # a message, not a bare key


def test_missing_entry_messages_name_it(run8):
    with pytest.raises(PlanEntryMissing, match="no drizzle job of ib2v03acq_flc in sky-cell "
                                                f"layer {V8_NAMES[1]}"):
        run8.job(V8_NAMES[1], "ib2v03acq_flc")
    with pytest.raises(PlanEntryMissing, match="has no tile t0056 \\(it has 56\\)"):
        run8.tile(V8_NAMES[2], "t0056")


# ------------------------------------------------------------------------------------------
# the file


def test_save_load_round_trip(corner, tmp_path):
    path = tmp_path / "plan" / "plan.json"
    path.parent.mkdir()
    corner.save(path)
    back = RunPlan.load(path)
    assert back.to_dict() == corner.to_dict()
    assert back.version == PLAN_VERSION and not back.outdated
    data = json.loads(path.read_text())
    assert data["version"] == PLAN_VERSION
    assert set(data) == {"version", "options", "skycells", "jobs", "exposures", "notes",
                         "switches", "params", "mosaic", "mosaic_params"}
    assert data["options"]["tile_size"] == 512 and data["mosaic"]["tile_size"] == 256
    first = path.read_bytes()
    back.save(path)
    assert path.read_bytes() == first  # the same plan is the same bytes
    for lay in corner.layers() + corner.mosaic_layers:
        mosaic = lay.is_mosaic
        assert back.layer(lay.name, mosaic=mosaic).to_dict() == lay.to_dict()
        assert [j.to_dict() for j in back.jobs(lay.name, mosaic=mosaic)] == \
            [j.to_dict() for j in corner.jobs(lay.name, mosaic=mosaic)]


def test_a_plan_without_mosaic(run8, tmp_path):
    run8.save(tmp_path / "plan.json")
    back = RunPlan.load(tmp_path / "plan.json")
    assert back.mosaic is None and back.mosaic_layers == []
    assert json.loads((tmp_path / "plan.json").read_text())["mosaic"] is None


def test_another_layout_version(run8, tmp_path):
    data = run8.to_dict()
    data["version"] = PLAN_VERSION - 1
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(PlanVersionError, match="make the plan again"):
        RunPlan.load(tmp_path / "plan.json")
    # the workflow's view of a plan about to be made again: empty, every look-up missing
    stale = RunPlan.load(tmp_path / "plan.json", stale_ok=True)
    assert stale.outdated and stale.skycells == [] and stale.layers() == []
    with pytest.raises(PlanEntryMissing):
        stale.layer(V8_NAMES[0])


def test_a_job_of_an_unknown_layer_is_a_corrupt_plan(run8):
    data = run8.to_dict()
    data["jobs"][0]["layer"] = "hst_nothing_drz.fits"
    with pytest.raises(ValueError, match="corrupt plan"):
        RunPlan.from_dict(data)


# ------------------------------------------------------------------------------------------
# tiles


@pytest.mark.parametrize("size", [64, 100, 257, 4096])
def test_tiles_cover_each_frame_exactly_once(size):
    recs = vector8() + [record("ib2v04aaq_flc.fits", "uvis", "F606W", 20.0,
                               (900.25, 900.25, 700, 650))]
    plan = plan_skycells(recs, tile_size=size)
    for lay in plan.layers:
        cover = np.zeros((lay.frame.ny, lay.frame.nx), int)
        for x0, y0, w, h in lay.tiles:
            assert 0 < w <= size and 0 < h <= size
            cover[y0:y0 + h, x0:x0 + w] += 1
        assert (cover == 1).all(), lay.name
        assert lay.tiles == tile_boxes(lay.frame.nx, lay.frame.ny, size)
    with pytest.raises(ValueError, match="tile_size must be at least 64"):
        plan_skycells(recs, tile_size=63)


def _synthetic_plan(njobs, nlayers, *, seed=0, frame=(600, 400), tile_size=64) -> MvmPlan:
    """A plan of ``nlayers`` layers in one sky cell and ``njobs`` jobs with random boxes
    (some reaching past the frame)."""
    rng = random.Random(seed)
    nx, ny = frame
    fr = Frame(81, 0.04, -53602.0, -53602.0, nx, ny)
    window = fr.window(0, 0, 1, 1)
    members = [Member(f"ib{i:06d}q_flc.fits", f"/d/ib{i:06d}q_flc.fits", f"ib{i:06d}", "wfc3",
                      "uvis", "f606w", "flc", float(1 + i % 7), 1e-19, 2012)
               for i in range(njobs)]
    per_layer = [[] for _ in range(nlayers)]
    for i, m in enumerate(members):
        per_layer[i % nlayers].append(m)
    layers, jobs = [], []
    for k, mem in enumerate(per_layer):
        name = f"hst_{SC}_wfc3_uvis_f{k:04d}w_all_drc.fits"
        lay = LayerPlan(name=name, skycell=SC, instrument="wfc3", detector="uvis",
                        filter=f"f{k:04d}w", scale="fine", exptime_class="all", year=None,
                        product_type="drc", frame=fr, members=mem,
                        tiles=tile_boxes(nx, ny, tile_size), sky_group=f"p0081_g{k % 5}")
        layers.append(lay)
        order = list(range(len(mem)))
        rng.shuffle(order)  # jobs listed out of drizzle order
        for o in order:
            m = mem[o]
            w, h = rng.randint(1, 300), rng.randint(1, 300)
            box = [rng.randint(-100, nx), rng.randint(-100, ny), w, h]
            jobs.append(MapJob(name=f"{name[:-9]}-{m.ipppssoo}_drc.fits", skycell=SC,
                               layer=name, scale="fine", file=m.file, filename=m.filename,
                               ipppssoo=m.ipppssoo, order=o, box=box,
                               frame=window))
    sc = SkyCellPlan(name=SC, members=members, layers=layers)
    return MvmPlan(options={"tile_size": tile_size}, skycells=[sc], jobs=jobs)


def test_jobs_by_tile_agree_with_a_brute_force_scan():
    plan = _synthetic_plan(400, 7, seed=5)
    run = RunPlan(plan, params_of(plan.layers))
    for lay in plan.layers:
        for i, (x0, y0, w, h) in enumerate(lay.tiles):
            mask = np.zeros((lay.frame.ny, lay.frame.nx), bool)
            mask[y0:y0 + h, x0:x0 + w] = True
            brute = []
            for j in plan.jobs:  # every job of the plan, its box as pixels
                if j.layer != lay.name:
                    continue
                bx, by, bw, bh = j.box
                cut = mask[max(by, 0):max(by + bh, 0), max(bx, 0):max(bx + bw, 0)]
                if cut.any():
                    brute.append(j)
            brute.sort(key=lambda j: j.order)
            assert run.tile_jobs(lay.name, i) == brute, (lay.name, i)
        assert [j.order for j in run.jobs(lay.name)] == list(range(len(lay.members)))


def _query_everything(run: RunPlan) -> int:
    """Every look-up a workflow makes: each job, each layer's jobs, members, partials and
    tiles, each sky group. Returns the number of jobs seen."""
    n = 0
    for lay in run.layers():
        for j in run.jobs(lay.name):
            assert run.job(lay.name, j.key) is j
            assert run.job_of_ipppssoo(lay.name, j.ipppssoo) is j
            run.map_frame(lay.name, j.key)
            run.partial_path(j, OUT)
            n += 1
        run.members(lay.name)
        run.partials(lay.name, OUT)
        run.layer_entry(lay.name)
        run.layer_by_root(lay.root)
        run.sky_group(lay.name)
        for t in run.tile_names(lay.name):
            run.tile_partials(lay.name, t, OUT)
        run.tile_mem_mb(lay.name)
    for group in run.sky_groups:
        run.sky_group_layers(group)
    return n


def test_building_and_querying_takes_seconds_for_5000_jobs():
    """5,000 jobs in 1,000 layers: load the plan from its dict, then every look-up a workflow
    makes, in well under the time a scan of all jobs per look-up takes (25 million steps)."""
    plan = _synthetic_plan(5000, 1000, tile_size=256)
    data = json.loads(json.dumps(RunPlan(plan, params_of(plan.layers)).to_dict()))
    start = time.perf_counter()
    run = RunPlan.from_dict(data)
    assert _query_everything(run) == 5000
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed


class _CountingJob(MapJob):
    """A job that counts every attribute read of every job."""

    reads = 0

    def __getattribute__(self, name):
        _CountingJob.reads += 1
        return object.__getattribute__(self, name)


def _job_reads(njobs: int) -> int:
    plan = _synthetic_plan(njobs, njobs // 5, tile_size=256)
    plan.jobs = [_CountingJob(**{f: getattr(j, f) for f in MapJob.__dataclass_fields__})
                 for j in plan.jobs]
    params = params_of(plan.layers)
    _CountingJob.reads = 0
    _query_everything(RunPlan(plan, params))
    return _CountingJob.reads


def test_the_work_of_building_and_querying_is_linear_in_the_jobs():
    """Reads of job attributes to build the indexes and make every look-up: four times the
    jobs (five per layer) is four times the reads (a scan per look-up would be 16 times)."""
    small, large = _job_reads(1000), _job_reads(4000)
    assert small > 1000
    assert large / small < 4.5, (small, large)
