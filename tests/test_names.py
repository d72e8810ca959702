"""Tests of mvmflow.names: every verified name in the spec, round trips and rejections.

Spec references are to ``spec/grid_and_names.md`` (G) and ``spec/processing.md`` (P).
"""

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from mvmflow import names
from mvmflow.grid import ProjectionCell
from mvmflow.names import (
    CombinedName,
    CutoutName,
    ExposureName,
    LayerName,
    SvmExposureName,
)

CELL = "skycell-p0081x14y14"
CUT_RA, CUT_DEC = 85.25665514291263, -69.14985113186759  # G 6.6
CUT_PREFIX = "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498"
COMB_PREFIX = "hst_combined_skycells-ra85d2566-decs69d1498"


# ------------------------------------------------------------------------------------------
# hypothesis strategies

ipppssoos = st.from_regex(r"[ijouxw][a-z0-9]{7}", fullmatch=True)
detectors = st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
filter_pieces = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True).filter(
    lambda s: not re.fullmatch(r"[ijouxw][a-z0-9]{7}", s)
)
filters = st.lists(filter_pieces, min_size=1, max_size=3).map("-".join)
years = st.none() | st.integers(1000, 9999)
classes = st.sampled_from(["all", "short", "med", "long"])
scales = st.sampled_from(["fine", "coarse"])
instruments = st.sampled_from(["acs", "wfc3", "wfpc2"])
skycells = st.builds(
    names.format_skycell, st.integers(0, 2643), st.integers(1, 21), st.integers(1, 21)
)
custom_prefixes = st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9.+-]{0,10}(_[A-Za-z0-9.+-]{1,6}){0,3}", fullmatch=True
)
default_prefixes = st.builds(
    names.default_prefix,
    st.integers(0, 2643),
    st.floats(0, 360, exclude_max=True),
    st.floats(-90, 90),
)
prefixes = skycells.map(lambda s: "hst_" + s) | custom_prefixes | default_prefixes


@st.composite
def layer_names(draw):
    ipppssoo = draw(st.none() | ipppssoos)
    types = ["drz", "drc"] + (["flt", "flc"] if ipppssoo else [])
    return LayerName(
        draw(prefixes), draw(instruments), draw(detectors), draw(filters),
        scale=draw(scales), exptime_class=draw(classes), year=draw(years),
        ipppssoo=ipppssoo, product_type=draw(st.sampled_from(types)),
    )


coords = st.builds(names.coord_token, st.floats(-720, 720), st.floats(-90, 90))


# ------------------------------------------------------------------------------------------
# exposures (G 4.1, G 5 step 2, P 1.4)

EXPOSURES = [
    # filename, rootname token, ipppssoo, instrument, program id, obset id, visit
    ("ib2v01abq_flt.fits", "ib2v01abq", "ib2v01ab", "wfc3", "B2V", "01", "ib2v01"),
    ("j8cw03f2q_flc.fits", "j8cw03f2q", "j8cw03f2", "acs", "8CW", "03", "j8cw03"),
    ("j8cw03f6q_flc.fits", "j8cw03f6q", "j8cw03f6", "acs", "8CW", "03", "j8cw03"),
    ("ib4606c5q_flc.fits", "ib4606c5q", "ib4606c5", "wfc3", "B46", "06", "ib4606"),
    ("j8f661sdq_flc.fits", "j8f661sdq", "j8f661sd", "acs", "8F6", "61", "j8f661"),
    ("hst_11360_01_wfc3_ir_f160w_ib2v01ab_flt.fits", "ib2v01ab", "ib2v01ab", "wfc3", "B2V", "01", "ib2v01"),
]


@pytest.mark.parametrize("filename, token, ipppssoo, instrument, prog, obset, visit", EXPOSURES)
def test_exposure_vectors(filename, token, ipppssoo, instrument, prog, obset, visit):
    assert names.rootname_token(filename) == token
    assert names.rootname_token(os.path.join("/data", "x_y", filename)) == token
    assert names.ipppssoo_of(filename) == ipppssoo
    assert names.instrument_from_rootname(filename) == instrument
    assert names.program_id(filename) == prog
    assert names.obset_id(filename) == obset
    assert names.visit_id(filename) == visit
    parsed = names.parse_exposure(filename)
    assert parsed.filename == filename
    assert (parsed.rootname, parsed.ipppssoo, parsed.instrument) == (token, ipppssoo, instrument)
    assert (parsed.program_id, parsed.obset_id, parsed.visit_id) == (prog, obset, visit)


@pytest.mark.parametrize(
    "letter, instrument",
    [("i", "wfc3"), ("j", "acs"), ("o", "stis"), ("u", "wfpc2"), ("x", "foc"), ("w", "wfpc")],
)
def test_instrument_letters(letter, instrument):
    assert names.instrument_from_rootname(letter + "b2v01abq") == instrument
    assert names.instrument_from_rootname(letter + "b2v01ab") == instrument


def test_svm_exposure_fields():
    svm = SvmExposureName.parse("hst_9442_03_acs_wfc_f606w-pol60v_j8cw03f2_flc.fits")
    assert svm == SvmExposureName(9442, "03", "acs", "wfc", "f606w-pol60v", "j8cw03f2", "flc")
    assert isinstance(names.parse_exposure("ib2v01abq_flt.fits"), ExposureName)
    assert ExposureName.parse("ib2v01abq_flt.fits") == ExposureName("ib2v01abq", "flt")


@pytest.mark.parametrize(
    "bad",
    [
        "ib2v01abq.fits",  # no type
        "ib2v01abq_drz.fits",  # not an exposure type
        "IB2V01ABQ_FLT.FITS",  # upper case
        "ib2v01abq_FLT.fits",
        "zb2v01abq_flt.fits",  # unknown instrument letter
        "ib2v01ab_flt.fits",  # plain names carry the 9-character rootname
        "ib2v01abq_flt.fits.gz",
        "hst_11360_01_acs_ir_f160w_ib2v01ab_flt.fits",  # instrument disagrees with ipppssoo
        "hst_011360_01_wfc3_ir_f160w_ib2v01ab_flt.fits",  # zero-padded proposal
        "hst_11360_001_wfc3_ir_f160w_ib2v01ab_flt.fits",
        "hst_11360_01_wfc3_ir_f160w_ib2v01abq_flt.fits",  # 9 characters in an SVM name
        "hst_11360_01_wfc3_ir_F160W_ib2v01ab_flt.fits",
    ],
)
def test_exposure_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        names.parse_exposure(bad)


