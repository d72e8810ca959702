"""mvmflow.screen: accept good exposures, reject bad ones with a specific reason, never raise.

Test exposures are real HST headers (shared reference data) with synthetic pixel arrays.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import mvmflow.screen as screen
from mvmflow.headers import load_input_headers, read_input_headers, write_exposure_headers
from mvmflow.records import ExposureRecord, read_record, write_record
from mvmflow.screen import FOOTPRINT_SAMPLES, collect_records, screen_exposure

HDR = Path("/work/shared/reference_data/hst/headers")
TEMPLATES = {
    "uvis": HDR / "wfc3_uvis" / "ib4606c5q_flc_10x10.fits",
    "ir": HDR / "wfc3_ir" / "ib4606cpq_flt_10x10.fits",
    "ir_svm": HDR / "wfc3_ir" / "ib4606cpq_flt_10x10_svm.fits",
    "wfc": HDR / "acs_wfc" / "j94f05bgq_flt.fits",
    "hrc": HDR / "acs_hrc" / "j8bt06nyq_sip_flt.fits",
}
NAMES = {
    "uvis": "ib4606c5q_flc.fits",
    "ir": "ib4606cpq_flt.fits",
    "ir_svm": "hst_11665_06_wfc3_ir_f110w_ib4606cp_flt.fits",
    "wfc": "j94f05bgq_flt.fits",
    "hrc": "j8bt06nyq_flt.fits",
}

pytestmark = pytest.mark.skipif(not HDR.is_dir(), reason="shared HST reference data not available")


def build(
    directory,
    template="uvis",
    name=None,
    shape=(40, 50),
    primary=None,
    sci=None,
    fill=None,
    edit=None,
):
    """Write a test exposure: ``template`` headers with synthetic SCI/ERR/DQ of ``shape``.

    ``primary`` / ``sci`` are keyword updates (value None deletes); ``sci`` applies to every
    SCI header. ``fill`` (a number, or a list per chip) replaces the SCI values. ``edit``
    is called with the HDUList before it is written.
    """
    path = Path(directory) / (name or NAMES[template])
    rng = np.random.default_rng(7)
    # Load everything and write a new file: HDU.copy() and update mode both lose or damage
    # the non-standard HDRLET extensions of the templates.
    with fits.open(TEMPLATES[template], lazy_load_hdus=False) as hdul:
        _update(hdul[0].header, primary or {})
        chip = 0
        for hdu in hdul[1:]:
            kind = hdu.header.get("EXTNAME", "")
            if kind == "SCI":
                value = fill[chip] if isinstance(fill, list) else fill
                data = rng.normal(20.0, 2.0, shape) if value is None else np.full(shape, value)
                hdu.data = data.astype(np.float32)
                _update(hdu.header, sci or {})
                chip += 1
            elif kind == "ERR":
                hdu.data = np.full(shape, 2.0, np.float32)
            elif kind == "DQ":
                hdu.data = np.zeros(shape, np.int16)
        if edit is not None:
            edit(hdul)
        hdul.writeto(path, overwrite=True)
    return path


def _update(header, updates):
    for key, value in updates.items():
        if value is None:
            header.remove(key, ignore_missing=True, remove_all=True)
        else:
            header[key] = value


def rejected(path, *fragments):
    """Screen ``path``; assert it is rejected with every fragment in the reason."""
    record = screen_exposure(path)
    assert not record.accepted, f"{path} was accepted"
    for fragment in fragments:
        assert fragment in record.reason, record.reason
    return record


# ------------------------------------------------------------------------------------------
# good exposures


@pytest.mark.parametrize(
    ("template", "instrument", "detector", "filt", "ptype", "nchips"),
    [
        ("uvis", "wfc3", "uvis", "f555w", "flc", 2),
        ("ir", "wfc3", "ir", "f110w", "flt", 1),
        ("ir_svm", "wfc3", "ir", "f110w", "flt", 1),
        ("wfc", "acs", "wfc", "f606w", "flt", 2),
        ("hrc", "acs", "hrc", "f606w", "flt", 1),
    ],
)
def test_good_exposures_are_accepted_with_every_field(
    tmp_path, template, instrument, detector, filt, ptype, nchips
):
    path = build(tmp_path, template)
    record = screen_exposure(path)
    assert record.accepted, record.reason
    assert record.reason == ""
    assert record.file == str(path) and record.filename == path.name
    assert (record.instrument, record.detector, record.filter, record.ptype) == (
        instrument,
        detector,
        filt,
        ptype,
    )
    assert len(record.rootname) == 9 and record.ipppssoo == record.rootname[:8]
    assert record.exptime > 0 and record.expend > record.expstart > 50000
    assert record.date_obs[:2] == "20" and record.proposid.isdigit()
    assert record.photflam > 0 and record.photplam > 0
    assert record.bunit and record.wcsname
    assert record.size == path.stat().st_size
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [c.extver for c in record.chips] == list(range(1, nchips + 1))
    for chip in record.chips:
        assert chip.shape == [40, 50]
        fp = np.array(chip.footprint)
        assert fp.shape == (4 * FOOTPRINT_SAMPLES, 2) and np.all(np.isfinite(fp))
        assert np.ptp(fp[:, 1]) * 3600 < 10  # a 40x50-pixel chip is a few arcsec across


def test_record_survives_json(tmp_path):
    record = screen_exposure(build(tmp_path, "uvis"))
    write_record(record, tmp_path / "r.json")
    assert read_record(tmp_path / "r.json") == record


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_headers_file_holds_the_real_headers_exactly(tmp_path, template):
    """The screen job's second output: every card of the primary and SCI headers of real
    HST files (long strings, HISTORY, HDRLET extensions beside them) reads back the same."""
    path = build(tmp_path, template)
    assert screen_exposure(path, check_trails=False).accepted
    out = tmp_path / f"{path.stem}.json"
    write_exposure_headers(path, out, required=True)
    got, want = load_input_headers(out), read_input_headers(path)
    assert sorted(got.chips) == sorted(want.chips) and got.chips
    for a, b in [(got.primary, want.primary),
                 *((got.chips[v], want.chips[v]) for v in want.chips)]:
        assert [c.image for c in a.cards] == [c.image for c in b.cards]
        assert [(c.keyword, repr(c.value), c.comment) for c in a.cards] == \
            [(c.keyword, repr(c.value), c.comment) for c in b.cards]


def test_a_rejected_exposure_gets_a_headers_file(tmp_path):
    path = build(tmp_path, "ir")
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 3]))  # truncated inside a header: rejected
    assert not screen_exposure(path).accepted
    out = tmp_path / "h.json"
    assert write_exposure_headers(path, out, required=False) is None
    assert load_input_headers(out) is None
    with pytest.raises(OSError, match="ib4606cpq_flt.fits"):
        write_exposure_headers(path, out, required=True)
    garbage = tmp_path / "ib4606cpq_flt.fits"
    garbage.write_bytes(b"\1" * 5000)
    assert not screen_exposure(garbage).accepted
    assert write_exposure_headers(garbage, out, required=False) is None
    assert load_input_headers(out) is None


def test_footprint_is_the_chip_outline(tmp_path):
    from mvmflow.exposure import Exposure, edge_pixels

    path = build(tmp_path, "ir")
    record = screen_exposure(path)
    wcs = Exposure(path).chip_wcs(1)
    expected = wcs.all_pix2world(edge_pixels((40, 50), FOOTPRINT_SAMPLES), 0)
    np.testing.assert_allclose(record.chips[0].footprint, expected, atol=1e-12)


# ------------------------------------------------------------------------------------------
# files that are not usable FITS


def test_empty_file(tmp_path):
    path = tmp_path / "ib4606c5q_flc.fits"
    path.write_bytes(b"")
    assert rejected(path, "empty file").reason == "empty file (0 bytes)"


def test_missing_file(tmp_path):
    rejected(tmp_path / "ib4606c5q_flc.fits", "file not found")


def test_directory(tmp_path):
    (tmp_path / "ib4606c5q_flc.fits").mkdir()
    rejected(tmp_path / "ib4606c5q_flc.fits", "not a regular file")


def test_random_bytes(tmp_path):
    path = tmp_path / "ib4606c5q_flc.fits"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    record = rejected(path, "not a FITS file")
    assert record.size == 30000 and len(record.sha256) == 64


def test_gzip_file(tmp_path):
    """A gzip-compressed exposure is screened on its decompressed bytes (issue 17)."""
    import gzip

    good = build(tmp_path, "ir")
    path = tmp_path / "gz" / "ib4606cpq_flt.fits.gz"
    path.parent.mkdir()
    raw = good.read_bytes()
    path.write_bytes(gzip.compress(raw))
    record, plain = screen_exposure(path), screen_exposure(good)
    assert record.accepted, record.reason
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.chips == plain.chips and record.rootname == plain.rootname
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    rejected(path, "truncated FITS file: ")
    path.write_bytes(gzip.compress(raw)[:5000])
    rejected(path, "truncated gzip file")
    path.write_bytes(gzip.compress(b"hello " * 1000))
    rejected(path, "gzip-compressed file holds no FITS file")


def _hdr_locations(path):
    with fits.open(path) as hdul:
        return [hdul.fileinfo(i)["hdrLoc"] for i in range(len(hdul))]


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        ("half", "truncated FITS file: "),
        ("primary header", "end inside the header of HDU 0"),
        ("extension header", "end inside the header of HDU 5"),
        ("last data unit", "truncated FITS file: "),
        ("one byte short", "truncated FITS file: "),
        ("before SCI,2", "has 1 SCI extension(s), expected 2 (truncated?)"),
    ],
)
def test_truncated_files(tmp_path, where, fragment):
    good = build(tmp_path, "uvis", name="good_flc.fits")
    data = good.read_bytes()
    locs = _hdr_locations(good)
    cut = {
        "half": len(data) // 2,
        "primary header": 1000,
        "extension header": locs[5] + 1000,
        "last data unit": len(data) - 100,
        "one byte short": len(data) - 1,
        "before SCI,2": locs[4],  # a block boundary: a valid FITS file without chip 2
    }[where]
    path = tmp_path / "ib4606c5q_flc.fits"
    path.write_bytes(data[:cut])
    record = rejected(path, fragment)
    if where == "half":
        assert record.reason.startswith(f"truncated FITS file: {cut} bytes, expected ")
        expected = int(record.reason.rsplit(" ", 1)[1])
        assert cut < expected <= len(data)


def test_garbage_after_the_last_hdu(tmp_path):
    path = build(tmp_path, "ir")
    with open(path, "ab") as f:
        f.write(b"this is not a FITS extension header" * 10)
    rejected(path, "corrupt FITS file", "are not a FITS extension")


def test_null_padding_after_the_last_hdu_is_only_a_warning(tmp_path):
    path = build(tmp_path, "ir")
    with open(path, "ab") as f:
        f.write(b"\0" * 2880)
    record = screen_exposure(path)
    assert record.accepted, record.reason
    assert "2880 null bytes after the last HDU" in record.warnings


def test_damaged_header_card(tmp_path):
    path = build(tmp_path, "ir")
    data = bytearray(path.read_bytes())
    where = data.index(b"NAXIS1  =", _hdr_locations(path)[1])
    data[where + 10 : where + 30] = b"     'not-a-number' "
    path.write_bytes(bytes(data))
    rejected(path, "corrupt FITS file: bad header of HDU 1")


# ------------------------------------------------------------------------------------------
# origin


def test_not_hst(tmp_path):
    assert (
        rejected(build(tmp_path, "ir", primary={"TELESCOP": "JWST"})).reason
        == "TELESCOP is JWST, not HST"
    )
    rejected(build(tmp_path, "ir", primary={"TELESCOP": None}), "no TELESCOP keyword")


def test_wfpc2(tmp_path):
    path = build(
        tmp_path, "wfc", name="u9o40504m_flt.fits", primary={"INSTRUME": "WFPC2", "DETECTOR": None}
    )
    rejected(path, "unsupported instrument WFPC2")


def test_stis(tmp_path):
    path = build(
        tmp_path, "wfc", name="o8g1508do_flt.fits", primary={"INSTRUME": "STIS", "DETECTOR": "CCD"}
    )
    rejected(path, "unsupported instrument STIS")


def test_unsupported_detector(tmp_path):
    rejected(build(tmp_path, "ir", primary={"DETECTOR": "MAMA"}), "unsupported detector WFC3/MAMA")


def test_instrument_and_rootname_disagree(tmp_path):
    path = build(tmp_path, "wfc", name="ib4606c5q_flt.fits")
    rejected(path, "INSTRUME is ACS but rootname ib4606c5q is a WFC3 name")


def test_not_an_exposure_name(tmp_path):
    rejected(build(tmp_path, "ir", name="image.fits"), "'image.fits' is not an exposure name")


def test_rootname_mismatch_is_a_warning(tmp_path):
    record = screen_exposure(build(tmp_path, "ir", primary={"ROOTNAME": "ib4606cqq"}))
    assert record.accepted
    assert any("ROOTNAME is ib4606cqq" in w for w in record.warnings)


# ------------------------------------------------------------------------------------------
# the reference's viability rules


@pytest.mark.parametrize(
    ("template", "primary", "reason"),
    [
        ("ir", {"OBSTYPE": "SPECTROSCOPIC"}, "OBSTYPE is SPECTROSCOPIC, not IMAGING"),
        ("ir", {"OBSTYPE": None}, "no OBSTYPE keyword"),
        ("ir", {"DRIZCORR": "OMIT"}, "DRIZCORR is OMIT: drizzling was switched off"),
        ("wfc", {"DRIZCORR": "SKIPPED"}, "DRIZCORR is SKIPPED: drizzling was switched off"),
        ("ir", {"MTFLAG": "T"}, "MTFLAG is T: moving target"),
        ("ir", {"SCAN_TYP": "C"}, "SCAN_TYP is C: WFC3 spatial scan"),
        ("uvis", {"SCAN_TYP": "D"}, "SCAN_TYP is D: WFC3 spatial scan"),
        ("ir", {"TARGNAME": "DARK"}, "TARGNAME is DARK: calibration target (contains DARK)"),
        (
            "wfc",
            {"TARGNAME": "TUNGSTEN"},
            "TARGNAME is TUNGSTEN: calibration target (contains TUNG)",
        ),
        ("uvis", {"TARGNAME": "BIAS"}, "TARGNAME is BIAS: calibration target (contains BIAS)"),
        (
            "ir",
            {"TARGNAME": "EARTH-CALIB"},
            "TARGNAME is EARTH-CALIB: calibration target (contains EARTH-CAL)",
        ),
        (
            "uvis",
            {"TARGNAME": "DEUTERIUM"},
            "TARGNAME is DEUTERIUM: calibration target (contains DEUT)",
        ),
        ("hrc", {"TARGNAME": "INTFLAT"}, "TARGNAME is INTFLAT: calibration target (contains FLAT)"),
        ("ir", {"EXPTIME": 0.0}, "EXPTIME is 0 s (|EXPTIME| < 1e-05)"),
        ("uvis", {"EXPTIME": 5e-6}, "EXPTIME is 5e-06 s (|EXPTIME| < 1e-05)"),
        ("uvis", {"EXPTIME": -3.0}, "EXPTIME is -3 s, negative"),
        ("ir", {"EXPTIME": None}, "primary header has no EXPTIME keyword"),
        ("uvis", {"CHINJECT": "LINE10"}, "CHINJECT is LINE10, not NONE: charge injection"),
        ("ir", {"FILTER": "G141"}, "FILTER is G141: grism/prism exposures are not used in MVM"),
        ("uvis", {"FILTER": "G280"}, "FILTER is G280: grism/prism"),
        ("wfc", {"FILTER1": "G800L"}, "FILTER1 is G800L: grism/prism"),
        (
            "hrc",
            {"DETECTOR": "SBC", "FILTER1": "PR110L", "FILTER2": "N/A"},
            "FILTER1 is PR110L: grism/prism",
        ),
        ("wfc", {"FILTER1": "CLEAR1L", "FILTER2": "FR656N"}, "FILTER2 is FR656N: ramp-filter"),
        (
            "hrc",
            {"DETECTOR": "SBC", "FILTER1": "BLOCK1", "FILTER2": "N/A"},
            "FILTER1 is BLOCK1: blocking filter",
        ),
        ("ir", {"FILTER": None}, "no FILTER keyword"),
        ("ir", {"QUALITY": "GSFAIL"}, "QUALITY is 'GSFAIL': bad guiding (GSFAIL)"),
        (
            "uvis",
            {"QUALITY": "LOCKLOST TDF-DOWN"},
            "QUALITY is 'LOCKLOST TDF-DOWN': bad guiding (TDF-DOWN)",
        ),
    ],
)
def test_viability_rules(tmp_path, template, primary, reason):
    record = rejected(build(tmp_path, template, primary=primary))
    assert record.reason.startswith(reason), record.reason
    # and the same file without the bad keyword is accepted
    assert screen_exposure(build(tmp_path, template)).accepted


def test_missing_optional_keywords_are_warnings(tmp_path):
    path = build(tmp_path, "ir", primary={"PHOTFLAM": None, "DATE-OBS": None, "PROPOSID": None})
    record = screen_exposure(path)
    assert record.accepted, record.reason
    assert record.photflam == 0.0 and record.proposid == ""
    assert record.date_obs == "2011-02-19"  # from EXPSTART
    assert "no PHOTFLAM keyword in the SCI or primary header" in record.warnings
    assert "primary header has no DATE-OBS keyword" in record.warnings


def test_missing_expstart(tmp_path):
    rejected(build(tmp_path, "ir", primary={"EXPSTART": None}), "primary header has no EXPSTART")


def test_chinject_is_ignored_for_ir(tmp_path):
    assert screen_exposure(build(tmp_path, "ir", primary={"CHINJECT": "LINE10"})).accepted


def test_scan_typ_is_ignored_for_acs(tmp_path):
    assert screen_exposure(build(tmp_path, "wfc", primary={"SCAN_TYP": "C"})).accepted


@pytest.mark.parametrize("lock", ["FINE/GYRO", "GYROS", "COARSE"])
def test_gyro_or_coarse_lock_is_only_a_warning(tmp_path, lock):
    record = screen_exposure(build(tmp_path, "ir", primary={"FGSLOCK": lock}))
    assert record.accepted, record.reason
    assert record.warnings == [
        f"FGSLOCK is {lock}: gyro or coarse-track guiding, the image may be blurred"
    ]


def test_gyro_lock_does_not_hide_charge_injection(tmp_path):
    """The reference's elif chain lets FGSLOCK=GY hide CHINJECT; this screen does not."""
    rejected(
        build(tmp_path, "uvis", primary={"FGSLOCK": "GYROS", "CHINJECT": "CONT"}),
        "CHINJECT is CONT",
    )


