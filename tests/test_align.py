"""Alignment (``mvmflow.align``, ``fitting``, ``refcat``, ``solution``) measured against truth.

The ``align`` preset has three overlapping visits from 2012 to 2021 with injected pointing
errors of up to 1 arcsec and 0.05 deg (ACS/WFC, WFC3/IR and WFC3/UVIS, two exposures each)
and a 6-s WFC3/UVIS F275W visit with too few stars. A second data set moves the same visits
into seven weeks of 2016, so that the stars' proper motions (the LMC moves 1.9 mas/yr) do not
separate the visits: relative alignment can only align the stars, so that is where "visits
agree with each other" is measured.

Accuracy is the RMS over a 10 x 10 grid of pixel positions on every chip of the angular
distance between the solved WCS (the exposure's WCS with the solution applied) and the true
WCS the pixels were drawn with (``mvmflow.simulate.true_wcs``).

The Gaia path runs against a local HTTP server on 127.0.0.1 that speaks the TAP/UWS
protocol of the ESA archive and replies with a VOTable in the Gaia DR3 format, built from the
simulator's reference catalogue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import from_table
from astropy.table import Table

from mvmflow.align import AlignParams, align_exposures, align_group
from mvmflow.catalogs import make_catalog
from mvmflow.exposure import Exposure
from mvmflow.fitting import Affine, FitCriteria, Plane, correct_wcs, fit_pairs
from mvmflow.groups import group_name, overlap_groups
from mvmflow.refcat import make_refcat, mjd_to_jyear, positions_at, read_refcat
from mvmflow.resample import load_chips
from mvmflow.simulate import PRESETS, read_truth, simulate, true_wcs
from mvmflow.simulate.pointing import SkyTransform
from mvmflow.solution import (
    apply_solution,
    corrected_chip_wcs,
    read_solution,
    report_table,
    solution_keywords,
)

SPARSE = "ie3c04abq_flc.fits"  # the visit with too few stars
SHORT_STARTS = ("2016-03-01T03:12:40", "2016-03-20T21:40:05", "2016-04-10T10:05:52",
                "2016-04-11T01:30:11")


def _prepare(result):
    exposures = list(result.exposures)
    catalogs = [make_catalog(p, p.with_name(p.name.replace(".fits", "_cat.ecsv")))
                for p in exposures]
    return {"result": result, "exposures": exposures, "catalogs": catalogs,
            "truth": read_truth(result.truth_dir, "exposures"),
            "refcat": result.truth["refcat"]}


@pytest.fixture(scope="module")
def long(tmp_path_factory):
    """The ``align`` preset: visits in 2012, 2016 and 2021."""
    return _prepare(simulate("align", tmp_path_factory.mktemp("align")))


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """The same visits within seven weeks of 2016."""
    preset = PRESETS["align"]
    visits = tuple(dataclasses.replace(v, start=s)
                   for v, s in zip(preset.visits, SHORT_STARTS, strict=True))
    preset = dataclasses.replace(preset, name="align_short", visits=visits)
    return _prepare(simulate(preset, tmp_path_factory.mktemp("align_short")))


@pytest.fixture(scope="module")
def absolute(long, tmp_path_factory):
    out = tmp_path_factory.mktemp("solutions")
    sols = [out / p.name.replace(".fits", "_wcs.json") for p in long["exposures"]]
    solutions = align_group(long["exposures"], long["catalogs"], sols, refcat=long["refcat"],
                            report_path=out / "report.ecsv")
    return {"solutions": solutions, "paths": sols, "report": out / "report.ecsv"}


def _grid(shape, n=10):
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return xx.ravel(), yy.ravel()


def _errors(path, solution, reference=None):
    """(solved - expected) offsets in mas over every chip; expected = true WCS, moved by
    ``reference`` (a sky transform) when given."""
    exposure = Exposure(path)
    out = []
    for extver in exposure.extvers:
        x, y = _grid(exposure.chip_shape(extver))
        ra_s, dec_s = corrected_chip_wcs(exposure, solution, extver).all_pix2world(x, y, 0)
        ra_t, dec_t = true_wcs(path, extver).all_pix2world(x, y, 0)
        if reference is not None:
            ra_t, dec_t = reference(ra_t, dec_t)
        out.append(np.column_stack([(ra_s - ra_t) * np.cos(np.radians(dec_t)) * 3.6e6,
                                    (dec_s - dec_t) * 3.6e6]))
    return np.concatenate(out)


def _rms(err):
    return float(np.sqrt(np.mean(np.sum(err**2, axis=1))))


# ---------------------------------------------------------------------------------------------
# absolute alignment to the reference catalogue file


def test_absolute_alignment_to_refcat_within_5_mas(long, absolute):
    for path, sol, row in zip(long["exposures"], absolute["solutions"], long["truth"],
                              strict=True):
        before = _rms(_errors(path, None))
        if path.name == SPARSE:
            continue
        assert before > 300.0, "the injected pointing error is there"
        assert sol["status"] == "absolute", (path.name, sol["notes"])
        assert sol["wcsname"] == f"{Exposure(path).wcsname}-FIT_MVM_REFCAT"
        assert sol["refcat"] == "REFCAT" and sol["aligned"] and not sol["flagged"]
        assert sol["fitgeom"] in ("general", "rscale")
        assert sol["nmatches"] >= 12
        assert 0 < sol["rms_ra"] < 10 and 0 < sol["rms_dec"] < 10
        after = _rms(_errors(path, sol))
        assert after < 5.0, f"{path.name}: {after:.2f} mas from the true WCS"
        assert abs(row["offset_dx"]) <= 1.0 and abs(row["rotation"]) <= 0.05


def test_proper_motions_are_applied_per_exposure_epoch(long, tmp_path):
    """Without proper motions the 2012 and 2021 visits are off by the LMC's motion."""
    refcat = Table.read(long["refcat"], format="ascii.ecsv")
    for col in ("pmra", "pmdec", "pmra_error", "pmdec_error"):
        refcat[col] = 0.0
    no_pm = tmp_path / "refcat_no_pm.ecsv"
    refcat.write(no_pm, format="ascii.ecsv")
    solutions = align_exposures(long["exposures"], long["catalogs"], str(no_pm))
    worst = max(_rms(_errors(p, s)) for p, s in zip(long["exposures"], solutions, strict=True)
                if p.name != SPARSE)
    assert worst > 6.0, "positions at 2016.0 do not fit the 2012 and 2021 visits"
    # the propagation itself: each exposure gets its own epoch
    table = read_refcat(long["refcat"])
    for sol in solutions[:1]:
        ra, dec, sigma = positions_at(table, mjd_to_jyear(sol["epoch_mjd"]))
        dt = mjd_to_jyear(sol["epoch_mjd"]) - 2016.0
        dy = (dec - np.asarray(table["dec"])) * 3.6e6
        np.testing.assert_allclose(dy, np.asarray(table["pmdec"]) * dt, atol=1e-6)
        assert (sigma >= np.asarray(table["dec_error"]) / np.sqrt(2) - 1e-9).all()


