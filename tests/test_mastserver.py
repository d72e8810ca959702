"""The local MAST server speaks the protocol astroquery's own client speaks (docs/archive.md,
"Which server"): these tests point astroquery's ``Mast`` and ``Observations`` at it."""

from __future__ import annotations

import io
import json
import tarfile
import uuid

import pytest
import requests
from astropy.coordinates import SkyCoord
from astroquery.exceptions import RemoteServiceError
from astroquery.mast import MastClass, ObservationsClass
from mastserver import DATA_DIR, MastServer

FIELDS = [{"name": "id", "type": "int"}, {"name": "rootname", "type": "string"},
          {"name": "qfit", "type": "float"}]


def _point(client, server):
    """Point an astroquery client at the local server, with its own column-config cache."""
    portal = client._portal_api_connection
    portal.MAST_REQUEST_URL = server.url + "/api/v0/invoke"
    portal.COLUMNS_CONFIG_URL = server.url + "/portal/Mashup/Mashup.asmx/columnsconfig"
    portal.MAST_DOWNLOAD_URL = server.url + "/api/v0.1/Download/file"
    portal.MAST_BUNDLE_URL = server.url + "/api/v0.1/Download/bundle"
    portal._column_configs = {}  # astroquery caches these on the class
    return client


def test_service_request_pages_through_astroquery(mast_server):
    rows = [{"id": i, "rootname": f"ib{i:04d}", "qfit": i / 100} for i in range(25)]
    seen = []
    service = f"Mast.Test.{uuid.uuid4().hex[:8]}"
    mast_server.add_service(service, lambda params: (seen.append(params) or (FIELDS, rows)))
    mast = _point(MastClass(), mast_server)

    table = mast.service_request(service, {"columns": "*", "filters": []}, pagesize=10)

    assert list(table["id"]) == list(range(25))
    assert list(table["rootname"])[:2] == ["ib0000", "ib0001"]
    assert table["qfit"][24] == pytest.approx(0.24)
    invokes = [r.mashup for r in mast_server.requests if r.path == "/api/v0/invoke"]
    assert [m["page"] for m in invokes] == [1, 2, 3]
    assert {m["pagesize"] for m in invokes} == {10}
    assert {m["service"] for m in invokes} == {service}
    assert seen[0] == {"columns": "*", "filters": []}
    configs = [r for r in mast_server.requests if r.path.endswith("/columnsconfig")]
    assert [r.param("colConfigId") for r in configs] == [service]


def test_one_page_when_asked(mast_server):
    rows = [{"id": i, "rootname": "x", "qfit": 0.0} for i in range(7)]
    service = f"Mast.Test.{uuid.uuid4().hex[:8]}"
    mast_server.add_service(service, lambda params: (FIELDS, rows))
    mast = _point(MastClass(), mast_server)
    table = mast.service_request(service, {}, pagesize=3, page=3)
    assert list(table["id"]) == [6]
    assert mast_server.count("/api/v0/invoke") == 1


def test_executing_answers_are_polled(mast_server):
    rows = [{"id": 1, "rootname": "x", "qfit": 0.5}]
    service = f"Mast.Test.{uuid.uuid4().hex[:8]}"
    mast_server.add_service(service, lambda params: (FIELDS, rows))
    mast_server.add_fault("/api/v0/invoke", "executing", "executing")
    table = _point(MastClass(), mast_server).service_request(service, {})
    assert list(table["id"]) == [1]
    assert mast_server.count("/api/v0/invoke") == 3


def test_service_error_reaches_astroquery(mast_server):
    def broken(params):
        raise ValueError("no such column: nonsense")

    service = f"Mast.Test.{uuid.uuid4().hex[:8]}"
    mast_server.add_service(service, broken)
    mast = _point(MastClass(), mast_server)
    with pytest.raises(RemoteServiceError, match="no such column: nonsense"):
        mast.service_request(service, {})


