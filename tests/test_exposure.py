"""mvmflow.exposure: the lazy reader of one calibrated exposure.

Test exposures are built from the real HST headers in the shared reference data, with
synthetic pixel arrays attached; the realistic-WCS tests use the real ACS/WFC NPOL and D2IM
lookup tables (``acswfc_chip2_sci_npol_d2im_lookup.fits.gz``).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from mvmflow.exposure import Exposure, HeaderError, edge_pixels

HDR = Path("/work/shared/reference_data/hst/headers")
UVIS = HDR / "wfc3_uvis" / "ib4606c5q_flc_10x10.fits"
IR = HDR / "wfc3_ir" / "ib4606cpq_flt_10x10.fits"
IR_SVM = HDR / "wfc3_ir" / "ib4606cpq_flt_10x10_svm.fits"
WFC = HDR / "acs_wfc" / "j94f05bgq_flt.fits"
LOOKUP = HDR / "acs_wfc" / "acswfc_chip2_sci_npol_d2im_lookup.fits.gz"

pytestmark = pytest.mark.skipif(not HDR.is_dir(), reason="shared HST reference data not available")


def build(path, template, shape=(40, 50), primary=None, sci=None, seed=1, edit=None):
    """Copy ``template`` to ``path`` with synthetic SCI/ERR/DQ arrays of ``shape``.

    ``primary`` / ``sci`` are keyword updates (value None deletes the keyword); ``sci``
    applies to every SCI header; ``edit`` is called with the HDUList before writing.
    """
    rng = np.random.default_rng(seed)
    # Load everything and write a new file: HDU.copy() and update mode both lose or damage
    # the non-standard HDRLET extensions of the templates.
    with fits.open(template, lazy_load_hdus=False) as hdul:
        _update(hdul[0].header, primary or {})
        for hdu in hdul[1:]:
            name = hdu.header.get("EXTNAME", "")
            if name == "SCI":
                hdu.data = rng.normal(20.0, 2.0, shape).astype(np.float32)
                _update(hdu.header, sci or {})
            elif name == "ERR":
                hdu.data = np.full(shape, 2.0, np.float32)
            elif name == "DQ":
                hdu.data = np.zeros(shape, np.int16)
        if edit is not None:
            edit(hdul)
        hdul.writeto(path, overwrite=True)
    return Path(path)


def _update(header, updates):
    for key, value in updates.items():
        if value is None:
            header.remove(key, ignore_missing=True, remove_all=True)
        else:
            header[key] = value


def build_wfc_with_lookups(path, npol=None, d2im=None, shape=(2048, 4096)):
    """An ACS/WFC FLT whose SCI,1 carries the real SIP + NPOL + D2IM model.

    ``npol`` / ``d2im`` replace the lookup arrays by constants (pixels) when given.
    """
    with fits.open(WFC) as src, fits.open(LOOKUP) as lut:
        primary = src[0].copy()
        sci1 = fits.ImageHDU(np.ones(shape, np.float32), header=lut[1].header.copy())
        sci2 = src[4].copy()
        sci2.data = np.ones(shape, np.float32)
        tables = [lut[i].copy() for i in (2, 3, 4)]
    if d2im is not None:
        tables[0].data = np.full_like(tables[0].data, d2im)
    if npol is not None:
        for table, value in zip(tables[1:], npol, strict=True):
            table.data = np.full_like(table.data, value)
    dq = [fits.ImageHDU(np.zeros(shape, np.int16), name="DQ", ver=v) for v in (1, 2)]
    hdul = fits.HDUList([primary, sci1, dq[0], sci2, dq[1], *tables])
    hdul.writeto(path, overwrite=True)
    return Path(path)


@pytest.fixture(scope="module")
def wfc_lookup(tmp_path_factory):
    return build_wfc_with_lookups(tmp_path_factory.mktemp("wfc") / "j94f05bgq_flt.fits")


# ------------------------------------------------------------------------------------------
# identity and keywords


def test_uvis_identity(tmp_path):
    exp = Exposure(build(tmp_path / "ib4606c5q_flc.fits", UVIS))
    assert exp.filename == "ib4606c5q_flc.fits"
    assert (exp.rootname, exp.ipppssoo, exp.ptype) == ("ib4606c5q", "ib4606c5", "flc")
    assert (exp.instrument, exp.detector, exp.filter) == ("wfc3", "uvis", "f555w")
    assert exp.exptime == 1.0
    assert exp.expstart == pytest.approx(55611.02640872)
    assert exp.expend == pytest.approx(55611.02642)
    assert exp.date_obs == "2011-02-19"
    assert exp.proposid == "11665"
    assert exp.photflam == pytest.approx(1.8379346e-19)
    assert exp.photplam == pytest.approx(5307.9121)
    assert exp.bunit == "ELECTRONS"
    assert exp.wcsname == "IDC_2731450pi-FIT_REL_GAIAeDR3"
    assert exp.extvers == [1, 2]
    assert exp.chip_shape(2) == (40, 50)


def test_acs_filter_is_normalised(tmp_path):
    exp = Exposure(
        build(
            tmp_path / "j94f05bgq_flt.fits", WFC, primary={"FILTER1": "CLEAR1L", "FILTER2": "F814W"}
        )
    )
    assert (exp.instrument, exp.detector, exp.filter, exp.ptype) == ("acs", "wfc", "f814w", "flt")


def test_photflam_from_sci_first_then_primary(tmp_path):
    path = build(
        tmp_path / "ib4606c5q_flc.fits",
        UVIS,
        primary={"PHOTFLAM": 1.0e-18},
        sci={"PHOTFLAM": 2.0e-18},
    )
    assert Exposure(path).photflam == 2.0e-18
    path = build(
        tmp_path / "ib4606c5q_flc.fits", UVIS, primary={"PHOTFLAM": 1.0e-18}, sci={"PHOTFLAM": None}
    )
    assert Exposure(path).photflam == 1.0e-18


def test_ir_photflam_from_primary_first(tmp_path):
    path = build(tmp_path / "ib4606cpq_flt.fits", IR, sci={"PHOTFLAM": 9.0e-20})
    assert Exposure(path).photflam == pytest.approx(1.5318e-20)
    path = build(
        tmp_path / "ib4606cpq_flt.fits", IR, primary={"PHOTFLAM": None}, sci={"PHOTFLAM": 9.0e-20}
    )
    assert Exposure(path).photflam == 9.0e-20
    path = build(tmp_path / "ib4606cpq_flt.fits", IR, primary={"PHOTFLAM": None})
    with pytest.raises(HeaderError, match="PHOTFLAM"):
        Exposure(path).photflam  # noqa: B018


def test_svm_name_rootname_completed_from_header(tmp_path):
    path = build(tmp_path / "hst_11665_06_wfc3_ir_f110w_ib4606cp_flt.fits", IR_SVM)
    exp = Exposure(path)
    assert (exp.rootname, exp.ipppssoo, exp.ptype, exp.detector) == (
        "ib4606cpq",
        "ib4606cp",
        "flt",
        "ir",
    )
    assert exp.wcsname.endswith("FIT_SVM_GAIAeDR3")


def test_non_exposure_name_has_no_ptype(tmp_path):
    exp = Exposure(build(tmp_path / "image.fits", IR))
    assert exp.rootname == "ib4606cpq"  # from ROOTNAME
    with pytest.raises(ValueError, match="not an exposure name"):
        exp.ptype  # noqa: B018


def test_missing_keywords_raise_header_error(tmp_path):
    exp = Exposure(
        build(tmp_path / "ib4606cpq_flt.fits", IR, primary={"EXPTIME": None, "EXPEND": None})
    )
    with pytest.raises(HeaderError, match="no EXPTIME keyword"):
        exp.exptime  # noqa: B018
    assert exp.expstart == pytest.approx(55611.11275703)


def test_expend_falls_back_to_expstart_plus_exptime(tmp_path):
    exp = Exposure(build(tmp_path / "ib4606cpq_flt.fits", IR, primary={"EXPEND": None}))
    assert exp.expend == pytest.approx(55611.11275703 + 699.232483 / 86400.0)


def test_construction_is_lazy_and_open_is_eager(tmp_path):
    missing = tmp_path / "ib4606cpq_flt.fits"
    exp = Exposure(missing)  # nothing read yet
    assert exp.filename == "ib4606cpq_flt.fits"
    with pytest.raises(OSError):
        Exposure.open(missing)


# ------------------------------------------------------------------------------------------
# geometry


def test_edge_pixels_walks_the_edge_pixel_centres():
    """As the reference's SkyFootprint: centres of the outermost pixels, 0 .. n - 1."""
    pts = edge_pixels((3, 5), samples_per_edge=4)
    assert pts.shape == (16, 2)
    assert tuple(pts[0]) == (0.0, 0.0)
    assert tuple(pts[4]) == (4.0, 0.0)
    assert tuple(pts[8]) == (4.0, 2.0)
    assert tuple(pts[12]) == (0.0, 2.0)
    assert pts[:, 0].min() == 0.0 and pts[:, 0].max() == 4.0
    assert pts[:, 1].min() == 0.0 and pts[:, 1].max() == 2.0
    # every point lies on an edge pixel
    on_x = np.isin(pts[:, 0], [0.0, 4.0])
    on_y = np.isin(pts[:, 1], [0.0, 2.0])
    assert np.all(on_x | on_y)
    with pytest.raises(ValueError):
        edge_pixels((3, 5), 0)


