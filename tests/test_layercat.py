"""Point-source catalogues of layers (mvmflow.layercat) against the simulator's truth.

The layers are the shared run's (tests/conftest.py: no pointing errors, so the header WCS
is the truth; alignment off), read here directly: a catalogue is made of each fine ACS and
WFC3 layer and matched with the true stars propagated to the layer's epoch.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mvmflow.layercat import (
    FLAG_EDGE,
    FLAG_MASKED_CORE,
    LayerCatParams,
    correlated_noise_factor,
    layer_catalog,
    magnitudes,
    make_layer_catalog,
    read_layer_catalog,
)
from mvmflow.simulate.truth import truth_comparison


@pytest.fixture(scope="module")
def layers(shared_run):
    return {p.name: p for p in sorted((shared_run["out"] / "skycells").glob(
        "*/hst_*_all_dr?.fits"))}


@pytest.fixture(scope="module")
def catalogs(layers, tmp_path_factory):
    """A catalogue of each fine ACS/WFC and WFC3 layer, written and read back."""
    out = tmp_path_factory.mktemp("layercat")
    cats = {}
    for name, path in layers.items():
        dest = out / name.replace("_drc.fits", "_point-cat.ecsv").replace(
            "_drz.fits", "_point-cat.ecsv")
        make_layer_catalog(path, dest)
        cats[name] = read_layer_catalog(dest)
    return cats


def test_catalogue_positions_and_magnitudes_match_truth(shared_run, layers, catalogs):
    """Clean bright isolated stars: positions within 2 mas median, ST magnitudes within
    0.02 mag median of the truth (the flux beyond 1.5" added from the model PSF), errors
    that describe the scatter."""
    truth = shared_run["data"] / "truth"
    measured = 0
    for name, cat in catalogs.items():
        r = truth_comparison(cat, layers[name], truth)
        print(name, {k: round(v, 4) for k, v in r.items()})
        if r["n"] < 5:
            continue
        measured += 1
        # the median of 5-20 stars: within 3 mas (2 mas systematic plus its noise)
        assert abs(r["dra_mas"]) < 3.0 and abs(r["ddec_mas"]) < 3.0, (name, r)
        assert r["pos_median_mas"] < 10.0, (name, r)
        assert abs(r["dmag"]) < 0.02, (name, r)
        assert r["dmag_scatter"] < 0.05, (name, r)
        # the errors are neither much too small nor much too large
        assert 0.4 < r["pull_scatter"] < 2.5, (name, r)
    assert measured >= 2, {n: truth_comparison(c, layers[n], truth) for n, c in
                           catalogs.items()}


def test_catalogue_columns_units_and_meta(catalogs):
    cat = next(c for n, c in catalogs.items() if "acs_wfc_f814w" in n)
    assert cat.colnames[:5] == ["id", "x", "y", "ra", "dec"]
    for col in ("flux", "flux_err", "mag_ab", "mag_st", "mag_err", "flags", "wht"):
        assert col in cat.colnames
    assert str(cat["ra"].unit) == "deg" and str(cat["flux"].unit) == "electron / s"
    assert list(cat["id"]) == list(range(1, len(cat) + 1))
    meta = cat.meta
    assert meta["photflam"] > 0 and meta["photplam"] > 0
    # AB - ST is fixed by the pivot wavelength
    ok = np.isfinite(cat["mag_ab"])
    expected = -5 * np.log10(meta["photplam"]) - 2.408 + 21.10
    assert np.allclose(cat["mag_ab"][ok] - cat["mag_st"][ok], expected)
    assert meta["apcorr_source"] in ("measured", "default") and 1.1 < meta["apcorr"] < 1.5
    assert set(meta["flag_bits"]) == {"1", "2", "4"}


def test_catalogue_rerun_is_byte_identical(layers, catalogs, tmp_path):
    name = next(n for n in catalogs if "acs_wfc_f814w" in n)
    a, b = tmp_path / "a.ecsv", tmp_path / "b.ecsv"
    make_layer_catalog(layers[name], a)
    make_layer_catalog(layers[name], b, LayerCatParams(tile=300))
    # smaller tiles (several, with margins) find the same bright sources, once each (a
    # source belongs to the tile holding its centre); the background is estimated per tile,
    # so faint detections may differ
    ta, tb = read_layer_catalog(a), read_layer_catalog(b)
    bright = ta[ta["snr"] > 20]
    assert len(bright) >= 5
    for row in bright:
        d = np.hypot(tb["x"] - row["x"], tb["y"] - row["y"])
        assert np.sum(d < 1.0) == 1, row
        k = int(np.argmin(d))
        assert d[k] < 0.02 and abs(tb["flux_aper"][k] / row["flux_aper"] - 1) < 2e-3
    make_layer_catalog(layers[name], b)
    assert a.read_bytes() == b.read_bytes()


def test_flags_mark_edges_and_holes(tmp_path):
    """A synthetic layer: stars in the open, on the data's edge and over a weight hole."""
    from astropy.wcs import WCS

    rng = np.random.default_rng(3)
    ny, nx = 300, 300
    yy, xx = np.mgrid[:ny, :nx]
    sci = rng.normal(0.0, 0.01, (ny, nx))
    wht = np.full((ny, nx), 1000.0)
    stars = [(80.3, 90.7), (150.2, 150.6), (220.5, 70.1), (297.0, 150.0), (150.0, 250.0)]
    for x, y in stars:
        sci += 50.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
    wht[:, 296:] = 0.0  # the data end at x = 295
    wht[248:253, 148:153] = 200.0  # an input's pixels left out at this star's core
    sci[wht == 0] = np.nan
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, -20.0]
    w.wcs.crpix = [150.0, 150.0]
    w.wcs.cd = [[-0.04 / 3600, 0], [0, 0.04 / 3600]]
    prim = fits.Header({"INSTRUME": "WFC3", "DETECTOR": "UVIS", "FILTER": "F606W",
                        "MEDWHT": 1000.0, "D001PIXF": 1.0, "D001ISCL": 0.04})
    sh = w.to_header()
    sh["PHOTFLAM"], sh["PHOTPLAM"], sh["BUNIT"] = 1e-19, 5900.0, "ELECTRONS/S"
    path = tmp_path / "hst_skycell-p0001x01y01_wfc3_uvis_f606w_all_drc.fits"
    fits.HDUList([fits.PrimaryHDU(header=prim), fits.ImageHDU(sci.astype(np.float32), sh,
                                                              name="SCI"),
                  fits.ImageHDU(wht.astype(np.float32), sh, name="WHT")]).writeto(path)
    cat = layer_catalog(path, LayerCatParams(tile=128))
    got = {(round(x), round(y)): int(f) for x, y, f in zip(cat["x"], cat["y"], cat["flags"],
                                                          strict=True)}
    assert got.get((80, 91)) == 0 and got.get((150, 151)) == 0 and got.get((220, 70)) == 0
    assert got[(150, 250)] & FLAG_MASKED_CORE
    assert all(f & FLAG_EDGE for (x, _), f in got.items() if x > 280)
    # same flux for the clean stars, with the layer's photometry
    clean = cat[cat["flags"] == 0]
    assert np.allclose(clean["flux_aper"], np.median(clean["flux_aper"]), rtol=0.02)
    ab, st = magnitudes(clean["flux"], 1e-19, 5900.0)
    np.testing.assert_allclose(clean["mag_st"], st)


def test_correlated_noise_factor():
    assert correlated_noise_factor(1.0, 1.0) == pytest.approx(1.5)
    assert correlated_noise_factor(0.8, 0.8) == pytest.approx(1.5)
    assert correlated_noise_factor(1.0, 0.8) == pytest.approx(1.25 / (1 - 1 / 3.75))
    assert correlated_noise_factor(0.1, 1.0) == pytest.approx(1 / (1 - 0.1 / 3))
