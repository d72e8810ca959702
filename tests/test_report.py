"""The previews of the shared run, and its Snakemake report: built offline, opened in a
browser (docs/design.md, "Previews and the report")."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from wfrun import ROOT, run_snakemake, shared_config

sys.path.insert(0, str(ROOT / "benchmarks"))
from report_screenshot import check_report, find_browser  # noqa: E402


def test_every_layer_has_a_preview_coverage_and_statistics(shared_run):
    out = shared_run["out"]
    from mvmflow.runplan import RunPlan

    plan = RunPlan.load(out / "plan" / "plan.json")
    layers = plan.layers()
    assert len(layers) == 12 and len(plan.mosaic_layers) == 3
    for layer in layers + plan.mosaic_layers:
        where = layer.skycell or "mosaic"
        stem = out / "previews" / where / layer.name[:-5]
        for kind in ("preview", "coverage"):
            png = Path(f"{stem}_{kind}.png")
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        stats = json.loads(Path(f"{stem}_stats.json").read_text())
        product = out / ("skycells/" + layer.skycell if layer.skycell else "mosaic") / layer.name
        wht = fits.getdata(product, "WHT")
        assert stats["layer"] == layer.name
        assert (stats["ny"], stats["nx"]) == wht.shape
        assert stats["covered"] == pytest.approx(np.mean(wht > 0), abs=1e-6)
        assert stats["max_exposures"] >= 1
    for cell in plan.skycells:
        png = out / "previews" / cell.name / f"{cell.name}_footprints.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_screening_table_shows_every_rejected_file_and_why(shared_run):
    text = (shared_run["out"] / "previews" / "screening.html").read_text()
    for name, word in shared_run["bad"].items():
        row = next(line for line in text.splitlines() if f"<td>{name}</td>" in line)
        assert "<td>rejected</td>" in row and word.lower() in row.lower(), row
    for path in shared_run["good"]:
        assert f"<td>{path.name}</td>" in text


@pytest.fixture(scope="module")
def report(shared_run, tmp_path_factory):
    """The shared run's report, as HTML and as a zip (a separate snakemake invocation in
    the run's directory: no job runs)."""
    base = shared_run["base"]
    config = shared_config(f"{shared_run['data']}/*_fl?.fits")
    where = tmp_path_factory.mktemp("report")
    made = {}
    for kind in ("html", "zip"):
        path = where / f"report.{kind}"
        run_snakemake(base, config, "--report", str(path))
        made[kind] = path
    return made


def test_report_builds_offline_with_every_item(shared_run, report):
    from mvmflow.runplan import RunPlan

    plan = RunPlan.load(shared_run["out"] / "plan" / "plan.json")
    html = report["html"].read_text()
    # self-contained: no script or style fetched from the network
    assert '<script src="http' not in html and '<link href="http' not in html
    names = ["screening.html", "layers.html"]
    names += [f"{c.name}_footprints.png" for c in plan.skycells]
    names += [f"{layer.name[:-5]}_{kind}.png" for layer in plan.layers() + plan.mosaic_layers
              for kind in ("preview", "coverage")]
    for name in names:
        assert f'"{name}"' in html, name
    # the categories: the run, the mosaic, and each sky cell with a subcategory per layer
    assert '"run": {' in html and '"mosaic": {' in html
    for cell in plan.skycells:
        assert f'"{cell.name}": {{' in html
    assert '"acs_wfc_f814w_all_drc": [' in html
    with zipfile.ZipFile(report["zip"]) as z:
        members = z.namelist()
    assert any(m.endswith("report.html") for m in members)
    for name in names:
        assert any(m.endswith("/" + name) for m in members), name


@pytest.mark.skipif(find_browser() is None, reason="no Chromium (apt-get install chromium)")
def test_report_shows_the_previews_in_a_browser(report, tmp_path):
    """benchmarks/report_screenshot.py: the report opened in headless Chromium, a layer's
    preview shown as after a click, decoded by the browser, on the screenshot."""
    import matplotlib.image as mpimg

    shot = tmp_path / "report.png"
    found = check_report(report["html"], shot, "_preview.png")
    assert found["result"].endswith("_preview.png")
    assert found["width"] > 500 and found["height"] > 500  # the PNG as written (850 px wide)
    image = mpimg.imread(shot)
    assert image.shape[:2] == (1000, 1400)
    # the picture is on the page: its dark sky covers a good part of the content pane
    dark = np.all(image[..., :3] < 0.2, axis=-1)
    assert dark[:, 600:].mean() > 0.1
    # a table too: the screening's page laid out in the content pane
    found = check_report(report["html"], tmp_path / "screening.png", "screening.html")
    assert found["result"].endswith("previews/screening.html") and found["height"] > 100