def test_query_criteria_and_products_through_observations(mast_server):
    caom = json.loads((DATA_DIR / "caom.json").read_text())  # recorded from MAST
    hst = [row for row in caom["data"] if row["obs_collection"] == "HST"]
    asked = {}
    mast_server.add_service("Mast.Caom.Filtered.Position",
                            lambda params: (asked.setdefault("query", params) and caom["fields"],
                                            hst))
    products = json.loads((DATA_DIR / "products.json").read_text())
    mast_server.add_service("Mast.Caom.Products",
                            lambda params: (asked.setdefault("products", params)
                                            and products["fields"], products["data"]))
    obs = _point(ObservationsClass(), mast_server)

    found = obs.query_criteria(coordinates=SkyCoord(10, 20, unit="deg"), radius=0.05,
                               obs_collection="HST", instrument_name=["WFPC2/WFC"])
    assert list(found["obs_id"]) == [row["obs_id"] for row in hst]
    assert str(found["obsid"][0]) == str(hst[0]["obsid"])
    position = [float(x) for x in asked["query"]["position"].split(",")]
    assert position == pytest.approx([10.0, 20.0, 0.05])
    filters = {f["paramName"]: f["values"] for f in asked["query"]["filters"]}
    assert filters == {"obs_collection": ["HST"], "instrument_name": ["WFPC2/WFC"]}
    # the CAOM column configuration was asked for, and answered from the recording
    configs = [r.param("colConfigId") for r in mast_server.requests
               if r.path.endswith("/columnsconfig")]
    assert configs == ["Mast.Caom.Cone"]

    plist = obs.get_product_list(found[:2])
    assert asked["products"] == {"obsid": f"{hst[0]['obsid']},{hst[1]['obsid']}"}
    assert len(plist) == len(products["data"])
    assert "mast:HST/product/u9o40504m_c3m.fits" in list(plist["dataURI"])


def test_astroquery_download_file(mast_server, tmp_path):
    data = bytes(range(256)) * 40
    uri = "mast:HST/product/ib4606c5q_flc.fits"
    mast_server.add_file(uri, data)
    obs = _point(ObservationsClass(), mast_server)
    status, msg, _ = obs.download_file(uri, local_path=str(tmp_path / "x.fits"), cache=False,
                                       verbose=False)
    assert status == "COMPLETE", msg
    assert (tmp_path / "x.fits").read_bytes() == data
    assert mast_server.count("/api/v0.1/Download/file") >= 1


def test_ranges_and_missing_files(mast_server):
    uri = "mast:HST/product/a_flt.fits"
    mast_server.add_file(uri, b"0123456789")
    url = mast_server.file_url(uri)
    whole = requests.get(url, timeout=5)
    assert whole.status_code == 200 and whole.content == b"0123456789"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Length"] == "10"
    assert 'filename="a_flt.fits"' in whole.headers["Content-Disposition"]
    part = requests.get(url, headers={"Range": "bytes=4-"}, timeout=5)
    assert part.status_code == 206 and part.content == b"456789"
    assert part.headers["Content-Range"] == "bytes 4-9/10"
    assert requests.get(url, headers={"Range": "bytes=10-"}, timeout=5).status_code == 416
    posted = requests.post(mast_server.url + "/api/v0.1/Download/file", data={"uri": uri},
                           timeout=5)
    assert posted.content == b"0123456789"
    missing = mast_server.file_url("mast:HST/product/nothere_flt.fits")
    assert requests.get(missing, timeout=5).status_code == 404
    mast_server.honor_ranges = False
    assert requests.get(url, headers={"Range": "bytes=4-"}, timeout=5).status_code == 200
    assert mast_server.count("/api/v0.1/Download/file") == 6
    assert mast_server.requests[1].headers["range"] == "bytes=4-"


