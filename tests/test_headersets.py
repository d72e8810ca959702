"""Header-only data sets (``simulate(..., headers_only=True)``, ``header_set_preset``): files
without pixels that the workflow screens and plans, for timing the DAG at scale
(benchmarks/scale.py plan)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mvmflow.exposure import DEFAULT_SAMPLES_PER_EDGE, edge_pixels
from mvmflow.grid import sky_cells_for_footprint
from mvmflow.plan import plan_skycells
from mvmflow.screen import screen_exposure
from mvmflow.simulate import read_truth, simulate
from mvmflow.simulate.detectors import detector
from mvmflow.simulate.distortion import LinearWCS, full_chip_wcs
from mvmflow.simulate.presets import P0081_CENTER, header_set_preset

N, SEED = 12, 3


@pytest.fixture(scope="module")
def header_set(tmp_path_factory):
    return simulate(header_set_preset(N, seed=SEED), tmp_path_factory.mktemp("hs"),
                    headers_only=True)


@pytest.fixture(scope="module")
def records(header_set):
    # the image-based trail test finds nothing in constant arrays; run it on one file only
    return [screen_exposure(p, check_trails=(k == 0))
            for k, p in enumerate(header_set.exposures)]


def test_preset_is_deterministic_and_exposures_distinct(header_set):
    a, b = header_set_preset(300, seed=SEED), header_set_preset(300, seed=SEED)
    assert a == b and a.n_exposures == 300
    assert header_set_preset(300, seed=SEED + 1) != a
    assert len(a.visits) > 60  # many visits
    assert {(v.instrument, e.detector) for v in a.visits for e in v.exposures} == {
        ("ACS", "WFC"), ("WFC3", "UVIS")}
    assert sum(e.aperture in ("WFC", "UVIS") for v in a.visits for e in v.exposures) >= 240
    years = {int(v.start[:4]) for v in a.visits}
    assert max(years) - min(years) >= 10
    truth = read_truth(header_set.truth_dir, "exposures")
    assert len(set(truth["rootname"])) == N
    assert len({(round(r["ra"], 7), round(r["dec"], 7), r["filter"]) for r in truth}) == N
    # spread over a square about the projection cell's centre that grows with n
    for n in (200, 2000):
        preset = header_set_preset(n, seed=SEED)
        side = np.sqrt(n / 90.0) * 21442 * 0.04
        offsets = np.array([v.offset for v in preset.visits])
        assert np.abs(offsets).max() <= side / 2
        assert np.abs(offsets).max() > 0.4 * side
        assert (preset.ra, preset.dec) == P0081_CENTER


def test_files_have_headers_and_no_pixels(header_set):
    truth = read_truth(header_set.truth_dir, "exposures")
    assert len(header_set.exposures) == len(truth) == N
    assert set(header_set.truth) == {"exposures", "chips"}
    for path in header_set.exposures[:6]:
        assert path.stat().st_size < 400_000  # headers and distortion tables only
        with fits.open(path) as hdul:
            sci = [h for h in hdul if h.name == "SCI"]
            assert sci and all(h.header["NAXIS"] == 0 and h.data is None for h in sci)
            full = hdul[0].header["SUBARRAY"] is False
            for h in hdul:
                if h.name in ("SCI", "ERR", "DQ"):
                    shape = (h.header["NPIX2"], h.header["NPIX1"])
                    if full:
                        assert shape in ((2048, 4096), (2051, 4096))
                    assert (h.header["PIXVALUE"] == 0) == (h.name == "DQ")
            assert sci[0].header["PIXVALUE"] > 0
            assert hdul["WCSDVARR", 1].data is not None  # the real distortion tables


def test_same_headers_as_the_rendered_files(tmp_path):
    """Headers-only and rendered files of one preset differ only in the pixels' statistics."""
    full = simulate("tiny", tmp_path / "full")
    bare = simulate("tiny", tmp_path / "bare", headers_only=True)
    stats = {"NGOODPIX", "GOODMIN", "GOODMAX", "GOODMEAN", "SNRMIN", "SNRMAX", "SNRMEAN",
             "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NPIX1", "NPIX2", "PIXVALUE"}
    for a, b in zip(full.exposures, bare.exposures, strict=True):
        assert a.name == b.name
        with fits.open(a) as ha, fits.open(b) as hb:
            assert [(h.name, h.ver) for h in ha] == [(h.name, h.ver) for h in hb]
            for x, y in zip(ha, hb, strict=True):
                kx = {k: v for k, v in x.header.items() if k not in stats}
                ky = {k: v for k, v in y.header.items() if k not in stats}
                assert kx == ky, (a.name, x.name, x.ver)
    assert full.truth["chips"].read_bytes() == bare.truth["chips"].read_bytes()


def test_same_seed_same_bytes(header_set, tmp_path):
    again = simulate(header_set_preset(N, seed=SEED), tmp_path, headers_only=True, workers=2)
    for a, b in zip(header_set.exposures, again.exposures, strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_screening_accepts_them(records):
    assert len(records) == N
    for rec in records:
        assert rec.accepted, (rec.filename, rec.reason)
        assert not rec.warnings, rec.warnings
        assert rec.chips and all(len(c.footprint) >= 4 for c in rec.chips)
        assert rec.instrument in ("acs", "wfc3") and rec.photflam > 0 and rec.exptime > 0
        assert not rec.cr_flagged


def _expected_skycells(header_set) -> set[str]:
    """Sky cells of the exposures from the simulator's header WCS (not from the files)."""
    chips = read_truth(header_set.truth_dir, "chips")
    exposures = read_truth(header_set.truth_dir, "exposures")
    dets = {str(r["file"]): detector(str(r["instrument"]), str(r["detector"]))
            for r in exposures}
    outlines: dict[str, list] = {}
    for row in chips:
        lin = LinearWCS([row["hdr_crval1"], row["hdr_crval2"]],
                        [[row["hdr_cd1_1"], row["hdr_cd1_2"]],
                         [row["hdr_cd2_1"], row["hdr_cd2_2"]]])
        x0, y0, nx, ny = (int(row[k]) for k in ("x0", "y0", "naxis1", "naxis2"))
        wcs = full_chip_wcs(dets[str(row["file"])], int(row["ccdchip"]), lin, x0, y0, nx,
                            ny)
        world = wcs.all_pix2world(edge_pixels((ny, nx), DEFAULT_SAMPLES_PER_EDGE), 0)
        outlines.setdefault(str(row["file"]), []).append(world)
    return {cell for polys in outlines.values() for cell in sky_cells_for_footprint(polys)}


def test_records_footprints_lie_in_p0081_and_plan(header_set, records):
    assert fits.getval(header_set.exposures[0], "CTYPE1", ("SCI", 1)) == "RA---TAN-SIP"
    for rec in records:
        for chip in rec.chips:
            fp = np.asarray(chip.footprint)
            assert np.all(np.abs(fp[:, 1] - P0081_CENTER[1]) < 2.5)  # well inside p0081
    plan = plan_skycells(records)
    cells = {sc.name for sc in plan.skycells}
    assert cells and all(c.startswith("skycell-p0081x") for c in cells)
    assert cells == _expected_skycells(header_set)
    planned = {m.filename for sc in plan.skycells for layer in sc.layers for m in layer.members}
    assert planned == {p.name for p in header_set.exposures}
    assert len(plan.jobs) >= N