def test_chip_wcs_has_the_full_distortion_model(wfc_lookup):
    wcs = Exposure(wfc_lookup).chip_wcs(1)
    assert wcs.sip is not None
    assert wcs.cpdis1 is not None and wcs.cpdis2 is not None
    assert wcs.det2im1 is not None
    assert wcs.cpdis1.data.shape == (33, 65)  # the real table, not a placeholder
    assert wcs.pixel_shape == (4096, 2048)
    # SCI,2 of this file carries only SIP
    wcs2 = Exposure(wfc_lookup).chip_wcs(2)
    assert wcs2.sip is not None and wcs2.cpdis1 is None and wcs2.det2im1 is None


def test_footprint_matches_stwcs_hstwcs(wfc_lookup):
    hstwcs = pytest.importorskip("stwcs.wcsutil").HSTWCS
    exp = Exposure(wfc_lookup)
    for extver in (1, 2):
        fp = exp.footprint(extver, samples_per_edge=25)
        assert fp.shape == (100, 2)
        with fits.open(wfc_lookup) as hdul:
            ref = hstwcs(hdul, ext=("SCI", extver))
            expected = ref.all_pix2world(edge_pixels((2048, 4096), 25), 0)
        np.testing.assert_allclose(fp, expected, rtol=0, atol=1e-10)


