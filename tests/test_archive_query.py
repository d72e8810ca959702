"""Region queries against the local MAST server (tests/mastserver.py) serving simulated
exposures as MAST's CAOM services (tests/mast_caom.py): region parsing, the request
astroquery sends, the sky-cell and box filters, proprietary rows, FLC over FLT, the product
table, the kept answer and ``mvmflow fetch``."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from mast_caom import CaomArchive, archive_of
from mastserver import MastServer

from mvmflow.archive.query import (
    DEFAULT_INSTRUMENTS,
    QueryError,
    RegionError,
    cached_query,
    parse_region,
    query_key,
    query_region,
)
from mvmflow.archive.table import (
    COLUMNS,
    ProductTableError,
    mirror_path,
    read_table,
    to_fetch,
    write_table,
)
from mvmflow.simulate.presets import DEMO_CENTER

RA, DEC = DEMO_CENTER


@pytest.fixture(scope="module")
def exposures(tmp_path_factory):
    """The four exposures of the ``tiny_noerr`` preset (headers and WCS are what matter)."""
    from mvmflow.simulate import simulate

    data = tmp_path_factory.mktemp("query_data")
    return sorted(Path(p) for p in simulate("tiny_noerr", data, headers_only=True).exposures)


@pytest.fixture
def server(exposures):
    with MastServer() as srv:
        archive_of(exposures).install(srv)
        yield srv


def _mashups(server, service=None):
    return [r.mashup for r in server.requests
            if r.path == "/api/v0/invoke" and (service is None or r.mashup["service"] == service)]


# ---- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, words", [
    ({"ra": 84.9, "dec": -69.1}, ["exactly one of radius (a cone) or size"]),
    ({"dec": -69.1, "radius": 30}, ["missing 'ra'"]),
    ({"ra": 400, "dec": 0, "radius": 30}, ["inputs.mast.ra", "[0, 360)"]),
    ({"ra": 84.9, "dec": -95, "radius": 30}, ["inputs.mast.dec", "[-90, 90]"]),
    ({"ra": 84.9, "dec": -69.1, "radius": -5}, ["inputs.mast.radius", "positive"]),
    ({"ra": 84.9, "dec": -69.1, "radius": "2 parsec"}, ["inputs.mast.radius", "'2 parsec'"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 100000}, ["inputs.mast.radius", "numbers are arcsec"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 30, "size": 30}, ["exactly one of radius"]),
    ({"ra": 84.9, "dec": -69.1, "size": [1, 2, 3]}, ["inputs.mast.size", "[width, height]"]),
    ({"ra": "north", "dec": -69.1, "radius": 30}, ["inputs.mast.ra", "'north'"]),
    ({"skycell": "skycell-p9999x01y01"}, ["inputs.mast.skycell", "skycell-p9999x01y01"]),
    ({"skycell": "skycell-p0081x14y14", "ra": 84.9}, ["skycell or ra"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 30, "instrument": ["ACS/WFC"]},
     ["unknown key 'instrument'", "did you mean 'instruments'"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 30, "instruments": ["WFPC2/WFC"]},
     ["inputs.mast.instruments", "'WFPC2/WFC'"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 30, "dates": ["2020-01-01", "2010-01-01"]},
     ["inputs.mast.dates", "after"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 30, "dates": ["last year", "2010-01-01"]},
     ["inputs.mast.dates", "'last year'", "ISO"]),
    ({"ra": 84.9, "dec": -69.1, "radius": 30, "dates": "2010-01-01"}, ["[start, end]"]),
    ("84.9 -69.1", ["not a mapping"]),
])
def test_bad_regions_are_named_in_one_line(spec, words):
    with pytest.raises(RegionError) as info:
        parse_region({"mast": spec})
    text = str(info.value)
    assert "\n" not in text
    for word in words:
        assert word in text, (word, text)


def test_region_units_and_forms():
    cone = parse_region({"mast": {"ra": "5h39m41s", "dec": "-69d09m00s", "radius": "2 arcmin"}})
    assert cone.kind == "cone"
    assert cone.ra == pytest.approx((5 + 39 / 60 + 41 / 3600) * 15)
    assert cone.dec == pytest.approx(-69.15)
    assert cone.radius == pytest.approx(120.0)
    assert cone.instruments == DEFAULT_INSTRUMENTS
    assert parse_region({"mast": {"ra": "84.92 deg", "dec": -69.15, "radius": 30}}).ra == 84.92
    box = parse_region({"ra": 10, "dec": 20, "size": 30, "filters": ["f814w", "F814W"],
                        "dates": ["2005-01-01", "2007-06-30T12:00:00"]})
    assert box.size == (30.0, 30.0) and box.filters == ("F814W",)
    # the query circle encloses the box: its corner is ~21.2" from the centre
    assert box.radius == pytest.approx(15 * math.sqrt(2), rel=1e-4)
    cell = parse_region({"mast": {"skycell": "skycell-p0081x14y14"}})
    assert cell.kind == "skycell" and 0.17 * 3600 < cell.radius < 0.18 * 3600
    # the normalised query (and so the key) does not depend on how a value was written
    same = parse_region({"mast": {"ra": 84.92, "dec": -69.15, "radius": 30}})
    assert query_key(same, "http://x") == query_key(
        parse_region({"mast": {"ra": "84.92deg", "dec": "-69.15", "radius": "0.5 arcmin"}}),
        "http://x/")
    assert query_key(same, "http://x") != query_key(same, "http://y")


# ---- the query ----------------------------------------------------------------------------

def test_query_sends_the_expected_filters_and_lists_flc_flt_only(server, exposures):
    from astroquery.mast import Observations

    before = Observations._portal_api_connection.MAST_REQUEST_URL
    region = parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 120,
                                    "instruments": ["ACS/WFC", "WFC3/IR"], "filters": ["F814W",
                                                                                      "F110W"],
                                    "dates": ["2005-01-01", "2015-12-31"]}})
    table = query_region(region, server.url)
    (cone,) = _mashups(server, "Mast.Caom.Filtered.Position")
    filters = {f["paramName"]: f["values"] for f in cone["params"]["filters"]}
    assert filters["obs_collection"] == ["HST"]
    assert filters["instrument_name"] == ["ACS/WFC", "WFC3/IR"]
    assert filters["dataproduct_type"] == ["image"]
    assert filters["intentType"] == ["science"]
    assert filters["filters"] == ["F814W", "F110W"]
    (span,) = filters["t_min"]
    assert span["min"] == pytest.approx(53371.0) and span["max"] == pytest.approx(57387.0)
    ra, dec, radius = (float(v) for v in cone["params"]["position"].split(","))
    assert (ra, dec, radius) == (pytest.approx(RA), pytest.approx(DEC), pytest.approx(120 / 3600))
    (products,) = _mashups(server, "Mast.Caom.Products")
    assert len(products["params"]["obsid"].split(",")) == 4
    # decoys (RAW, SPT, the visit's DRC) dropped; one row per exposure file
    assert list(table["filename"]) == sorted(p.name for p in exposures)
    assert [c for c, _ in COLUMNS] == table.colnames
    row = table[list(table["filename"]).index("j9n501abq_flc.fits")]
    assert (row["instrument"], row["detector"], row["filter"]) == ("ACS", "WFC", "F814W")
    assert row["exptime"] == 300.0 and row["date_obs"].startswith("2006-03-14T05:21")
    assert row["dataURI"] == "mast:HST/product/j9n501abq_flc.fits"
    assert row["size"] == exposures[2].stat().st_size and row["status"] == "fetch"
    assert row["rights"] == "PUBLIC" and row["checksum"] == ""
    assert table.meta["query"]["radius_arcsec"] == 120.0
    assert table.meta["mast_url"] == server.url and table.meta["queried"]
    # the global astroquery instance still points at the real archive
    assert Observations._portal_api_connection.MAST_REQUEST_URL == before
    assert before.startswith("https://mast.stsci.edu")


def test_products_are_asked_in_batches(server):
    region = parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 120}})
    table = query_region(region, server.url, batch_size=3)
    batches = [m["params"]["obsid"].split(",") for m in _mashups(server, "Mast.Caom.Products")]
    assert [len(b) for b in batches] == [3, 1]
    assert len(table) == 4


def _shifted(archive: CaomArchive, source: Path, name: str, ra: float, dec: float,
             half: float = 1.0):
    """An observation of ``source`` whose footprint is a small square (``half`` arcsec) at
    (ra, dec)."""
    obs = archive.add_exposure(source, name=name, decoys=False)
    h = half / 3600.0
    c = math.cos(math.radians(dec))
    corners = [(ra - h / c, dec - h), (ra + h / c, dec - h), (ra + h / c, dec + h),
               (ra - h / c, dec + h)]
    obs["s_region"] = "POLYGON ICRS " + " ".join(f"{a:.9f} {b:.9f}" for a, b in corners)
    obs["s_ra"], obs["s_dec"] = ra, dec
    obs["obs_id"] = name.split("_")[0]
    return obs


def test_skycell_region_keeps_only_rows_over_the_cell(exposures):
    from mvmflow.grid import SkyCell, sky_cells_at

    cell = SkyCell.from_name("skycell-p0081x14y14")
    corners = cell.footprint()
    ra0, dec0 = cell.center
    # beyond the cell's first corner along the diagonal: inside the enclosing circle only
    far = corners[0] + 0.05 * (corners[0] - np.array([ra0, dec0]))
    near = corners[0] - 0.05 * (corners[0] - np.array([ra0, dec0]))
    assert "skycell-p0081x14y14" not in sky_cells_at(*far)
    assert "skycell-p0081x14y14" in sky_cells_at(*near)
    archive = CaomArchive()
    _shifted(archive, exposures[0], "ibout1aaq_flt.fits", *far)
    _shifted(archive, exposures[0], "ibinn1aaq_flt.fits", *near)
    with MastServer() as srv:
        archive.install(srv)
        table = query_region(parse_region({"mast": {"skycell": cell.name}}), srv.url)
        (cone,) = _mashups(srv, "Mast.Caom.Filtered.Position")
    assert list(table["filename"]) == ["ibinn1aaq_flt.fits"]
    # both were returned by the archive: the circle enclosing the cell holds both
    radius = float(cone["params"]["position"].split(",")[2])
    assert radius > max(math.dist((ra0, dec0), corners[0]) * 0.3, 0.17)
    assert table.meta["query"] == {"kind": "skycell", "skycell": cell.name,
                                   "instruments": sorted(DEFAULT_INSTRUMENTS), "filters": [],
                                   "dates": None}


def test_box_width_is_a_true_angle_at_any_declination(exposures):
    """At Dec -69 a degree of RA is 0.36 degree on the sky: a 60" box keeps a footprint 25"
    east of its centre (70" of RA) and drops one 35" east (98" of RA)."""
    c = math.cos(math.radians(DEC))
    archive = CaomArchive()
    _shifted(archive, exposures[0], "ibeas1aaq_flt.fits", RA + 25 / 3600 / c, DEC)
    _shifted(archive, exposures[0], "ibeas2aaq_flt.fits", RA + 35 / 3600 / c, DEC)
    _shifted(archive, exposures[0], "ibnor1aaq_flt.fits", RA, DEC + 25 / 3600)
    _shifted(archive, exposures[0], "ibnor2aaq_flt.fits", RA, DEC + 35 / 3600)
    with MastServer() as srv:
        archive.install(srv)
        table = query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "size": 60}}),
                             srv.url)
        wide = query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "size": [80, 60]}}),
                            srv.url)
    assert sorted(table["filename"]) == ["ibeas1aaq_flt.fits", "ibnor1aaq_flt.fits"]
    assert sorted(wide["filename"]) == ["ibeas1aaq_flt.fits", "ibeas2aaq_flt.fits",
                                        "ibnor1aaq_flt.fits"]