@pytest.mark.parametrize("bad", ["ib2v01abq", "flt.fits", "zb2v01abq_flt.fits", "ib2v_flt.fits"])
def test_rootname_token_rejections(bad):
    with pytest.raises(ValueError):
        names.rootname_token(bad)


@given(st.from_regex(r"[ijouxw][a-z0-9]{8}", fullmatch=True), st.sampled_from(["flt", "flc"]))
def test_plain_exposure_round_trip(root, ftype):
    x = ExposureName(root, ftype)
    assert ExposureName.parse(x.filename) == x
    assert names.parse_exposure(x.filename) == x


@given(st.integers(1, 99999), st.from_regex(r"[a-z0-9]{2}", fullmatch=True), detectors, filters,
       ipppssoos, st.sampled_from(["flt", "flc"]))
def test_svm_exposure_round_trip(prop, obset, det, filt, ipppssoo, ftype):
    instrument = names.INSTRUMENT_LETTERS[ipppssoo[0]]
    x = SvmExposureName(prop, obset, instrument, det, filt, ipppssoo, ftype)
    assert SvmExposureName.parse(x.filename) == x
    assert names.parse_exposure(x.filename) == x
    assert names.rootname_token(x.filename) == ipppssoo


# ------------------------------------------------------------------------------------------
# sky cells (G 2.3, 2.4, 2.5, 9)

SKYCELLS = [
    ("skycell-p0081x14y14", (81, 14, 14), "p0081x14y14"),
    ("skycell-p0081x01y01", (81, 1, 1), "p0081x01y01"),
    ("skycell-p0081x21y21", (81, 21, 21), "p0081x21y21"),
    ("skycell-p2643x11y11", (2643, 11, 11), "p2643x11y11"),
    ("skycell-p0000x11y11", (0, 11, 11), "p0000x11y11"),
    ("skycell-p1232x11y19", (1232, 11, 19), "p1232x11y19"),
    ("skycell-p1322x11y03", (1322, 11, 3), "p1322x11y03"),
    ("skycell-p1233x21y15", (1233, 21, 15), "p1233x21y15"),
    ("skycell-p2381x05y09", (2381, 5, 9), "p2381x05y09"),
    ("skycell-p0121x12y16", (121, 12, 16), "p0121x12y16"),
]


@pytest.mark.parametrize("name, pxy, cell_id", SKYCELLS)
def test_skycell_vectors(name, pxy, cell_id):
    assert names.format_skycell(*pxy) == name
    assert names.format_skycell(*(np.int64(v) for v in pxy)) == name
    assert names.parse_skycell(name) == pxy
    assert names.scellid(name) == cell_id
    assert names.skycell_from_scellid(cell_id) == name


@pytest.mark.parametrize(
    "bad",
    [
        "skycell-p0081x14y14junk",  # accepted by the reference's prefix-only regex
        "skycell-p81x14y14",
        "skycell-p0081x00y14",
        "skycell-p0081x14y00",
        "skycell-p0081x22y14",
        "skycell-p0081x14y22",
        "skycell-p2644x01y01",
        "skycell-p9999x01y01",
        "skycell-p0000x00y00",  # the reference's default manifest sky cell
        " skycell-p0081x14y14",
        "skycell-p0081x14y14\n",
        "SKYCELL-p0081x14y14",
        "skycell-p0081X14Y14",
        "hst_skycell-p0081x14y14",
        "p0081x14y14",
        "",
    ],
)
def test_skycell_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        names.parse_skycell(bad)


@pytest.mark.parametrize(
    "pxy", [(0, 0, 1), (0, 1, 0), (0, 22, 1), (0, 1, 22), (2644, 1, 1), (-1, 1, 1), (10000, 1, 1)]
)
def test_format_skycell_rejects_out_of_range(pxy):
    with pytest.raises(ValueError, match="out of range"):
        names.format_skycell(*pxy)


@pytest.mark.parametrize("pxy", [(81.0, 14, 14), (81, "14", 14), (True, 1, 1)])
def test_format_skycell_rejects_non_integers(pxy):
    with pytest.raises(ValueError, match="integer"):
        names.format_skycell(*pxy)


@pytest.mark.parametrize("bad", ["p0081x14y14junk", "skycell-p0081x14y14", "p0081x22y14", "P0081X14Y14"])
def test_scellid_rejections(bad):
    with pytest.raises(ValueError):
        names.skycell_from_scellid(bad)


@given(st.integers(0, 2643), st.integers(1, 21), st.integers(1, 21))
def test_skycell_round_trip(p, x, y):
    name = names.format_skycell(p, x, y)
    assert re.fullmatch(r"skycell-p\d{4}x\d{2}y\d{2}", name)
    assert names.parse_skycell(name) == (p, x, y)
    assert names.skycell_from_scellid(names.scellid(name)) == name


# ------------------------------------------------------------------------------------------
# pollers, logs, manifests, trailers (G 4.1, 6.3; P 1.3, 1.9)


@pytest.mark.parametrize("cell", [CELL, "skycell-p0121x12y16", "skycell-p2381x05y09"])
def test_poller_manifest_log_names(cell):
    poller = names.poller_filename(cell)
    assert poller == cell + "_input.out"
    assert names.parse_poller_filename(poller) == cell
    assert names.parse_poller_filename(Path("/runs") / poller) == cell
    assert names.run_log_filename(poller) == cell + "_input.log"
    manifest = names.manifest_filename(cell)
    assert manifest == cell + "_manifest.txt"
    assert not manifest.startswith("hst_")
    assert names.parse_manifest_filename(manifest) == cell


