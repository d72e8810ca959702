"""Tests of mvmflow.plan against the spec (grid_and_names.md 5, 6.4, vectors 8-9;
processing.md 1.4, 2.2), on hand-made exposure records (no FITS files)."""

import numpy as np
import pytest

from mvmflow.grid import Frame, SkyCell
from mvmflow.names import LayerName
from mvmflow.plan import (
    Member,
    build_layers,
    drizzle_order,
    exposure_classes,
    exposure_year,
    layer_frame,
    plan_skycells,
)
from mvmflow.records import ChipRecord, ExposureRecord
from mvmflow.runplan import RunPlan

SC = "skycell-p0081x14y14"
P = f"hst_{SC}"
FINE_CRPIX = -53602.0  # spec vector 2
COARSE_CRPIX = -17867.333333333336  # spec vector 3
INSTRUMENTS = {"i": "wfc3", "j": "acs"}


def record(filename, detector, filt, exptime, box, *, photflam=1e-19, date="2012-05-01",
           skycell=SC, proposid="11360", accepted=True):
    """An accepted record with one rectangular chip.

    ``box = (x, y, nx, ny)``: the chip's pixel (0, 0) centre is at 0-based fine pixel
    ``(x, y)`` of ``skycell``, axes aligned with the grid; the footprint is the outline
    through the edge pixels' centres (the four corners).
    """
    x, y, nx, ny = box
    wcs = SkyCell.from_name(skycell).frame.wcs
    ra, dec = wcs.pixel_to_world_values([x, x + nx - 1, x + nx - 1, x],
                                        [y, y, y + ny - 1, y + ny - 1])
    footprint = [[float(a), float(d)] for a, d in zip(ra, dec, strict=True)]
    return ExposureRecord(
        file=f"/data/{filename}", accepted=accepted, filename=filename,
        rootname=filename[:9], ipppssoo=filename[:8],
        instrument=INSTRUMENTS[filename[0]], detector=detector, filter=filt,
        ptype=filename[10:13], exptime=float(exptime), date_obs=date, proposid=proposid,
        photflam=photflam, chips=[ChipRecord(1, [ny, nx], footprint)],
    )


def member(filename, exptime, *, detector="ir", filt="f160w", photflam=1e-19, year=2012,
           status="NEW"):
    return Member(filename=filename, file=f"/data/{filename}", ipppssoo=filename[:8],
                  instrument=INSTRUMENTS[filename[0]], detector=detector, filter=filt,
                  ptype=filename[10:13], exptime=float(exptime), photflam=photflam, year=year,
                  status=status)


def vector8():
    """Spec vector 8's input mix, each exposure a 100x100 px chip in skycell-p0081x14y14.

    Fine pixel boxes: x 1000-1099, 1200-1299, 1400-1499; y 1000-1099, 1300-1399.
    """
    return [
        record("ib2v01aaq_flt.fits", "ir", "F160W", 602.9, (1000.25, 1000.25, 100, 100)),
        record("ib2v02abq_flt.fits", "ir", "F160W", 10.0, (1200.25, 1000.25, 100, 100)),
        record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, (1000.25, 1300.25, 100, 100)),
        record("ib2v03adq_flt.fits", "uvis", "F606W", 100.0, (1200.25, 1300.25, 100, 100)),
        record("j8cw01aeq_flt.fits", "hrc", "F435W", 200.0, (1400.25, 1000.25, 100, 100)),
        record("j8cw02afq_flc.fits", "wfc", "F606W;POL60V", 500.0, (1400.25, 1300.25, 100, 100)),
    ]


V8_NAMES = [
    f"{P}_wfc3_ir_f160w_coarse-all_drz.fits",
    f"{P}_wfc3_ir_f160w_all_drz.fits",
    f"{P}_wfc3_uvis_f606w_all_drc.fits",
    f"{P}_acs_hrc_f435w_all_drz.fits",
    f"{P}_acs_wfc_f606w-pol60v_all_drc.fits",
]
# the union box of all six chips: x 1000..1499, y 1000..1399 -> NAXIS = max - min
V8_FINE = Frame(81, 0.04, FINE_CRPIX - 1000, FINE_CRPIX - 1000, 499, 399)
# on the coarse grid fine 0-based x is coarse (x + 1) / 3 - 1: x 332.75..499.08 -> 332..499
# and y 332.75..465.75 -> 332..465
V8_COARSE = Frame(81, 0.12, COARSE_CRPIX - 332, COARSE_CRPIX - 332, 167, 133)


