"""Quality files (mvmflow.quality, rules/quality.smk): WCS names and astrometric frames, the
overlap cross-match, and the workflow with quality_testing on.

The workflow test reruns a copy of the shared run (tests/conftest.py; alignment off, so every
input is on its header WCS) with ``MVM_QUALITY_TESTING=1``: only the plan, the quality jobs
and the manifests run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from wfrun import ROOT, SHARED_UMASK

from mvmflow.layercat import make_layer_catalog, read_layer_catalog
from mvmflow.names import LayerName
from mvmflow.quality import (
    MATCH_TOLERANCE,
    compute_stats,
    crossmatch_report,
    wcs_value,
    wcsname_report,
    write_diagnostic,
)
from mvmflow.records import ChipRecord, ExposureRecord
from mvmflow.runplan import RunPlan, neighbour_layers


def test_wcs_value_is_defined_for_every_name():
    names = ["FIT_MVM_GAIADR3", "FIT_MVM_REFCAT", "FIT_SVM_GAIAEDR3", "FIT_REL_NONE",
             "FIT_IMG_REFCAT", "VISIT_REFCAT", "IDC_n721640fj", "FIT_MVM_SOMENEWCAT"]
    values = [wcs_value(n) for n in names]
    assert all(v > 0 and v & (v - 1) == 0 for v in values)  # powers of two
    assert len(set(values)) == len(values)
    # catalogue fits before relative ones before header WCSs; Gaia DR3 first
    assert wcs_value("FIT_MVM_GAIADR3") == 1
    assert wcs_value("FIT_MVM_GAIADR3") < wcs_value("FIT_REL_GAIADR3") < wcs_value(
        "IDC_n721640fj")
    assert wcs_value("idc_x") == wcs_value("IDC_y") == wcs_value("")  # header WCSs: one kind


def test_compute_stats():
    v = np.r_[np.zeros(50), 0.1 * np.ones(50), 100.0]
    s = compute_stats(v)
    assert s["Number of values"] == 101
    assert s["Non-clipped maximum"] == 100.0
    assert s["3x3 sigma-clipped median"] == pytest.approx(0.05, abs=0.05)
    assert s["3x3 sigma-clipped standard deviation"] < 0.1
    assert 95 < s["Percent of values within 3 sigma of the clipped mean"] < 100
    assert compute_stats([]) == {"Number of values": 0}


def _layer(path: Path, nx=200, ny=150) -> Path:
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, -20.0]
    w.wcs.crpix = [100.0, 75.0]
    w.wcs.cd = [[-0.04 / 3600, 0], [0, 0.04 / 3600]]
    prim = fits.Header({"TELESCOP": "HST", "INSTRUME": "WFC3", "DETECTOR": "UVIS",
                        "FILTER": "F606W", "PROPOSID": "123; 456",
                        "FILENAME": path.name, "ROOTNAME": path.name[:-9],
                        "SCELLID": "p0001x01y01", "DATE-END": "2020-01-02T03:04:05.000",
                        "ALNFRAME": "GAIADR3,HEADER", "ALNMIXED": True, "NALIGNED": 1,
                        "NUNALIGN": 1, "NINHERIT": 0})
    prim["HISTORY"] = "left out"
    sci = np.zeros((ny, nx), np.float32)
    fits.HDUList([fits.PrimaryHDU(header=prim),
                  fits.ImageHDU(sci, w.to_header(), name="SCI"),
                  fits.ImageHDU(np.ones_like(sci), w.to_header(), name="WHT")]).writeto(path)
    return path


def _record(name, wcsname, alignment, ra=10.0):
    chip = ChipRecord(1, [100, 100], [[ra, -20.0], [ra + 0.0005, -20.0],
                                      [ra + 0.0005, -19.9995], [ra, -19.9995]])
    return ExposureRecord(file=f"/data/{name}", accepted=True, filename=name,
                          ipppssoo=name[:8], wcsname=wcsname, chips=[chip],
                          alignment=alignment)


def test_wcsname_report_mixed_frames_and_names_without_dash(tmp_path):
    layer = _layer(tmp_path / "hst_skycell-p0001x01y01_wfc3_uvis_f606w_all_drc.fits")
    records = [
        _record("iaaa01abq_flc.fits", "IDC_x-FIT_MVM_GAIADR3",
                {"WCSNAME": "IDC_x-FIT_MVM_GAIADR3", "ALIGNST": "absolute",
                 "REFCAT": "GAIADR3", "NMATCHES": 12, "RMS_RA": 3.0, "RMS_DEC": float("nan")}),
        _record("ibbb02abq_flc.fits", "IDC_n721640fj", {}),  # no '-': the reference fails
    ]
    diag = wcsname_report(layer, records, mixed_frames="keep",
                          dropped=[{"filename": "iccc03abq_flc.fits", "ipppssoo": "iccc03ab",
                                    "status": "NEW", "reason": "why"}])
    assert list(diag) == ["header", "general information", "data"]
    assert "HISTORY" not in diag["header"] and diag["header"]["SCELLID"] == "p0001x01y01"
    info = diag["general information"]
    assert info["visit"] == "iaaa01,ibbb02" and info["filter"] == "f606w"
    assert info["generation date"] == "01/02/2020" and info["generation time"] == "03:04:05"
    cell = diag["data"]["p0001x01y01"]
    assert set(cell) == {"original format", "data", "descriptions", "units"}
    data = cell["data"]
    assert data["wcsname"] == ["FIT_MVM_GAIADR3", "IDC_n721640fj"]
    assert data["wcs_value"] == [1, wcs_value("IDC_n721640fj")]
    assert data["img_value"] == [1, 2] and data["frame"] == ["GAIADR3", "HEADER"]
    assert data["shape"] == [[150, 200], [150, 200]]
    assert len(data["RA"][0][0]) == 5 and data["RA"][0][0][0] == data["RA"][0][0][-1]
    assert data["X"][0][0][0] == 99  # the chip's corner on the layer's tangent point
    frames = diag["data"]["astrometric frames"]["data"]
    assert frames["mixed"] is True and frames["distinct frames"] == ["GAIADR3", "HEADER"]
    assert frames["header-WCS inputs"] == ["ibbb02abq_flc.fits"]
    assert frames["inputs left out"] == [{"file": "iccc03abq_flc.fits", "reason": "why"}]
    assert frames["layer header"]["ALNMIXED"] is True
    out = write_diagnostic(diag, tmp_path / "x_mvm_wcsname.json")
    back = json.loads(out.read_text())
    assert back["data"]["p0001x01y01"]["data"]["rms_dec"] == [None, None]  # NaN -> null


@pytest.fixture(scope="module")
def acs_pair(shared_run, tmp_path_factory):
    """Catalogues of two overlapping ACS layers of the shared run (neighbouring sky cells)."""
    out = tmp_path_factory.mktemp("qa")
    plan = RunPlan.load(shared_run["out"] / "plan" / "plan.json")
    acs = [lay for lay in plan.layers() if lay.instrument == "acs" and lay.scale == "fine"]
    layer = acs[0]
    other = neighbour_layers(plan.layers(), layer)[0]
    pair = []
    for lay in (layer, other):
        path = shared_run["out"] / "skycells" / lay.skycell / lay.name
        cat = out / lay.layer_name.point_catalog
        make_layer_catalog(path, cat)
        pair.append((path, cat))
    return plan, layer, pair, out


def test_neighbours_are_same_key_overlapping_layers(acs_pair):
    plan, layer, _, _ = acs_pair
    found = neighbour_layers(plan.layers(), layer)
    assert found
    for n in found:
        assert n.skycell != layer.skycell
        assert (n.instrument, n.detector, n.filter, n.scale) == (
            layer.instrument, layer.detector, layer.filter, layer.scale)
    # a layer of another detector is never a neighbour, nor one of the same sky cell
    assert all(n.detector == layer.detector for n in found)


def test_crossmatch_of_neighbouring_layers_agrees_and_sees_an_offset(acs_pair):
    _, _, ((a, ca), (b, cb)), out = acs_pair
    diag = crossmatch_report(a, ca, [(b, cb)], visits=["j9n503"])
    region = diag["data"]["overlap region 1"]["data"]
    assert region["number matched"] >= 5
    assert region["reference catalog name"] == Path(ca).name
    stats = region["statistics"]["On-sky separation (RA-Dec)"]
    assert stats["Units"] == "Arcseconds" and stats["Non-clipped median"] < 1e-4
    row = diag["data"]["summary"]["data"]["regions"][0]
    assert abs(row["median dRA cos(dec) [mas]"]) < 0.1 and abs(row["median dDec [mas]"]) < 0.1
    assert abs(row["median dmag"]) < 0.05
    # the same neighbour, its catalogue moved 20 mas north: the file shows it
    moved = read_layer_catalog(cb)
    moved["dec"] += 20.0 / 3.6e6
    shifted = out / "moved_point-cat.ecsv"
    moved.write(shifted, format="ascii.ecsv", overwrite=True)
    row = crossmatch_report(a, ca, [(b, shifted)])["data"]["summary"]["data"]["regions"][0]
    assert row["median dDec [mas]"] == pytest.approx(20.0, abs=0.5)
    assert 20.0 / 1000 < MATCH_TOLERANCE
    # no neighbour: reported, not skipped
    alone = crossmatch_report(a, ca, [], visits=["j9n503"])
    summary = alone["data"]["summary"]["data"]
    assert summary["regions"] == [] and "nothing to cross-match" in summary["note"]
    assert summary["visits"] == ["j9n503"]


@pytest.fixture(scope="module")
def qa_run(shared_run, tmp_path_factory):
    """A copy of the shared run, rerun with MVM_QUALITY_TESTING=1."""
    base = tmp_path_factory.mktemp("qa_run")
    src = shared_run["base"]
    for name in ("results", ".snakemake", "test_config.yaml"):
        if (src / name).is_dir():
            shutil.copytree(src / name, base / name, symlinks=True)
        else:
            shutil.copy2(src / name, base / name)
    env = {**os.environ, "MVM_QUALITY_TESTING": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
           str(base), "--cores", "2", "--configfile", str(base / "test_config.yaml")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         preexec_fn=lambda: os.umask(SHARED_UMASK))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return base / "results", out.stdout + out.stderr


def test_default_run_writes_no_quality_files(shared_run):
    out = shared_run["out"] / "skycells"
    assert not list(out.rglob("*_point-cat.ecsv")) and not list(out.rglob("*_mvm_*.json"))
    assert not (shared_run["out"] / "logs" / "quality").exists()


def test_quality_run_writes_every_fine_layers_files(qa_run):
    out, _ = qa_run
    plan = RunPlan.load(out / "plan" / "plan.json")
    fine = [lay for lay in plan.layers() if lay.scale == "fine"]
    assert fine
    for lay in plan.layers():
        where = out / "skycells" / lay.skycell
        name = lay.layer_name
        files = [where / name.point_catalog, where / name.qa_wcsname, where / name.qa_crossmatch]
        if lay.scale != "fine":
            assert not any(f.exists() for f in files), lay.name
            continue
        assert all(f.is_file() for f in files), lay.name
        manifest = (where / f"{lay.skycell}_manifest.txt").read_text().split()
        i = manifest.index(lay.name)
        assert manifest[i + 1:i + 2] == [name.trailer]
        assert all(f.name in manifest for f in files)
        wcsname = json.loads(files[1].read_text())
        cell = wcsname["data"][lay.skycell[len("skycell-"):]]["data"]
        assert cell["filename"] == [m[0] for m in plan.members(lay.name)]
        frames = wcsname["data"]["astrometric frames"]["data"]
        # alignment is off in the shared run: one frame, the header WCS
        assert frames["distinct frames"] == ["HEADER"] and frames["mixed"] is False
        cross = json.loads(files[2].read_text())
        neighbours = neighbour_layers(plan.layers(), lay)
        regions = cross["data"]["summary"]["data"]["regions"]
        assert len(regions) == len(neighbours)
        for row in regions:
            if row["matched"] >= 3:
                assert abs(row["median dRA cos(dec) [mas]"]) < 0.5, row
                assert abs(row["median dDec [mas]"]) < 0.5, row
        # every layer of the shared run has one visit: said, not skipped silently
        summary = cross["data"]["summary"]["data"]
        assert summary["visit pairs"] == [], lay.name
        assert summary["visit note"].startswith("the layer has 1 visit ("), summary
        cat = read_layer_catalog(files[0])
        assert cat.meta["layer"] == lay.name
    assert LayerName.parse(fine[0].name).scale == "fine"