def test_spec_file_name_vectors():
    assert names.poller_filename(CELL) == "skycell-p0081x14y14_input.out"
    assert names.run_log_filename("skycell-p0121x12y16_input.out") == "skycell-p0121x12y16_input.log"
    assert names.manifest_filename("skycell-p0121x12y16") == "skycell-p0121x12y16_manifest.txt"
    product = "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits"
    assert names.trailer_filename(product) == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_trl.txt"
    assert names.rootname_from_filename(product) == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all"


@pytest.mark.parametrize(
    "func, bad",
    [
        (names.parse_poller_filename, "skycell-p0081x14y14junk_input.out"),
        (names.parse_poller_filename, "skycell-p0081x14y14_input.txt"),
        (names.parse_poller_filename, "hst_skycell-p0081x14y14_input.out"),
        (names.parse_manifest_filename, "hst_skycell-p0081x14y14_manifest.txt"),
        (names.parse_manifest_filename, "skycell-p0000x00y00_manifest.txt"),
        (names.poller_filename, "skycell-p0081x14y14junk"),
        (names.manifest_filename, "skycell-p81x14y14"),
        (names.trailer_filename, "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_trl.txt"),
        (names.rootname_from_filename, "nounderscore.fits"),
        (names.run_log_filename, "noextension"),
    ],
)
def test_per_run_name_rejections(func, bad):
    with pytest.raises(ValueError):
        func(bad)


# ------------------------------------------------------------------------------------------
# filters (G 4.3, 4.1, 9.7)

FILTERS = [
    ("F606W;POL60V", "f606w-pol60v"),
    ("POL0UV;F435W", "f435w-pol0uv"),
    ("CLEAR1L;F814W", "f814w"),
    ("F122M;N/A;F122M", "f122m"),
    ("CLEAR1L;CLEAR2L", "clear"),
    ("f555w;f814w", "f555w-f814w"),
    ("FR656N;CLEAR2L", "fr656n"),
    ("F606W;F550M;X", "f606w-f550m"),
]


@pytest.mark.parametrize("raw, expected", FILTERS)
def test_normalize_filter_vectors(raw, expected):
    assert names.normalize_filter(raw) == expected
    assert names.poller_filter(raw) == expected.upper()


def test_poller_filter_vectors():
    assert names.poller_filter("F160W") == "F160W"
    assert names.poller_filter("POL0UV;F435W") == "F435W-POL0UV"
    assert names.poller_filter("F606W;POL60V") == "F606W-POL60V"
    # operational SVM pollers keep the raw two-wheel string; the reader normalises it again
    assert names.normalize_filter("CLEAR1L;F814W") == "f814w"
    assert names.normalize_filter("F435W-POL0UV") == "f435w-pol0uv"


@pytest.mark.parametrize(
    "header, expected",
    [
        ({"INSTRUME": "WFC3", "FILTER": "F160W"}, "f160w"),
        ({"INSTRUME": "ACS", "FILTER1": "POL0UV", "FILTER2": "F435W"}, "f435w-pol0uv"),
        ({"INSTRUME": "ACS", "FILTER1": "F606W", "FILTER2": "POL60V"}, "f606w-pol60v"),
        ({"INSTRUME": "ACS", "FILTER1": "CLEAR1L", "FILTER2": "F814W"}, "f814w"),
        ({"INSTRUME": "ACS", "FILTER1": "F122M", "FILTER2": "N/A"}, "f122m"),
        ({"INSTRUME": "WFPC2", "FILTNAM1": "F555W", "FILTNAM2": ""}, "f555w"),
        ({"INSTRUME": "WFPC2", "FILTNAM1": "F555W", "FILTNAM2": "F814W"}, "f555w-f814w"),
        ({"instrume": "wfc3", "filter": "F606W"}, "f606w"),
    ],
)
def test_filter_from_header(header, expected):
    assert names.filter_from_header(header) == expected


def test_filter_from_astropy_header():
    hdr = fits.Header({"INSTRUME": "ACS", "FILTER1": "F606W", "FILTER2": "POL60V", "FILTER": "X"})
    assert names.filter_from_header(hdr) == "f606w-pol60v"


@pytest.mark.parametrize(
    "header",
    [
        {"INSTRUME": "STIS", "OPT_ELEM": "MIRVIS"},
        {"INSTRUME": "ACS", "FILTER1": "F606W"},
        {"INSTRUME": "WFC3"},
        {"FILTER": "F160W"},
    ],
)
def test_filter_from_header_rejections(header):
    with pytest.raises(ValueError):
        names.filter_from_header(header)


@pytest.mark.parametrize("bad", ["", "  ", ";", "F606W/X", "F606W W", None, 606])
def test_normalize_filter_rejections(bad):
    with pytest.raises(ValueError):
        names.normalize_filter(bad)


def test_normalize_filter_drops_empty_fields():
    # the reference gives '-f606w' for the first; we drop the empty field
    assert names.normalize_filter(";F606W") == "f606w"
    assert names.normalize_filter("F606W;") == "f606w"


# ------------------------------------------------------------------------------------------
# layer products (G 6.1, 6.2, 6.3, 9.8; P 1.10)

LAYERS = [
    # filename, (instrument, detector, filter, scale, ipppssoo, product type)
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits", ("wfc3", "ir", "f160w", "coarse", None, "drz")),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits", ("wfc3", "ir", "f160w", "fine", None, "drz")),
    ("hst_skycell-p0081x14y14_wfc3_uvis_f606w_all_drc.fits", ("wfc3", "uvis", "f606w", "fine", None, "drc")),
    ("hst_skycell-p0081x14y14_acs_wfc_f606w-pol60v_all_drc.fits", ("acs", "wfc", "f606w-pol60v", "fine", None, "drc")),
    ("hst_skycell-p0081x14y14_acs_hrc_f435w_all_drz.fits", ("acs", "hrc", "f435w", "fine", None, "drz")),
    ("hst_skycell-p0081x14y14_wfc3_uvis_f606w_all-ib2v01ac_flc.fits", ("wfc3", "uvis", "f606w", "fine", "ib2v01ac", "flc")),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_flt.fits", ("wfc3", "ir", "f160w", "coarse", "ib2v01ab", "flt")),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v02ab_flt.fits", ("wfc3", "ir", "f160w", "coarse", "ib2v02ab", "flt")),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits", ("wfc3", "ir", "f160w", "coarse", "ib2v01ab", "drz")),
    ("hst_skycell-p0081x14y14_wfpc2_pc_f555w_coarse-all_drz.fits", ("wfpc2", "pc", "f555w", "coarse", None, "drz")),
    ("hst_skycell-p0081x14y14_wfpc2_wfpc2_f555w_all_drz.fits", ("wfpc2", "wfpc2", "f555w", "fine", None, "drz")),
    ("hst_skycell-p0121x12y16_wfc3_ir_f110w_coarse-all_drz.fits", ("wfc3", "ir", "f110w", "coarse", None, "drz")),
]