def test_faults_are_consumed_in_order(mast_server):
    uri = "mast:HST/product/b_flt.fits"
    data = bytes(range(200)) * 10
    mast_server.add_file(uri, data)
    mast_server.timeout_sleep = 1.0
    mast_server.add_fault(uri, "500", "503", "404", "corrupt", "drop", "short", "timeout")
    url = mast_server.file_url(uri)
    assert requests.get(url, timeout=5).status_code == 500
    assert requests.get(url, timeout=5).status_code == 503
    assert requests.get(url, timeout=5).status_code == 404
    corrupt = requests.get(url, timeout=5).content
    assert len(corrupt) == len(data) and corrupt != data
    for _ in ("drop", "short"):
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(url, timeout=5).content  # noqa: B018
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, timeout=0.3)
    assert mast_server.pending_faults(uri) == []
    assert requests.get(url, timeout=5).content == data
    with pytest.raises(ValueError, match="unknown fault"):
        mast_server.add_fault(uri, "explode")


def test_fault_on_a_path(mast_server):
    service = f"Mast.Test.{uuid.uuid4().hex[:8]}"
    mast_server.add_service(service, lambda params: (FIELDS, []))
    mast_server.add_fault("/api/v0/invoke", "503")
    body = {"request": json.dumps({"service": service, "params": {}, "format": "json",
                                   "pagesize": 10, "page": 1})}
    url = mast_server.url + "/api/v0/invoke"
    assert requests.post(url, data=body, timeout=5).status_code == 503
    answer = requests.post(url, data=body, timeout=5).json()
    assert answer["status"] == "COMPLETE" and answer["data"] == []
    assert answer["paging"]["rowsTotal"] == 0


def test_bundle_members_and_injected_members(mast_server):
    mast_server.add_file("mast:HST/product/ib4606c5q_flc.fits", b"A" * 100)
    mast_server.add_file("mast:HST/product/ib4606c6q_flt.fits", b"B" * 50)
    mast_server.add_bundle_member_raw("../x", b"evil")
    mast_server.add_bundle_member_raw("link", "/etc/passwd", type="symlink")
    url = mast_server.url + "/api/v0.1/Download/bundle.tar.gz"
    uris = ["mast:HST/product/ib4606c5q_flc.fits", "mast:HST/product/ib4606c6q_flt.fits"]
    first = requests.post(url, data={"uri": uris}, timeout=5)
    assert first.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(first.content), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("mastDownload/HST/ib4606c5q/ib4606c5q_flc.fits").read() == \
            b"A" * 100
    assert set(members) == {"mastDownload/HST/ib4606c5q/ib4606c5q_flc.fits",
                            "mastDownload/HST/ib4606c6q/ib4606c6q_flt.fits", "../x", "link"}
    assert members["link"].issym() and members["link"].linkname == "/etc/passwd"
    second = requests.post(url, data={"uri": uris[:1]}, timeout=5)
    with tarfile.open(fileobj=io.BytesIO(second.content), mode="r:gz") as tar:
        assert tar.getnames() == ["mastDownload/HST/ib4606c5q/ib4606c5q_flc.fits"]
    assert mast_server.requests[0].form["uri"] == uris


def test_added_routes_win_and_are_recorded(mast_server):
    mast_server.add_route("GET", "/hapcut/", lambda req: (200, {"Content-Type": "text/plain"},
                                                          req.param("ra", "?").encode()))
    answer = requests.get(mast_server.url + "/hapcut/v1/cutout?ra=10.5&dec=2", timeout=5)
    assert answer.text == "10.5"
    assert requests.get(mast_server.url + "/nowhere", timeout=5).status_code == 404
    assert mast_server.count("/hapcut/") == 1
    assert mast_server.count() == 2
    assert mast_server.requests[0].query == {"ra": ["10.5"], "dec": ["2"]}


def test_context_manager_stops():
    with MastServer() as server:
        url = server.url
        assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        assert requests.get(url + "/x", timeout=5).status_code == 404
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/x", timeout=2)
