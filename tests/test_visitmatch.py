"""Visit against visit (mvmflow.visitmatch, quality.visit_report): a visit's catalogue from
its exposures' sources, and the differences of two visits with and without the reference
catalogue's proper motions. Synthetic catalogues here; the workflow's files are checked in
test_quality.py (raw differences against the simulation's true motion) and on the demo
(motion-corrected, in the README's figures)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mvmflow.refcat import normalize_refcat, positions_at
from mvmflow.visitmatch import VisitCatalog, pair_statistics, visit_catalog, visit_of

RA0, DEC0 = 80.5, -69.4


def _refcat(n=300, seed=1):
    rng = np.random.default_rng(seed)
    t = Table({"ra": RA0 + rng.uniform(-0.01, 0.01, n) / np.cos(np.radians(DEC0)),
               "dec": DEC0 + rng.uniform(-0.01, 0.01, n),
               "pmra": rng.normal(1.9, 3.0, n), "pmdec": rng.normal(0.2, 3.0, n)})
    t.meta["epoch"] = 2016.0
    return normalize_refcat(t, name="TESTCAT")


def _sources(ra, dec, epoch, err=1.0, mag=20.0, exptime=100.0, name="x"):
    t = Table({"ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
               "err": np.full(len(ra), err), "mag": np.full(len(ra), mag)})
    t.meta.update(epoch=epoch, exptime=exptime, file=name)
    return t


def _shift(ra, dec, dra_mas, ddec_mas):
    return (ra + dra_mas / 3.6e6 / np.cos(np.radians(dec)), dec + ddec_mas / 3.6e6)


def test_visit_of():
    assert visit_of("j9n503abq_flc") == "j9n503"
    assert visit_of("/data/IBW311ADQ_flt.fits") == "ibw311"


def test_visit_catalog_averages_repeats_and_drops_single_detections():
    rng = np.random.default_rng(3)
    ref = _refcat(50)
    ra, dec, _ = positions_at(ref, 2010.0)
    sources = []
    for k in range(3):
        r, d = _shift(ra, dec, rng.normal(0, 2.0, ra.size), rng.normal(0, 2.0, ra.size))
        # one cosmic ray per exposure, far from any star's other detections
        r = np.append(r, RA0 + 0.02 + 0.001 * k)
        d = np.append(d, DEC0 + 0.02)
        sources.append(_sources(r, d, 2010.0 + 0.001 * k, exptime=100.0 * (k + 1),
                                name=f"e{k}"))
    cat = visit_catalog("j9n503", sources)
    assert len(cat) == ra.size  # three cosmic rays, each seen once, are dropped
    assert list(cat.ndet) == [3] * ra.size
    assert cat.exposures == ["e0", "e1", "e2"]
    # the epoch is the exposure-time weighted mean
    assert cat.epoch == pytest.approx((2010.0 * 100 + 2010.001 * 200 + 2010.002 * 300) / 600)
    # the mean of three 2-mas detections is better than one: error 2/sqrt(3) per axis
    dra = (cat.ra - ra) * np.cos(np.radians(dec)) * 3.6e6
    assert np.std(dra) == pytest.approx(2.0 / np.sqrt(3), rel=0.3)
    assert cat.err == pytest.approx(np.full(ra.size, 1 / np.sqrt(3)))


def test_a_single_exposure_visit_keeps_every_source():
    ref = _refcat(20)
    ra, dec, _ = positions_at(ref, 2010.0)
    cat = visit_catalog("j9n503", [_sources(ra, dec, 2010.0)])
    assert len(cat) == 20


def _visit(ref, epoch, offset=(0.0, 0.0), extra=0, seed=0):
    """A visit measured at ``epoch`` with an alignment error ``offset`` (mas), plus ``extra``
    stars not in the reference (moving with the LMC's 1.9, 0.2 mas/yr)."""
    ra, dec, _ = positions_at(ref, epoch)
    if extra:
        rng = np.random.default_rng(100)  # the same faint stars in every visit
        fr = RA0 + rng.uniform(-0.01, 0.01, extra) / np.cos(np.radians(DEC0))
        fd = DEC0 + rng.uniform(-0.01, 0.01, extra)
        fr, fd = _shift(fr, fd, 1.9 * (epoch - 2016.0), 0.2 * (epoch - 2016.0))
        ra, dec = np.append(ra, fr), np.append(dec, fd)
    rng = np.random.default_rng(seed)
    ra, dec = _shift(ra, dec, offset[0] + rng.normal(0, 0.5, ra.size),
                     offset[1] + rng.normal(0, 0.5, ra.size))
    n = ra.size
    return VisitCatalog(f"v{seed:05d}", epoch, [], np.asarray(ra), np.asarray(dec),
                        np.full(n, 0.5), np.full(n, 20.0), np.ones(n, int))


def test_motion_corrected_differences_measure_the_alignment_error():
    ref = _refcat()
    a = _visit(ref, 2005.0, seed=1, extra=40)
    b = _visit(ref, 2018.0, offset=(3.0, -2.0), seed=2, extra=40)
    res = pair_statistics(a, b, ref, tolerance=0.1)
    s = res["summary"]
    # every reference star is matched in spite of 13 years of 3 mas/yr scatter of motions
    assert s["matched with reference motion"] == len(ref)
    assert s["matched"] == len(ref) + 40
    assert s["median dRA cos(dec) [mas]"] == pytest.approx(3.0, abs=0.2)
    assert s["median dDec [mas]"] == pytest.approx(-2.0, abs=0.2)
    assert s["scatter dRA cos(dec) [mas]"] == pytest.approx(np.sqrt(0.5), abs=0.2)
    # the raw differences carry the stars' motion: 13 yr x (1.9, 0.2) mas/yr on the median
    assert s["raw median dRA cos(dec) [mas]"] == pytest.approx(3.0 + 13 * 1.9, abs=2.0)
    assert s["raw scatter dRA cos(dec) [mas]"] > 10 * s["scatter dRA cos(dec) [mas]"]
    assert s["baseline [yr]"] == pytest.approx(13.0)


def test_without_a_reference_only_raw_differences():
    ref = _refcat()
    a = _visit(ref, 2015.0, seed=1)
    b = _visit(ref, 2016.0, offset=(1.0, 0.0), seed=2)
    s = pair_statistics(a, b, None, tolerance=0.1)["summary"]
    assert s["matched"] == len(ref) and s["matched with reference motion"] == 0
    assert s["median dRA cos(dec) [mas]"] is None
    assert s["raw median dRA cos(dec) [mas]"] == pytest.approx(1.0 + 1.9, abs=0.5)


def test_pixels_differences_are_in_layer_pixels():
    ref = _refcat(100)
    a = _visit(ref, 2010.0, seed=1)
    b = _visit(ref, 2010.0, offset=(40.0, 0.0), seed=2)
    scale = 40.0  # mas per layer pixel, RA increasing to -x as on the sky

    def to_pixels(ra, dec):
        return (-(np.asarray(ra) - RA0) * np.cos(np.radians(DEC0)) * 3.6e6 / scale,
                (np.asarray(dec) - DEC0) * 3.6e6 / scale)

    res = pair_statistics(a, b, ref, tolerance=0.1, to_pixels=to_pixels)
    assert np.median(res["dx"]) == pytest.approx(-1.0, abs=0.05)
    assert np.median(res["dy"]) == pytest.approx(0.0, abs=0.05)