@pytest.mark.parametrize("filename, fields", LAYERS)
def test_layer_vectors(filename, fields):
    instrument, detector, filt, scale, ipppssoo, ptype = fields
    cell = filename.split("_")[1]
    built = LayerName.for_skycell(cell, instrument, detector, filt, scale=scale,
                                  ipppssoo=ipppssoo, product_type=ptype)
    assert built.filename == filename
    parsed = LayerName.parse(filename)
    assert parsed == built
    assert parsed.skycell == cell
    assert parsed.exptime_class == "all" and parsed.year is None
    assert parsed.label == ("coarse-all" if scale == "coarse" else "all") + (f"-{ipppssoo}" if ipppssoo else "")
    assert parsed.rootname == names.rootname_from_filename(filename)
    assert parsed.basename == filename[: -len(".fits")]
    assert parsed.trailer == names.trailer_filename(filename)
    assert parsed.is_exposure == (ipppssoo is not None)


def test_layer_derived_names():
    layer = LayerName.for_skycell(CELL, "WFC3", "IR", "F160W", scale="coarse")  # poller case
    assert layer.filename == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits"
    assert layer.rootname == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all"
    assert layer.trailer == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_trl.txt"
    assert layer.trailer_log == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_trl.log"
    assert layer.ref_catalog == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_ref_cat.ecsv"
    assert layer.headerlet == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_hlet.fits"
    assert layer.rules_file == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_header_hap.rules"
    copy = layer.exposure("ib2v01ab", "flt")
    assert copy.filename == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_flt.fits"
    assert copy.layer == layer
    uvis = LayerName.for_skycell(CELL, "wfc3", "uvis", "f606w", product_type="drc")
    assert uvis.exposure("ib2v01ac", "flc").layer == uvis
    assert names.scellid(layer.skycell) == "p0081x14y14"


def test_hard_layer_names_are_unique_and_all_matches_reference():
    seen = {}
    for scale in ("fine", "coarse"):
        for cls in ("all", "short", "med", "long"):
            for year in (None, 2012, 2013):
                x = LayerName.for_skycell(CELL, "wfc3", "ir", "f160w", scale=scale,
                                          exptime_class=cls, year=year)
                assert x.filename not in seen, (x, seen.get(x.filename))
                seen[x.filename] = x
                assert LayerName.parse(x.filename) == x
    assert len(seen) == 24
    base = "hst_skycell-p0081x14y14_wfc3_ir_f160w_"
    assert base + "all_drz.fits" in seen and base + "coarse-all_drz.fits" in seen
    fine_short = LayerName.for_skycell(CELL, "wfc3", "ir", "f160w", exptime_class="short", year=2012)
    assert fine_short.filename == base + "short-2012_drz.fits"
    coarse_long = LayerName.for_skycell(CELL, "wfc3", "ir", "f160w", scale="coarse",
                                        exptime_class="long", year=2013, ipppssoo="ib2v01ab",
                                        product_type="flt")
    assert coarse_long.filename == base + "coarse-long-2013-ib2v01ab_flt.fits"


@pytest.mark.parametrize(
    "bad",
    [
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_fine-all_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all-coarse_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_flt.fits",  # copy without ipppssoo
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_trl.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all-12_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all-0999_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all-ib2v01a_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all-ib2v01abq_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_2012-all_drz.fits",
        "hst_skycell-p0081x14y14_stis_ccd_f160w_all_drz.fits",
        "hst_skycell-p0081x14y14_WFC3_ir_f160w_all_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_F160W_all_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fit",
        "hst_skycell-p0081x22y14_wfc3_ir_f160w_all_drz.fits",  # invalid sky cell
        "hst_skycell-p2644x01y01_wfc3_ir_f160w_all_drz.fits",
        "hst_skycell-p0081x14y14_wfc3_ir_f160w-ib2v01ab_all_drz.fits",  # ipppssoo-like filter
        "_wfc3_ir_f160w_all_drz.fits",
        "mymosaic__wfc3_ir_f160w_all_drz.fits",
        "wfc3_ir_f160w_all_drz.fits",
    ],
)
def test_layer_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        LayerName.parse(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": "medium"},
        {"exptime_class": "hard"},
        {"year": 12},
        {"year": "2012"},
        {"product_type": "flc"},  # no ipppssoo
        {"product_type": "fits"},
        {"ipppssoo": "ib2v01abq"},
        {"filter": "f160w_x"},
        {"filter": "f606w-j8cw03f2"},
        {"detector": "ir-x"},
        {"instrument": "stis"},
        {"prefix": "hst_skycell-p0081x00y14"},
        {"prefix": "my mosaic"},
        {"prefix": "mymosaic_"},
        {"prefix": ""},
    ],
)
def test_layer_constructor_rejections(kwargs):
    args = {"prefix": "hst_" + CELL, "instrument": "wfc3", "detector": "ir", "filter": "f160w"}
    args.update(kwargs)
    with pytest.raises(ValueError):
        LayerName(**args)


@settings(max_examples=300)
@given(layer_names())
def test_layer_round_trip(x):
    assert LayerName.parse(x.filename) == x
    assert LayerName.parse(Path("/some/dir") / x.filename) == x
    assert x.filename == x.basename + ".fits"
    assert x.rootname == names.rootname_from_filename(x.filename)
    assert x.trailer == names.trailer_filename(x.filename)
    assert x.layer.ipppssoo is None and x.layer.product_type in ("drz", "drc")


# ------------------------------------------------------------------------------------------
# custom-mosaic prefixes (G 6.5; P 4.5)