def test_too_few_stars_keeps_its_wcs_and_is_flagged(long, absolute):
    index = [p.name for p in long["exposures"]].index(SPARSE)
    sol = absolute["solutions"][index]
    exposure = Exposure(long["exposures"][index])
    assert sol["status"] == "unaligned" and sol["flagged"] and not sol["aligned"]
    assert sol["wcsname"] == exposure.wcsname == sol["original_wcsname"]
    assert sol["fitgeom"] == "none"
    assert any("failed" in note for note in sol["notes"])
    for chip in sol["chips"]:
        assert chip["crval"] == chip["original_crval"] and chip["cd"] == chip["original_cd"]
    assert _rms(_errors(long["exposures"][index], sol)) == pytest.approx(
        _rms(_errors(long["exposures"][index], None)))
    report = Table.read(absolute["report"], format="ascii.ecsv")
    row = report[report["file"] == SPARSE][0]
    assert row["flagged"] and row["status"] == "unaligned"
    assert report["flagged"].sum() == 1
    assert list(report["file"]) == [p.name for p in long["exposures"]]


def test_solutions_are_deterministic(long, absolute, tmp_path):
    again = [tmp_path / p.name for p in absolute["paths"]]
    align_group(long["exposures"], long["catalogs"], again, refcat=long["refcat"],
                report_path=tmp_path / "report.ecsv")
    for a, b in zip(absolute["paths"], again, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert absolute["report"].read_bytes() == (tmp_path / "report.ecsv").read_bytes()


def test_solutions_and_report_carry_the_groups_name(long, absolute):
    """The name in every solution and in the report is mvmflow.groups.group_name of the
    same members (the name of the workflow's groups.json and align/<group>/ directory)."""
    name = group_name([p.name for p in long["exposures"]])
    first = min(p.name for p in long["exposures"])
    assert name == group_name(long["exposures"][::-1]) == f"align-{first[:9]}"
    assert {s["group"] for s in absolute["solutions"]} == {name}
    assert {read_solution(p)["group"] for p in absolute["paths"]} == {name}
    report = Table.read(absolute["report"], format="ascii.ecsv")
    assert set(report["group"]) == {name} and report.meta["group"] == name
    assert set(report_table(absolute["paths"])["group"]) == {name}


def test_solution_applies_to_drizzle_chips_and_inputs_are_untouched(long, absolute):
    path = long["exposures"][0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    chips = load_chips(path)
    solution = read_solution(absolute["paths"][0])
    aligned = apply_solution(chips, absolute["paths"][0])
    for chip, new in zip(chips, aligned, strict=True):
        assert new.data is chip.data and new.wcs is not chip.wcs
        x, y = _grid(chip.shape)
        expected = corrected_chip_wcs(path, solution, chip.extver).all_pix2world(x, y, 0)
        np.testing.assert_array_equal(new.wcs.all_pix2world(x, y, 0), expected)
        assert new.wcs.sip is not None and new.wcs.cpdis1 is not None  # distortion kept
        assert new.wcs.det2im1 is not None
    assert apply_solution(chips, None)[0] is chips[0]
    with pytest.raises(ValueError, match="solution is for"):
        apply_solution(load_chips(long["exposures"][1]), solution)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "inputs never modified"
    keys = solution_keywords(solution)
    assert keys["WCSNAME"].endswith("-FIT_MVM_REFCAT") and keys["NMATCHES"] >= 12
    assert keys["FITGEOM"] == solution["fitgeom"] and keys["ALIGNST"] == "absolute"
    table = report_table(absolute["paths"])
    assert len(table) == len(long["exposures"]) and "rms_ra" in table.colnames


# ---------------------------------------------------------------------------------------------
# relative alignment only


def test_relative_only_visits_agree_within_5_mas(short, tmp_path):
    sols = [tmp_path / p.name.replace(".fits", ".json") for p in short["exposures"]]
    solutions = align_group(short["exposures"], short["catalogs"], sols, refcat="none")
    statuses = {s["visit"]: s["status"] for s in solutions}
    assert list(statuses.values()).count("reference") == 1
    ref_visit = next(v for v, s in statuses.items() if s == "reference")
    row = short["truth"][[r["visit"] == ref_visit for r in short["truth"]]][0]
    # the reference visit keeps its (wrong) pointing: the others must land in its frame
    frame = SkyTransform(src=(row["error_ra"], row["error_dec"]),
                         dst=(row["error_ra"], row["error_dec"]), rotation_deg=row["rotation"],
                         shift_arcsec=(row["offset_dx"], row["offset_dy"]))
    for path, sol in zip(short["exposures"], solutions, strict=True):
        if path.name == SPARSE:
            assert sol["status"] == "unaligned" and sol["flagged"]
            continue
        assert sol["status"] in ("reference", "relative")
        assert sol["wcsname"].endswith("-FIT_REL_NONE") and sol["refcat"] == "NONE"
        assert not sol["flagged"]
        err = _rms(_errors(path, sol, frame))
        assert err < 5.0, f"{path.name}: {err:.2f} mas from the reference visit's frame"
        assert _rms(_errors(path, None, frame)) > 300.0 or sol["status"] == "reference"


# ---------------------------------------------------------------------------------------------
# Gaia through a local TAP server


_GAIA_UNITS = {"ra": "deg", "dec": "deg", "ra_error": "mas", "dec_error": "mas",
               "pmra": "mas.yr**-1", "pmdec": "mas.yr**-1", "pmra_error": "mas.yr**-1",
               "pmdec_error": "mas.yr**-1", "ref_epoch": "yr", "phot_g_mean_mag": "mag"}


def _gaia_votable(refcat: Table) -> bytes:
    """A Gaia DR3 TAP result (VOTable) of the given rows."""
    table = Table()
    table["source_id"] = np.asarray(refcat["source_id"], dtype=np.int64)
    for name, unit in _GAIA_UNITS.items():
        table[name] = np.asarray(refcat[name], dtype=np.float64)
        table[name].unit = unit
    table["source_id"].description = "Unique source identifier (unique within a particular Data Release)"
    votable = from_table(table)
    votable.resources[0].tables[0].name = "results"
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


class _GaiaHandler(BaseHTTPRequestHandler):
    """The ESA Gaia archive's asynchronous TAP (UWS) protocol, from the server side."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, status, body=b"", ctype="text/plain", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        self.server.requests.append(("POST", self.path, form))
        if self.path != "/tap-server/tap/async":
            return self._reply(404)
        job = f"/tap-server/tap/async/{1700000000000 + len(self.server.requests)}"
        self.server.jobs[job] = form["QUERY"][0]
        host, port = self.server.server_address
        self._reply(303, headers=[("Location", f"http://{host}:{port}{job}")])

    def do_GET(self):
        self.server.requests.append(("GET", self.path, None))
        job, _, tail = self.path.rpartition("/phase")
        if tail == "" and job in self.server.jobs:
            return self._reply(200, b"COMPLETED")
        job = self.path.removesuffix("/results/result")
        if job not in self.server.jobs:
            return self._reply(404)
        query = self.server.jobs[job]
        m = re.search(r"CIRCLE\('ICRS',\s*([-\d.]+),\s*([-\d.]+),\s*([-\d.]+)\)", query)
        ra0, dec0, radius = (float(v) for v in m.groups())
        ref = self.server.refcat
        plane = Plane(ra0, dec0)
        x, y = plane.to_plane(ref["ra"], ref["dec"])
        rows = ref[np.hypot(x, y) <= radius * 3600.0]
        self._reply(200, _gaia_votable(rows), "text/xml")


@pytest.fixture
def gaia_server(long):
    refcat = Table.read(long["refcat"], format="ascii.ecsv")
    refcat["pmra"][:3] = np.nan  # two-parameter solutions have no proper motion
    refcat["pmdec"][:3] = np.nan
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GaiaHandler)
    server.refcat, server.requests, server.jobs = refcat, [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_gaia_alignment_through_a_local_tap_server(long, gaia_server, tmp_path):
    host, port = gaia_server.server_address
    url = f"http://{host}:{port}/"
    solutions = align_exposures(long["exposures"], long["catalogs"], "gaia", gaia_url=url)
    posts = [r for r in gaia_server.requests if r[0] == "POST"]
    assert len(posts) == 1
    query = posts[0][2]["QUERY"][0]
    assert "FROM gaiadr3.gaia_source" in query and "pmra" in query
    assert posts[0][2]["LANG"] == ["ADQL"] and posts[0][2]["REQUEST"] == ["doQuery"]
    for path, sol in zip(long["exposures"], solutions, strict=True):
        if path.name == SPARSE:
            assert sol["status"] == "unaligned"
            continue
        assert sol["wcsname"].endswith("-FIT_MVM_GAIADR3") and sol["refcat"] == "GAIADR3"
        assert _rms(_errors(path, sol)) < 5.0
    # the fetch-once workflow step writes the same catalogue as a normalised ECSV
    out = make_refcat("gaia", long["exposures"], tmp_path / "gaia.ecsv", gaia_url=url)
    table = read_refcat(out)
    assert table.meta["name"] == "GAIADR3" and len(table) > 50
    assert list(table["source_id"]) == sorted(table["source_id"])
    assert (table["pmra_error"][np.isin(table["source_id"],
                                        gaia_server.refcat["source_id"][:3])] == 5.0).all()


def test_unreachable_gaia_falls_back_to_relative(long):
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as closed:
        host, port = closed.server_address
    solutions = align_exposures(long["exposures"], long["catalogs"], "gaia",
                                gaia_url=f"http://{host}:{port}/")
    assert sorted(s["status"] for s in solutions).count("relative") >= 4
    for sol in solutions:
        assert sol["status"] in ("reference", "relative", "unaligned")
        assert sol["flagged"], "the requested absolute alignment did not happen"
        assert any("reference catalogue unavailable" in n for n in sol["notes"])
        assert sol["refcat"] == "NONE"
        if sol["status"] != "unaligned":
            assert sol["wcsname"].endswith("-FIT_REL_NONE")


# ---------------------------------------------------------------------------------------------
# pieces


def test_csv_catalogue_with_other_column_names(long, tmp_path):
    ref = Table.read(long["refcat"], format="ascii.ecsv")
    csv = Table({"RA_ICRS": ref["ra"], "DE_ICRS": ref["dec"], "e_RA_ICRS": ref["ra_error"],
                 "e_DE_ICRS": ref["dec_error"], "pmRA": ref["pmra"], "pmDE": ref["pmdec"],
                 "Epoch": ref["ref_epoch"]})
    path = tmp_path / "ref.csv"
    csv.write(path, format="ascii.csv")
    table = read_refcat(path)
    np.testing.assert_allclose(table["ra"], ref["ra"])
    np.testing.assert_allclose(table["pmdec"], ref["pmdec"])
    assert (table["epoch"] == 2016.0).all() and (table["pmra_error"] == 0).all()
    minimal = tmp_path / "min.csv"
    Table({"ra": ref["ra"], "dec": ref["dec"]}).write(minimal, format="ascii.csv")
    table = read_refcat(minimal)
    assert (table["pmra"] == 0).all() and (table["epoch"] == 2016.0).all()


def test_correct_wcs_keeps_distortion_and_is_exact(long):
    """Correcting the header WCS by the affine map header -> truth gives the true WCS."""
    for path in long["exposures"][:4:2]:
        exposure = Exposure(path)
        header, truth = exposure.chip_wcs(1), true_wcs(path, 1)
        x, y = _grid(exposure.chip_shape(1), 20)
        plane = Plane(*header.all_pix2world([[0.0, 0.0]], 0)[0])
        hx, hy = plane.to_plane(*header.all_pix2world(x, y, 0))
        tx, ty = plane.to_plane(*truth.all_pix2world(x, y, 0))
        a = np.column_stack([hx, hy, np.ones_like(hx)])
        cx = np.linalg.lstsq(a, tx, rcond=None)[0]
        cy = np.linalg.lstsq(a, ty, rcond=None)[0]
        affine = Affine.from_arrays([cx[:2], cy[:2]], [cx[2], cy[2]])
        fixed = correct_wcs(header, affine, plane)
        err = np.hypot(*(np.subtract(fixed.all_pix2world(x, y, 0), truth.all_pix2world(x, y, 0))
                         * [[np.cos(np.radians(-69.15))], [1.0]])) * 3.6e6
        assert err.max() < 0.01, "mas"
        assert fixed.sip is not None and (fixed.sip.a == header.sip.a).all()
        assert (fixed.wcs.crpix == header.wcs.crpix).all()


def test_fit_geometry_downgrades_and_falls_back():
    rng = np.random.default_rng(0)
    img = rng.uniform(-30, 30, (40, 2))
    truth = Affine.from_arrays([[1.0001, -0.0003], [0.0003, 1.0001]], [0.4, -0.2])
    ref = np.column_stack(truth(img[:, 0], img[:, 1])) + rng.normal(0, 0.002, img.shape)
    full = fit_pairs(img, ref)
    assert full.ok and full.geometry == "general" and full.nmatches == 40
    assert full.rms < 5.0
    few = fit_pairs(img[:15], ref[:15])
    assert few.ok and few.geometry == "rscale"
    assert any("general: 15 matches < 25" in n for n in few.notes)
    strict = FitCriteria(max_rms_mas=0.1)
    failed = fit_pairs(img, ref, criteria=strict)
    assert not failed.ok and failed.geometry == "none"
    assert [n.split(":")[0] for n in failed.notes] == ["general", "rscale", "rshift", "shift"]
    rotation_only = FitCriteria(max_scale_dev=1e-5)
    assert fit_pairs(img, ref, criteria=rotation_only).geometry == "rshift"
    assert not fit_pairs(img[:5], ref[:5]).ok


def test_params_from_config_dict():
    params = AlignParams.from_dict({"fitgeom": "rscale", "min_matches": {"rscale": 20},
                                    "max_rms_mas": 30.0, "searchrad": 2.0})
    assert params.fitgeom == "rscale" and params.searchrad == 2.0
    assert params.criteria.minimum("rscale") == 20 and params.criteria.minimum("general") == 25
    assert params.criteria.max_rms_mas == 30.0
    with pytest.raises(ValueError, match="unknown"):
        AlignParams.from_dict({"serchrad": 2})


def test_alignment_groups_split_by_overlap(long, tmp_path):
    far = tmp_path / "jfar01abq_flc.fits"
    with fits.open(long["exposures"][0]) as hdul:
        for hdu in hdul:
            if "CRVAL1" in hdu.header:
                hdu.header["CRVAL2"] = hdu.header["CRVAL2"] + 0.2
        hdul.writeto(far)
    paths = [*long["exposures"], far]
    footprints = [[Exposure.open(p).footprint(v) for v in Exposure.open(p).extvers]
                  for p in paths]
    n = len(long["exposures"])
    assert overlap_groups(footprints, margin_arcsec=2.0) == [list(range(n)), [n]]


# ---------------------------------------------------------------------------------------------
# every exposure checked against its visit's solution (the ``align_member`` preset: visit
# d2e08 with two exposures in 2016, visit e3g09 with three in 2021; tests move exposures'
# header pointings further, as a guide-star reacquisition within a visit would)

VISIT = ("ie3g09abq_flc.fits", "ie3g09acq_flc.fits", "ie3g09adq_flc.fits")


def _move_pointing(path, dx: float, dy: float) -> None:
    """Move every chip's header pointing by (dx, dy) arcsec east, north (the truth stays)."""
    with fits.open(path, mode="update") as hdul:
        for hdu in hdul:
            if hdu.name == "SCI":
                dec = hdu.header["CRVAL2"]
                hdu.header["CRVAL1"] += dx / 3600.0 / np.cos(np.radians(dec))
                hdu.header["CRVAL2"] += dy / 3600.0


@pytest.fixture(scope="module")
def member_data(tmp_path_factory):
    """The ``align_member`` data set and its catalogues (pixel positions: the same for
    moved copies)."""
    result = simulate("align_member", tmp_path_factory.mktemp("align_member"))
    exposures = list(result.exposures)
    return {"dir": result.out, "names": [p.name for p in exposures],
            "catalogs": {p.name: make_catalog(p, p.with_name(p.name.replace(".fits", "_cat.ecsv")))
                         for p in exposures},
            "refcat": result.truth["refcat"]}


def _member_case(member_data, tmp_path, moves: dict, refcat="file", params=None):
    """Copy the data set, move the given exposures' headers, align; (paths, solutions)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(member_data["dir"], data)
    for name, (dx, dy) in moves.items():
        _move_pointing(data / name, dx, dy)
    paths = [data / n for n in member_data["names"]]
    cats = [member_data["catalogs"][n] for n in member_data["names"]]
    ref = member_data["refcat"] if refcat == "file" else refcat
    return paths, align_exposures(paths, cats, ref, params)


def _never_aligned_without_matches(solutions):
    for sol in solutions:
        if sol["aligned"] and sol["refcat"] != "NONE":
            assert sol["nmatches"] >= AlignParams().member_min_matches, sol
        if "-FIT_MVM_" in sol["wcsname"] or "-FIT_IMG_" in sol["wcsname"]:
            assert sol["status"].startswith("absolute") and sol["nmatches"] >= 3, sol
            assert np.isfinite(sol["rms_ra"]) and np.isfinite(sol["rms_dec"]), sol


def test_member_with_a_pointing_error_gets_its_own_fit(member_data, tmp_path, caplog):
    """One exposure of a three-exposure visit 0.3" off its siblings: the visit's solution
    leaves it 300 mas off; fitted on its own it ends within 5 mas of its true WCS."""
    bad = VISIT[2]
    with caplog.at_level("WARNING", logger="mvmflow.align"):
        paths, sols = _member_case(member_data, tmp_path, {bad: (0.3, 0.0)})
    by_name = {p.name: (p, s) for p, s in zip(paths, sols, strict=True)}
    header = {n: _errors(p, None).mean(axis=0) for n, (p, _) in by_name.items()}
    # the injected error: 300 mas east of its siblings' (shared) header error
    assert np.hypot(*(header[bad] - header[VISIT[0]])) == pytest.approx(300.0, abs=5.0)
    for name, (path, sol) in by_name.items():
        after = _rms(_errors(path, sol))
        assert after < 5.0, f"{name}: {after:.2f} mas from the true WCS ({sol['status']})"
        if name == bad:
            assert sol["status"] == "absolute-own" and sol["aligned"] and not sol["flagged"]
            assert sol["wcsname"] == f"{Exposure(path).wcsname}-FIT_IMG_REFCAT"
            assert sol["refcat"] == "REFCAT" and sol["fits"]["absolute"]["ok"]
            assert sol["nmatches"] >= 6 and 0 < sol["rms_ra"] < 15 and 0 < sol["rms_dec"] < 15
            assert any("disagree" in n and "ie3g09" in n for n in sol["notes"])
        else:
            assert sol["status"] == "absolute", (name, sol["notes"])
            assert sol["wcsname"].endswith("-FIT_MVM_REFCAT") and sol["nmatches"] >= 6
    assert any(bad in r.getMessage() and "fitted on its own" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    _never_aligned_without_matches(sols)
    keys = solution_keywords(by_name[bad][1])
    assert keys["ALIGNST"] == "absolute-own" and keys["NMATCHES"] >= 6


def test_two_members_off_in_different_directions(member_data, tmp_path):
    """The issue's case: two of three exposures of a visit 0.3" off (in different
    directions): the visit's fit follows one of them; every exposure still ends within 5 mas
    of its true WCS, the two that disagree with the visit's solution fitted on their own."""
    moves = {VISIT[0]: (0.21, -0.21), VISIT[2]: (-0.1, 0.288)}
    paths, sols = _member_case(member_data, tmp_path, moves)
    for path, sol in zip(paths, sols, strict=True):
        assert _rms(_errors(path, sol)) < 5.0, (path.name, sol["status"], sol["notes"])
    statuses = [s["status"] for s in sols if s["file"] in VISIT]
    assert sorted(statuses) == ["absolute", "absolute-own", "absolute-own"], statuses
    _never_aligned_without_matches(sols)


def test_member_checked_against_the_others_without_a_catalogue(member_data, tmp_path):
    """Relative only: the exposure that disagrees is fitted to the exposures that agree, and
    lands in their frame (within 5 mas of its sibling's error, which is the frame's)."""
    bad = VISIT[2]
    paths, sols = _member_case(member_data, tmp_path, {bad: (0.3, 0.0)}, refcat="none")
    by_name = {p.name: (p, s) for p, s in zip(paths, sols, strict=True)}
    path, sol = by_name[bad]
    assert sol["status"] == "relative-own" and sol["wcsname"].endswith("-FIT_REL_NONE")
    assert sol["refcat"] == "NONE" and sol["nmatches"] >= 20 and not sol["flagged"]
    sib_path, sib = by_name[VISIT[0]]
    diff = _errors(path, sol) - _errors(sib_path, sib)
    assert _rms(diff) < 5.0, f"{_rms(diff):.2f} mas from its sibling's frame"
    assert _rms(_errors(path, None) - _errors(sib_path, None)) > 290.0
    for s in sols:
        assert s["status"] in ("reference", "relative", "relative-own") and s["nmatches"] >= 20


def test_member_that_cannot_be_fitted_is_unaligned_and_says_so(member_data, tmp_path, caplog):
    """4" off its visit (beyond the 3" search radius): no fit of its own; it keeps its header
    WCS, is flagged with the reason, logged as a warning, and counted as unaligned."""
    from mvmflow.aligned import alignment_warnings
    from mvmflow.products import _alignment_cards

    bad = VISIT[2]
    with caplog.at_level("WARNING", logger="mvmflow.align"):
        paths, sols = _member_case(member_data, tmp_path, {bad: (4.0, 0.0)})
    sol = sols[[p.name for p in paths].index(bad)]
    assert sol["status"] == "unaligned" and sol["flagged"] and not sol["aligned"]
    assert sol["wcsname"] == sol["original_wcsname"] and sol["refcat"] == "NONE"
    assert sol["nmatches"] == 0 and sol["fitgeom"] == "none"
    assert all(c["crval"] == c["original_crval"] for c in sol["chips"])
    assert any("disagree" in n and "header WCS" in n for n in sol["notes"])
    assert any(r.levelname == "WARNING" and "UNALIGNED" in r.getMessage() and bad in
               r.getMessage() for r in caplog.records)
    for path, s in zip(paths, sols, strict=True):
        if s is not sol:
            assert s["status"] == "absolute" and _rms(_errors(path, s)) < 5.0
    _never_aligned_without_matches(sols)
    assert alignment_warnings(sols) == [
        f"WARNING: 1 exposure left on the header WCS (unaligned): {bad}"]
    # a layer of the visit's three: NALIGNED 2, NUNALIGN 1, recorded as mixed frames
    cards = {k: v for k, v, _ in _alignment_cards(
        [solution_keywords(s) for s in sols if s["file"] in VISIT])}
    assert cards["NALIGNED"] == 2 and cards["NUNALIGN"] == 1
    assert cards["ALNFRAME"] == "HEADER,REFCAT" and cards["ALNMIXED"] is True
    assert cards["ALNMINMT"] >= 6


def test_mixed_frames_modes():
    """keep: nothing left out; drop_unaligned: the header-WCS members of a mixed layer;
    fail: an error naming the layer and the frames. Frames from solutions or keywords."""
    from mvmflow.solution import (
        DEFAULT_MIXED_FRAMES,
        MixedFramesError,
        layer_frames,
        mixed_frames_drops,
        solution_frame,
    )

    assert DEFAULT_MIXED_FRAMES == "drop_unaligned"
    assert solution_frame(None) == solution_frame({}) == "HEADER"
    assert solution_frame({"status": "absolute-own", "refcat": "GAIADR3"}) == "GAIADR3"
    assert solution_frame({"ALIGNST": "relative", "REFCAT": "NONE"}) == "RELATIVE"
    assert solution_frame({"ALIGNST": "unaligned", "REFCAT": "NONE"}) == "HEADER"
    frames = layer_frames({"a.fits": {"ALIGNST": "absolute", "REFCAT": "GAIADR3"},
                           "b.fits": {"ALIGNST": "absolute-own", "REFCAT": "GAIADR3"},
                           "c.fits": {"ALIGNST": "unaligned", "REFCAT": "NONE"}})
    assert frames == {"a.fits": "GAIADR3", "b.fits": "GAIADR3", "c.fits": "HEADER"}
    assert mixed_frames_drops("L", frames, "keep") == {}
    drops = mixed_frames_drops("L", frames, "drop_unaligned")
    assert list(drops) == ["c.fits"] and "drop_unaligned" in drops["c.fits"]
    with pytest.raises(MixedFramesError, match=r"^L: .*GAIADR3: a.fits, b.fits; HEADER: c.fits"):
        mixed_frames_drops("L", frames, "fail")
    one = {"a.fits": "HEADER", "c.fits": "HEADER"}  # not mixed: every mode keeps all
    for mode in ("keep", "drop_unaligned", "fail"):
        assert mixed_frames_drops("L", one, mode) == {}
    with pytest.raises(ValueError, match="keep, drop_unaligned, fail"):
        mixed_frames_drops("L", frames, "drop")


def test_mixed_frames_in_the_plan_layers():
    """build_layers applies align.mixed_frames per layer: the unaligned member of a mixed
    F555W layer goes to the layer's dropped list (drop_unaligned), stays (keep), or stops
    the plan (fail); a layer made of unaligned members only is not mixed."""
    from mvmflow.plan import Member, build_layers
    from mvmflow.solution import MixedFramesError

    def member(name, filt):
        return Member(filename=name, file=f"/x/{name}", ipppssoo=name[:9], instrument="wfc3",
                      detector="uvis", filter=filt, ptype="flc", exptime=350.0,
                      photflam=1e-19, year=2021)

    members = [member(n, "f555w") for n in VISIT] + [member("ie3g10abq_flc.fits", "f275w")]
    frames = {VISIT[0]: "REFCAT", VISIT[1]: "REFCAT", VISIT[2]: "HEADER",
              "ie3g10abq_flc.fits": "HEADER"}
    for mode, kept in (("keep", 3), ("drop_unaligned", 2)):
        layers, _, _ = build_layers("skycell-p0081x14y14", members, frames=frames,
                                    mixed_frames=mode)
        f555w = next(lay for lay in layers if lay.filter == "f555w")
        f275w = next(lay for lay in layers if lay.filter == "f275w")
        assert [m.filename for m in f555w.members] == list(VISIT[:kept])
        assert [d.filename for d in f555w.dropped] == list(VISIT[kept:])
        assert len(f275w.members) == 1 and not f275w.dropped
    with pytest.raises(MixedFramesError, match="f555w"):
        build_layers("skycell-p0081x14y14", members, frames=frames, mixed_frames="fail")
    layers, _, _ = build_layers("skycell-p0081x14y14", members)  # no frames: no rule
    assert len(next(lay for lay in layers if lay.filter == "f555w").members) == 3


def test_member_too_poor_to_check_inherits_its_visit_solution_unverified(member_data, tmp_path,
                                                                       caplog):
    """An exposure of an aligned visit with only two sources of its own (e.g. a very short
    exposure) cannot be checked nor fitted: its visit's solution is applied (its best
    estimate: it ends within 5 mas of its true WCS) but it is never reported as aligned
    (status inherited, flagged, no FIT_ in its WCSNAME), and it stays in the visit's frame, so
    drop_unaligned keeps it in the layer."""
    import shutil

    from astropy.table import Table

    from mvmflow.products import _alignment_cards
    from mvmflow.solution import layer_frames, mixed_frames_drops

    poor = VISIT[1]
    data = tmp_path / "data"
    shutil.copytree(member_data["dir"], data)
    paths = [data / n for n in member_data["names"]]
    cats = []
    for n in member_data["names"]:
        cat = member_data["catalogs"][n]
        cat = cat if isinstance(cat, Table) else Table.read(cat)
        cats.append(cat[:2] if n == poor else cat)
    with caplog.at_level("WARNING", logger="mvmflow.align"):
        sols = align_exposures(paths, cats, member_data["refcat"])
    sol = sols[member_data["names"].index(poor)]
    assert sol["status"] == "inherited" and not sol["aligned"] and sol["flagged"]
    assert sol["wcsname"].endswith("-VISIT_REFCAT") and "FIT_" not in sol["wcsname"]
    assert sol["refcat"] == "REFCAT" and sol["fitgeom"] != "none"
    assert _rms(_errors(paths[member_data["names"].index(poor)], sol)) < 5.0
    assert any(r.levelname == "WARNING" and "UNVERIFIED" in r.getMessage() and poor in
               r.getMessage() for r in caplog.records)
    _never_aligned_without_matches(sols)
    visit = [s for s in sols if s["file"] in VISIT]
    frames = layer_frames({s["file"]: s for s in visit})
    assert set(frames.values()) == {"REFCAT"}
    assert mixed_frames_drops("layer", frames, "drop_unaligned") == {}
    cards = {k: v for k, v, _ in _alignment_cards([solution_keywords(s) for s in visit])}
    assert (cards["NALIGNED"], cards["NUNALIGN"], cards["NINHERIT"]) == (2, 0, 1)