@pytest.fixture(scope="module")
def plan8():
    return plan_skycells(vector8())


# ------------------------------------------------------------------------------------------
# layers (spec vector 8)


def test_vector8_products_in_order(plan8):
    """Spec vector 8: the five products, coarse IR before fine, detectors in first-met order."""
    assert [sc.name for sc in plan8.skycells] == [SC]
    sc = plan8.skycell(SC)
    assert [lay.name for lay in sc.layers] == V8_NAMES
    assert [(lay.scale, lay.product_type) for lay in sc.layers] == [
        ("coarse", "drz"), ("fine", "drz"), ("fine", "drc"), ("fine", "drz"), ("fine", "drc")]
    assert [lay.name for lay in plan8.layers] == V8_NAMES
    assert sc.dropped == [] and sc.notes == [] and plan8.notes == []


def test_vector8_members_and_drizzle_order(plan8):
    """IR layers share both FLTs, 10 s before 602.9 s; each other layer has its one member."""
    members = {lay.name: [m.filename for m in lay.members] for lay in plan8.layers}
    assert members == {
        V8_NAMES[0]: ["ib2v02abq_flt.fits", "ib2v01aaq_flt.fits"],
        V8_NAMES[1]: ["ib2v02abq_flt.fits", "ib2v01aaq_flt.fits"],
        V8_NAMES[2]: ["ib2v03acq_flc.fits"],
        V8_NAMES[3]: ["j8cw01aeq_flt.fits"],
        V8_NAMES[4]: ["j8cw02afq_flc.fits"],
    }
    sc = plan8.skycell(SC)
    assert [m.filename for m in sc.members] == sorted(r.filename for r in vector8())


def test_vector8_flt_reported_dropped_from_flc_layer(plan8):
    """Spec 5.7 / 7.11: the UVIS FLT is left out of the drc layer, and reported with a reason."""
    uvis = plan8.layers[2]
    assert uvis.product_type == "drc"
    assert [(d.filename, d.ipppssoo, d.status) for d in uvis.dropped] == [
        ("ib2v03adq_flt.fits", "ib2v03ad", "NEW")]
    assert "FLT" in uvis.dropped[0].reason and "FLC" in uvis.dropped[0].reason
    assert all(lay.dropped == [] for lay in plan8.layers if lay is not uvis)
    assert "ib2v03adq" not in " ".join(j.name for j in plan8.jobs)


def test_vector8_exposure_names(plan8):
    """Spec 6.2: exposure copy and per-layer exposure-level names."""
    coarse = plan8.layers[0]
    assert coarse.layer_name.exposure("ib2v02ab", "flt").filename == (
        f"{P}_wfc3_ir_f160w_coarse-all-ib2v02ab_flt.fits")
    assert [j.name for j in plan8.jobs] == [
        f"{P}_wfc3_ir_f160w_coarse-all-ib2v02ab_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-all-ib2v01aa_drz.fits",
        f"{P}_wfc3_ir_f160w_all-ib2v02ab_drz.fits",
        f"{P}_wfc3_ir_f160w_all-ib2v01aa_drz.fits",
        f"{P}_wfc3_uvis_f606w_all-ib2v03ac_drc.fits",
        f"{P}_acs_hrc_f435w_all-j8cw01ae_drz.fits",
        f"{P}_acs_wfc_f606w-pol60v_all-j8cw02af_drc.fits",
    ]
    assert [j.order for j in plan8.jobs] == [0, 1, 0, 1, 0, 0, 0]
    assert [j.layer for j in plan8.jobs] == [V8_NAMES[i] for i in (0, 0, 1, 1, 2, 3, 4)]