REFERENCE_PREFIXES = [
    (81, (87.27272727272727, -70.0), "hst_skycell-p0081-ra87d27272727272727-decs70d0"),
    (1974, (200.50632911392404, 30.0), "hst_skycell-p1974-ra200d50632911392404-decn30d0"),
    (0, (0.0, -89.999999999997), "hst_skycell-p0000-ra0d0-decs89d999999999997"),
    (1232, (0.0, -2.0), "hst_skycell-p1232-ra0d0-decs2d0"),
    (1322, (0.0, 2.0), "hst_skycell-p1322-ra0d0-decn2d0"),
    (121, (138.46153846153845, -66.0), "hst_skycell-p0121-ra138d46153846153845-decs66d0"),
]


@pytest.mark.parametrize("pcell, crval, expected", REFERENCE_PREFIXES)
def test_reference_auto_prefix_vectors(pcell, crval, expected):
    assert names.reference_auto_prefix(pcell, *crval) == expected
    assert names.reference_auto_prefix(pcell, *ProjectionCell(pcell).crval) == expected


def test_reference_auto_prefix_full_name():
    prefix = names.reference_auto_prefix(CELL, 87.27272727272727, -70.0)
    layer = LayerName.for_skycell(CELL, "wfc3", "uvis", "f606w", product_type="drc").with_prefix(prefix)
    assert layer.filename == "hst_skycell-p0081-ra87d27272727272727-decs70d0_wfc3_uvis_f606w_all_drc.fits"
    assert LayerName.parse(layer.filename) == layer
    assert layer.skycell is None


@pytest.mark.parametrize(
    "pcell, ra, dec, expected",
    [
        (1974, 201.9512, 26.0012, "hst_skycell-p1974-ra201d9512-decn26d0012"),  # documented example
        (1974, 201.95, 26.0, "hst_skycell-p1974-ra201d9500-decn26d0000"),  # zero-padded
        (81, 85.245385, -69.270614, "hst_skycell-p0081-ra85d2454-decs69d2706"),  # rounded
        (81, 85.24536, -69.27068, "hst_skycell-p0081-ra85d2454-decs69d2707"),
        (1232, 359.99996, -0.00004, "hst_skycell-p1232-ra0d0000-decn0d0000"),  # wrap, no -0
        (1232, -0.5, -2.0, "hst_skycell-p1232-ra359d5000-decs2d0000"),
        ("skycell-p2643x11y11", 225.0, 89.996017, "hst_skycell-p2643-ra225d0000-decn89d9960"),
    ],
)
def test_default_prefix(pcell, ra, dec, expected):
    assert names.default_prefix(pcell, ra, dec) == expected
    assert names.custom_prefix(None, projection_cell=pcell, ra=ra, dec=dec) == expected
    assert names.custom_prefix("", projection_cell=pcell, ra=ra, dec=dec) == expected
    p, ra4, dec4 = names.parse_default_prefix(expected)
    assert names.default_prefix(p, ra4, dec4) == expected


def test_default_prefix_accepts_quantities():
    assert (names.default_prefix(1974, 201.9512 * u.deg, (26.0012 * u.deg).to(u.arcmin))
            == "hst_skycell-p1974-ra201d9512-decn26d0012")


@pytest.mark.parametrize(
    "args", [(2644, 10.0, 10.0), (-1, 10.0, 10.0), (81, 10.0, 91.0), (81, float("nan"), 0.0),
             (81, "10", 0.0), (81, 1 * u.m, 0.0)],
)
def test_default_prefix_rejections(args):
    with pytest.raises(ValueError):
        names.default_prefix(*args)


@pytest.mark.parametrize(
    "bad",
    ["hst_skycell-p1974-ra201d951-decn26d0012", "hst_skycell-p1974-ra201d9512-decn26d0012x",
     "hst_skycell-p2644-ra201d9512-decn26d0012", "hst_skycell-p1974-ra201d9512-decs0d0000",
     "hst-skycell-p1974-ra201d9512-decn26d0012"],
)
def test_parse_default_prefix_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        names.parse_default_prefix(bad)


@given(st.integers(0, 2643), st.floats(-1000, 1000), st.floats(-90, 90))
def test_default_prefix_round_trip(p, ra, dec):
    prefix = names.default_prefix(p, ra, dec)
    assert re.fullmatch(r"hst_skycell-p\d{4}-ra\d{1,3}d\d{4}-dec[ns]\d{1,2}d\d{4}", prefix)
    p2, ra4, dec4 = names.parse_default_prefix(prefix)
    assert p2 == p and 0 <= ra4 < 360
    assert names.default_prefix(p2, ra4, dec4) == prefix


@pytest.mark.parametrize(
    "user, expected",
    [
        ("mymosaic", "mymosaic"),
        ("mymosaic_", "mymosaic"),  # the reference gives 'mymosai'
        ("my_mosaic_", "my_mosaic"),
        ("M31-deep.v2", "M31-deep.v2"),
    ],
)
def test_user_prefix(user, expected):
    prefix = names.custom_prefix(user)
    assert prefix == expected
    layer = LayerName.for_skycell(CELL, "wfc3", "uvis", "f606w", product_type="drc").with_prefix(prefix)
    assert layer.filename == f"{expected}_wfc3_uvis_f606w_all_drc.fits"
    assert LayerName.parse(layer.filename) == layer


def test_user_prefix_spec_vector():
    layer = LayerName("mymosaic", "wfc3", "uvis", "f606w", product_type="drc")
    assert layer.filename == "mymosaic_wfc3_uvis_f606w_all_drc.fits"
    assert layer.trailer == "mymosaic_wfc3_uvis_f606w_all_trl.txt"


@pytest.mark.parametrize("bad", ["mymosaic__", "_mymosaic", "my mosaic", "a/b", "_", 5])
def test_user_prefix_rejections(bad):
    with pytest.raises(ValueError):
        names.custom_prefix(bad)


def test_custom_prefix_needs_position_without_user_prefix():
    with pytest.raises(ValueError, match="projection_cell, ra and dec"):
        names.custom_prefix(None, projection_cell=81)


