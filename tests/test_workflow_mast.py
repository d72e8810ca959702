"""The workflow on a region of the sky fetched from MAST (the local server of
tests/mastserver.py serving the simulated ``tiny_noerr`` exposures as MAST's CAOM services,
tests/mast_caom.py).

One glob run and one region run of the same four files (one sky cell, no alignment, no
cosmic-ray rejection: seconds each) are made once for the module; the archive also lists a
proprietary exposure and the FLT twin of an FLC, which must be listed and never asked for.
A second run of the region into a new directory and a run of the kept product table go up
to the input list only (nothing after it asks the archive). The scenario of a file that
cannot be fetched (two more runs: the failure, then the recovery) is marked slow.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from astropy.table import Table
from mast_caom import CaomArchive
from mastserver import MastServer
from wfrun import run_snakemake

from mvmflow.inputs import read_input_table
from mvmflow.simulate.presets import DEMO_CENTER

RA, DEC = DEMO_CENTER
SKYCELL = "skycell-p0081x14y14"
REGION = {"mast": {"ra": RA, "dec": DEC, "radius": 120}}


def _config(inputs, outdir: str, resources: Path, url: str | None) -> dict:
    config = {"inputs": inputs, "outdir": outdir, "resources": str(resources),
              "align": {"enabled": False}, "skycells": [SKYCELL],
              "cosmic_rays": {"default": "never"},
              "archive": {"retries": 1, "backoff": 0.01, "timeout": 10}}
    if url:
        config["archive"]["mast_url"] = url
    return config


def _outputs(out: Path) -> dict[str, bytes]:
    """The bytes of every product, trailer and manifest (the poller files name the inputs'
    paths, which differ between a glob run and a region run)."""
    return {str(p.relative_to(out)): p.read_bytes()
            for p in sorted((out / "skycells").rglob("*"))
            if p.is_file() and not p.name.endswith("_input.out")}


def _until(outdir: str) -> tuple[str, ...]:
    """Snakemake arguments that run only up to the input list of ``outdir`` (``--cores``
    again ends the ``--configfile`` list, so the target is read as a target)."""
    return ("--cores", "2", f"{outdir}/inputs.tsv")


def _uris(server) -> list[str]:
    return [u for r in server.requests for u in r.params("uri")]


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    """Simulated files, the server, a glob run and a region run of them."""
    from mvmflow.simulate import simulate

    base = tmp_path_factory.mktemp("mast_run")
    data = base / "data"
    files = sorted(Path(p) for p in simulate("tiny_noerr", data).exposures)
    archive = CaomArchive()
    observations = {path: archive.add_exposure(path) for path in files}
    flc = next(p for p in files if p.name.endswith("_flc.fits"))
    twin = flc.name.replace("_flc", "_flt")  # listed beside its FLC, as MAST does
    archive.add_exposure(flc, name=twin, obsid=observations[flc]["obsid"], decoys=False)
    private = "j9n599aaq_flc.fits"
    archive.add_exposure(files[-1], name=private, rights="EXCLUSIVE_ACCESS")
    server = MastServer().start()
    archive.install(server)
    resources = base / "resources"
    run_snakemake(base, _config(f"{data}/*_fl?.fits", "glob", resources, None))
    run = run_snakemake(base, _config(REGION, "region", resources, server.url))
    yield {"base": base, "data": data, "files": files, "server": server, "archive": archive,
           "resources": resources, "twin": twin, "private": private,
           "terminal": run.stdout + run.stderr, "requests": list(server.requests)}
    server.stop()
    if not os.environ.get("MVMFLOW_KEEP_TEST_RUN"):
        shutil.rmtree(base, ignore_errors=True)


def test_region_run_equals_the_glob_run(region):
    base = region["base"]
    glob_out, region_out = _outputs(base / "glob"), _outputs(base / "region")
    assert any(name.endswith("_drc.fits") for name in glob_out)
    assert any(name.endswith("_drz.fits") for name in glob_out)
    assert glob_out.keys() == region_out.keys()
    differ = [name for name in glob_out if glob_out[name] != region_out[name]]
    assert not differ, differ
    inputs = read_input_table(base / "region" / "inputs.tsv")
    mirror = region["resources"] / "mast"
    assert inputs == {p.name[:-5]: str((mirror / p.name).resolve()) for p in region["files"]}
    for path in region["files"]:  # the mirror holds the archive's bytes
        assert (mirror / path.name).read_bytes() == path.read_bytes()


def test_region_run_lists_but_never_fetches_proprietary_and_twin_files(region):
    table = Table.read(region["base"] / "region" / "mast" / "query.ecsv")
    status = dict(zip(table["filename"], table["status"], strict=True))
    assert status[region["private"]] == "proprietary"
    assert status[region["twin"]].startswith("skipped: ")
    assert sorted(n for n, s in status.items() if s == "fetch") == \
        sorted(p.name for p in region["files"])
    fetched = [u for r in region["requests"] if r.path.startswith("/api/v0.1/Download")
               for u in r.params("uri")]
    assert sorted(fetched) == sorted(f"mast:HST/product/{p.name}" for p in region["files"])
    missing = Table.read(region["base"] / "region" / "mast" / "missing.ecsv")
    assert list(missing["filename"]) == [region["private"]]
    assert list(missing["status"]) == ["proprietary"]
    assert not (region["resources"] / "mast" / region["private"]).exists()


def test_second_run_of_the_region_makes_no_request(region, monkeypatch):
    """Into a new output directory, with the URL from MVMFLOW_MAST_URL (the config names a
    port nobody listens on): the kept answer and the mirror serve everything."""
    server, base = region["server"], region["base"]
    server.reset_requests()
    monkeypatch.setenv("MVMFLOW_MAST_URL", server.url)
    # up to the input list: what follows it never asks the archive
    run_snakemake(base, _config(REGION, "again", region["resources"], "http://127.0.0.1:9"),
                  *_until("again"))
    assert server.count() == 0, [r.path for r in server.requests]
    assert read_input_table(base / "again" / "inputs.tsv") == \
        read_input_table(base / "region" / "inputs.tsv")
    assert (base / "again" / "mast" / "query.ecsv").read_bytes() == \
        (base / "region" / "mast" / "query.ecsv").read_bytes()


def test_kept_table_reruns_the_same_files_without_a_query(region):
    """``inputs: <the kept table>``: the files of the first run, although the archive now
    holds one more exposure of the region; no request at all."""
    server, base = region["server"], region["base"]
    extra = region["data"] / "ic7j03aaq_flt.fits"
    shutil.copy(region["files"][0], extra)
    region["archive"].add_exposure(extra)
    region["archive"].install(server)
    server.reset_requests()
    table = str(base / "region" / "mast" / "query.ecsv")
    run_snakemake(base, _config(table, "table", region["resources"], server.url),
                  *_until("table"))
    assert server.count() == 0
    assert read_input_table(base / "table" / "inputs.tsv") == \
        read_input_table(base / "region" / "inputs.tsv")


@pytest.mark.slow
def test_a_file_that_cannot_be_fetched_is_reported_and_the_run_completes(region):
    """One file answers 500 to every attempt: the run completes with the others, the
    report and the summary name the file; the next run tries it again (and gets it)."""
    server, base, files = region["server"], region["base"], region["files"]
    bad = files[0].name
    uri = f"mast:HST/product/{bad}"
    (region["resources"] / "mast" / bad).unlink()
    server.add_fault(uri, "500", "500")  # retries: 1, so two attempts
    server.reset_requests()
    run = run_snakemake(base, _config(REGION, "faulty", region["resources"], server.url))
    assert _uris(server).count(uri) == 2
    assert server.count("/api/v0/invoke") == 0  # the kept answer
    missing = Table.read(base / "faulty" / "mast" / "missing.ecsv")
    failed = [(f, r) for f, s, r in missing.iterrows() if s == "failed"]
    assert len(failed) == 1 and failed[0][0] == bad and "HTTP 500" in failed[0][1]
    assert f"not processed ({bad})" in run.stdout + run.stderr
    inputs = read_input_table(base / "faulty" / "inputs.tsv")
    assert sorted(inputs) == sorted(p.name[:-5] for p in files[1:])
    products = [p for p in (base / "faulty" / "skycells").rglob("*_dr?.fits")]
    assert products
    assert not list((region["resources"] / "mast").glob(f"*{bad}*"))  # no bad file left
    # the next run asks for that file again (and only that file), and now processes it
    server.reset_requests()
    run_snakemake(base, _config(REGION, "faulty", region["resources"], server.url))
    assert _uris(server) == [uri]
    assert sorted(read_input_table(base / "faulty" / "inputs.tsv")) == \
        sorted(p.name[:-5] for p in files)
    assert _outputs(base / "faulty") == _outputs(base / "region")
    missing = Table.read(base / "faulty" / "mast" / "missing.ecsv")
    assert "failed" not in list(missing["status"])