def test_vector8_poller_text(plan8):
    """The sky cell's poller: 10 columns per member, sorted by name, no trailing newline."""
    poller = plan8.skycell(SC).poller
    assert not poller.endswith("\n")
    lines = poller.split("\n")
    assert lines[0] == f"ib2v01aaq_flt.fits,11360,B2V,01,602.9,F160W,IR,{SC},NEW,/data/ib2v01aaq_flt.fits"
    assert lines[5] == (f"j8cw02afq_flc.fits,11360,8CW,02,500.0,F606W-POL60V,WFC,{SC},NEW,"
                        "/data/j8cw02afq_flc.fits")
    assert [line.split(",")[0] for line in lines] == sorted(r.filename for r in vector8())
    assert plan8.skycell(SC).poller_filename == f"{SC}_input.out"


def test_include_small_off_drops_hrc():
    """Spec vector 8: include_small=False removes the HRC layer (reported); frame unchanged."""
    plan = plan_skycells(vector8(), include_small=False)
    sc = plan.skycell(SC)
    assert [lay.name for lay in sc.layers] == [V8_NAMES[i] for i in (0, 1, 2, 4)]
    assert [d.filename for d in sc.dropped] == ["j8cw01aeq_flt.fits"]
    assert "include_small" in sc.dropped[0].reason
    # left-out exposures still bound the frame (the reference's all_mvm_exposures)
    assert sc.frames == {"coarse": V8_COARSE, "fine": V8_FINE}


def test_include_small_off_drops_sbc_too():
    """Spec 4.2: include_small=False removes ACS/HRC and ACS/SBC, nothing else."""
    ms = [member("j8cw01aaq_flt.fits", 100, detector="sbc", filt="f122m"),
          member("j8cw01abq_flt.fits", 100, detector="hrc", filt="f435w"),
          member("j8cw01acq_flt.fits", 100, detector="wfc", filt="f435w"),
          member("j8cw01adq_flt.fits", 100, detector="sbc", filt="f122m", status="OLD")]
    layers, dropped, _ = build_layers(SC, ms, include_small=False)
    assert [lay.name for lay in layers] == [f"{P}_acs_wfc_f435w_all_drz.fits"]
    assert [d.filename for d in dropped] == ["j8cw01aaq_flt.fits", "j8cw01abq_flt.fits"]
    layers, dropped, _ = build_layers(SC, ms)
    assert [lay.name for lay in layers] == [f"{P}_acs_sbc_f122m_all_drz.fits",
                                            f"{P}_acs_hrc_f435w_all_drz.fits",
                                            f"{P}_acs_wfc_f435w_all_drz.fits"]
    assert dropped == [] and [m.filename for m in layers[0].old] == ["j8cw01adq_flt.fits"]


def test_only_cte():
    """Spec 4.2: only_cte drops UVIS/WFC FLTs before layering; IR and HRC FLTs stay."""
    recs = vector8() + [
        record("j8cw04agq_flt.fits", "wfc", "F814W", 300.0, (1400.25, 1150.25, 50, 50))]
    base = plan_skycells(recs).skycell(SC)
    assert f"{P}_acs_wfc_f814w_all_drz.fits" in [lay.name for lay in base.layers]
    sc = plan_skycells(recs, only_cte=True).skycell(SC)
    # the UVIS FLT no longer makes UVIS "first met" at 100 s: HRC (200 s) now comes before it
    assert [lay.name for lay in sc.layers] == [V8_NAMES[i] for i in (0, 1, 3, 2, 4)]
    assert sorted(d.filename for d in sc.dropped) == ["ib2v03adq_flt.fits", "j8cw04agq_flt.fits"]
    assert all("only_cte" in d.reason for d in sc.dropped)
    assert all(lay.dropped == [] for lay in sc.layers)
    assert [m.filename for m in sc.layers[3].members] == ["ib2v03acq_flc.fits"]
    assert sc.frames["fine"] == V8_FINE