def test_proprietary_rows_are_listed_not_fetched(exposures, tmp_path):
    archive = CaomArchive()
    archive.add_exposure(exposures[0])
    archive.add_exposure(exposures[1], rights="EXCLUSIVE_ACCESS")
    archive.add_exposure(exposures[2], release_mjd=99999.0)  # released in 2132
    with MastServer() as srv:
        archive.install(srv)
        table = query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 120}}),
                             srv.url)
        status = dict(zip(table["filename"], table["status"], strict=True))
        assert status == {exposures[0].name: "fetch", exposures[1].name: "proprietary",
                          exposures[2].name: "proprietary"}
        release = table[list(table["filename"]).index(exposures[2].name)]["release"]
        assert release.startswith("2132-")
        assert [r["filename"] for r in to_fetch(table)] == [exposures[0].name]
        # mvmflow fetch of that table asks for the public file only
        path = tmp_path / "query.ecsv"
        write_table(table, path)
        srv.reset_requests()
        code = _fetch(["--table", str(path), "--mirror", str(tmp_path / "m"), "--mast-url",
                       srv.url])
        uris = [r.param("uri") for r in srv.requests]
    assert code == 0
    assert uris == [f"mast:HST/product/{exposures[0].name}"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [exposures[0].name]


def test_flt_of_a_fetched_flc_is_listed_as_skipped(exposures):
    flc = next(p for p in exposures if p.name.endswith("_flc.fits"))
    archive = CaomArchive()
    obs = archive.add_exposure(flc)
    archive.add_exposure(flc, name=flc.name.replace("_flc", "_flt"), obsid=obs["obsid"],
                         decoys=False)
    ir = next(p for p in exposures if p.name.startswith("i"))
    archive.add_exposure(ir)  # an FLT without an FLC: fetched
    with MastServer() as srv:
        archive.install(srv)
        table = query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 120}}),
                             srv.url)
    status = dict(zip(table["filename"], table["status"], strict=True))
    assert status[flc.name] == "fetch"
    assert status[ir.name] == "fetch"
    twin = status[flc.name.replace("_flc", "_flt")]
    assert twin.startswith("skipped: ") and "FLC" in twin
    assert len(table) == 3