def test_lookup_tables_change_the_footprint(wfc_lookup):
    """The real NPOL + D2IM corrections move the chip edges by a measurable amount."""
    exp = Exposure(wfc_lookup)
    wcs = exp.chip_wcs(1)
    pix = edge_pixels(exp.chip_shape(1), 25)
    fp = exp.footprint(1)
    sip_only = wcs.wcs_pix2world(wcs.sip_pix2foc(pix + 1, 1) + wcs.wcs.crpix, 1)
    cosd = np.cos(np.radians(sip_only[:, 1]))
    shift = np.hypot((fp[:, 0] - sip_only[:, 0]) * cosd, fp[:, 1] - sip_only[:, 1]) * 3600 / 0.05
    assert 0.005 < shift.max() < 1.0


def test_constant_lookup_tables_shift_exactly(tmp_path):
    """NPOL adds to the focal-plane position, D2IM shifts the pixel before SIP."""
    path = build_wfc_with_lookups(
        tmp_path / "j94f05bgq_flt.fits", npol=(0.5, -0.25), d2im=0.3, shape=(64, 64)
    )
    exp = Exposure(path)
    wcs = exp.chip_wcs(1)
    pix = edge_pixels((64, 64), 5)

    def sip_world(p, focal_offset=(0.0, 0.0)):
        # 1-based: sip_pix2foc returns focal coordinates relative to CRPIX
        return wcs.wcs_pix2world(wcs.sip_pix2foc(p + 1, 1) + wcs.wcs.crpix + focal_offset, 1)

    expected = sip_world(pix + [0.3, 0.0], (0.5, -0.25))
    np.testing.assert_allclose(exp.footprint(1, 5), expected, rtol=0, atol=1e-11)
    # and a wrong model would be visibly off (0.5 px = 25 mas)
    assert np.abs(exp.footprint(1, 5) - sip_world(pix)).max() > 1e-6