def test_only_cte_old_flt_does_not_abort():
    """Spec 7.9 not reproduced: [OLD UVIS flt, NEW UVIS flc] with only_cte plans the flc."""
    recs = [record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, (1000.25, 1000.25, 100, 100)),
            record("ib2v03adq_flt.fits", "uvis", "F606W", 100.0, (1200.25, 1000.25, 100, 100))]
    plan = plan_skycells(recs, old=["ib2v03adq_flt.fits"], only_cte=True)
    sc = plan.skycell(SC)
    assert [lay.name for lay in sc.layers] == [f"{P}_wfc3_uvis_f606w_all_drc.fits"]
    assert [m.filename for m in sc.layers[0].members] == ["ib2v03acq_flc.fits"]
    assert sc.dropped == []  # an OLD member is not reported as dropped
    assert sc.frames["fine"] == Frame(81, 0.04, FINE_CRPIX - 1000, FINE_CRPIX - 1000, 299, 99)


def test_old_members_shape_frame_but_are_not_drizzled():
    """Spec 1.11/6.4: OLD rows count for the box, are listed as old, and get no job."""
    recs = vector8()
    plan = plan_skycells(recs, old=["ib2v01aa", "/elsewhere/j8cw02afq_flc.fits"])
    sc = plan.skycell(SC)
    assert sc.frames == {"coarse": V8_COARSE, "fine": V8_FINE}
    ir = sc.layers[0]
    assert [m.filename for m in ir.members] == ["ib2v02abq_flt.fits"]
    assert [m.filename for m in ir.old] == ["ib2v01aaq_flt.fits"]
    assert [lay.name for lay in sc.layers] == V8_NAMES[:4]  # the WFC layer is all OLD
    assert any("all its members are OLD" in n for n in sc.notes)
    assert {j.filename for j in plan.jobs} == {
        "ib2v02abq_flt.fits", "ib2v03acq_flc.fits", "j8cw01aeq_flt.fits"}
    lines = sc.poller.split("\n")
    assert lines[0].split(",")[8] == "OLD" and lines[5].split(",")[8] == "OLD"
    assert [line.split(",")[8] for line in lines[1:5]] == ["NEW"] * 4


def test_detectors_in_first_met_order():
    """Spec 5.6: detectors follow the drizzle order of their first exposure."""
    recs = vector8()
    recs[5] = record("j8cw02afq_flc.fits", "wfc", "F606W;POL60V", 5.0,
                     (1400.25, 1300.25, 100, 100))
    names = [lay.name for lay in plan_skycells(recs).skycell(SC).layers]
    assert names == [V8_NAMES[i] for i in (4, 0, 1, 2, 3)]


# ------------------------------------------------------------------------------------------
# frames (spec 6.4, vector 9)


@pytest.mark.parametrize("frac", [0.25, 0.75, 1e-6])
def test_vector9_bounded_frame(frac):
    """Spec vector 9: a 100x80 chip at (1000 + f, 2000 + f) gives CRPIX (-54602, -55602),
    NAXIS (99, 79)."""
    rec = record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0,
                 (1000 + frac, 2000 + frac, 100, 80))
    want = Frame(81, 0.04, -54602.0, -55602.0, 99, 79)
    assert layer_frame(SC, "fine", [rec]) == want
    plan = plan_skycells([rec])
    sc = plan.skycell(SC)
    assert sc.frames == {"fine": want}
    assert sc.layers[0].frame == want
    hdr = want.header()
    assert (hdr["CRPIX1"], hdr["CRPIX2"], hdr["NAXIS1"], hdr["NAXIS2"]) == (
        -54602.0, -55602.0, 99, 79)
    # in our convention: the frame is the sky cell's window at integer offset (1000, 2000)
    full = SkyCell.from_name(SC).frame
    assert full.integer_offset_of(want) == (1000, 2000)
    assert full.window(1000, 2000, 99, 79) == want
    (job,) = plan.jobs
    # the job box is the chip's pixels plus the 4 px kernel margin on the *sky cell*, so
    # it reaches past the trimmed frame by the margin (it must not depend on the frame)
    x0, y0, nx, ny = job.box
    assert -4 <= x0 <= -3 and -4 <= y0 <= -3 and 99 + 3 <= x0 + nx <= 99 + 6
    assert 79 + 3 <= y0 + ny <= 79 + 6
    assert job.frame == full.window(1000 + x0, 2000 + y0, nx, ny) == want.window(*job.box)