def test_sbc_with_a_normal_filter_is_accepted(tmp_path):
    record = screen_exposure(
        build(tmp_path, "hrc", primary={"DETECTOR": "SBC", "FILTER1": "F122M", "FILTER2": "N/A"})
    )
    assert record.accepted, record.reason
    assert (record.detector, record.filter) == ("sbc", "f122m")


# ------------------------------------------------------------------------------------------
# SCI data


def test_no_sci_extension(tmp_path):
    def rename(hdul):
        hdul["SCI", 1].header["EXTNAME"] = "XSCI"

    path = build(tmp_path, "ir", edit=rename)
    assert rejected(path).reason == "no SCI extension"


def test_sci_without_data(tmp_path):
    def drop(hdul):
        hdul["SCI", 1].data = None

    rejected(build(tmp_path, "ir", edit=drop), "SCI,1 is not a 2-D image (NAXIS=0)")


def test_all_zero_sci(tmp_path):
    assert rejected(build(tmp_path, "uvis", fill=0.0)).reason == "every SCI array is all zeros"


def test_one_zero_chip_is_a_warning(tmp_path):
    record = screen_exposure(build(tmp_path, "uvis", fill=[None, 0.0]))
    assert record.accepted, record.reason
    assert "SCI,2 is all zeros" in record.warnings


