"""Alignment in the workflow, on the ``align_pair`` preset, against the simulation's truth.

Two WFC3/UVIS F555W visits five years apart with pointing errors of about 0.5 arcsec and
0.03-0.04 deg, plus a 6-s F275W exposure with too few stars. The workflow runs once, aligned
to the simulated reference catalogue; its directory is removed after the module.

- the per-sky-cell reports and the layer headers record every input's fit;
- groups.json, the align/<group>/ folders, the solutions, the reports and the logs name the
  alignment groups alike;
- the aligned chip WCSs match the true WCSs within 5 mas over each exposure;
- stars in the aligned F555W layer have the FWHM of a single aligned exposure within 5%;
  the same exposures drizzled on their header WCSs don't (the visits' stars sit ~0.5 arcsec
  apart);
- the F275W exposure keeps its header WCS, is flagged in the report, and still gets its layer.

A second data set (``align_member``) has one exposure 0.3" off the others of its visit (fitted
on its own, within 5 mas of its true WCS) and one 4" off (left on its header WCS, flagged,
and, with the default ``align.mixed_frames: drop_unaligned``, left out of its layers, which
stay sharp and in one frame); ``mixed_frames: fail`` stops the plan.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from photutils.psf import fit_fwhm
from wfrun import run_snakemake

from mvmflow.aligned import member_frames
from mvmflow.combine import combine_partials
from mvmflow.exposure import Exposure
from mvmflow.groups import group_name, read_groups
from mvmflow.resample import drizzle_exposure, load_chips
from mvmflow.runplan import RunPlan
from mvmflow.simulate import read_truth, simulate, true_wcs
from mvmflow.solution import apply_solution, corrected_chip_wcs, read_solution

SPARSE = "ie3d07abq_flc"


def snakemake(workdir: Path, configfile: Path, outdir: str):
    run_snakemake(workdir, {**yaml.safe_load(configfile.read_text()), "outdir": outdir})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow_align")
    result = simulate("align_pair", base / "data")
    common = {"inputs": f"{base / 'data'}/*_fl?.fits"}
    aligned = base / "aligned.yaml"
    aligned.write_text(yaml.safe_dump(
        {**common, "align": {"reference": str(result.truth["refcat"])}}))
    snakemake(base, aligned, "aligned")
    yield {"base": base, "data": base / "data", "result": result, "aligned": base / "aligned"}
    shutil.rmtree(base, ignore_errors=True)


def _layers(out: Path, filt: str) -> list[Path]:
    return sorted(out.glob(f"skycells/*/hst_skycell-*_wfc3_uvis_{filt}_all_drc.fits"))


def _solutions(run) -> dict[str, dict]:
    return {p.name[: -len("_wcs.json")]: read_solution(p)
            for p in (run["aligned"] / "align").glob("*/*_wcs.json")}


def test_reports_and_headers_record_every_fit(runs):
    sols = _solutions(runs)
    assert sorted(sols) == sorted(p.name[:-5] for p in runs["data"].glob("*_flc.fits"))
    reports = sorted(runs["aligned"].glob("skycells/*/*_align.ecsv"))
    assert reports, "no per-sky-cell alignment report"
    for report in reports:
        table = Table.read(report)
        cell = report.parent.name
        members = {line.split(",")[0][:-5] for line in
                   (report.parent / f"{cell}_input.out").read_text().splitlines()}
        assert {Path(f).name[:-5] for f in table["file"]} == members
    row = {Path(r["file"]).name[:-5]: r for r in Table.read(reports[0])}
    assert row[SPARSE]["flagged"] and row[SPARSE]["status"] == "unaligned"
    for key, sol in sols.items():
        if key == SPARSE:
            original = Exposure.open(runs["data"] / f"{key}.fits").wcsname
            assert sol["wcsname"] == original  # keeps its header WCS
            continue
        assert sol["status"].startswith("absolute"), (key, sol["status"], sol["notes"])
        assert sol["wcsname"].endswith("-FIT_MVM_REFCAT")
        assert sol["nmatches"] >= 6 and max(sol["rms_ra"], sol["rms_dec"]) < 10.0
    visits = {}
    for key, sol in sols.items():
        visits[key[:6]] = visits.get(key[:6], 0) + sol["nmatches"]
    assert all(n >= 12 for v, n in visits.items() if v != SPARSE[:6]), visits
    for layer in _layers(runs["aligned"], "f555w"):
        with fits.open(layer) as hdul:
            tab = hdul["HDRTAB"].data
            assert all(name.endswith("-FIT_MVM_REFCAT") for name in tab["WCSNAME"])
            assert (tab["NMATCHES"] >= 6).all() and set(tab["ALIGNST"]) <= {
                "absolute", "absolute-group"}
            head = hdul[0].header
            assert head["NALIGNED"] == head["NUMEXP"] == 4 and head["NUNALIGN"] == 0
            assert hdul["SCI"].header["WCSNAME"].endswith("-FIT_MVM_REFCAT")
    for layer in _layers(runs["aligned"], "f275w"):  # the flagged one is still drizzled
        head = fits.getheader(layer)
        assert head["NUMEXP"] == 1 and head["NUNALIGN"] == 1 and head["NALIGNED"] == 0


def test_catalogues_and_solutions_follow_the_umask(runs):
    """The kinds of output only an aligned run writes (catalogues, the alignment groups, each
    group's solution folder, written whole) get the mode of the test's umask, as every other
    output does (test_permissions.py checks the rest)."""
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    out = runs["aligned"]
    files = [p for top in ("catalogs", "align") for p in (out / top).rglob("*") if p.is_file()]
    assert any(p.name.endswith("_wcs.json") for p in files)
    assert any(p.suffix == ".ecsv" and p.parent.name == "catalogs" for p in files)
    assert any(p.name.endswith("_align.ecsv") for p in (out / "skycells").rglob("*"))
    files += list((out / "skycells").rglob("*_align.ecsv"))
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o666 & ~mask}
    assert not wrong, wrong
    dirs = [p for p in (out / "align").rglob("*") if p.is_dir()]
    assert dirs and all(stat.S_IMODE(p.stat().st_mode) == 0o777 & ~mask for p in dirs)


def test_one_name_per_alignment_group(runs):
    """groups.json, the align/<group>/ directories, every solution, every report.ecsv, every
    <skycell>_align.ecsv and the align logs name the groups alike, as group_name does."""
    out = runs["aligned"]
    groups = read_groups(out / "align" / "groups.json")
    names = set(groups)
    assert names
    for name, keys in groups.items():
        assert name == group_name([f"{k}.fits" for k in keys])
    assert {d.name for d in (out / "align").iterdir() if d.is_dir()} == names
    for name, keys in groups.items():
        folder = out / "align" / name
        sols = sorted(folder.glob("*_wcs.json"))
        assert sorted(p.name[: -len("_wcs.json")] for p in sols) == sorted(keys)
        assert {read_solution(p)["group"] for p in sols} == {name}
        assert len(list(folder.glob("*_record.json"))) == len(keys)
        report = Table.read(folder / "report.ecsv")
        assert set(report["group"]) == {name} and report.meta["group"] == name
    in_cells = set()
    for report in out.glob("skycells/*/*_align.ecsv"):
        in_cells |= set(Table.read(report)["group"])
    assert in_cells == names
    logs = {p.stem for p in (out / "logs" / "align").glob("*.log")}
    assert logs == names
    for name in names:
        assert name in (out / "logs" / "align" / f"{name}.log").read_text()


def _rms(ra, dec, ra_t, dec_t) -> float:
    """RMS angular distance (mas) between two sets of positions (degrees)."""
    cosd = np.cos(np.radians(dec_t))
    return float(np.sqrt(np.mean(((ra - ra_t) * cosd) ** 2 + (dec - dec_t) ** 2)) * 3.6e6)


def test_solved_wcs_matches_truth_within_5_mas(runs):
    for key, sol in _solutions(runs).items():
        if key == SPARSE:
            continue
        path = runs["data"] / f"{key}.fits"
        exposure = Exposure.open(path)
        for extver in exposure.extvers:
            ny, nx = exposure.chip_shape(extver)
            y, x = np.mgrid[0:ny:10j, 0:nx:10j]
            ra_s, dec_s = corrected_chip_wcs(exposure, sol, extver).all_pix2world(
                x.ravel(), y.ravel(), 0)
            ra_t, dec_t = true_wcs(path, extver).all_pix2world(x.ravel(), y.ravel(), 0)
            ra_h, dec_h = exposure.chip_wcs(extver).all_pix2world(x.ravel(), y.ravel(), 0)
            solved, header = _rms(ra_s, dec_s, ra_t, dec_t), _rms(ra_h, dec_h, ra_t, dec_t)
            assert solved < 5.0, (key, solved)
            assert header > 200.0  # the injected error it corrected


def _isolated_stars(run, layer: Path, n: int = 25) -> np.ndarray:
    """Frame pixel positions of the brightest truth stars well inside the layer."""
    sources = read_truth(run["result"].truth_dir, "sources")
    sources = sources[sources["type"] == "star"]
    flux = np.asarray(sources["rate_wfc3_uvis_f555w"])
    with fits.open(layer) as hdul:
        wcs, wht = WCS(hdul["SCI"].header), hdul["WHT"].data
    x, y = wcs.all_world2pix(sources["ra"], sources["dec"], 0)
    ny, nx = wht.shape
    xi, yi = np.round(x).astype(int), np.round(y).astype(int)
    inside = (xi > 15) & (yi > 15) & (xi < nx - 16) & (yi < ny - 16)
    inside[inside] &= wht[yi[inside], xi[inside]] > 0.5 * np.nanmax(wht)
    pos = np.column_stack([x, y])
    d = np.hypot(*(pos[:, None, :] - pos[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    isolated = inside & (d.min(axis=1) > 12)
    order = np.argsort(-flux[isolated])[:n]
    return pos[isolated][order]


def _fwhm(image: np.ndarray, xy: np.ndarray) -> float:
    image = np.nan_to_num(image - np.nanmedian(image))
    return float(np.median(fit_fwhm(image, xypos=xy, fit_shape=7, fwhm=3.0)))


def test_drizzled_stars_keep_single_exposure_fwhm(runs):
    layers = _layers(runs["aligned"], "f555w")
    assert layers
    layer = max(layers, key=lambda p: fits.getheader(p, "SCI")["NAXIS1"]
                * fits.getheader(p, "SCI")["NAXIS2"])
    xy = _isolated_stars(runs, layer)
    assert len(xy) >= 10
    aligned_fwhm = _fwhm(fits.getdata(layer, "SCI"), xy)
    # one aligned exposure drizzled alone onto the same frame, with the same parameters
    plan = RunPlan.load(runs["aligned"] / "plan" / "plan.json")
    frame, params = plan.layer(layer.name).frame, plan.layer_params(layer.name)
    key = sorted(_solutions(runs))[0]
    chips = apply_solution(load_chips(runs["data"] / f"{key}.fits"), _solutions(runs)[key])
    single = combine_partials([drizzle_exposure(chips, frame, params)], frame, {}).sci
    single_fwhm = _fwhm(single, xy)
    # the same members drizzled on their header WCSs: the layer alignment saved us from
    members = sorted(runs["data"].glob("*_fl?.fits"))
    members = [p for p in members if fits.getheader(p)["FILTER"].lower() == "f555w"]
    assert len(members) >= 4
    unaligned = combine_partials([drizzle_exposure(load_chips(p), frame, params)
                                  for p in members], frame, {}).sci
    unaligned_fwhm = _fwhm(unaligned, xy)
    print(f"FWHM (px) of {len(xy)} stars: single exposure {single_fwhm:.3f}, aligned layer "
          f"{aligned_fwhm:.3f}, unaligned layer {unaligned_fwhm:.3f}")
    assert abs(aligned_fwhm / single_fwhm - 1) < 0.05, (aligned_fwhm, single_fwhm)
    assert unaligned_fwhm / single_fwhm - 1 > 0.05, (unaligned_fwhm, single_fwhm)


# ---------------------------------------------------------------------------------------------
# exposures that disagree with their visit (the ``align_member`` preset, headers moved):
# ie3g09acq, 0.3" off the two others of its visit, is fitted on its own; id2e08acq, 4" off
# its visit (beyond the search radius), cannot be and stays on its header WCS, which
# align.mixed_frames decides about.

MOVED = {"ie3g09acq_flc.fits": (0.3, 0.0), "id2e08acq_flc.fits": (4.0, 0.0)}
OWN, LOST = "ie3g09acq_flc", "id2e08acq_flc"


def test_visits_agree_once_their_stars_motions_are_removed(runs):
    """The aligned run again with quality_testing on (only the quality jobs and the exposure
    catalogues run): the F555W layer's two visits, five years apart, measured against each
    other (mvmflow.visitmatch). Stars move with the LMC, (1.91, 0.23) mas/yr (the simulated
    scene): the raw differences must show that motion, and the differences corrected with
    the reference catalogue's proper motions must vanish within the alignment's accuracy
    (2 mas; the truth check above puts each solution within 5 mas everywhere)."""
    import json

    config = yaml.safe_load((runs["base"] / "aligned.yaml").read_text())
    run_snakemake(runs["base"], {**config, "outdir": "aligned", "quality_testing": True})
    plan = RunPlan.load(runs["aligned"] / "plan" / "plan.json")
    seen, pairs = 0, []
    for lay in plan.layers():
        if lay.scale != "fine":
            continue
        path = runs["aligned"] / "skycells" / lay.skycell / lay.layer_name.qa_crossmatch
        summary = json.loads(path.read_text())["data"]["summary"]["data"]
        visits = sorted({key[:6] for key in plan.member_keys(lay.name)})
        if len(visits) < 2:
            assert summary["visit pairs"] == [] and "1 visit" in summary["visit note"], path
            continue
        (pair,) = summary["visit pairs"]
        pairs.append(pair)
        assert pair["visits"] == visits and pair["baseline [yr]"] == pytest.approx(5.0, abs=0.1)
        if pair["matched with reference motion"] < 5:
            continue
        seen += 1
        assert abs(pair["median dRA cos(dec) [mas]"]) < 2.0, pair
        assert abs(pair["median dDec [mas]"]) < 2.0, pair
        assert pair["raw median dRA cos(dec) [mas]"] == pytest.approx(
            1.91 * pair["baseline [yr]"], abs=2.0), pair
        assert pair["raw median dDec [mas]"] == pytest.approx(
            0.23 * pair["baseline [yr]"], abs=2.0), pair
    assert seen, f"no layer with two visits and enough reference stars: {pairs}"


@pytest.fixture(scope="module")
def member_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow_member")
    result = simulate("align_member", base / "data")
    for name, (dx, dy) in MOVED.items():
        with fits.open(base / "data" / name, mode="update") as hdul:
            for hdu in hdul:
                if hdu.name == "SCI":
                    cosd = np.cos(np.radians(hdu.header["CRVAL2"]))
                    hdu.header["CRVAL1"] += dx / 3600.0 / cosd
                    hdu.header["CRVAL2"] += dy / 3600.0
    config = {"inputs": f"{base / 'data'}/*_fl?.fits",
              "align": {"reference": str(result.truth["refcat"])}}
    # first with mixed_frames: fail (stops at the plan), then the default in the same
    # directory (the catalogues and solutions are kept; only the plan onwards runs)
    failed = run_snakemake(base, {**config, "outdir": "default",
                                  "align": {**config["align"], "mixed_frames": "fail"}},
                           check=False)
    plan_log = (base / "default" / "logs" / "plan.log").read_text()
    run_snakemake(base, {**config, "outdir": "default"})  # drop_unaligned
    yield {"base": base, "data": base / "data", "result": result, "failed": failed,
           "fail_log": plan_log, "default": base / "default"}
    shutil.rmtree(base, ignore_errors=True)


def test_member_off_its_visit_fitted_alone_or_flagged(member_runs):
    out = member_runs["default"]
    sols = {p.name[: -len("_wcs.json")]: read_solution(p)
            for p in (out / "align").glob("*/*_wcs.json")}
    assert sols[OWN]["status"] == "absolute-own" and sols[OWN]["wcsname"].endswith(
        "-FIT_IMG_REFCAT")
    assert sols[LOST]["status"] == "unaligned" and sols[LOST]["flagged"]
    for key, sol in sols.items():
        if key == LOST:
            continue
        assert sol["nmatches"] >= 6
        path = member_runs["data"] / f"{key}.fits"
        exposure = Exposure.open(path)
        for extver in exposure.extvers:
            ny, nx = exposure.chip_shape(extver)
            y, x = np.mgrid[0:ny:10j, 0:nx:10j]
            solved = corrected_chip_wcs(exposure, sol, extver).all_pix2world(
                x.ravel(), y.ravel(), 0)
            truth = true_wcs(path, extver).all_pix2world(x.ravel(), y.ravel(), 0)
            assert _rms(*solved, *truth) < 5.0, key
    log = next((out / "logs" / "align").glob("*.log")).read_text()
    assert any("WARNING" in line and LOST in line and "UNALIGNED" in line
               for line in log.splitlines())
    assert any("WARNING" in line and "1 exposure left on the header WCS" in line
               for line in log.splitlines())


def test_default_drops_the_unaligned_member_and_the_layer_is_sharp(member_runs):
    out = member_runs["default"]
    dropped = Table.read(out / "plan" / "dropped.ecsv")
    rows = dropped[dropped["file"] == f"{LOST}.fits"]
    assert len(rows) >= 1 and all("drop_unaligned" in r for r in rows["reason"])
    layers = _layers(out, "f555w")
    plan = RunPlan.load(out / "plan" / "plan.json")
    f555w = [lay for lay in plan.layers() if lay.filter == "f555w"]
    assert len(f555w) == len(layers) >= 1
    assert sorted(rows["layer"]) == sorted(lay.name for lay in f555w)
    dirs = [d for d in (out / "align").iterdir() if d.is_dir()]
    for lay in f555w:
        assert f"{LOST}.fits" in [d.filename for d in lay.dropped]
        assert f"{LOST}.fits" not in [m.filename for m in lay.members]
        frames = member_frames([m.filename[: -len(".fits")] for m in lay.members] + [LOST],
                               dirs)
        assert frames.pop(LOST) == "HEADER" and set(frames.values()) == {"REFCAT"}
    for layer in layers:
        with fits.open(layer) as hdul:
            head, tab = hdul[0].header, hdul["HDRTAB"].data
            assert f"{LOST}.fits" not in [Path(f).name for f in tab["FILENAME"]]
            assert head["NALIGNED"] == head["NUMEXP"] == 4 and head["NUNALIGN"] == 0
            assert head["ALNFRAME"] == "REFCAT" and head["ALNMIXED"] is False
            assert sorted(tab["ALIGNST"]) == ["absolute"] * 3 + ["absolute-own"]
    layer = max(layers, key=lambda p: fits.getheader(p, "SCI")["NAXIS1"])
    xy = _isolated_stars(member_runs, layer)
    assert len(xy) >= 10
    frame, params = plan.layer(layer.name).frame, plan.layer_params(layer.name)
    key = "ie3g09abq_flc"
    sol = read_solution(next((out / "align").glob(f"*/{key}_wcs.json")))
    chips = apply_solution(load_chips(member_runs["data"] / f"{key}.fits"), sol)
    single = combine_partials([drizzle_exposure(chips, frame, params)], frame, {}).sci
    ratio = _fwhm(fits.getdata(layer, "SCI"), xy) / _fwhm(single, xy)
    assert abs(ratio - 1) < 0.05, ratio


def test_mixed_frames_fail_stops_the_plan(member_runs):
    """(keep is tested on the plan's layers and the header cards in test_align.py.)"""
    assert member_runs["failed"].returncode != 0
    assert "inputs in different astrometric frames" in member_runs["fail_log"]
    assert "align.mixed_frames is fail" in member_runs["fail_log"]