def test_all_layers_share_the_frame(plan8):
    """Spec 6.4: every layer at one scale has the union box of all exposures."""
    sc = plan8.skycell(SC)
    assert sc.frames == {"coarse": V8_COARSE, "fine": V8_FINE}
    assert [lay.frame for lay in sc.layers] == [V8_COARSE] + [V8_FINE] * 4
    assert layer_frame(SC, "coarse", vector8()) == V8_COARSE


def test_job_boxes(plan8):
    """Each job box is the chip's pixels plus a 4 px margin, clipped to the sky cell but not
    to the trimmed layer frame (so it does not depend on the other members)."""
    boxes = {j.name.split("_")[-2]: j.box for j in plan8.jobs}
    # fine IR ib2v02ab: x 1200.25..1299.25 -> 200..299 in the frame, y 0..99
    assert boxes["all-ib2v02ab"] == [196, -4, 108, 108]
    assert boxes["all-j8cw02af"] == [396, 296, 108, 108]  # past the frame's top right
    for j in plan8.jobs:
        lay = next(lay for lay in plan8.layers if lay.name == j.layer)
        assert j.frame == lay.frame.window(*j.box)


def test_exposure_in_four_skycells():
    """An exposure over the corner where x14y14, x15y14, x14y15 and x15y15 of p0081 meet
    is planned into all four, each with its own bounded frame."""
    # fine pixels 21000.25..22000.25 of x14y14; x15/y15 start 21442 px further
    rec = record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, (21000.25, 21000.25, 1001, 1001))
    cells = ["skycell-p0081x14y14", "skycell-p0081x14y15",
             "skycell-p0081x15y14", "skycell-p0081x15y15"]
    plan = plan_skycells([rec])
    assert plan.exposures == {"ib2v03acq_flc.fits": cells}
    assert [sc.name for sc in plan.skycells] == cells
    lo = FINE_CRPIX - 21000  # x14/y14: 21000..21953 (clipped to N - 1)
    hi = FINE_CRPIX - 21442  # x15/y15: 0..558
    want = {
        "skycell-p0081x14y14": Frame(81, 0.04, lo, lo, 953, 953),
        "skycell-p0081x14y15": Frame(81, 0.04, lo, hi, 953, 558),
        "skycell-p0081x15y14": Frame(81, 0.04, hi, lo, 558, 953),
        "skycell-p0081x15y15": Frame(81, 0.04, hi, hi, 558, 558),
    }
    for sc in plan.skycells:
        assert sc.frames == {"fine": want[sc.name]}, sc.name
        assert [lay.name for lay in sc.layers] == [
            f"hst_{sc.name}_wfc3_uvis_f606w_all_drc.fits"]
        assert f",{sc.name},NEW," in sc.poller
    assert [j.skycell for j in plan.jobs] == cells
    only = plan_skycells([rec], skycells=["skycell-p0081x15y15"])
    assert [sc.name for sc in only.skycells] == ["skycell-p0081x15y15"]
    assert only.exposures == {"ib2v03acq_flc.fits": ["skycell-p0081x15y15"]}


# ------------------------------------------------------------------------------------------
# drizzle order, exposure-time classes (spec 5.4-5.5)


def test_drizzle_order():
    """Spec 5.4: EXPTIME ascending, then PHOTFLAM descending, then file name."""
    ms = [member("ib2v01bbq_flt.fits", 100, photflam=1e-19),
          member("ib2v01ccq_flt.fits", 100, photflam=2e-19),
          member("ib2v01zzq_flt.fits", 50, photflam=1e-19),
          member("ib2v01aaq_flt.fits", 100, photflam=2e-19)]
    assert [m.filename[6:8] for m in drizzle_order(ms)] == ["zz", "aa", "cc", "bb"]
    layers, _, _ = build_layers(SC, ms)
    assert [m.filename[6:8] for m in layers[1].members] == ["zz", "aa", "cc", "bb"]