def test_non_finite_sci(tmp_path):
    assert (
        rejected(build(tmp_path, "uvis", fill=np.nan)).reason == "no finite SCI pixel in any chip"
    )
    assert (
        rejected(build(tmp_path, "uvis", fill=[np.inf, 0.0])).reason
        == "every SCI array is all zeros or non-finite"
    )


def test_zero_sci_as_constant_value_extension(tmp_path):
    """HST writes a constant image as NAXIS=0 + PIXVALUE; PIXVALUE=0 is an all-zero chip."""

    def constant(hdul):
        hdul["SCI", 1].data = None
        hdul["SCI", 1].header.update(PIXVALUE=0.0, NPIX1=50, NPIX2=40)

    path = build(tmp_path, "ir", edit=constant)
    assert rejected(path).reason == "every SCI array is all zeros"


# ------------------------------------------------------------------------------------------
# WCS


def test_no_celestial_ctype(tmp_path):
    path = build(tmp_path, "ir", sci={"CTYPE1": None, "CTYPE2": None})
    rejected(path, "SCI,1 has no celestial WCS (CTYPE1='', CTYPE2='')")
    rejected(
        build(tmp_path, "ir", sci={"CTYPE1": "PIXEL", "CTYPE2": "PIXEL"}),
        "SCI,1 has no celestial WCS",
    )


