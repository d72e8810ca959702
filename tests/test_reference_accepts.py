"""drizzlepac 3.11.0 (the reference MVM implementation) accepts the simulated exposures.

Runs ``cell_utils.get_sky_cells`` and ``hapmultisequencer.run_mvm_processing`` on the ``tiny``
preset in a temporary working directory. If these fail, the simulation is not realistic enough
(the fix belongs in ``mvmflow.simulate``, not here). The drizzled layers are also checked
against the truth: stars land where the header WCS puts them and keep their true flux.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

pytest.importorskip("drizzlepac")

from mvmflow.simulate import read_truth, simulate  # noqa: E402
from mvmflow.simulate.data import filter_info  # noqa: E402
from mvmflow.simulate.pointing import SkyTransform  # noqa: E402
from mvmflow.simulate.psf import load_psf, windowed_centroid  # noqa: E402
from mvmflow.simulate.scene import positions_at  # noqa: E402

pytestmark = pytest.mark.reference

CELLS = ["skycell-p0081x14y14", "skycell-p0081x14y15", "skycell-p0081x15y14",
         "skycell-p0081x15y15"]
CELL = CELLS[0]
LAYERS = {
    "acs_wfc_f814w": f"hst_{CELL}_acs_wfc_f814w_all_drc.fits",
    "wfc3_ir_f110w": f"hst_{CELL}_wfc3_ir_f110w_all_drz.fits",
}
COARSE = f"hst_{CELL}_wfc3_ir_f110w_coarse-all_drz.fits"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate("tiny", tmp_path_factory.mktemp("tiny_ref"), seed=1)


def _workdir(tiny, path):
    path.mkdir()
    for exposure in tiny.exposures:
        shutil.copy(exposure, path / exposure.name)
    return path


def test_get_sky_cells_finds_the_four_cells(tiny, tmp_path, monkeypatch):
    from drizzlepac.haputils import cell_utils

    work = _workdir(tiny, tmp_path / "cells")
    monkeypatch.chdir(work)
    names = sorted(p.name for p in tiny.exposures)
    cells = cell_utils.get_sky_cells(names)
    assert sorted(cells) == CELLS
    for cell in cells.values():
        assert sorted(cell.members) == names


def _poller_line(path, cell):
    hdr = fits.getheader(path, 0)
    root = hdr["ROOTNAME"]
    if hdr["INSTRUME"] == "WFC3":
        filters = hdr["FILTER"]
    else:
        filters = f"{hdr['FILTER1']};{hdr['FILTER2']}"
    return ",".join([path.name, str(hdr["PROPOSID"]), root[1:4].upper(), root[4:6],
                     str(hdr["EXPTIME"]), filters, hdr["DETECTOR"], cell, "NEW",
                     str(path.resolve())])


@pytest.fixture(scope="module")
def mvm_run(tiny, tmp_path_factory):
    """Run drizzlepac's MVM processing of sky cell p0081x14y14 once."""
    import os

    from drizzlepac import hapmultisequencer

    work = _workdir(tiny, tmp_path_factory.mktemp("mvm") / "work")
    poller = work / f"{CELL}_input.out"
    poller.write_text("\n".join(_poller_line(work / p.name, CELL) for p in tiny.exposures))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        rc = hapmultisequencer.run_mvm_processing(poller.name)
    finally:
        os.chdir(cwd)
    return rc, work


def test_poller_has_ten_columns_and_no_trailing_newline(mvm_run):
    _, work = mvm_run
    text = (work / f"{CELL}_input.out").read_text()
    assert not text.endswith("\n")
    lines = text.split("\n")
    assert len(lines) == 4
    for line in lines:
        cols = line.split(",")
        assert len(cols) == 10 and cols[7] == CELL and cols[8] == "NEW"


def test_run_mvm_processing_accepts_and_writes_layers(mvm_run):
    rc, work = mvm_run
    assert rc == 0
    for name in [*LAYERS.values(), COARSE]:
        path = work / name
        assert path.is_file(), sorted(p.name for p in work.iterdir())
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data
            assert np.isfinite(sci).mean() > 0.05
            assert hdul[0].header["NDRIZIM"] == 2  # two exposures, one chip each
            assert hdul[0].header["SCELLID"] == CELL.removeprefix("skycell-")
    assert (work / f"{CELL}_manifest.txt").is_file()


def test_drizzled_stars_keep_true_flux_and_header_positions(tiny, mvm_run):
    """drizzlepac recovers the truth count rates (flux convention) at the header positions."""
    rc, work = mvm_run
    assert rc == 0
    src = read_truth(tiny.truth_dir, "sources")
    exps = read_truth(tiny.truth_dir, "exposures")
    for key, name in LAYERS.items():
        with fits.open(work / name) as hdul:
            sci = hdul["SCI"].data.astype(np.float64)
            wcs = WCS(hdul["SCI"].header)
        row = exps[exps["filter_key"] == key][0]
        ra, dec = positions_at(src, row["epoch"])
        error = SkyTransform(src=(row["error_ra"], row["error_dec"]),
                             dst=(row["error_ra"], row["error_dec"]),
                             rotation_deg=row["rotation"],
                             shift_arcsec=(row["offset_dx"], row["offset_dy"]))
        x, y = wcs.all_world2pix(*error(ra, dec), 0)  # where the header WCS puts the stars
        rate = np.asarray(src[f"rate_{key}"])
        psf = load_psf(filter_info(row["instrument"], row["detector"], row["filter"]).psf)
        native = fits.getheader(tiny.out / row["file"], ("SCI", 1))["IDCSCALE"]
        r_ap, r_iso = 0.5 / 0.04, 1.0 / 0.04
        ee = psf.encircled_energy(0.5 / native)
        ny, nx = sci.shape
        ratios, offsets = [], []
        for i in np.argsort(-rate):
            if src["type"][i] != "star" or rate[i] * row["exptime"] * psf.image.max() > 30000:
                continue
            if rate[i] < 20 or not (r_iso < x[i] < nx - r_iso and r_iso < y[i] < ny - r_iso):
                continue
            d = np.hypot(x - x[i], y - y[i])
            if np.any(rate[(d > 0) & (d < r_iso)] > 0.01 * rate[i]):
                continue
            yy, xx = np.indices(sci.shape)
            r = np.hypot(xx - x[i], yy - y[i])
            cut = sci[r < r_iso]
            if np.isnan(cut).any():
                continue
            sky = np.median(sci[(r > 0.8 * r_iso) & (r < r_iso)])
            star = np.where(r < r_ap, sci - sky, 0.0)
            ratios.append(star.sum() / (rate[i] * ee))
            cx, cy = windowed_centroid(np.nan_to_num(sci) - sky, x[i], y[i],
                                       sigma=2.0 * native / 0.04)
            offsets.append(np.hypot(cx - x[i], cy - y[i]))
        assert len(ratios) >= 3, key
        assert np.median(ratios) == pytest.approx(1.0, abs=0.04), (key, ratios)
        # within 0.05 native pixels (in 0.04" output pixels)
        assert np.median(offsets) < 0.05 * native / 0.04, (key, offsets)