def test_hard_class_limits():
    """Spec 5.5: < 15 s short, 15 <= t < 120 med, >= 120 long (0 s short)."""
    times = [0.0, 14.999, 15.0, 119.9, 120.0]
    ms = [member(f"ib2v01a{i}q_flt.fits", t) for i, t in enumerate(times)]
    classes = exposure_classes(ms, "hard")
    assert [classes[m.filename] for m in ms] == [
        ("short", 2012), ("short", 2012), ("med", 2012), ("med", 2012), ("long", 2012)]
    assert set(exposure_classes(ms, "all").values()) == {("all", None)}
    with pytest.raises(ValueError, match="layer method"):
        exposure_classes(ms, "median")


def test_hard_layers_have_unique_names():
    """Spec 7.8 fixed: hard layer names carry class and year, fine and coarse alike."""
    ms = [member("ib2v01aaq_flt.fits", 10.0), member("ib2v01abq_flt.fits", 50.0),
          member("ib2v01acq_flt.fits", 500.0), member("ib2v02adq_flt.fits", 500.0, year=2013),
          member("ib2v01aeq_flt.fits", 5.0, detector="uvis", filt="f606w")]
    layers, _, _ = build_layers(SC, ms, layer_method="hard")
    assert [lay.name for lay in layers] == [
        f"{P}_wfc3_uvis_f606w_short-2012_drz.fits",  # 5 s: UVIS is met first
        f"{P}_wfc3_uvis_f606w_all-2012_drz.fits",  # each year has an all-times layer
        f"{P}_wfc3_ir_f160w_coarse-short-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_short-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-all-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_all-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-med-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_med-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-long-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_long-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-long-2013_drz.fits",
        f"{P}_wfc3_ir_f160w_long-2013_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-all-2013_drz.fits",
        f"{P}_wfc3_ir_f160w_all-2013_drz.fits",
    ]
    assert [[m.filename[6:8] for m in lay.members] for lay in layers[::2]] == [
        ["ae"], ["aa"], ["aa", "ab", "ac"], ["ab"], ["ac"], ["ad"], ["ad"]]
    assert [m.filename[6:8] for m in layers[0].members] == ["ae"]
    assert [m.filename[6:8] for m in layers[1].members] == ["ae"]
    assert LayerName.parse(layers[9].name) == layers[9].layer_name


def test_kmeans_split_and_names():
    """kmeans: two classes per filter by the two-means of log10 EXPTIME above exp_limit,
    else one class 'all'; year in every name."""
    ms = [member("ib2v01aaq_flt.fits", 10.0), member("ib2v01abq_flt.fits", 12.0),
          member("ib2v01acq_flt.fits", 500.0), member("ib2v01adq_flt.fits", 600.0),
          member("ib2v01aeq_flt.fits", 100.0, detector="uvis", filt="f606w"),
          member("ib2v01afq_flt.fits", 150.0, detector="uvis", filt="f606w")]
    classes = exposure_classes(ms, "kmeans", exp_limit=2.0)
    assert [classes[m.filename][0] for m in ms] == ["short", "short", "long", "long", "all", "all"]
    layers, _, _ = build_layers(SC, ms, layer_method="kmeans")
    assert [lay.name for lay in layers] == [
        f"{P}_wfc3_ir_f160w_coarse-short-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_short-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-all-2012_drz.fits",  # the all-times layer of the year
        f"{P}_wfc3_ir_f160w_all-2012_drz.fits",
        f"{P}_wfc3_ir_f160w_coarse-long-2012_drz.fits",  # grouped by detector (spec 5.6)
        f"{P}_wfc3_ir_f160w_long-2012_drz.fits",
        f"{P}_wfc3_uvis_f606w_all-2012_drz.fits",
    ]
    assert len(layers[3].members) == 4
    # with a higher limit (600 / 10 = 60 < 100) the IR exposures stay together
    classes = exposure_classes(ms, "kmeans", exp_limit=100.0)
    assert {classes[m.filename][0] for m in ms} == {"all"}
    with pytest.raises(ValueError, match="exp_limit"):
        exposure_classes(ms, "kmeans", exp_limit=0)