def test_query_error_names_the_url(tmp_path):
    with MastServer() as srv:  # no CAOM service: the portal answers with an error
        url = srv.url
        with pytest.raises(QueryError, match=f"MAST query at {url} failed"):
            query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 30}}), url)
    with pytest.raises(QueryError, match=f"{url}"):  # nobody listens any more
        query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 30}}), url,
                     timeout=5)


# ---- the product table and the kept answer ------------------------------------------------

def test_product_table_round_trip(server, exposures, tmp_path):
    old = os.umask(0o027)
    try:
        table = query_region(parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 120}}),
                             server.url)
        path = write_table(table, tmp_path / "mast" / "query.ecsv")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["query.ecsv"]  # no temporary left
    back = read_table(path)
    assert back.colnames == table.colnames
    for name in table.colnames:
        assert list(back[name]) == list(table[name]), name
    assert back.meta == table.meta
    assert mirror_path(tmp_path / "mirror", "j9n501abq_flc.fits") == \
        tmp_path / "mirror" / "j9n501abq_flc.fits"
    with pytest.raises(ValueError, match="not a plain file name"):
        mirror_path(tmp_path, "../x.fits")
    other = tmp_path / "other.ecsv"
    from astropy.table import Table

    Table({"a": [1]}).write(other, format="ascii.ecsv")
    with pytest.raises(ProductTableError, match=f"{other}: not an mvmflow product table"):
        read_table(other)
    with pytest.raises(ProductTableError, match="no such product table"):
        read_table(tmp_path / "nope.ecsv")