def test_prefix_containing_instrument_tokens_round_trips():
    for prefix in ("my_acs_wfc_mosaic", "wfc3_ir_f160w_all", "hst_skycell-p0081x14y14junk"):
        x = LayerName(prefix, "acs", "wfc", "f814w", product_type="drc", ipppssoo="j8cw03f2")
        assert LayerName.parse(x.filename) == x
        assert x.skycell is None


# ------------------------------------------------------------------------------------------
# hapcut names (G 6.6; P 5)

COORD_VECTORS = [
    (names.ra_token, 84.9207, "ra84d9207"),
    (names.ra_token, 84.92, "ra84d92"),
    (names.ra_token, 0.5, "ra0d5"),
    (names.ra_token, 359.99999, "ra359d9999"),
    (names.ra_token, 200.123456789, "ra200d1234"),
    (names.dec_token, -69.8516, "decs69d8516"),
    (names.dec_token, -0.5, "decs0d5"),
    (names.dec_token, -0.000123, "decs0d0001"),
    (names.ra_token, 85.25665514291263, "ra85d2566"),
    (names.dec_token, -69.14985113186759, "decs69d1498"),
    (names.dec_token, 0.5, "decn0d5"),
    (names.dec_token, 0.0, "decn0d0"),
]


@pytest.mark.parametrize("func, value, expected", COORD_VECTORS)
def test_coordinate_tokens(func, value, expected):
    assert func(value) == expected


@pytest.mark.parametrize(
    "func, value, expected",
    [
        (names.ra_token, 1e-05, "ra0d0000"),  # the reference raises IndexError
        (names.dec_token, -1e-05, "decs0d0000"),
        (names.dec_token, 1e-07, "decn0d0000"),
        (names.ra_token, 85.0, "ra85d0"),
        (names.ra_token, 360.0, "ra0d0"),  # wrapped as SkyCoord does
        (names.ra_token, -0.5, "ra359d5"),
        (names.ra_token, 84.9207 * u.deg, "ra84d9207"),
    ],
)
def test_coordinate_tokens_beyond_reference(func, value, expected):
    assert func(value) == expected


@pytest.mark.parametrize("value", [1e-05, 1.5e-10, -3e-07, 123.0, 5e-324])
def test_frac4_exponent_floats(value):
    frac = names.frac4(value)
    assert re.fullmatch(r"\d{1,4}", frac)


@given(st.floats(-90, 90).filter(lambda v: "e" not in str(v)))
def test_frac4_is_str_truncation(v):
    assert names.frac4(v) == str(v).split(".")[1][:4]
    assert names.dec_token(v) == f"dec{'s' if v < 0 else 'n'}{abs(int(v))}d{str(v).split('.')[1][:4]}"


@pytest.mark.parametrize("bad", [(0.0, 90.5), (0.0, -91.0), (float("inf"), 0.0), ("12", 0.0)])
def test_coord_token_rejections(bad):
    with pytest.raises(ValueError):
        names.coord_token(*bad)


@pytest.mark.parametrize(
    "size, radius",
    [
        (500, 354),
        (100, 71),
        (60, 43),
        ([30, 40], 25),
        (71, 51),
        ([100], 71),
        (500 * u.arcsec, 354),  # scalar Quantity: the reference raises IndexError
        (1 * u.arcmin, 43),
        ([30, 40] * u.arcsec, 25),
        ((0.5 * u.arcmin, 40 * u.arcsec), 25),
        (np.array([30.0, 40.0]), 25),
    ],
)
def test_query_radius(size, radius):
    if isinstance(size, tuple):  # a tuple of Quantities, as a Quantity
        size = u.Quantity(size)
    assert names.query_radius(size) == radius


@pytest.mark.parametrize("bad", [0, -5, [1, 2, 3], [[1, 2]], "500", 5 * u.kg, float("nan"), [], True])
def test_cutout_size_rejections(bad):
    with pytest.raises(ValueError):
        names.cutout_size_arcsec(bad)


def test_query_filename_vectors():
    assert names.query_filename(84.9207, -69.8516, 500) == "mvm_query-ra84d9207-decs69d8516_354_cutout.ecsv"
    assert names.query_filename(84.9207, -69.8516, 100) == "mvm_query-ra84d9207-decs69d8516_71_cutout.ecsv"
    assert names.query_filename(84.9207, -69.8516, 500 * u.arcsec).endswith("_354_cutout.ecsv")
    assert names.parse_query_filename("mvm_query-ra84d9207-decs69d8516_354_cutout.ecsv") == (
        "ra84d9207-decs69d8516", 354)


@pytest.mark.parametrize(
    "bad",
    ["mvm_query-ra84d9207-decs69d8516_354_cutout.csv", "mvm_query-ra84d9207-decx69d8516_354_cutout.ecsv",
     "mvm_query-ra84d9207-decs69d8516_0354_cutout.ecsv", "mvm_query-ra84d92070-decs69d8516_354_cutout.ecsv"],
)
def test_parse_query_filename_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        names.parse_query_filename(bad)


CUTOUTS = [
    # source layer product, expected cutout name (G 6.6, G 9.10)
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits", f"{CUT_PREFIX}_wfc3_ir_f160w_coarse.fits"),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits", f"{CUT_PREFIX}_wfc3_ir_f160w.fits"),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits", f"{CUT_PREFIX}_wfc3_ir_f160w_coarse-ib2v01ab.fits"),
    ("hst_skycell-p0081x14y14_acs_wfc_f606w-pol60v_all_drc.fits", f"{CUT_PREFIX}_acs_wfc_f606w-pol60v.fits"),
    ("hst_skycell-p0081x14y14_acs_wfc_f814w_all-j8cw03f2_drc.fits", f"{CUT_PREFIX}_acs_wfc_f814w-j8cw03f2.fits"),
]


@pytest.mark.parametrize("source, expected", CUTOUTS)
def test_cutout_vectors(source, expected):
    assert names.cutout_filename(source, CUT_RA, CUT_DEC) == expected
    layer = LayerName.parse(source)
    cut = CutoutName.parse(expected)
    assert cut == CutoutName.from_layer(layer, CUT_RA, CUT_DEC)
    assert (cut.skycell, cut.instrument, cut.detector, cut.filter, cut.scale, cut.ipppssoo) == (
        CELL, layer.instrument, layer.detector, layer.filter, layer.scale, layer.ipppssoo)
    assert cut.coords == "ra85d2566-decs69d1498"