@pytest.mark.parametrize("times, short", [
    ([1.0, 10.0, 100.0], [1.0]),  # equal within-class sums: the lower split wins
    ([1.0, 2.0, 100.0], [1.0, 2.0]),
    ([1.0, 50.0, 60.0, 100.0], [1.0]),
    ([5.0, 5.0, 5.0, 100.0, 100.0], [5.0, 5.0, 5.0]),  # equal times share a class
])
def test_kmeans_exact_two_means(times, short):
    """The split minimises the within-class sum of squares of log10(EXPTIME)."""
    ms = [member(f"ib2v01a{i}q_flt.fits", t) for i, t in enumerate(times)]
    classes = exposure_classes(ms, "kmeans")
    assert [m.exptime for m in ms if classes[m.filename][0] == "short"] == short
    assert all(classes[m.filename][0] == "long" for m in ms if m.exptime not in short)


def test_exposure_year():
    """The year of DATE-OBS, else of EXPSTART (MJD), else None."""
    rec = record("ib2v01aaq_flt.fits", "ir", "F160W", 1.0, (0, 0, 2, 2), date="2013-02-03")
    assert exposure_year(rec) == 2013
    rec.date_obs, rec.expstart = "", 56000.0  # 2012-03-14
    assert exposure_year(rec) == 2012
    rec.expstart = 0.0
    assert exposure_year(rec) is None


def test_member_from_record():
    """Members carry lower-case instrument/detector, the normalised filter and the ptype."""
    m = Member.from_record(vector8()[5])
    assert (m.instrument, m.detector, m.filter, m.ptype, m.ipppssoo, m.year, m.status) == (
        "acs", "wfc", "f606w-pol60v", "flc", "j8cw02af", 2012, "NEW")


# ------------------------------------------------------------------------------------------
# inputs left out, options, JSON


def test_unplannable_records_are_noted():
    """Rejected records, records without footprints and repeated names are left out."""
    good = record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, (1000.25, 1000.25, 100, 100))
    bad = record("ib2v03adq_flc.fits", "uvis", "F606W", 1.0, (0, 0, 2, 2), accepted=False)
    bad.reason = "EXPTIME is 0"
    nofp = record("ib2v03aeq_flc.fits", "uvis", "F606W", 1.0, (0, 0, 2, 2))
    nofp.chips = []
    twice = record("ib2v03acq_flc.fits", "uvis", "F606W", 9.0, (3000.25, 3000.25, 100, 100))
    twice.file = "/other/ib2v03acq_flc.fits"
    plan = plan_skycells([good, bad, nofp, twice])
    assert list(plan.exposures) == ["ib2v03acq_flc.fits"]
    assert len(plan.notes) == 3
    assert "rejected by screening (EXPTIME is 0)" in plan.notes[0]
    assert "no chip footprint" in plan.notes[1]
    assert "listed twice" in plan.notes[2]
    assert plan.skycell(SC).frames["fine"].nx == 99  # the second copy did not widen it
    with pytest.raises(ValueError, match="layer method"):
        plan_skycells([good], layer_method="kmean")


def test_coverage_counts_chips():
    """Two identical chips: MEANNEXP 2 (n = 2) and the exposure times summed."""
    box = (1000.25, 1000.25, 100, 100)
    plan = plan_skycells([
        record("ib2v03acq_flc.fits", "uvis", "F606W", 350.0, box),
        record("ib2v03adq_flc.fits", "uvis", "F606W", 100.0, box)])
    cov = plan.layers[0].coverage
    assert (cov.n, cov.meannexp, cov.mednexp, cov.medexpt, cov.downsample) == (
        2, 2.0, 2.0, 450.0, 1)
    assert 0.9 < cov.npixfrac <= 1.0


def test_plan_json_round_trip(plan8, tmp_path):
    """RunPlan.save -> RunPlan.load restores the plan exactly."""
    RunPlan(plan8).save(tmp_path / "plan.json")
    back = RunPlan.load(tmp_path / "plan.json").plan
    assert back.to_dict() == plan8.to_dict()
    assert back.layers[0].frame == V8_COARSE
    assert back.jobs[0].frame == plan8.jobs[0].frame
    assert np.isclose(back.layers[2].members[0].exptime, 350.0)
