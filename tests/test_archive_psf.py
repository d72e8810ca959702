"""mvmflow.archive.psf against the local MAST server: the PSF databases' service requests, the
notebook's dataURIs, and cutout downloads by single requests, bundles and a pool."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from mastserver import mast_server  # noqa: F401 - the fixture

from mvmflow.archive import psf
from mvmflow.archive.hap import ArchiveError
from mvmflow.cli import main

FIELDS = {
    "UVIS": [("id", "int"), ("rootname", "string"), ("filter", "string"), ("proptype", "string"),
             ("psf_x_center", "float"), ("psf_y_center", "float"), ("x_cal", "float"),
             ("y_cal", "float"), ("chip", "string"), ("qfit", "float"),
             ("n_sat_pixels", "int"), ("subarray", "int")],
    "WFPC2": [("id", "int"), ("rootname", "string"), ("filter_1", "string"),
              ("filter_2", "string"), ("psf_x_center", "float"), ("psf_y_center", "float"),
              ("chip", "string"), ("qfit", "float"), ("n_sat_pixels", "int"),
              ("subarray", "int")],
}
FIELDS["IR"] = FIELDS["UVIS"]


def _row(detector, iden, root, filt, x, y, chip, qfit, subarray=0):
    row = {"id": iden, "rootname": root, "psf_x_center": x, "psf_y_center": y, "chip": chip,
           "qfit": qfit, "n_sat_pixels": 0 if qfit > 0 else 12, "subarray": subarray}
    if detector == "WFPC2":
        row.update(filter_1=filt, filter_2="")
    else:
        row.update(filter=filt, proptype="GO", x_cal=x, y_cal=y)
    return row


SOURCES = {
    "UVIS": [
        _row("UVIS", 101, "idxa01abq", "F606W", 100.5, 200.25, "2", 0.05),       # chip 2
        _row("UVIS", 102, "idxa01abq", "F606W", 1500.0, 3000.5, "1", 0.0),       # chip 1, high y
        _row("UVIS", 103, "idxa01acq", "F606W", 17.0, 1000.0, "1", 0.2),         # chip 1, low y
        _row("UVIS", 104, "idxa02abq", "F606W", 50.0, 60.0, "2", 0.1, subarray=1),
        _row("UVIS", 105, "idxa03abq", "F814W", 70.0, 80.0, "2", 0.1),
    ],
    "IR": [_row("IR", 201, "iexb01abq", "F160W", 500.75, 600.5, "1", 0.3)],
    "WFPC2": [_row("WFPC2", 301, "u5kt0101r", "F555W", 400.0, 401.5, "3", 0.1)],
}

#: The dataURIs the notebook (mast_api_psf.make_dataURIs) builds for the UVIS sources
#: 101-103 and 105 with file suffixes ["flt", "flc"] and sizes 51/101, the IR source (raw) and
#: the WFPC2 source (c0m): x, y = psf_x/y_center - 1; UVIS chip 2 -> [1], chip 1 -> [4] and
#: y - 2048 when y >= 2051; IR, WFPC2 -> [chip]; 51 when qfit > 0, else 101.
BASE3, BASE2 = "mast:WFC3PSF/url/cgi-bin/fitscut.cgi?", "mast:WFPC2PSF/url/cgi-bin/fitscut.cgi?"
NOTEBOOK = {
    "UVIS": [
        BASE3 + "red=idxa01abq_flt[1]&size=51&x=99.5&y=199.25&format=fits/idxa01abq_101_F606W_flt_cutout.fits",
        BASE3 + "red=idxa01abq_flc[1]&size=51&x=99.5&y=199.25&format=fits/idxa01abq_101_F606W_flc_cutout.fits",
        BASE3 + "red=idxa01abq_flt[4]&size=101&x=1499.0&y=951.5&format=fits/idxa01abq_102_F606W_flt_cutout.fits",
        BASE3 + "red=idxa01abq_flc[4]&size=101&x=1499.0&y=951.5&format=fits/idxa01abq_102_F606W_flc_cutout.fits",
        BASE3 + "red=idxa01acq_flt[4]&size=51&x=16.0&y=999.0&format=fits/idxa01acq_103_F606W_flt_cutout.fits",
        BASE3 + "red=idxa01acq_flc[4]&size=51&x=16.0&y=999.0&format=fits/idxa01acq_103_F606W_flc_cutout.fits",
        BASE3 + "red=idxa03abq_flt[1]&size=51&x=69.0&y=79.0&format=fits/idxa03abq_105_F814W_flt_cutout.fits",
        BASE3 + "red=idxa03abq_flc[1]&size=51&x=69.0&y=79.0&format=fits/idxa03abq_105_F814W_flc_cutout.fits",
    ],
    "IR": [BASE3 + "red=iexb01abq_raw[1]&size=51&x=499.75&y=599.5&format=fits/iexb01abq_201_F160W_raw_cutout.fits"],
    "WFPC2": [BASE2 + "red=u5kt0101r_c0m[3]&size=51&x=399.0&y=400.5&format=fits/u5kt0101r_301_F555W_c0m_cutout.fits"],
}


def _matches(row, cond) -> bool:
    value = row[cond["paramName"]]
    for v in cond["values"]:
        if isinstance(v, dict):
            if v["min"] <= value <= v["max"]:
                return True
        elif str(v) == str(value):
            return True
    return False


def _service(detector):
    def handler(params):
        fields = [{"name": n, "type": t} for n, t in FIELDS[detector]]
        rows = [r for r in SOURCES[detector] if all(_matches(r, c) for c in params["filters"])]
        if params["columns"] != "*":
            keep = params["columns"].split(",")
            fields = [f for f in fields if f["name"] in keep]
            rows = [{k: r[k] for k in keep} for r in rows]
        return fields, rows
    return handler


def _cutout_bytes(uri: str) -> bytes:
    """What fitscut would give for ``uri``: a size x size image; the header says what was cut."""
    query = parse_qs(uri.split("?", 1)[1].rsplit("/", 1)[0])
    red, size = query["red"][0], int(query["size"][0])
    hdu = fits.PrimaryHDU(np.full((size, size), float(query["x"][0]), dtype=np.float32))
    hdu.header.update(RED=red, CUTX=float(query["x"][0]), CUTY=float(query["y"][0]))
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


@pytest.fixture
def server(mast_server):  # noqa: F811 - the fixture
    for detector, service in psf.SERVICES.items():
        mast_server.add_service(service, _service(detector))
    for uris in NOTEBOOK.values():
        for uri in uris:
            mast_server.add_file(uri, _cutout_bytes(uri))
    return mast_server


def _mashups(server, service):
    return [r.mashup for r in server.requests
            if r.path == "/api/v0/invoke" and r.mashup["service"] == service]


# -- the query ------------------------------------------------------------------------------

def test_query_sends_the_notebooks_request(server):
    table = psf.query("uvis", {"filter": ["F606W"], "qfit": {"min": 0, "max": 0.1}},
                      url=server.url)
    (mashup,) = _mashups(server, "Mast.Catalogs.Filtered.Wfc3Psf.Uvis")
    # the notebook: Mast.service_request(service, {'columns': '*', 'filters': set_filters(...)})
    # with set_filters({'filter': ['F606W'], 'qfit': set_min_max(0, 0.1)})
    assert mashup["params"] == {"columns": "*", "filters": [
        {"paramName": "filter", "values": ["F606W"]},
        {"paramName": "qfit", "values": [{"min": 0, "max": 0.1}]}]}
    assert sorted(table["id"]) == [101, 102, 104]
    assert table.meta["detector"] == "UVIS"


def test_wfpc2_filter_is_filter_1(server):
    table = psf.query("WFPC2", {"filter": "F555W", "chip": ["3", "4"]},
                      columns=["id", "rootname", "filter", "psf_x_center"], url=server.url)
    (mashup,) = _mashups(server, "Mast.Catalogs.Filtered.Wfpc2Psf.Uvis")
    assert mashup["params"] == {"columns": "id,rootname,filter_1,psf_x_center", "filters": [
        {"paramName": "filter_1", "values": ["F555W"]},
        {"paramName": "chip", "values": ["3", "4"]}]}
    assert table.colnames == ["id", "rootname", "filter_1", "psf_x_center"]
    assert list(table["id"]) == [301]


def test_query_error_names_the_service(server):
    server.add_fault("/api/v0/invoke", "500", "500", "500", "500", "500")
    with pytest.raises(ArchiveError, match=r"Wfc3Psf\.Ir.*500"):
        psf.query("IR", {}, url=server.url)


@pytest.mark.parametrize("text, expected", [
    ("filter=F606W", ("filter", ["F606W"])),
    ("filter=F606W,F814W", ("filter", ["F606W", "F814W"])),
    ("qfit=0:0.1", ("qfit", {"min": 0, "max": 0.1})),
    ("psf_x_center=6:18", ("psf_x_center", {"min": 6, "max": 18})),
])
def test_parse_filter(text, expected):
    assert psf.parse_filter(text) == expected


# -- the dataURIs ---------------------------------------------------------------------------

def _table(detector) -> Table:
    names = [n for n, _ in FIELDS[detector]]
    return Table(rows=[[r[n] for n in names] for r in SOURCES[detector]], names=names)


@pytest.mark.parametrize("detector, suffixes", [("UVIS", ["flt", "flc"]), ("IR", ["raw"]),
                                                ("WFPC2", ["c0m"])])
def test_data_uris_are_the_notebooks(detector, suffixes):
    uris, n_sub = psf.data_uris(_table(detector), suffixes, detector=detector)
    assert uris == NOTEBOOK[detector]
    assert n_sub == (1 if detector == "UVIS" else 0)


def test_data_uri_details():
    rows = _table("UVIS")
    assert psf.data_uri(rows[0], "UVIS", "flt", (31, 61)).startswith(
        BASE3 + "red=idxa01abq_flt[1]&size=31&")
    assert "&size=61&" in psf.data_uri(rows[1], "UVIS", "flt", (31, 61))  # qfit 0: saturated
    assert psf.cutout_name(NOTEBOOK["UVIS"][0]) == "idxa01abq_101_F606W_flt_cutout.fits"
    with pytest.raises(ValueError, match="source 104 is on a subarray"):
        psf.data_uri(rows[3], "UVIS", "flt")
    with pytest.raises(ValueError, match="suffix 'flc' is not one of IR's"):
        psf.data_uri(_table("IR")[0], "IR", "flc")
    with pytest.raises(ValueError, match="suffix 'flt' is not one of WFPC2's"):
        psf.data_uris(_table("WFPC2"), ["flt"], detector="WFPC2")
    assert psf.subarray_count(rows) == 1


# -- downloads ------------------------------------------------------------------------------

def _contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_single_bundle_and_pool_give_the_same_files(server, tmp_path):
    table_path = psf.write_table(psf.query("UVIS", {}, url=server.url), tmp_path / "uvis.ecsv")
    expected = sorted(psf.cutout_name(u) for u in NOTEBOOK["UVIS"])
    results = {}
    for method, requests_made in (("single", 8), ("bundle", 1), ("pool", 8)):
        dest = tmp_path / method
        server.reset_requests()
        got = psf.download(table_path, ["flt", "flc"], (51, 101), dest, method=method,
                           workers=3, url=server.url)
        assert sorted(p.name for p in got) == expected
        path = "/api/v0.1/Download/bundle" if method == "bundle" else "/api/v0.1/Download/file"
        assert server.count(path) == requests_made == server.count()
        results[method] = _contents(dest)  # no part, bundle or mastDownload/ left
        # a second call: everything is here, no request at all
        server.reset_requests()
        assert psf.download(table_path, ["flt", "flc"], (51, 101), dest, method=method,
                            url=server.url) == got
        assert server.count() == 0
    assert sorted(results["single"]) == expected
    assert results["single"] == results["bundle"] == results["pool"]
    with fits.open(tmp_path / "pool" / "idxa01abq_102_F606W_flc_cutout.fits") as hdul:
        assert hdul[0].header["RED"] == "idxa01abq_flc[4]" and hdul[0].data.shape == (101, 101)


def test_interrupted_download_resumes(server, tmp_path):
    table = psf.query("UVIS", {"filter": ["F814W"]}, url=server.url)
    server.add_fault(NOTEBOOK["UVIS"][7], "404")
    with pytest.raises(ArchiveError, match=r"1 of 2 cutouts not downloaded: "
                                           r"idxa03abq_105_F814W_flc_cutout\.fits: not found"):
        psf.download(table, ["flt", "flc"], dest_dir=tmp_path, url=server.url)
    assert [p.name for p in tmp_path.iterdir()] == ["idxa03abq_105_F814W_flt_cutout.fits"]
    server.reset_requests()
    psf.download(table, ["flt", "flc"], dest_dir=tmp_path, url=server.url)
    assert [r.param("uri") for r in server.requests] == [NOTEBOOK["UVIS"][7]]


@pytest.mark.parametrize("member", ["../x", "/tmp/mvmflow-absolute-test.fits"])
def test_bundle_with_unsafe_member_is_refused(server, tmp_path, member):
    server.add_bundle_member_raw(member, b"SIMPLE  = evil")
    table = psf.query("IR", {}, url=server.url)
    dest = tmp_path / "out" / "cutouts"
    with pytest.raises(ArchiveError, match=re.escape(repr(member))):
        psf.download(table, ["raw"], dest_dir=dest, method="bundle", url=server.url)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "out" / "x").exists()
    assert not Path("/tmp/mvmflow-absolute-test.fits").exists()


def test_cli(server, tmp_path, capsys):
    table = tmp_path / "t.ecsv"
    assert main(["psf", "query", "--detector", "uvis", "--filter", "filter=F606W,F814W",
                 "--filter", "qfit=0:1", "-o", str(table), "--mast-url", server.url]) == 0
    assert "5 sources, 1 on subarrays" in capsys.readouterr().err
    assert main(["psf", "download", str(table), "--suffix", "flt,flc", "--size", "51,101",
                 "--method", "pool", "--workers", "2", "-o", str(tmp_path / "c"),
                 "--mast-url", server.url]) == 0
    err = capsys.readouterr().err
    assert "1 subarray sources not requested" in err and "8 cutouts in" in err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        psf.cutout_name(u) for u in NOTEBOOK["UVIS"])
    assert main(["psf", "download", str(table), "--suffix", "c0m", "--mast-url",
                 server.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "suffix 'c0m' is not one of UVIS's" in err


# -- the workflow rule ----------------------------------------------------------------------

def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_workflow_rule(server, tmp_path):
    from wfrun import run_snakemake

    entry = {"detector": "uvis", "filters": {"filter": ["F606W", "F814W"],
                                             "qfit": {"min": 0, "max": 1}},
             "suffix": "flt,flc", "size": [51, 101], "method": "bundle"}
    config = {"outdir": "out", "resources": "res", "psf": [entry],
              "archive": {"mast_url": server.url}}
    targets = ["out/psf/uvis-1/sources.ecsv", "out/psf/uvis-1/cutouts"]
    run_snakemake(tmp_path, config, "--rerun-incomplete", *targets)
    expected = sorted(psf.cutout_name(u) for u in NOTEBOOK["UVIS"])
    table = psf.read_table(tmp_path / "out/psf/uvis-1/sources.ecsv")
    assert sorted(table["id"]) == [101, 102, 103, 104, 105]
    cutouts = tmp_path / "out/psf/uvis-1/cutouts"
    assert _names(cutouts) == expected  # and Snakemake's .snakemake_timestamp
    assert sorted(p.name for p in (tmp_path / "res/mast/psf/WFC3PSF").iterdir()) == expected
    assert server.count("/api/v0.1/Download/bundle") == 1
    for uri in NOTEBOOK["UVIS"]:
        assert (cutouts / psf.cutout_name(uri)).read_bytes() == _cutout_bytes(uri)
    # the cutouts are cached in the mirror: remade without a request
    server.reset_requests()
    import shutil
    shutil.rmtree(cutouts)
    run_snakemake(tmp_path, config, "--rerun-incomplete", *targets)
    assert _names(cutouts) == expected
    assert server.count() == 0


def test_default_run_is_unchanged(tmp_path):
    from wfrun import run_snakemake

    out = run_snakemake(tmp_path, {"outdir": "out"}, "-n", "--quiet", "rules")
    text = out.stdout + out.stderr
    assert "plan " in text and "psf_" not in text  # psf_query, psf_cutouts: not even defined
