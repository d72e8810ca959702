"""Point-source catalogues (``mvmflow.catalogs``), checked against the simulator's truth.

The ``tiny`` preset (cosmic rays flagged in DQ, as after SVM processing) and a variant with
the cosmic rays left unflagged are simulated once per module. Truth positions are the
sources of ``truth/sources.ecsv`` at each exposure's epoch through the *true* WCS
(``mvmflow.simulate.true_wcs``): a star's position is its PSF's Gaussian-windowed centroid,
the estimator the catalogues use.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial import cKDTree

from mvmflow.catalogs import (
    CatalogParams,
    exposure_catalog,
    find_sources,
    laplacian_fraction,
    make_catalog,
    read_catalog,
    windowed_centroids,
)
from mvmflow.exposure import Exposure
from mvmflow.simulate import PRESETS, read_truth, simulate, true_wcs
from mvmflow.simulate.scene import positions_at

SEED = 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate("tiny", tmp_path_factory.mktemp("tiny"), seed=SEED)


@pytest.fixture(scope="module")
def tiny_unflagged(tmp_path_factory):
    preset = dataclasses.replace(PRESETS["tiny"], name="tiny_unflagged", flag_crs=False)
    return simulate(preset, tmp_path_factory.mktemp("tiny_unflagged"), seed=SEED)


@pytest.fixture(scope="module")
def catalogs(tiny):
    return {p.name: exposure_catalog(p) for p in tiny.exposures}


@pytest.fixture(scope="module")
def catalogs_unflagged(tiny_unflagged):
    return {p.name: exposure_catalog(p) for p in tiny_unflagged.exposures}


def _truth_pixels(result, name: str, extver: int = 1):
    """Truth sources of an exposure in its pixels: x, y, rate, type, count."""
    sources = read_truth(result.truth_dir, "sources")
    exposures = read_truth(result.truth_dir, "exposures")
    row = exposures[exposures["file"] == name][0]
    ra, dec = positions_at(sources, float(row["epoch"]))
    x, y = true_wcs(result.out / name, extver).all_world2pix(ra, dec, 0, quiet=True)
    rate = np.asarray(sources[f"rate_{row['filter_key']}"], dtype=np.float64)
    counts = rate * float(row["exptime"])
    return x, y, rate, np.asarray(sources["type"]), counts


def _isolated(x, y, rate, idx, radius=15.0, fraction=0.02):
    """True where no other source within ``radius`` px is brighter than ``fraction``."""
    tree = cKDTree(np.column_stack([x, y]))
    out = []
    for i in idx:
        near = [j for j in tree.query_ball_point([x[i], y[i]], radius) if j != i]
        out.append(all(rate[j] < fraction * rate[i] for j in near))
    return np.array(out, dtype=bool)


# ---------------------------------------------------------------------------------------------
# unit tests on synthetic images


def _gaussian_image(shape, stars, fwhm, sky=10.0):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    s = fwhm / 2.3548
    image = np.full(shape, sky, dtype=np.float64)
    for x, y, flux in stars:
        image += flux / (2 * np.pi * s * s) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    return image


def test_windowed_centroid_of_a_symmetric_star_is_exact():
    stars = [(30.37, 41.81, 5000.0), (70.5, 20.0, 3000.0), (15.0, 80.25, 2000.0)]
    image = _gaussian_image((100, 100), stars, fwhm=2.1, sky=0.0)
    x, y, ok, fwhm, ell = windowed_centroids(image, [30, 70, 15], [42, 20, 80])
    assert ok.all()
    np.testing.assert_allclose(x, [s[0] for s in stars], atol=1e-4)
    np.testing.assert_allclose(y, [s[1] for s in stars], atol=1e-4)
    np.testing.assert_allclose(fwhm, 2.1, rtol=1e-3)  # window deconvolved
    np.testing.assert_allclose(ell, 0.0, atol=1e-3)


def test_find_sources_masks_flagged_pixels_and_single_pixel_events():
    rng = np.random.default_rng(3)
    stars = [(40.3, 40.6, 20000.0), (100.2, 60.7, 15000.0), (60.4, 110.1, 18000.0),
             (120.6, 120.3, 12000.0), (25.5, 120.5, 16000.0), (130.0, 25.0, 14000.0)]
    image = _gaussian_image((150, 150), stars, fwhm=2.1, sky=20.0)
    image = rng.poisson(image).astype(np.float64)
    dq = np.zeros(image.shape, dtype=np.int16)
    dq[60, 100] = 256  # the second star's core is saturated
    dq[5:8, 70] = 16  # hot pixels: benign
    image[90, 90] += 3000.0  # an unflagged single-pixel hit
    image[35, 75] += 4000.0
    table = find_sources(image, dq, None, CatalogParams(), "acs_wfc")
    found = np.column_stack([table["x"], table["y"]])
    truth = np.array([(x, y) for x, y, _ in stars])
    d, i = cKDTree(truth).query(found)
    assert (d < 0.1).all(), "every detection is a star, within 0.1 px"
    assert set(i) == {0, 2, 3, 4, 5}, "the star with a flagged core is dropped"
    assert list(table["snr"]) == sorted(table["snr"], reverse=True)


def test_laplacian_fraction_separates_sharp_events_from_stars():
    star = _gaussian_image((21, 21), [(10.2, 9.8, 1000.0)], fwhm=2.1, sky=0.0)
    hit = np.zeros((21, 21))
    hit[10, 10], hit[10, 11] = 600.0, 400.0
    q_star = laplacian_fraction(star, [10.2], [9.8])[0] / 1000.0
    q_hit = laplacian_fraction(hit, [10.4], [10.0])[0] / 1000.0
    assert q_hit > 2 * q_star


# ---------------------------------------------------------------------------------------------
# simulated exposures


def test_catalog_file_format_and_determinism(tiny, tmp_path):
    path = tiny.exposures[0]
    out = make_catalog(path, tmp_path / "a_cat.ecsv")
    again = make_catalog(path, tmp_path / "b_cat.ecsv")
    assert out.read_bytes() == again.read_bytes(), "a rerun writes identical bytes"
    table = read_catalog(out)
    assert table.colnames == ["id", "chip", "x", "y", "ra", "dec", "pos_err", "flux", "snr",
                              "peak", "sharpness", "roundness1", "roundness2", "fwhm",
                              "ellipticity"]
    exposure = Exposure(path)
    meta = table.meta
    assert meta["file"] == path.name and meta["rootname"] == exposure.rootname
    assert meta["detector"] == "wfc" and meta["filter"] == "f814w"
    assert meta["expstart"] == pytest.approx(exposure.expstart)
    assert meta["epoch_mjd"] == pytest.approx(0.5 * (exposure.expstart + exposure.expend))
    assert meta["wcsname"] == exposure.wcsname
    assert meta["params"]["fwhm"] == pytest.approx(2.1)
    assert list(table["id"]) == list(range(1, len(table) + 1))
    assert set(table["chip"]) <= set(exposure.extvers)
    # RA/Dec through the full header WCS (SIP + NPOL + D2IM)
    ra, dec = exposure.chip_wcs(1).all_pix2world(table["x"], table["y"], 0)
    np.testing.assert_allclose(table["ra"], ra, rtol=0, atol=1e-10)
    np.testing.assert_allclose(table["dec"], dec, rtol=0, atol=1e-10)
    assert b"date" not in out.read_bytes().lower()


@pytest.mark.parametrize("which", ["flagged", "unflagged"])
def test_catalogs_recover_truth_stars(which, tiny, tiny_unflagged, catalogs, catalogs_unflagged):
    result, cats = (tiny, catalogs) if which == "flagged" else (tiny_unflagged, catalogs_unflagged)
    for name, cat in cats.items():
        x, y, rate, kind, counts = _truth_pixels(result, name)
        nx, ny = Exposure(result.out / name).chip_shape(1)[::-1]
        tree = cKDTree(np.column_stack([x, y]))
        d, i = tree.query(np.column_stack([cat["x"], cat["y"]]))
        # no detection without a source: no cosmic rays, hot pixels or noise peaks; with the
        # cosmic rays unflagged, a few broad hits (windowed FWHM 3-5 px) pass the screening:
        # 1-4 of 120-160 detections per exposure at seeds 1-5 (seed 1 happened to have none
        # before the simulator's PSFs were re-sampled on a pixel centre, issue 15)
        spurious = int((d >= 1.5).sum())
        allowed = 0 if which == "flagged" else int(0.04 * len(cat))
        assert spurious <= allowed, f"{name}: {spurious} spurious detections"
        assert (kind[i] == "star").mean() > 0.98, "point sources only"
        # positions of isolated, well-exposed stars
        # (the tail is crowding: a neighbour's wings pull the windowed centroid)
        bright = (cat["snr"] > 50) & (d < 0.5)
        iso = _isolated(x, y, rate, i[bright], radius=10.0)
        dx = np.asarray(cat["x"][bright])[iso] - x[i[bright]][iso]
        dy = np.asarray(cat["y"][bright])[iso] - y[i[bright]][iso]
        err = np.hypot(dx, dy)
        assert iso.sum() >= 20, name
        assert np.median(err) < 0.03, f"{name}: median error {np.median(err):.3f} px"
        assert np.percentile(err, 80) < 0.06, f"{name}: 80th pct {np.percentile(err, 80):.3f}"
        # completeness: isolated unsaturated stars inside the chip with more than 20000 e-
        inside = (x > 8) & (x < nx - 9) & (y > 8) & (y < ny - 9) & (kind == "star")
        strong = np.flatnonzero(inside & (counts > 2e4) & (counts < 1.5e5))  # not saturated
        strong = strong[_isolated(x, y, rate, strong, radius=10.0)]
        dd, _ = cKDTree(np.column_stack([cat["x"], cat["y"]])).query(
            np.column_stack([x[strong], y[strong]]))
        assert strong.size >= 10
        assert (dd < 0.5).mean() >= 0.9, f"{name}: {(dd < 0.5).mean():.2f} of strong stars found"


def test_unflagged_cosmic_rays_are_screened_not_masked(tiny, tiny_unflagged, catalogs,
                                                       catalogs_unflagged):
    """Same pixels except for the CR flags: the screen keeps about the same stars."""
    for name in catalogs:
        if not name.endswith("_flc.fits"):
            continue
        with_flags, without = catalogs[name], catalogs_unflagged[name]
        assert abs(len(without) - len(with_flags)) <= 0.15 * len(with_flags)
        dq = Exposure(tiny.out / name).dq(1)
        assert ((np.asarray(dq) & 4096) != 0).sum() > 100, "the exposure has cosmic rays"