def _inside(polygon, point):
    """Even-odd point-in-polygon test in a local tangent plane around ``point``."""
    ra0, dec0 = np.radians(point)
    ra, dec = np.radians(polygon[:, 0]), np.radians(polygon[:, 1])
    x = np.cos(dec) * np.sin(ra - ra0)
    y = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    inside = False
    for i in range(len(x)):
        x1, y1, x2, y2 = x[i - 1], y[i - 1], x[i], y[i]
        if (y1 > 0) != (y2 > 0) and 0 < x1 + (0 - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def test_footprint_encloses_the_chip_and_nothing_far(wfc_lookup):
    exp = Exposure(wfc_lookup)
    wcs = exp.chip_wcs(1)
    fp = exp.footprint(1)
    for x, y in [(2047.5, 1023.5), (0.5, 0.5), (4094.5, 2046.5), (10, 2040)]:
        assert _inside(fp, wcs.all_pix2world([[x, y]], 0)[0])
    for x, y in [(-3, 1000), (4099, 1000), (2000, -3), (2000, 2051)]:
        assert not _inside(fp, wcs.all_pix2world([[x, y]], 0)[0])
    # the corner is the corner pixel's centre (the reference's SkyFootprint sampling)
    np.testing.assert_allclose(fp[0], wcs.all_pix2world([[0.0, 0.0]], 0)[0], atol=1e-12)


# ------------------------------------------------------------------------------------------
# pixels


def test_readers_return_the_requested_extension(tmp_path):
    path = build(tmp_path / "ib4606c5q_flc.fits", UVIS)
    with fits.open(path) as hdul:
        sci2 = hdul["SCI", 2].data.copy()
    exp = Exposure(path)
    data = exp.data(2)
    np.testing.assert_array_equal(data, sci2)
    assert isinstance(data.base, type(data.base)) and data.base is not None  # a view of a mmap
    assert exp.err(1).shape == (40, 50)
    assert exp.dq(1).dtype.kind == "i"
    with pytest.raises(KeyError, match="SCI,3"):
        exp.data(3)


def test_constant_value_extension_is_expanded(tmp_path):
    def constant(hdul):
        hdul["DQ", 1].data = None  # astropy then writes NAXIS = 0
        hdul["DQ", 1].header.update(PIXVALUE=4, NPIX1=50, NPIX2=40)

    path = build(tmp_path / "ib4606c5q_flc.fits", UVIS, edit=constant)
    dq = Exposure(path).dq(1)
    assert dq.shape == (40, 50) and np.all(dq == 4)


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_files_are_closed(tmp_path, wfc_lookup):
    path = build(tmp_path / "ib4606c5q_flc.fits", UVIS)
    gc.collect()
    before = _open_fds()
    for p in (path, wfc_lookup):
        exp = Exposure(p)
        exp.footprint(1)
        float(exp.data(1).sum())
        exp.dq(1)
        exp.filter  # noqa: B018
        del exp
    gc.collect()
    assert _open_fds() == before