def test_kept_answer_is_reused_without_a_request(server, tmp_path):
    region = parse_region({"mast": {"ra": RA, "dec": DEC, "radius": 120}})
    first, kept = cached_query(region, server.url, tmp_path / "queries")
    assert not kept and server.count("/api/v0/invoke") == 2
    server.reset_requests()
    again, kept = cached_query(region, server.url, tmp_path / "queries")
    assert kept and server.count() == 0
    assert list(again["filename"]) == list(first["filename"])
    assert again.meta["queried"] == first.meta["queried"]  # when the archive was asked
    _, kept = cached_query(region, server.url, tmp_path / "queries", requery=True)
    assert not kept and server.count("/api/v0/invoke") == 2


def test_config_check_reports_a_bad_region_with_its_source(tmp_path):
    from mvmflow.config import ConfigError, check_config

    root = Path(__file__).resolve().parents[1]
    config = {"inputs": {"mast": {"ra": 84.9, "dec": -69.1, "radius": "big"}}, "outdir": "r"}
    with pytest.raises(ConfigError, match=r"inputs\.mast\.radius: cannot read 'big'"):
        check_config(config, root / "config" / "schema.yaml")
    config = {"inputs": {"mast": {"ra": 84.9, "dec": -69.1, "radius": 30}}, "outdir": "r"}
    check_config(config, root / "config" / "schema.yaml")
    assert config["archive"]["transfers"] == 4 and config["archive"]["requery"] is False
    config = {"inputs": {"region": {}}, "outdir": "r"}
    with pytest.raises(ConfigError, match="inputs"):
        check_config(config, root / "config" / "schema.yaml")
    table = tmp_path / "list.ecsv"
    table.write_text("a b\n")
    with pytest.raises(ConfigError, match="not a product table"):
        check_config({"inputs": str(table), "outdir": "r"}, root / "config" / "schema.yaml")