def test_cutout_processing_spec_vector():
    name = "hst_cutout_skycell-p0121x12y16-ra137d8636-decs64d8783_wfc3_ir_f110w_coarse.fits"
    cut = CutoutName.parse(name)
    assert cut == CutoutName("skycell-p0121x12y16", "ra137d8636-decs64d8783", "wfc3", "ir", "f110w", "coarse")


def test_cutout_polarizer_disambiguation():
    filt = CutoutName.parse(f"{CUT_PREFIX}_acs_wfc_f606w-pol60v.fits")
    assert (filt.filter, filt.ipppssoo) == ("f606w-pol60v", None)
    expo = CutoutName.parse(f"{CUT_PREFIX}_acs_wfc_f606w-pol60v-j8cw03f2.fits")
    assert (expo.filter, expo.ipppssoo) == ("f606w-pol60v", "j8cw03f2")
    three = CutoutName.parse(f"{CUT_PREFIX}_acs_wfc_f435w-pol0uv.fits")
    assert (three.filter, three.ipppssoo) == ("f435w-pol0uv", None)


def test_hard_layer_cutouts_are_tagged():
    layer = LayerName.for_skycell(CELL, "wfc3", "ir", "f160w", exptime_class="short", year=2012)
    name = names.cutout_filename(layer, CUT_RA, CUT_DEC)
    assert name == f"{CUT_PREFIX}_wfc3_ir_f160w_short-2012.fits"
    assert CutoutName.parse(name).year == 2012
    coarse = LayerName.for_skycell(CELL, "wfc3", "ir", "f160w", scale="coarse", year=2012,
                                   ipppssoo="ib2v01ab")
    assert names.cutout_filename(coarse, CUT_RA, CUT_DEC) == f"{CUT_PREFIX}_wfc3_ir_f160w_coarse-2012-ib2v01ab.fits"


def test_cutout_of_custom_prefix_layer_is_refused():
    layer = LayerName("mymosaic", "wfc3", "ir", "f160w")
    with pytest.raises(ValueError, match="no sky-cell prefix"):
        names.cutout_filename(layer, CUT_RA, CUT_DEC)


@pytest.mark.parametrize(
    "bad",
    [
        f"{CUT_PREFIX}_wfc3_ir_f160w_fine.fits",
        f"{CUT_PREFIX}_wfc3_ir_f160w_all.fits",
        f"{CUT_PREFIX}_wfc3_ir_f160w_coarse-all.fits",
        f"{CUT_PREFIX}_wfc3_ir_f160w_coarse_x.fits",
        f"{CUT_PREFIX}_wfc3_ir.fits",
        "hst_cutout_skycell-p0081-ra85d2566-decs69d1498_wfc3_ir_f160w.fits",  # docstring form
        "hst_cutout_skycell-p0081x22y14-ra85d2566-decs69d1498_wfc3_ir_f160w.fits",
        "hst_cutout_skycell-p0081x14y14-ra85d25661-decs69d1498_wfc3_ir_f160w.fits",
        "hst_cutout_skycell-p0081x14y14-ra85d2566_wfc3_ir_f160w.fits",
    ],
)
def test_cutout_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        CutoutName.parse(bad)


COMBINED = [
    # first cutout, combined name (G 6.6, with our '_coarse' for coarse groups)
    (f"{CUT_PREFIX}_wfc3_uvis_f606w.fits", f"{COMB_PREFIX}_wfc3_uvis_f606w.fits"),
    (f"{CUT_PREFIX}_acs_wfc_f814w-j8cw03f2.fits", f"{COMB_PREFIX}_acs_wfc_f814w_j8cw03f2.fits"),
    (f"{CUT_PREFIX}_wfc3_ir_f160w-ib2v01ab.fits", f"{COMB_PREFIX}_wfc3_ir_f160w_ib2v01ab.fits"),
    (f"{CUT_PREFIX}_wfc3_ir_f160w.fits", f"{COMB_PREFIX}_wfc3_ir_f160w.fits"),
    (f"{CUT_PREFIX}_wfc3_ir_f160w_coarse.fits", f"{COMB_PREFIX}_wfc3_ir_f160w_coarse.fits"),
    (f"{CUT_PREFIX}_wfc3_ir_f160w_coarse-ib2v01ab.fits", f"{COMB_PREFIX}_wfc3_ir_f160w_coarse_ib2v01ab.fits"),
    (f"{CUT_PREFIX}_acs_wfc_f606w-pol60v.fits", f"{COMB_PREFIX}_acs_wfc_f606w-pol60v.fits"),
    (f"{CUT_PREFIX}_acs_wfc_f606w-pol60v-j8cw03f2.fits", f"{COMB_PREFIX}_acs_wfc_f606w-pol60v_j8cw03f2.fits"),
]


@pytest.mark.parametrize("cutout, expected", COMBINED)
def test_combined_vectors(cutout, expected):
    assert names.combined_filename(cutout) == expected
    cut = CutoutName.parse(cutout)
    comb = CombinedName.parse(expected)
    assert comb == cut.combined()
    assert (comb.filter, comb.scale, comb.ipppssoo) == (cut.filter, cut.scale, cut.ipppssoo)


def test_coarse_and_fine_cutouts_are_grouped_apart():
    fine = CutoutName.parse(f"{CUT_PREFIX}_wfc3_ir_f160w.fits")
    coarse = CutoutName.parse(f"{CUT_PREFIX}_wfc3_ir_f160w_coarse.fits")
    assert fine.group_key != coarse.group_key
    assert fine.combined().filename != coarse.combined().filename
    assert CombinedName.parse(f"{COMB_PREFIX}_wfc3_ir_f160w_coarse.fits").scale == "coarse"
    assert CombinedName.parse(f"{COMB_PREFIX}_wfc3_ir_f160w.fits").scale == "fine"


