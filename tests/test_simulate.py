"""Tests of the simulated HST exposures (``mvmflow.simulate``) on the ``tiny`` preset.

The preset is simulated once per session into a temporary directory. Every check compares the
files with something computed independently (the file name, the truth tables, astropy/stwcs
WCS evaluation, photometry on the pixels), so each can fail.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from mvmflow.simulate import (
    DEMO_CENTER,
    PRESETS,
    SceneSpec,
    plan_exposures,
    read_truth,
    simulate,
    true_wcs,
)
from mvmflow.simulate.data import available_filters, filter_info
from mvmflow.simulate.detectors import detector
from mvmflow.simulate.pointing import tan_project
from mvmflow.simulate.presets import SKY_RATES
from mvmflow.simulate.psf import load_psf, windowed_centroid
from mvmflow.simulate.scene import positions_at

SEED = 1
DQ_SATURATED, DQ_HOT, DQ_WARM, DQ_CR, DQ_RAMP_CR = 256, 16, 64, 4096, 8192


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return simulate("tiny", out, seed=SEED)


@pytest.fixture(scope="session")
def truth(tiny):
    return {name: read_truth(tiny.truth_dir, name)
            for name in ("sources", "exposures", "chips", "refcat")}


def _wcs(hdul, extver):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(hdul["SCI", extver].header, hdul)


def _n_sci(hdul):
    return sum(1 for h in hdul if h.name == "SCI")


# ---------------------------------------------------------------------------------------------
# files and headers


def test_result_lists_every_file(tiny, truth):
    assert len(tiny.exposures) == PRESETS["tiny"].n_exposures == 4
    assert {p.name for p in tiny.exposures} == set(truth["exposures"]["file"])
    for path in tiny.exposures + list(tiny.truth.values()):
        assert path.is_file(), path
    assert set(tiny.truth) == {"sources", "exposures", "chips", "refcat"}


def test_file_structure(tiny, truth):
    for row in truth["exposures"]:
        with fits.open(tiny.out / row["file"]) as hdul:
            names = [(h.name, h.ver) for h in hdul[1:]]
            if row["detector"] == "IR":
                assert names == [("SCI", 1), ("ERR", 1), ("DQ", 1), ("SAMP", 1), ("TIME", 1)]
                assert hdul["SAMP"].data.dtype.kind == "i"
                assert np.all(hdul["TIME"].data <= row["exptime"] + 1e-3)
            else:  # ACS/WFC subarray: one chip plus its real NPOL (2) and D2IM (1) tables
                assert names == [("SCI", 1), ("ERR", 1), ("DQ", 1), ("WCSDVARR", 1),
                                 ("WCSDVARR", 2), ("D2IMARR", 1)]
                assert hdul["D2IMARR"].data.shape == (1, 4096)
                assert hdul["WCSDVARR", 1].data.shape == (33, 65)
            ap = {"WFC1-512": (512, 512), "IRSUB256": (256, 256)}[row["aperture"]]
            assert hdul["SCI"].data.shape == ap
            assert hdul["SCI"].data.dtype.newbyteorder("=") == np.float32
            assert hdul["DQ"].data.dtype.newbyteorder("=") == np.int16
            assert np.isfinite(hdul["SCI"].data).all() and np.isfinite(hdul["ERR"].data).all()
            assert (hdul["ERR"].data > 0).all()


def test_primary_keywords_consistent(tiny, truth):
    for row in truth["exposures"]:
        name = row["file"]
        hdr = fits.getheader(tiny.out / name, 0)
        root = name[:9]
        assert re.fullmatch(r"[ij][0-9a-z]{3}[0-9a-z]{2}[0-9a-z]{2}q_fl[tc]\.fits", name)
        assert hdr["ROOTNAME"] == root and hdr["FILENAME"] == name
        assert hdr["INSTRUME"] == {"j": "ACS", "i": "WFC3"}[root[0]] == row["instrument"]
        assert hdr["DETECTOR"] == row["detector"]
        assert hdr["PRIMESI"] == hdr["INSTRUME"]
        assert isinstance(hdr["PROPOSID"], int) and hdr["PROPOSID"] == row["proposid"]
        assert hdr["LINENUM"].startswith(root[4:6] + ".")
        assert hdr["ASN_ID"] == (root[:6] + "010").upper()
        assert hdr["ASN_TAB"] == hdr["ASN_ID"].lower() + "_asn.fits"
        # timing
        assert hdr["EXPSTART"] < hdr["EXPEND"]
        assert (hdr["EXPEND"] - hdr["EXPSTART"]) * 86400 == pytest.approx(hdr["EXPTIME"],
                                                                          abs=1e-3)
        assert hdr["EXPTIME"] == row["exptime"] > 0
        start = Time(f"{hdr['DATE-OBS']}T{hdr['TIME-OBS']}", scale="utc").mjd
        assert abs(start - hdr["EXPSTART"]) * 86400 < 1.0
        # no wall-clock dates: the file "was written" two days after the observation
        assert Time(hdr["DATE"]).mjd - hdr["EXPEND"] == pytest.approx(2.0, abs=1.0)
        # viability keywords MVM screens on
        assert hdr["OBSTYPE"] == "IMAGING" and hdr["IMAGETYP"] == "EXT"
        assert hdr["DRIZCORR"] == "COMPLETE"
        assert hdr["MTFLAG"].strip().upper() != "T"
        assert hdr["FGSLOCK"].startswith("FINE")
        assert "GSFAIL" not in hdr["QUALITY"].upper()
        assert hdr["SUBARRAY"] is True and hdr["APERTURE"] == row["aperture"]
        if hdr["INSTRUME"] == "WFC3":
            assert hdr["SCAN_TYP"] == "N"
            assert hdr["FILTER"] == row["filter"]
            assert hdr["SUBTYPE"] == "SQ256SUB" and hdr["NSAMP"] >= 2
            for key in ("PHOTFLAM", "PHOTPLAM", "PHOTBW", "PHOTZPT", "PHOTMODE"):
                assert key in hdr  # WFC3/IR keeps PHOT* in the primary header
            assert hdr["PHOTFLAM"] > 0
        else:
            assert (hdr["FILTER1"], hdr["FILTER2"]) == ("CLEAR1L", "F814W")
            assert hdr["CCDAMP"] == "B"  # WFC1-512 is read by amplifier B
            assert hdr["PCTECORR"] == "COMPLETE"  # FLC
        # stale WCS bookkeeping removed
        for key in hdr:
            assert not re.fullmatch(r"(WCSNAME|CRVAL1|CD1_1)[A-Z]", key), key


def test_extension_keywords_consistent(tiny, truth):
    for row in truth["exposures"]:
        with fits.open(tiny.out / row["file"]) as hdul:
            assert not any(h.name in ("HDRLET", "WCSCORR") for h in hdul)
            sci = hdul["SCI", 1].header
            det = detector(row["instrument"], row["detector"])
            assert sci["BUNIT"] == {"ACS": "ELECTRONS", "WFC3": "ELECTRONS/S"}[
                row["instrument"]] == det.bunit
            assert hdul["ERR", 1].header["BUNIT"] == sci["BUNIT"]
            assert sci["EXPNAME"] == row["rootname"]
            assert sci["WCSNAME"].startswith("IDC_") and sci["WCSNAME"] == hdul[
                "DQ", 1].header["WCSNAME"]
            assert sci["IDCSCALE"] == pytest.approx(
                {"WFC": 0.05, "IR": 0.1282500028610229}[row["detector"]])
            assert sci["SDQFLAGS"] == 31743
            chips = truth["chips"][truth["chips"]["file"] == row["file"]]
            assert sci["LTV1"] == -chips["x0"][0] and sci["LTV2"] == -chips["y0"][0]
            assert sci["SIZAXIS1"] == sci["NAXIS1"] and sci["SIZAXIS2"] == sci["NAXIS2"]
            assert sci["CRPIX1"] == pytest.approx(chips["crpix1"][0])
            if row["instrument"] == "ACS":
                assert sci["CCDCHIP"] == 1  # WFC1-512 is on WFC1
                assert sci["PHOTFLAM"] > 0 and sci["PHOTMODE"] == "ACS WFC1 F814W"
                info = filter_info("ACS", "WFC", "F814W")
                assert sci["PHOTFLAM"] == pytest.approx(info.photflam)
                assert 0 < sci["MEANDARK"]
            assert "POLYGON ICRS" in sci["S_REGION"]
            # the ORIENTAT keyword describes the header CD matrix
            assert sci["ORIENTAT"] == pytest.approx(
                np.degrees(np.arctan2(sci["CD1_2"], sci["CD2_2"])), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# WCS and distortion


def test_wcs_has_full_distortion_and_stwcs_opens_it(tiny, truth):
    from stwcs.wcsutil import HSTWCS

    for row in truth["exposures"]:
        path = tiny.out / row["file"]
        with fits.open(path) as hdul:
            for ext in range(1, _n_sci(hdul) + 1):
                w = _wcs(hdul, ext)
                assert w.sip is not None and w.sip.a_order == 4
                ny, nx = hdul["SCI", ext].data.shape
                grid = np.array([(x, y) for x in np.linspace(0, nx - 1, 9)
                                 for y in np.linspace(0, ny - 1, 9)])
                lookup = np.hypot(*(w.p4_pix2foc(grid, 0) - grid).T) + np.hypot(
                    *(w.det2im(grid, 0) - grid).T)  # NPOL + D2IM corrections (pixels)
                if row["detector"] == "WFC":
                    assert w.cpdis1 is not None and w.cpdis2 is not None
                    assert w.det2im1 is not None
                    size = np.abs(lookup).max()
                    assert 0.01 < size < 0.5, size  # real tables: hundredths to tenths of px
                else:
                    assert w.cpdis1 is None and w.det2im1 is None
                    assert np.abs(lookup).max() < 1e-9
                hst = HSTWCS(hdul, ext=("SCI", ext))
                assert hst.idcscale == pytest.approx(hdul["SCI", ext].header["IDCSCALE"])
                a = np.array(hst.all_pix2world(grid, 0))
                b = np.array(w.all_pix2world(grid, 0))
                assert np.abs(a - b).max() * 3600 < 1e-6


def test_subarray_distortion_is_that_of_the_full_chip(tiny, truth):
    from mvmflow.simulate.distortion import LinearWCS, full_chip_wcs

    row = truth["exposures"][0]
    chip = truth["chips"][truth["chips"]["file"] == row["file"]][0]
    w = true_wcs(tiny.out / row["file"], 1)
    det = detector("ACS", "WFC")
    lin = LinearWCS([chip["crval1"], chip["crval2"]],
                    [[chip["cd1_1"], chip["cd1_2"]], [chip["cd2_1"], chip["cd2_2"]]])
    full = full_chip_wcs(det, int(chip["ccdchip"]), lin)
    xy = np.array([[3.2, 7.9], [100.5, 400.1], [511.0, 0.0], [250.25, 300.75]])
    sub = np.array(w.all_pix2world(xy, 0))
    ref = np.array(full.all_pix2world(xy + [chip["x0"], chip["y0"]], 0))
    assert np.abs(sub - ref).max() * 3600 < 1e-7


def test_header_wcs_differs_from_true_by_injected_error(tiny, truth):
    assert np.hypot(truth["exposures"]["offset_dx"], truth["exposures"]["offset_dy"]).max() > 0.05
    for row in truth["exposures"]:
        path = tiny.out / row["file"]
        with fits.open(path) as hdul:
            header = _wcs(hdul, 1)
            ny, nx = hdul["SCI", 1].data.shape
        true = true_wcs(path, 1)
        grid = np.array([(x, y) for x in np.linspace(0, nx - 1, 7)
                         for y in np.linspace(0, ny - 1, 7)])
        ref = (row["error_ra"], row["error_dec"])
        xt, yt = tan_project(*ref, *true.all_pix2world(grid, 0).T)
        xh, yh = tan_project(*ref, *header.all_pix2world(grid, 0).T)
        # fit header = R(theta) @ true + shift in the tangent plane of the visit
        a = np.column_stack([xt, yt, np.ones_like(xt)])
        coef, *_ = np.linalg.lstsq(a, np.column_stack([xh, yh]), rcond=None)
        rot = np.degrees(np.arctan2(coef[1, 0], coef[0, 0]))
        assert coef[2, 0] * 3600 == pytest.approx(row["offset_dx"], abs=2e-4)
        assert coef[2, 1] * 3600 == pytest.approx(row["offset_dy"], abs=2e-4)
        assert rot == pytest.approx(row["rotation"], abs=1e-5)
        resid = a @ coef - np.column_stack([xh, yh])
        assert np.abs(resid).max() * 3600 < 1e-4  # a pure rotation + shift


def test_true_pointing_and_chip_geometry(tiny, truth):
    """The aperture centre of the true WCS is where exposures.ecsv says the pointing is."""
    for row in truth["exposures"]:
        path = tiny.out / row["file"]
        w = true_wcs(path, 1)
        ny, nx = fits.getdata(path, ("SCI", 1)).shape
        ra, dec = w.all_pix2world((nx - 1) / 2, (ny - 1) / 2, 0)
        dx, dy = tan_project(row["ra"], row["dec"], ra, dec)
        assert np.hypot(dx, dy) * 3600 < 1e-6
        orient = np.degrees(np.arctan2(w.wcs.cd[0, 1], w.wcs.cd[1, 1]))
        assert abs(((orient - row["pa"]) + 180) % 360 - 180) < 1.0  # chip rotated with PA


# ---------------------------------------------------------------------------------------------
# truth: photometry and astrometry on the pixels


def _stars_on_chip(tiny, truth, row, ext=1, iso_arcsec=1.0, min_counts=4000.0):
    """Bright, isolated, unsaturated truth stars and their true pixel positions."""
    src = truth["sources"]
    path = tiny.out / row["file"]
    w = true_wcs(path, ext)
    ra, dec = positions_at(src, row["epoch"])
    x, y = w.all_world2pix(ra, dec, 0, quiet=True)
    counts = np.asarray(src[f"rate_{row['filter_key']}"]) * row["exptime"]
    psf = load_psf(filter_info(row["instrument"], row["detector"], row["filter"]).psf)
    full_well = detector(row["instrument"], row["detector"]).full_well * 0.5
    pix = fits.getheader(path, ("SCI", ext))["IDCSCALE"]
    iso = iso_arcsec / pix
    ny, nx = fits.getdata(path, ("SCI", ext)).shape
    keep = []
    for i in np.nonzero((src["type"] == "star") & (counts > min_counts)
                        & (counts * psf.image.max() < full_well))[0]:
        if not (iso < x[i] < nx - 1 - iso and iso < y[i] < ny - 1 - iso):
            continue
        d = np.hypot(x - x[i], y - y[i])
        if np.any(counts[(d > 0) & (d < iso)] > 0.005 * counts[i]):
            continue
        keep.append(i)
    return np.array(keep, dtype=int), x, y, counts, psf, w


def test_truth_flux_of_isolated_stars(tiny, truth):
    for row in truth["exposures"]:
        path = tiny.out / row["file"]
        idx, x, y, counts, psf, w = _stars_on_chip(tiny, truth, row)
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data.astype(np.float64)
            dq = hdul["DQ"].data
            idcscale = hdul["SCI"].header["IDCSCALE"]
        scale = row["exptime"] if row["detector"] == "IR" else 1.0  # IR is in e-/s
        radius = 0.3 / idcscale
        ratios = []
        for i in idx:
            yy, xx = np.indices(sci.shape)
            r = np.hypot(xx - x[i], yy - y[i])
            if np.any(dq[r < radius] & (DQ_CR | DQ_SATURATED | DQ_RAMP_CR | 4)):
                continue
            annulus = (r > 0.6 / idcscale) & (r < 0.9 / idcscale) & (dq == 0)
            _, sky, _ = sigma_clipped_stats(sci[annulus])
            # pixel area from the true WCS (independent of the simulator's area map)
            p = np.array([[x[i] - 0.5, y[i]], [x[i] + 0.5, y[i]],
                          [x[i], y[i] - 0.5], [x[i], y[i] + 0.5]])
            ra, dec = w.all_pix2world(p, 0).T
            xi, eta = tan_project(ra[0], dec[0], ra, dec)
            jac = np.array([[xi[1] - xi[0], xi[3] - xi[2]], [eta[1] - eta[0], eta[3] - eta[2]]])
            pam = abs(np.linalg.det(jac)) * 3600**2 / idcscale**2
            flux = (sci[r < radius] - sky).sum() * pam * scale
            ratios.append(flux / (counts[i] * psf.encircled_energy(radius, x[i], y[i])))
        ratios = np.array(ratios)
        assert len(ratios) >= 8, row["file"]
        assert np.median(ratios) == pytest.approx(1.0, abs=0.02), (row["file"], ratios)


def test_truth_positions_of_isolated_stars(tiny, truth):
    for row in truth["exposures"]:
        path = tiny.out / row["file"]
        idx, x, y, counts, psf, w = _stars_on_chip(tiny, truth, row, min_counts=20000.0)
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data.astype(np.float64)
        _, sky, _ = sigma_clipped_stats(sci)
        offsets = np.array([np.subtract(windowed_centroid(sci - sky, x[i], y[i]), (x[i], y[i]))
                            for i in idx])
        assert len(offsets) >= 8, row["file"]
        dist = np.hypot(offsets[:, 0], offsets[:, 1])
        assert np.median(dist) < 0.03, (row["file"], offsets)
        assert np.percentile(dist, 80) < 0.05, (row["file"], offsets)
        assert np.abs(np.median(offsets, axis=0)).max() < 0.02  # no systematic shift


def _gaussian_centroid(image: np.ndarray, x: float, y: float, half: int):
    """2-D circular Gaussian + constant, least-squares fitted to ``image`` within ``half`` px
    of ``(x, y)``: a core centroid, independent of the windowed one that defines positions."""
    from scipy import optimize

    ix, iy = int(round(x)), int(round(y))
    cut = image[iy - half:iy + half + 1, ix - half:ix + half + 1]
    yy, xx = np.indices(cut.shape, dtype=np.float64)

    def resid(q):
        a, cx, cy, s, b = q
        return (a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)) + b - cut).ravel()

    fit = optimize.least_squares(resid, [cut.max(), x - ix + half, y - iy + half, 0.6, 0.0],
                                 method="lm")
    return fit.x[1] + ix - half, fit.x[2] + iy - half


def test_truth_positions_core_centroids(tiny, truth):
    """A 2-D Gaussian fit to a star's core lands on its true position too (issue 15: WFC3/IR
    F110W layers were 5-6 mas off with Gaussian centroids: the stars were drawn lopsided)."""
    offsets = {}  # detector -> offsets (mas along the chip's axes) of all its stars
    for row in truth["exposures"]:
        path = tiny.out / row["file"]
        idx, x, y, counts, psf, w = _stars_on_chip(tiny, truth, row, min_counts=20000.0)
        with fits.open(path) as hdul:
            sci = hdul["SCI"].data.astype(np.float64)
            pix = hdul["SCI"].header["IDCSCALE"]
        half = 3 if row["detector"] == "IR" else 4
        offsets.setdefault(row["detector"], []).extend(
            np.subtract(_gaussian_centroid(sci, x[i], y[i], half), (x[i], y[i])) * pix * 1000.0
            for i in idx)
    assert set(offsets) == {"WFC", "IR"}
    for det, off in offsets.items():  # as drawn before the fix: IR +8.6 and +7.5 mas
        assert len(off) >= 16, det
        assert np.abs(np.median(off, axis=0)).max() < 2.0, (det, np.median(off, axis=0))


@pytest.mark.parametrize("key", sorted({filter_info(*k).psf for k in available_filters()}))
def test_psf_drawn_symmetric_about_position(key):
    """Averaged over pixel phases, the core (2-D Gaussian) centroid of a drawn star agrees with
    its position within 3 mas per axis: the drawn stars are not lopsided, whatever the phase
    at which the model PSF was sampled (WFC3/IR F110W as sampled: 6.7 and 5.6 mas)."""
    psf = load_psf(key)
    phases = (np.arange(5) + 0.5) / 5
    half = 3 if psf.pixscale > 0.1 else 4
    offsets = []
    for fx in phases:
        for fy in phases:
            stamp, ix0, iy0 = psf.stamp(50 + fx, 60 + fy)
            gx, gy = _gaussian_centroid(stamp, 50 + fx - ix0, 60 + fy - iy0, half)
            offsets.append((gx + ix0 - 50 - fx, gy + iy0 - 60 - fy))
    mean = np.mean(offsets, axis=0) * psf.pixscale * 1000.0
    assert np.abs(mean).max() < 3.0, mean


def test_source_magnitudes_follow_photflam(tiny, truth):
    src = truth["sources"]
    for row in truth["exposures"]:
        hdr = fits.getheader(tiny.out / row["file"], 1 if row["instrument"] == "ACS" else 0)
        rate = np.asarray(src[f"rate_{row['filter_key']}"])
        mag = np.asarray(src[f"mag_{row['filter_key']}"])
        assert np.allclose(mag, -2.5 * np.log10(rate * hdr["PHOTFLAM"]) + hdr["PHOTZPT"],
                           atol=1e-6)
    assert set(src["type"]) == {"star", "galaxy"}
    assert np.all(src["epoch"] == 2016.0)
    assert {"pmra", "pmdec", "ra", "dec", "id"} <= set(src.colnames)
    stars = src[src["type"] == "star"]
    assert 200 < len(stars) < 3000
    # LMC members move with the LMC
    lmc = stars[np.char.startswith(np.asarray(stars["population"], dtype=str), "lmc")]
    assert np.median(lmc["pmra"]) == pytest.approx(1.91, abs=0.05)


def test_refcat_is_gaia_like(truth):
    ref, src = truth["refcat"], truth["sources"]
    for col in ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec",
                "pmra_error", "pmdec_error", "phot_g_mean_mag", "ref_epoch"):
        assert col in ref.colnames
    assert str(ref["ra_error"].unit) == "mas" and str(ref["pmra"].unit) == "mas / yr"
    assert np.all(ref["ref_epoch"] == 2016.0)
    assert 20 < len(ref) < len(src)
    assert ref["phot_g_mean_mag"].max() < 20.8
    assert 0.01 < np.min(ref["ra_error"]) and np.max(ref["ra_error"]) < 3.0
    lookup = {int(i): k for k, i in enumerate(src["id"])}
    k = np.array([lookup[int(i)] for i in ref["truth_id"]])
    dra = (ref["ra"] - src["ra"][k]) * np.cos(np.radians(ref["dec"])) * 3.6e6
    ddec = (ref["dec"] - src["dec"][k]) * 3.6e6
    pull = np.hypot(dra / ref["ra_error"], ddec / ref["dec_error"])
    assert np.median(pull) == pytest.approx(1.18, abs=0.3)  # Rayleigh median for unit sigmas
    assert pull.max() < 6


# ---------------------------------------------------------------------------------------------
# defects, DQ and noise


def test_dq_flags(tiny, truth):
    rows = list(truth["exposures"])
    dqs = {row["file"]: fits.getdata(tiny.out / row["file"], "DQ") for row in rows}
    for row in rows:
        dq = dqs[row["file"]]
        for bit in (DQ_HOT, DQ_WARM):
            assert (dq & bit).any(), (row["file"], bit)
        if row["detector"] == "WFC":
            cr = (dq & DQ_CR) > 0
            assert 0.001 < cr.mean() < 0.05  # ~1 % of pixels per few hundred seconds
        else:
            assert ((dq & DQ_RAMP_CR) > 0).any() and not (dq & DQ_CR).any()
    assert any((dq & DQ_SATURATED).any() for dq in dqs.values())
    # hot pixels are fixed per chip; cosmic rays are not
    for det in ("WFC", "IR"):
        a, b = [dqs[r["file"]] for r in rows if r["detector"] == det]
        assert np.array_equal(a & DQ_HOT, b & DQ_HOT)
        crbit = DQ_CR if det == "WFC" else DQ_RAMP_CR
        assert not np.array_equal(a & crbit, b & crbit)


def test_saturated_ccd_pixels_are_clipped_and_flagged(tiny, truth):
    for row in truth["exposures"]:
        if row["detector"] != "WFC":
            continue
        with fits.open(tiny.out / row["file"]) as hdul:
            sci, dq = hdul["SCI"].data, hdul["DQ"].data
        sat = (dq & DQ_SATURATED) > 0
        if sat.any():  # clipped at the A/D limit (65535 e- at gain 1) before flat-fielding
            assert sci[sat].max() < 65535 * 1.2
            assert np.median(sci[sat]) > 50000


@pytest.fixture(scope="module")
def empty_sky(tmp_path_factory):
    """One ACS/WFC and one WFC3/IR exposure of an empty sky (no sources)."""
    base = PRESETS["tiny"]
    visits = tuple(dataclasses.replace(v, exposures=v.exposures[:1]) for v in base.visits)
    preset = dataclasses.replace(
        base, name="empty", visits=visits,
        scene=SceneSpec(star_density=0.0, bright_stars=0, galaxy_density=0.0))
    return simulate(preset, tmp_path_factory.mktemp("empty"), seed=5)


def test_err_matches_noise_in_empty_sky(empty_sky):
    from mvmflow.simulate.distortion import pixel_area_map

    exps = read_truth(empty_sky.truth_dir, "exposures")
    assert len(read_truth(empty_sky.truth_dir, "sources")) == 0
    for row in exps:
        with fits.open(empty_sky.out / row["file"]) as hdul:
            sci = hdul["SCI"].data.astype(np.float64)
            err = hdul["ERR"].data.astype(np.float64)
            dq = hdul["DQ"].data
            x0, y0 = -int(hdul["SCI"].header["LTV1"]), -int(hdul["SCI"].header["LTV2"])
            ccdchip = hdul["SCI"].header.get("CCDCHIP", 1)
        good = dq == 0
        det = detector(row["instrument"], row["detector"])
        t = row["exptime"]
        scale = t if det.rate_units else 1.0
        sky = SKY_RATES[row["filter_key"]]
        # the flat-fielded sky is flat and at the input level
        assert np.median(sci[good]) * scale == pytest.approx(sky * t, rel=0.02)
        # ERR^2 is the variance of the data
        var = np.var(sci[good])
        assert np.median(err[good] ** 2) == pytest.approx(var, rel=0.05)
        # ... and the Poisson + read-noise variance (PAM-corrected)
        pam = pixel_area_map(det, ccdchip, x0, y0, *sci.shape[::-1])
        primary = fits.getheader(empty_sky.out / row["file"], 0)
        rn = (det.effective_readnoise if det.effective_readnoise is not None
              else primary[f"READNSE{primary['CCDAMP']}"])
        expected = ((sky * pam + det.dark) * t + rn**2) / pam**2 / scale**2
        assert np.median(err[good] ** 2) == pytest.approx(np.median(expected[good]), rel=0.08)


# ---------------------------------------------------------------------------------------------
# determinism and options


def test_same_seed_identical_bytes_other_seed_differs(tiny, tmp_path):
    again = simulate("tiny", tmp_path / "again", seed=SEED)
    for a, b in zip(tiny.exposures, again.exposures, strict=True):
        assert a.name == b.name
        assert a.read_bytes() == b.read_bytes(), a.name
    for name in tiny.truth:
        assert tiny.truth[name].read_bytes() == again.truth[name].read_bytes(), name
    other = simulate("tiny", tmp_path / "other", seed=SEED + 1)
    for a, b in zip(tiny.exposures, other.exposures, strict=True):
        assert not np.array_equal(fits.getdata(a, "SCI"), fits.getdata(b, "SCI"))


def test_unflagged_cosmic_rays_option(tmp_path):
    base = PRESETS["tiny"]
    visit = dataclasses.replace(base.visits[0], exposures=base.visits[0].exposures[:1])
    preset = dataclasses.replace(base, visits=(visit,), flag_crs=False)
    result = simulate(preset, tmp_path, seed=SEED)
    dq = fits.getdata(result.exposures[0], "DQ")
    assert not (dq & DQ_CR).any() and (dq & DQ_HOT).any()
    assert not read_truth(result.truth_dir, "exposures")["cr_flagged"][0]


def test_no_pointing_error_preset(tmp_path):
    plans = plan_exposures(PRESETS["tiny_noerr"], SEED)
    for plan in plans:
        assert plan.error == (0.0, 0.0, 0.0)
        for chip, lin in plan.true_chips.items():
            assert np.allclose(lin.crval, plan.header_chips[chip].crval, atol=1e-12)
            assert np.allclose(lin.cd, plan.header_chips[chip].cd, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# presets, PSFs, CLI


def test_demo_preset_straddles_the_four_sky_cells():
    from mvmflow.grid import sky_cells_at

    assert DEMO_CENTER == pytest.approx((84.922, -69.147), abs=2e-3)
    assert sky_cells_at(*DEMO_CENTER) == ["skycell-p0081x14y14", "skycell-p0081x14y15",
                                         "skycell-p0081x15y14", "skycell-p0081x15y15"]
    preset = PRESETS["demo"]
    plans = plan_exposures(preset, preset.seed)
    assert len(plans) == preset.n_exposures >= 12
    assert {(p.det.instrument, p.det.name, p.filter.filter) for p in plans} == {
        ("ACS", "WFC", "F658N"), ("ACS", "WFC", "F814W"), ("WFC3", "UVIS", "F275W"),
        ("WFC3", "IR", "F110W")}
    years = {int(p.epoch) for p in plans}
    assert len(years) >= 2 and max(years) - min(years) >= 5
    assert len({p.rootname for p in plans}) == len(plans)
    from mvmflow.simulate.distortion import full_chip_wcs

    for plan in plans:  # every exposure covers the corner of the four sky cells
        chip = plan.ccdchips[0]
        wcs = full_chip_wcs(plan.det, chip, plan.true_chips[chip], *plan.region(chip))
        x, y = wcs.all_world2pix(*DEMO_CENTER, 0)
        nx, ny = plan.region(chip)[2:]
        assert 0 <= x < nx and 0 <= y < ny, plan.filename
        if plan.det.name in ("WFC", "UVIS"):
            assert plan.aperture.subarray and plan.suffix == "flc"


@pytest.mark.parametrize("key", sorted({filter_info(*k).psf for k in available_filters()}))
def test_psf_position_definition(key):
    psf = load_psf(key)
    assert psf.image.sum() == pytest.approx(1.0) and psf.image.min() >= 0
    for fx, fy in ((0.0, 0.0), (0.25, 0.5), (0.5, 0.5), (0.9, 0.1)):
        stamp, ix0, iy0 = psf.stamp(50 + fx, 60 + fy)
        cx, cy = windowed_centroid(stamp, 50 + fx - ix0, 60 + fy - iy0)
        assert abs(cx + ix0 - 50 - fx) < 0.015 and abs(cy + iy0 - 60 - fy) < 0.015
        assert stamp.sum() == pytest.approx(1.0)


def test_cli_simulate_list(capsys):
    from mvmflow.cli import main

    assert main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert name in out


# ---------------------------------------------------------------------------------------------
# scale presets (fullcell), sparse rendering, parallel writing


def _records_of_plans(plans):
    """Screen-like records of planned exposures, footprints through their header WCS
    (SIP + lookup tables), without writing or rendering anything."""
    from mvmflow.exposure import DEFAULT_SAMPLES_PER_EDGE, edge_pixels
    from mvmflow.records import ChipRecord, ExposureRecord
    from mvmflow.simulate.distortion import full_chip_wcs

    records, wcs_of = [], {}
    for plan in plans:
        chips = []
        for extver, chip in enumerate(plan.ccdchips, start=1):
            x0, y0, nx, ny = region = plan.region(chip)
            key = (plan.det.key, chip, region)
            if key not in wcs_of:  # one WCS per chip type, its linear part set per exposure
                wcs_of[key] = full_chip_wcs(plan.det, chip, plan.header_chips[chip], *region)
            wcs = wcs_of[key]
            wcs.wcs.crval = plan.header_chips[chip].crval
            wcs.wcs.cd = plan.header_chips[chip].cd
            wcs.wcs.set()
            world = wcs.all_pix2world(edge_pixels((ny, nx), DEFAULT_SAMPLES_PER_EDGE), 0)
            chips.append(ChipRecord(extver=extver, shape=[ny, nx], footprint=world.tolist()))
        records.append(ExposureRecord(
            file=plan.filename, accepted=True, filename=plan.filename,
            rootname=plan.rootname, ipppssoo=plan.rootname[:8],
            instrument=plan.det.instrument.lower(), detector=plan.det.name.lower(),
            filter=plan.filter.filter.lower(), ptype=plan.suffix, exptime=plan.exptime,
            expstart=plan.expstart, expend=plan.expend, photflam=plan.filter.photflam,
            photplam=plan.filter.photplam, chips=chips))
    return records


def test_fullcell_preset_covers_one_whole_sky_cell():
    from mvmflow.grid import SkyCell
    from mvmflow.plan import plan_skycells
    from mvmflow.simulate.presets import FULLCELL_CENTER, FULLCELL_SKYCELL

    preset = PRESETS["fullcell"]
    assert preset.render == "sparse" and preset.n_exposures >= 60
    cell = SkyCell.from_name(FULLCELL_SKYCELL)
    assert FULLCELL_CENTER == pytest.approx(cell.center, abs=1e-9)
    plans = plan_exposures(preset, preset.seed)
    assert len(plans) == preset.n_exposures
    assert {(p.det.instrument, p.det.name, p.filter.filter) for p in plans} == {
        ("ACS", "WFC", "F606W"), ("ACS", "WFC", "F814W"), ("WFC3", "UVIS", "F555W"),
        ("WFC3", "UVIS", "F275W")}
    assert all(not p.aperture.subarray and len(p.ccdchips) == 2 for p in plans)
    assert all(p.suffix == "flc" for p in plans)
    for instrument in ("ACS", "WFC3"):
        visits = [v for v in preset.visits if v.instrument == instrument]
        assert len(visits) >= 8
        assert len({v.start[:10] for v in visits}) == len(visits)  # own dates
        assert len({v.pa for v in visits}) == len(visits)  # own orientations
        assert len({v.offset for v in visits}) == len(visits)  # own pointings
    assert len({p.rootname for p in plans}) == len(plans)

    plan = plan_skycells(_records_of_plans(plans))
    mine = plan.skycell(FULLCELL_SKYCELL)
    frames = {(layer.frame.nx, layer.frame.ny) for layer in mine.layers}
    assert len(frames) == 1 and len(mine.layers) == 4
    nx, ny = frames.pop()
    assert nx >= 17_400 and ny >= 17_400 and nx * ny >= 300e6  # a whole sky cell's layers
    inside = sum(cells == [FULLCELL_SKYCELL] for cells in plan.exposures.values())
    assert inside >= 0.75 * len(plans)  # mostly inside the one sky cell
    assert all(len(layer.members) == 16 for layer in mine.layers)


def test_fullcell_2x2_spans_four_sky_cells():
    from mvmflow.grid import sky_cells_at
    from mvmflow.simulate.pointing import tan_deproject

    preset = PRESETS["fullcell_2x2"]
    assert preset.n_exposures == PRESETS["fullcell"].n_exposures
    four = ["skycell-p0081x14y14", "skycell-p0081x14y15", "skycell-p0081x15y14",
            "skycell-p0081x15y15"]
    assert sky_cells_at(preset.ra, preset.dec) == four
    cells = {}
    for visit in preset.visits:  # the visits' pointings, as plan_exposures places them
        ra, dec = tan_deproject(preset.ra, preset.dec, visit.offset[0] / 3600,
                                visit.offset[1] / 3600)
        for cell in sky_cells_at(float(ra), float(dec)):
            cells[cell] = cells.get(cell, 0) + len(visit.exposures)
    assert set(cells) == set(four) and min(cells.values()) >= 12


def test_sparse_rendering_matches_fft():
    from mvmflow.simulate.core import _readnoise
    from mvmflow.simulate.distortion import full_chip_wcs, pixel_area_map
    from mvmflow.simulate.render import ChipSetup, _signal
    from mvmflow.simulate.scene import add_filter_columns, make_sources

    preset = PRESETS["tiny"]
    plan = plan_exposures(preset, SEED)[0]
    chip = plan.ccdchips[0]
    region = plan.region(chip)
    wcs = full_chip_wcs(plan.det, chip, plan.true_chips[chip], *region)
    center = wcs.all_pix2world([[region[2] / 2, region[3] / 2]], 0)[0]
    sources = make_sources(dataclasses.replace(preset.scene, galaxy_density=60.0),
                           tuple(center), (30 / 3600, 30 / 3600), np.random.default_rng(3))
    add_filter_columns(sources, [plan.filter])
    ra, dec = positions_at(sources, plan.epoch)
    rates = np.asarray(sources[f"rate_{plan.filter.key}"])
    pam = pixel_area_map(plan.det, chip, *region)
    images = {}
    for mode in ("fft", "sparse"):
        setup = ChipSetup(det=plan.det, ccdchip=chip, region=region, wcs=wcs,
                          exptime=plan.exptime, psf=load_psf(plan.filter.psf), sky_rate=0.1,
                          readnoise=_readnoise(plan.det, chip), flag_crs=True, seed=SEED,
                          render=mode)
        images[mode], n = _signal(setup, sources, ra, dec, rates, pam)
    assert n > 50 and (sources["type"] == "galaxy").sum() > 10
    scale = images["fft"].max()
    assert np.abs(images["sparse"] - images["fft"]).max() < 1e-9 * scale


def test_workers_write_the_same_files(tiny, tmp_path):
    again = simulate("tiny", tmp_path, seed=SEED, workers=2)
    assert [p.name for p in again.exposures] == [p.name for p in tiny.exposures]
    for a, b in zip(tiny.exposures, again.exposures, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    for name in tiny.truth:
        assert tiny.truth[name].read_bytes() == again.truth[name].read_bytes(), name


def test_cli_lists_the_scale_presets(capsys):
    from mvmflow.cli import main

    assert main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    assert "fullcell " in out and "fullcell_2x2" in out and "--header-set" in out
    assert main(["simulate", "--out", "x"]) == 2


def test_fullframe_cr_preset_is_four_full_frames_on_one_sky_cell(capsys):
    """The full-frame workload of benchmarks/vs_reference.py, checked on its plans (no
    pixels rendered, nothing written)."""
    from mvmflow.cli import main
    from mvmflow.plan import plan_skycells
    from mvmflow.simulate.presets import FULLFRAME_SKYCELL, fullframe_cr_preset

    preset = PRESETS["fullframe_cr"]
    assert preset.n_exposures == 4 and len(preset.visits) == 1
    assert preset.cosmic_rays and not preset.flag_crs  # cosmic rays in, not flagged
    assert preset.max_shift_arcsec == 0 and preset.max_rotation_deg == 0
    assert preset.render == "sparse"
    same = fullframe_cr_preset(4, "acs_wfc", render="sparse")  # benchmarks/cr.py's layer
    assert dataclasses.replace(same, name=preset.name, description=preset.description) == preset
    plans = plan_exposures(preset, preset.seed)
    assert len(plans) == 4 and len({p.rootname for p in plans}) == 4
    for p in plans:
        assert (p.det.instrument, p.det.name, p.filter.filter, p.exptime) == (
            "ACS", "WFC", "F814W", 400.0)
        assert p.aperture.name == "WFC" and not p.aperture.subarray and p.suffix == "flc"
        assert len(p.ccdchips) == 2
        assert all(p.region(c)[2:] == (4096, 2048) for c in p.ccdchips)
        assert p.error == (0.0, 0.0, 0.0)
    assert max(np.hypot(*e.dither) for e in preset.visits[0].exposures) < 3.2

    plan = plan_skycells(_records_of_plans(plans))
    assert all(cells == [FULLFRAME_SKYCELL] for cells in plan.exposures.values())
    (layer,) = [lay for lay in plan.skycell(FULLFRAME_SKYCELL).layers]
    assert len(layer.members) == 4
    # one WFC field (about 5,000 px a side at 0.04"), turned by 40 degrees on the sky cell
    assert 5000 <= layer.frame.nx <= 8000 and 5000 <= layer.frame.ny <= 8000

    assert main(["simulate", "--list"]) == 0
    assert "fullframe_cr " in capsys.readouterr().out