def test_no_cd_matrix(tmp_path):
    path = build(tmp_path, "uvis", sci={k: None for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2")})
    rejected(path, "SCI,1 has no CD matrix")


def test_singular_cd_matrix(tmp_path):
    path = build(tmp_path, "ir", sci={"CD1_1": 0.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.0})
    rejected(path, "SCI,1 CD matrix is singular")
    path = build(tmp_path, "ir", sci={"CD1_1": 1e-5, "CD1_2": 2e-5, "CD2_1": 1e-5, "CD2_2": 2e-5})
    rejected(path, "SCI,1 CD matrix is singular")


def test_implausible_pixel_scale(tmp_path):
    path = build(tmp_path, "ir", sci={"CD1_1": 0.1, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 0.1})
    rejected(path, "SCI,1 WCS pixel scale is 360 arcsec")


def test_wcs_that_does_not_evaluate(tmp_path):
    # wcslib's message, without its source file and line
    record = rejected(build(tmp_path, "ir", sci={"CTYPE1": "RA---TNA"}),
                      "SCI,1 WCS is unusable: Unrecognized projection code (TNA in CTYPE1)")
    assert "wcs.c" not in record.reason and "ERROR" not in record.reason


@pytest.mark.parametrize(("value", "fragment"), [
    (200.0, "SCI,1 CRVAL2 is 200, not a declination (-90 to 90)"),
    (-90.5, "SCI,1 CRVAL2 is -90.5, not a declination"),
    ("north", "SCI,1 CRVAL2 is 'north', not a number"),
])
def test_crval_out_of_range(tmp_path, value, fragment):
    rejected(build(tmp_path, "ir", sci={"CRVAL2": value}), fragment)


def test_sip_with_missing_coefficients(tmp_path):
    def edit(hdul):
        for key in ("A_1_1", "B_2_0"):
            hdul["SCI", 1].header.remove(key, remove_all=True)

    rejected(build(tmp_path, "ir", edit=edit), "SCI,1 SIP A_ORDER is", "A_1_1 is missing")


def test_every_pixel_flagged_in_dq(tmp_path):
    def flag(chips):
        def edit(hdul):
            for extver in chips:
                hdul["DQ", extver].data[:] = 4
        return edit

    rejected(build(tmp_path, "uvis", edit=flag([1, 2])), "every pixel is flagged in DQ")
    record = screen_exposure(build(tmp_path, "uvis", edit=flag([2])))
    assert record.accepted and "DQ,2 flags every pixel" in record.warnings


def test_garbage_date_obs_is_a_warning(tmp_path):
    record = screen_exposure(build(tmp_path, "ir", primary={"DATE-OBS": "yesterday"}))
    assert record.accepted, record.reason
    assert any("DATE-OBS is 'yesterday'" in w for w in record.warnings), record.warnings
    assert record.date_obs[:2] == "20" and record.date_obs[4] == "-"  # from EXPSTART


def test_dangling_symlink(tmp_path):
    link = tmp_path / "ib4606cpq_flt.fits"
    link.symlink_to(tmp_path / "gone.fits")
    rejected(link, "dangling symbolic link: its target", "gone.fits does not exist")


def test_missing_lookup_table_extension(tmp_path):
    def rename(hdul):
        hdul["WCSDVARR", 1].header["EXTNAME"] = "GONE"

    path = build(tmp_path, "uvis", edit=rename)
    rejected(path, "SCI,1 WCS is unusable")


# ------------------------------------------------------------------------------------------
# bad guiding seen in the image


def star_field(shape=(512, 512), n=60, trail=0, angle=30.0, seed=0, columns=0, streaks=0):
    """Noise + Gaussian stars, optionally all smeared along a ``trail``-pixel line at ``angle``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    ys, xs = (
        rng.uniform(40, shape[0] - 40, n).astype(int),
        rng.uniform(40, shape[1] - 40, n).astype(int),
    )
    img[ys, xs] = rng.uniform(3000, 50000, n)
    img = ndimage.gaussian_filter(img, 1.5)
    if trail:
        size = trail + 3
        kernel = np.zeros((size, size), np.float32)
        t = np.linspace(-trail / 2, trail / 2, 4 * trail)
        rows = np.round(size / 2 + t * np.sin(np.radians(angle))).astype(int)
        cols = np.round(size / 2 + t * np.cos(np.radians(angle))).astype(int)
        kernel[rows, cols] = 1.0
        img = ndimage.convolve(img, kernel / kernel.sum())
    for _ in range(columns):  # saturation bleeding along columns
        x, y = rng.integers(0, shape[1]), rng.integers(0, shape[0] - 160)
        img[y : y + 150, x] += 5000
    for _ in range(streaks):  # cosmic-ray-like streaks in random directions
        y, x = rng.integers(30, shape[0] - 30, 2)
        a, length = rng.uniform(0, np.pi), rng.integers(3, 25)
        for step in range(length):
            img[int(y + step * np.sin(a)), int(x + step * np.cos(a))] += 3000
    return img + rng.normal(100.0, 5.0, shape).astype(np.float32)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({}, False),
        ({"trail": 60, "angle": 30.0}, True),
        ({"trail": 45, "angle": -70.0}, True),
        ({"trail": 60, "angle": 0.0}, True),
        ({"trail": 15, "angle": 30.0}, False),  # shorter than 33 px
        (
            {"trail": 60, "angle": 90.0, "n": 25},
            False,
        ),  # along the columns: ignored, as the reference
        ({"n": 3, "trail": 60}, False),  # too few sources
        ({"columns": 20}, False),
        ({"streaks": 300}, False),
    ],
)
def test_detect_trails(kwargs, bad):
    result = screen.detect_trails(star_field(**kwargs))
    assert result.bad is bad, result
    if bad:
        angle = kwargs["angle"]
        assert abs((result.angle - angle + 90) % 180 - 90) < 5
        assert result.n_aligned >= 0.5 * result.n_sources


def test_detect_trails_mask_and_non_finite():
    img = star_field(trail=60)
    mask = np.zeros(img.shape, bool)
    mask[:, :] = True
    assert not screen.detect_trails(img, mask).bad  # everything masked
    img[np.random.default_rng(5).random(img.shape) < 0.02] = np.nan  # scattered bad pixels
    assert screen.detect_trails(img).bad


def test_trailed_exposure_is_rejected(tmp_path):
    def trailed(hdul):
        hdul["SCI", 1].data = star_field(trail=60, angle=30.0)

    record = rejected(
        build(tmp_path, "ir", shape=(512, 512), edit=trailed), "bad guiding (trail detection)"
    )
    assert record.reason.startswith("SCI,1 has ")
    assert "trailed along 3" in record.reason  # about 30 deg

    path = build(tmp_path, "ir", shape=(512, 512), edit=trailed)
    assert screen_exposure(path, check_trails=False).accepted

    def round_stars(hdul):
        hdul["SCI", 1].data = star_field()

    assert screen_exposure(build(tmp_path, "ir", shape=(512, 512), edit=round_stars)).accepted


# ------------------------------------------------------------------------------------------
# never raises


def test_unexpected_errors_become_reasons(tmp_path, monkeypatch):
    def boom(*args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(screen, "_check_sci", boom)
    record = screen_exposure(build(tmp_path, "ir"))
    assert not record.accepted
    assert record.reason == "unexpected error while screening: RuntimeError: kaboom"


def test_random_damage_never_raises(tmp_path):
    good = build(tmp_path, "uvis", name="good_flc.fits").read_bytes()
    rng = np.random.default_rng(11)
    path = tmp_path / "ib4606c5q_flc.fits"
    for _ in range(40):
        data = bytearray(good)
        for pos in rng.integers(0, 30000, 5):  # headers of the first HDUs
            data[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        record = screen_exposure(path)
        assert isinstance(record, ExposureRecord)
        assert record.accepted or record.reason


# ------------------------------------------------------------------------------------------
# the report


def test_good_files_have_no_header_warnings(tmp_path):
    assert screen_exposure(build(tmp_path, "uvis")).warnings == []


def test_damaged_card_is_reported_in_warnings(tmp_path):
    path = build(tmp_path, "ir")
    data = bytearray(path.read_bytes())
    where = data.index(b"ORIENTAT=")
    data[where + 11] = ord("?")
    path.write_bytes(bytes(data))
    record = screen_exposure(path)
    assert record.accepted, record.reason
    assert any(w.startswith("FITS: ") and "ORIENTAT" in w for w in record.warnings), record.warnings


def test_collect_records(tmp_path):
    good_uvis = screen_exposure(build(tmp_path, "uvis"))
    good_ir = screen_exposure(build(tmp_path, "ir", primary={"FGSLOCK": "COARSE"}))
    bad = screen_exposure(build(tmp_path, "wfc", primary={"EXPTIME": 0.0}))
    empty = tmp_path / "ia0000aaq_flt.fits"
    empty.write_bytes(b"")
    bad_empty = screen_exposure(empty)
    write_record(good_ir, tmp_path / "ir.json")
    out = tmp_path / "screen"
    accepted, rejected_ = collect_records(
        [bad, good_uvis, tmp_path / "ir.json", bad_empty],
        out / "accepted.ecsv",
        out / "rejected.ecsv",
    )
    table = Table.read(out / "accepted.ecsv")
    assert list(table["file"]) == sorted([good_uvis.file, good_ir.file])
    for column in (
        "file",
        "rootname",
        "instrument",
        "detector",
        "filter",
        "ptype",
        "exptime",
        "expstart",
        "photflam",
    ):
        assert column in table.colnames
    row = table[list(table["file"]).index(good_ir.file)]
    assert (row["rootname"], row["detector"], row["filter"], row["ptype"]) == (
        "ib4606cpq",
        "ir",
        "f110w",
        "flt",
    )
    assert row["exptime"] == pytest.approx(699.232483)
    assert row["nchips"] == 1 and "FGSLOCK is COARSE" in row["warnings"]
    rej = Table.read(out / "rejected.ecsv")
    assert rej.colnames == ["file", "reason"]
    assert list(rej["file"]) == sorted([bad.file, bad_empty.file])
    assert (
        dict(zip(rej["file"], rej["reason"], strict=True))[bad_empty.file] == "empty file (0 bytes)"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "accepted.ecsv",
        "rejected.ecsv",
    ]  # no temp files
    assert len(accepted) == 2 and len(rejected_) == 2


def test_collect_records_with_nothing_rejected(tmp_path):
    good = screen_exposure(build(tmp_path, "ir"))
    collect_records([good], tmp_path / "a.ecsv", tmp_path / "r.ecsv")
    rej = Table.read(tmp_path / "r.ecsv")
    assert len(rej) == 0 and rej.colnames == ["file", "reason"]
    assert json.loads(json.dumps(good.to_dict()))["accepted"] is True


# ------------------------------------------------------------------------------------------
# the simulator's tiny set, if the simulator exists


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    simulate = getattr(pytest.importorskip("mvmflow.simulate"), "simulate", None)
    if simulate is None:
        pytest.skip("mvmflow.simulate.simulate is not written yet")
    out = tmp_path_factory.mktemp("tiny")
    return out, simulate("tiny", out, seed=1)


def _tiny_exposures(out, result):
    paths = [Path(getattr(e, "path", e)) for e in getattr(result, "exposures", []) or []]
    paths = [p if p.is_absolute() else out / p for p in paths]
    if not paths or not all(p.is_file() for p in paths):
        paths = sorted(out.rglob("*_fl[tc].fits"))
    return paths


def _truth_radec(out):
    path = out / "truth" / "sources.ecsv"
    if not path.is_file():
        pytest.skip("the simulator wrote no truth/sources.ecsv")
    table = Table.read(path)
    names = {n.lower(): n for n in table.colnames}
    for ra, dec in (("ra", "dec"), ("ra_deg", "dec_deg"), ("raj2000", "dej2000")):
        if ra in names and dec in names:
            return np.asarray(table[names[ra]], float), np.asarray(table[names[dec]], float)
    pytest.skip(f"no RA/Dec columns in {path}: {table.colnames}")


def _inside(polygon, ra, dec):
    """Even-odd test of many points against a small sky polygon, in its tangent plane."""
    ra0, dec0 = np.radians(polygon.mean(axis=0))

    def plane(r, d):
        r, d = np.radians(r), np.radians(d)
        cosc = np.sin(dec0) * np.sin(d) + np.cos(dec0) * np.cos(d) * np.cos(r - ra0)
        x = np.cos(d) * np.sin(r - ra0) / cosc
        y = (np.cos(dec0) * np.sin(d) - np.sin(dec0) * np.cos(d) * np.cos(r - ra0)) / cosc
        return x, y

    px, py = plane(polygon[:, 0], polygon[:, 1])
    x, y = plane(np.asarray(ra), np.asarray(dec))
    inside = np.zeros(x.shape, bool)
    for i in range(len(px)):
        x1, y1, x2, y2 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xc)
    return inside


def test_tiny_set_is_accepted(tiny_set):
    out, result = tiny_set
    paths = _tiny_exposures(out, result)
    assert paths, "the tiny preset wrote no exposures"
    records = [screen_exposure(p) for p in paths]
    assert [r.reason for r in records if not r.accepted] == []
    assert all(r.chips for r in records)


def test_tiny_footprints_contain_the_true_stars(tiny_set):
    """Stars the full WCS puts on a chip are inside its footprint, and others are not."""
    from mvmflow.exposure import Exposure

    out, result = tiny_set
    ra, dec = _truth_radec(out)
    total = 0
    for path in _tiny_exposures(out, result):
        record = screen_exposure(path, check_trails=False)
        exposure = Exposure(path)
        for chip in record.chips:
            polygon = np.array(chip.footprint)
            centre = polygon.mean(axis=0)
            near = np.hypot((ra - centre[0]) * np.cos(np.radians(centre[1])), dec - centre[1]) < 0.2
            x, y = exposure.chip_wcs(chip.extver).all_world2pix(ra[near], dec[near], 0, quiet=True)
            ny, nx = chip.shape
            on = (x > 1) & (x < nx - 2) & (y > 1) & (y < ny - 2)
            off = (x < -3) | (x > nx + 2) | (y < -3) | (y > ny + 2)
            inside = _inside(polygon, ra[near], dec[near])
            assert np.all(inside[on]), (
                f"{path.name} SCI,{chip.extver}: a star on the chip is outside"
            )
            assert not np.any(inside[off]), (
                f"{path.name} SCI,{chip.extver}: a star off the chip is inside"
            )
            total += int(on.sum())
    assert total > 0, "no true star falls on any simulated chip"


def test_collect_records_lists_skipped_inputs_as_rejected(tmp_path):
    good = screen_exposure(build(tmp_path, "ir"))
    skipped = [(str(tmp_path / "d_flc.fits"), "not a regular file: a directory")]
    accepted, rejected_table = collect_records([good], tmp_path / "a.ecsv", tmp_path / "r.ecsv",
                                               skipped=skipped)
    assert len(accepted) == 1
    assert [tuple(r) for r in Table.read(tmp_path / "r.ecsv")] == skipped