# ---- mvmflow fetch ------------------------------------------------------------------------

def _fetch(argv):
    from mvmflow.cli import main

    return main(["fetch", *argv])


def test_fetch_fills_the_mirror_then_makes_no_request(server, exposures, tmp_path, capsys):
    mirror = tmp_path / "mirror"
    args = ["--ra", str(RA), "--dec", str(DEC), "--radius", "2 arcmin", "--mirror", str(mirror),
            "--mast-url", server.url, "--workers", "2"]
    assert _fetch(args) == 0
    for path in exposures:
        assert (mirror / path.name).read_bytes() == path.read_bytes()
    err = capsys.readouterr().err
    assert "4 of 4 files" in err and "0 already there, 4 fetched" in err
    server.reset_requests()
    assert _fetch(args) == 0
    assert server.count() == 0
    assert "4 already there, 0 fetched" in capsys.readouterr().err


def test_fetch_names_a_file_that_failed(server, exposures, tmp_path, capsys):
    """A config file as the source; one file answers 500 every time: the others arrive, the
    exit status is 1 and stderr names the file."""
    bad = exposures[0].name
    server.add_fault(f"mast:HST/product/{bad}", *["500"] * 10)
    config = tmp_path / "run.yaml"
    config.write_text(f"inputs: {{mast: {{ra: {RA}, dec: {DEC}, radius: 120}}}}\n"
                      f"resources: {tmp_path / 'res'}\n"
                      f"archive: {{mast_url: '{server.url}', retries: 2, backoff: 0.01}}\n")
    assert _fetch(["--configfile", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"failed: {bad}: HTTP 500" in err and "3 of 4 files" in err
    arrived = sorted(p.name for p in (tmp_path / "res" / "mast").glob("*.fits"))
    assert arrived == sorted(p.name for p in exposures[1:])
    assert not list((tmp_path / "res" / "mast").glob(f"*{bad}*"))  # nothing under its name
    assert server.count("/api/v0.1/Download") == 3 + 3  # three attempts of the bad file
    # the usage errors
    assert _fetch(["--configfile", str(config), "--table", "x.ecsv"]) == 2
    shutil.rmtree(tmp_path / "res")


def test_inputs_are_the_files_that_arrived(tmp_path):
    from mvmflow.archive.table import read_missing, write_missing, write_record
    from mvmflow.inputs import inputs_from_records

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "ib0001aaq_flt.fits").write_bytes(b"x")
    records = [
        write_record(tmp_path / "r1.json", "ib0001aaq_flt.fits", mirror / "ib0001aaq_flt.fits"),
        write_record(tmp_path / "r2.json", "ib0002aaq_flt.fits", None,
                     error="ib0002aaq_flt.fits: HTTP 500, after 5 attempts (http://x)"),
        # arrived once, but no longer in the mirror
        write_record(tmp_path / "r3.json", "ib0003aaq_flt.fits", mirror / "ib0003aaq_flt.fits"),
    ]
    table, missing = inputs_from_records(records)
    assert table == {"ib0001aaq_flt": str((mirror / "ib0001aaq_flt.fits").resolve())}
    assert [name for name, _ in missing] == ["ib0002aaq_flt.fits", "ib0003aaq_flt.fits"]
    assert "HTTP 500" in missing[0][1] and "no longer in the mirror" in missing[1][1]
    report = write_missing([(n, "failed", r) for n, r in missing]
                           + [("ib0004aaq_flt.fits", "proprietary", "not public")],
                           tmp_path / "missing.ecsv")
    assert read_missing(report) == missing  # proprietary files are not failures
    assert read_missing(write_missing([], tmp_path / "none.ecsv")) == []