def test_combined_polarizer_is_not_an_exposure():
    comb = CombinedName.parse(f"{COMB_PREFIX}_acs_wfc_f606w-pol60v.fits")
    assert (comb.filter, comb.ipppssoo) == ("f606w-pol60v", None)
    # the reference's mis-parsed name treats the polarizer as an ipppssoo: refused here
    with pytest.raises(ValueError, match="pol60v"):
        CombinedName.parse(f"{COMB_PREFIX}_acs_wfc_f606w_pol60v.fits")


@pytest.mark.parametrize(
    "bad",
    [
        f"{COMB_PREFIX}_wfc3_ir_f160w_fine.fits",
        f"{COMB_PREFIX}_wfc3_ir_f160w_ib2v01ab_coarse.fits",  # order: tag before ipppssoo
        f"{COMB_PREFIX}_wfc3_ir_f160w_coarse_ib2v01ab_x.fits",
        f"{COMB_PREFIX}_wfc3_ir.fits",
        f"{COMB_PREFIX}_wfc3_ir_f160w-ib2v01ab.fits",  # cutout-style '-' before the ipppssoo
        "hst_combined_skycell-ra85d2566-decs69d1498_wfc3_ir_f160w.fits",
        "hst_combined_skycells-ra85d2566_wfc3_ir_f160w.fits",
    ],
)
def test_combined_rejections(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        CombinedName.parse(bad)


@st.composite
def cutout_names(draw):
    return CutoutName(
        draw(skycells), draw(coords), draw(instruments), draw(detectors), draw(filters),
        scale=draw(scales), exptime_class=draw(classes), year=draw(years),
        ipppssoo=draw(st.none() | ipppssoos),
    )


@settings(max_examples=300)
@given(cutout_names())
def test_cutout_and_combined_round_trip(cut):
    assert CutoutName.parse(cut.filename) == cut
    comb = cut.combined()
    assert CombinedName.parse(comb.filename) == comb
    assert (comb.scale, comb.exptime_class, comb.year, comb.ipppssoo) == (
        cut.scale, cut.exptime_class, cut.year, cut.ipppssoo)


@given(layer_names().filter(lambda x: x.skycell is not None), st.floats(-400, 400), st.floats(-90, 90))
def test_cutout_from_layer_round_trip(layer, ra, dec):
    cut = CutoutName.parse(names.cutout_filename(layer, ra, dec))
    assert (cut.skycell, cut.instrument, cut.detector, cut.filter, cut.scale, cut.exptime_class,
            cut.year, cut.ipppssoo) == (layer.skycell, layer.instrument, layer.detector, layer.filter,
                                        layer.scale, layer.exptime_class, layer.year, layer.ipppssoo)
    assert cut.coords == names.coord_token(ra, dec)


# ------------------------------------------------------------------------------------------
# comparisons with the reference implementation (skipped without drizzlepac)


@pytest.fixture(scope="module")
def poller_utils():
    return pytest.importorskip("drizzlepac.haputils.poller_utils")


@pytest.fixture(scope="module")
def hapmultisequencer():
    return pytest.importorskip("drizzlepac.hapmultisequencer")


@pytest.mark.reference
@pytest.mark.parametrize("raw, expected", FILTERS)
def test_filter_vectors_match_reference(poller_utils, raw, expected):
    assert poller_utils.determine_filter_name(raw) == expected == names.normalize_filter(raw)


@pytest.mark.reference
@given(st.lists(st.sampled_from(["F606W", "POL60V", "pol0uv", "CLEAR1L", "CLEAR2S", "N/A", "F435W",
                                 "F122M", "FR656N", "F555W", "POL120UV"]), min_size=1, max_size=3))
def test_normalize_filter_matches_reference(poller_utils, fields):
    raw = ";".join(fields)
    assert names.normalize_filter(raw) == poller_utils.determine_filter_name(raw)


def _reference_renamed(hapmultisequencer, layer, crval, user_prefix=None):
    """Run the reference's rename_output_products on a minimal stand-in layer object."""
    root = layer.rootname
    obj = SimpleNamespace(
        drizzle_filename=layer.filename, exposure_name=layer.skycell,
        manifest_name=names.manifest_filename(layer.skycell), refname=layer.ref_catalog,
        trl_filename=layer.trailer, trl_logname=root + "_trl.log",
        meta_wcs=SimpleNamespace(wcs=SimpleNamespace(crval=np.array(crval))), edp_list=[],
    )
    hapmultisequencer.rename_output_products(obj, output_file_prefix=user_prefix)
    return obj


@pytest.mark.reference
def test_reference_auto_prefix_matches_reference_for_every_projection_cell(hapmultisequencer):
    for p in range(names.N_PROJECTION_CELLS):
        cell = names.format_skycell(p, 11, 11)
        layer = LayerName.for_skycell(cell, "wfc3", "uvis", "f606w", product_type="drc")
        crval = ProjectionCell(p).crval
        ref = _reference_renamed(hapmultisequencer, layer, crval)
        ours = layer.with_prefix(names.reference_auto_prefix(p, *crval))
        assert ref.drizzle_filename == ours.filename, p
        assert ref.trl_filename == ours.trailer, p
        assert ref.manifest_name == names.manifest_filename(cell), p


@pytest.mark.reference
def test_user_prefix_against_reference(hapmultisequencer):
    layer = LayerName.for_skycell(CELL, "wfc3", "uvis", "f606w", product_type="drc")
    ref = _reference_renamed(hapmultisequencer, layer, (87.27272727272727, -70.0), "mymosaic")
    assert ref.drizzle_filename == layer.with_prefix(names.custom_prefix("mymosaic")).filename
    ref = _reference_renamed(hapmultisequencer, layer, (87.27272727272727, -70.0), "mymosaic_")
    assert ref.drizzle_filename == "mymosai_wfc3_uvis_f606w_all_drc.fits"  # the reference bug
    assert layer.with_prefix(names.custom_prefix("mymosaic_")).filename == "mymosaic_wfc3_uvis_f606w_all_drc.fits"


def test_negative_zero_ra():
    assert names.default_prefix(0, -0.0, -0.0) == "hst_skycell-p0000-ra0d0000-decn0d0000"
    assert names.ra_token(-0.0) == "ra0d0"
