"""Tests of mvmflow.cutouts (hapcut's make_the_cut, spec processing.md §5.3)."""

import math
import os

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from mvmflow.cli import main
from mvmflow.cutouts import (
    ProductError,
    cut_product,
    cutout_box,
    identify_product,
    make_cutouts,
    product_layer_name,
)
from mvmflow.grid import ProjectionCell, SkyCell
from mvmflow.headers import ChipRow, hdrtab
from mvmflow.names import LayerName

RA, DEC = 85.25665514291263, -69.14985113186759  # spec's verified example position
SKYCELL = "skycell-p0081x14y14"


def write_product(path, scale="fine", window=(10900, 21800, 200, 100), compressed=False):
    """A small synthetic layer product: a window of the sky cell's frame.

    Its primary header has what ours and the archive's carry to identify it: ``INSTRUME``,
    ``DETECTOR``, ``FILTER``, ``SCELLID``, ``FILENAME`` and ``ROOTNAME``.
    """
    frame = SkyCell.from_name(SKYCELL, scale=scale).frame.window(*window)
    nx, ny = frame.nx, frame.ny
    sci = (np.arange(ny * nx, dtype=np.float32).reshape(ny, nx) + 1.0) / 7.0
    wht = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx) + 100.0
    primary = fits.PrimaryHDU()
    layer = LayerName.parse(path.name)
    primary.header.update(INSTRUME="WFC3", DETECTOR="IR", FILTER=layer.filter.upper(),
                          FILENAME=path.name, ROOTNAME=layer.rootname, SCELLID=SKYCELL[8:],
                          TARGNAME="TEST")
    hdr = frame.header()
    del hdr["NAXIS1"], hdr["NAXIS2"]
    kind = fits.CompImageHDU if compressed else fits.ImageHDU
    fits.HDUList([primary, kind(sci, header=hdr, name="SCI"),
                  kind(wht, header=hdr, name="WHT")]).writeto(path)
    return path, sci, wht, frame.wcs


def write_context_product(path, nexp, window, ctx_shape="grid"):
    """A layer product with SCI, WHT, CTX (``nexp`` inputs) and HDRTAB (two chips each).

    Input k covers the columns ``x % nexp == k`` and, for k > 0, also input 0's columns,
    so the context of every pixel is known from its column. ``ctx_shape='empty'`` writes
    an archive-like CTX with no data.
    """
    frame = SkyCell.from_name(SKYCELL).frame.window(*window)
    ny, nx = frame.shape
    sci = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)
    nplanes = max(1, -(-nexp // 32))
    ctx = np.zeros((nplanes, ny, nx), dtype=np.uint32)
    col = np.arange(nx) % nexp
    for k in range(nexp):
        has = (col == k) | ((col == 0) & (k > 0))
        ctx[k // 32][:, has] |= np.uint32(1 << (k % 32))
    ctx = ctx.view(np.int32)
    hdr = frame.header()
    del hdr["NAXIS1"], hdr["NAXIS2"]
    sci_hdr = hdr.copy()
    sci_hdr.update(PCELLID=frame.projection_cell, PCX0=frame.x0, PCY0=frame.y0)
    primary = fits.PrimaryHDU()
    primary.header.update(INSTRUME="WFC3", DETECTOR="IR", FILENAME=path.name)
    rows = [ChipRow(f"i{k:07d}_flt.fits", ext, {"ROOTNAME": f"ib2v{k:02d}abq", "CTXBIT": k,
                                                 "FILENAME": f"ib2v{k:02d}abq_flt.fits"})
            for k in range(nexp) for ext in (1, 2)]
    ctx_hdu = (fits.ImageHDU(ctx[0] if nplanes == 1 else ctx, header=hdr.copy(), name="CTX")
               if ctx_shape == "grid" else fits.ImageHDU(name="CTX"))
    fits.HDUList([primary, fits.ImageHDU(sci, header=sci_hdr, name="SCI"),
                  fits.ImageHDU(sci + 1, header=hdr, name="WHT"), ctx_hdu,
                  hdrtab(rows)]).writeto(path)
    return frame, ctx if nplanes > 1 else ctx[0]


def expected_box(wcs, n):
    """Origin of the n-pixel box nearest to centred on the example position."""
    x, y = (float(v) for v in wcs.world_to_pixel_values(RA, DEC))
    return math.floor(x - (n - 1) / 2 + 0.5), math.floor(y - (n - 1) / 2 + 0.5)


def test_name_and_shape_match_spec_examples(tmp_path):
    src, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits",
                            scale="coarse", window=(3600, 7250, 120, 60))
    out = cut_product(src, RA, DEC, 3, tmp_path / "out")
    assert out.name == "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w_coarse-ib2v01ab.fits"
    with fits.open(out) as hdul:
        assert hdul["SCI"].data.shape == (25, 25)
    fine, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits")
    out = cut_product(fine, RA, DEC, 3, tmp_path / "out")
    assert out.name == "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w.fits"
    with fits.open(out) as hdul:
        assert hdul["SCI"].data.shape == (75, 75)


@pytest.mark.parametrize("compressed", [False, True])
def test_pixels_headers_and_wcs(tmp_path, compressed):
    src, sci, wht, wcs = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits",
                                       compressed=compressed)
    out = cut_product(src, RA, DEC, [2.0, 1.0], tmp_path)  # 50 x 25 fine pixels
    x0, _ = expected_box(wcs, 50)
    _, y0 = expected_box(wcs, 25)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT"]
        p = hdul[0].header
        assert (p["INSTRUME"], p["TARGNAME"]) == ("WFC3", "TEST")
        assert p["FILENAME"] == out.name and p["ORIG_FLE"] == src.name
        assert (p["RA_OBJ"], p["DEC_OBJ"]) == (RA, DEC)
        c_sci, c_wht = hdul["SCI"].data, hdul["WHT"].data
        assert c_sci.shape == (25, 50)
        np.testing.assert_array_equal(c_sci, sci[y0:y0 + 25, x0:x0 + 50])
        np.testing.assert_array_equal(c_wht, wht[y0:y0 + 25, x0:x0 + 50])
        cw = WCS(hdul["SCI"].header)
        assert WCS(hdul["WHT"].header).wcs.crpix.tolist() == cw.wcs.crpix.tolist()
    # the cutout WCS is the source WCS shifted by the slice origin, exactly
    np.testing.assert_allclose(cw.wcs.crpix, wcs.wcs.crpix - [x0, y0], rtol=0, atol=0)
    cx, cy = cw.world_to_pixel_values(RA, DEC)
    assert abs(cx - (50 - 1) / 2) <= 0.5 + 1e-9 and abs(cy - (25 - 1) / 2) <= 0.5 + 1e-9
    ra, dec = cw.pixel_to_world_values(7.0, 3.0)
    np.testing.assert_allclose(wcs.pixel_to_world_values(x0 + 7.0, y0 + 3.0), (ra, dec),
                               rtol=0, atol=1e-12)


def test_box_partly_off_the_product(tmp_path):
    # the product's pixel (0, 0) is 5 px left of and 3 px below the 25x25 box's centre
    wcs = SkyCell.from_name(SKYCELL).frame.wcs
    x, y = (math.floor(float(v) + 0.5) for v in wcs.world_to_pixel_values(RA, DEC))
    src, sci, wht, _ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits",
                                     window=(x - 5, y - 3, 40, 30))
    out = cut_product(src, RA, DEC, 1.0, tmp_path)  # 25 x 25
    with fits.open(out) as hdul:
        c_sci, c_wht = hdul["SCI"].data, hdul["WHT"].data
    # cutout origin is product pixel (-7, -9)
    assert np.isnan(c_sci[:9]).all() and np.isnan(c_sci[:, :7]).all()
    assert (c_wht[:9] == 0).all() and (c_wht[:, :7] == 0).all()
    np.testing.assert_array_equal(c_sci[9:, 7:], sci[:16, :18])
    np.testing.assert_array_equal(c_wht[9:, 7:], wht[:16, :18])


def test_no_overlap_and_failures(tmp_path):
    inside, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits")
    far, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f110w_all_drz.fits",
                            window=(0, 0, 50, 50))
    corrupt = tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f125w_all_drz.fits"
    corrupt.write_bytes(b"not a FITS file" * 100)
    copy = tmp_path / "whatever.fits"  # a renamed copy: the same product, the same cutout
    copy.write_bytes(inside.read_bytes())
    assert cut_product(far, RA, DEC, 3, tmp_path / "out") is None
    written, failed = make_cutouts([corrupt, far, inside, copy, inside], RA, DEC, 3,
                                   tmp_path / "out")
    assert [p.name for p in written] == [
        "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w.fits"]
    assert [p for p, _ in failed] == [corrupt, copy]  # inside given twice is cut once
    assert failed[0][1].startswith("not a FITS file, or a corrupt one: No SIMPLE card")
    assert failed[1][1] == (f"the same product as {inside} (both cut to {written[0].name})")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [written[0].name]
    with pytest.raises(ValueError):
        make_cutouts([inside], RA, DEC, [1, 2, 3], tmp_path)


def test_cutout_box_rounding():
    wcs = SkyCell.from_name(SKYCELL, scale="coarse").frame.wcs
    assert cutout_box(wcs, RA, DEC, 3)[2:] == (25, 25)
    assert cutout_box(wcs, RA, DEC, [3, 1.2])[2:] == (25, 10)
    assert cutout_box(wcs, RA, DEC, 0.01)[2:] == (1, 1)


def test_cli(tmp_path, capsys):
    src, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits")
    bad = tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f125w_all_drz.fits"
    bad.write_bytes(b"junk")
    rc = main(["cut", str(src), str(bad), "--ra", str(RA), "--dec", str(DEC),
               "--size", "3", "-o", str(tmp_path / "cuts")])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.strip().endswith("decs69d1498_wfc3_ir_f160w.fits")
    assert "f125w" in captured.err
    assert main(["cut", str(src), "--ra", str(RA), "--dec", str(DEC), "--size", "3", "2",
                 "-o", str(tmp_path / "cuts")]) == 0


def test_same_pixels_as_astrocut(tmp_path):
    astrocut = pytest.importorskip("astrocut")
    src, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits")
    ours = cut_product(src, RA, DEC, 3, tmp_path)
    theirs = astrocut.fits_cut([str(src)], f"{RA} {DEC}", 3 * u.arcsec, correct_wcs=False,
                               extension=[1, 2], single_outfile=False, memory_only=True)
    with fits.open(ours) as hdul:
        np.testing.assert_array_equal(hdul["SCI"].data, theirs[0][1].data)
        np.testing.assert_array_equal(hdul["WHT"].data, theirs[0][2].data)
        np.testing.assert_allclose(WCS(hdul["SCI"].header).wcs.crpix,
                                   WCS(theirs[0][1].header).wcs.crpix, rtol=0, atol=1e-9)


@pytest.mark.filterwarnings("ignore:`correct_wcs`:DeprecationWarning")
@pytest.mark.parametrize("size", [3.0, 2.0])  # 75 (odd) and 50 (even) fine pixels
@pytest.mark.parametrize("frac", [(0.3, 0.2), (0.7, 0.8), (0.3, 0.8)])
def test_astrocut_box_is_ours_or_one_pixel_low(tmp_path, size, frac):
    """astrocut starts at round(x - n/2): the same box as ours when the fraction of
    x - (n - 1)/2 is below 0.5, else one pixel further left/down (module docstring)."""
    astrocut = pytest.importorskip("astrocut")
    src, sci, wht, wcs = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits",
                                       window=(10900, 21800, 300, 200))
    x, y = 150 + frac[0], 100 + frac[1]
    ra, dec = (float(v) for v in wcs.pixel_to_world_values(x, y))
    n = round(size / 0.04)
    ours = cut_product(src, ra, dec, size, tmp_path / "out")
    theirs = astrocut.fits_cut([str(src)], f"{ra} {dec}", size * u.arcsec, correct_wcs=False,
                               extension=[1, 2], single_outfile=False, memory_only=True)[0]
    expect = [0 if (v - (n - 1) / 2) % 1 < 0.5 else -1 for v in (x, y)]
    with fits.open(ours) as hdul:
        header, data = hdul["SCI"].header, hdul["SCI"].data
        x0, y0 = (round(wcs.wcs.crpix[i] - header[f"CRPIX{i + 1}"]) for i in (0, 1))
        np.testing.assert_array_equal(data, sci[y0:y0 + n, x0:x0 + n])
        shift = [round(header[k] - theirs[1].header[k]) for k in ("CRPIX1", "CRPIX2")]
    assert shift == expect  # astrocut's origin minus ours
    tx0, ty0 = x0 + expect[0], y0 + expect[1]
    np.testing.assert_array_equal(theirs[1].data, sci[ty0:ty0 + n, tx0:tx0 + n])
    np.testing.assert_array_equal(theirs[2].data, wht[ty0:ty0 + n, tx0:tx0 + n])
    assert abs(x0 + (n - 1) / 2 - x) <= 0.5 and abs(tx0 + (n - 1) / 2 - x) <= 1.0


@pytest.mark.parametrize("compressed", [False, True])
def test_reads_only_the_box(tmp_path, compressed):
    """The source arrays are never loaded whole: memory use is that of the box.

    An uncompressed product is sliced through its memory map, a tile-compressed one through
    ``section``; either way the peak of Python allocations (numpy's included) during the
    cut stays far below one of the product's 12 MB arrays.
    """
    tracemalloc = pytest.importorskip("tracemalloc")
    wcs = SkyCell.from_name(SKYCELL).frame.wcs
    x, y = (math.floor(float(v) + 0.5) for v in wcs.world_to_pixel_values(RA, DEC))
    src, sci, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits",
                                 window=(x - 1000, y - 750, 2000, 1500), compressed=compressed)
    assert sci.nbytes == 12_000_000
    del sci
    tracemalloc.start()
    try:
        out = cut_product(src, RA, DEC, 1.0, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out is not None
    assert peak < 1_500_000, f"peak {peak / 1e6:.1f} MB: the product was read whole"


@pytest.mark.parametrize("nexp", [3, 40])  # one 2-d int32 plane; two planes (3-d)
def test_context_and_hdrtab_are_cut(tmp_path, nexp):
    # the product's pixel (0, 0) is 5 px left of and 3 px below the 25x25 box's centre
    wcs = SkyCell.from_name(SKYCELL).frame.wcs
    x, y = (math.floor(float(v) + 0.5) for v in wcs.world_to_pixel_values(RA, DEC))
    src = tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits"
    frame, ctx = write_context_product(src, nexp, (x - 5, y - 3, 40, 30))
    out = cut_product(src, RA, DEC, 1.0, tmp_path / "out")  # origin at product pixel (-7, -9)
    with fits.open(out) as hdul, fits.open(src) as prod:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT", "CTX", "HDRTAB"]
        c_ctx = hdul["CTX"].data
        assert c_ctx.dtype.kind == "i" and c_ctx.dtype.itemsize == 4 and c_ctx.shape == ctx.shape[:-2] + (25, 25)
        assert (c_ctx[..., :9, :] == 0).all() and (c_ctx[..., :, :7] == 0).all()
        np.testing.assert_array_equal(c_ctx[..., 9:, 7:], ctx[..., :16, :18])
        # input nexp-1 (bit in the last plane) is where the source column says it is
        last = nexp - 1
        plane = c_ctx if c_ctx.ndim == 2 else c_ctx[last // 32]
        has = (plane.astype(np.int64) >> (last % 32)) & 1 == 1  # FITS data are big-endian
        cols = np.arange(25) - 7  # source column of each cutout column
        expect = ((cols % nexp == last) | (cols % nexp == 0)) & (cols >= 0)
        np.testing.assert_array_equal(has[12], expect)
        assert hdul["CTX"].header["CRPIX1"] == frame.crpix1 + 7
        assert hdul["CTX"].header["CRPIX2"] == frame.crpix2 + 9
        # HDRTAB is copied unchanged: two chips per input sharing the input's CTXBIT
        np.testing.assert_array_equal(hdul["HDRTAB"].data, prod["HDRTAB"].data)
        assert list(hdul["HDRTAB"].data["CTXBIT"]) == [k for k in range(nexp) for _ in (1, 2)]
        assert hdul["HDRTAB"].columns.names == prod["HDRTAB"].columns.names
        sci_hdr = hdul["SCI"].header
    # PCX0/PCY0 move with the slice and agree with the cutout's own CRPIX
    assert (sci_hdr["PCX0"], sci_hdr["PCY0"]) == (frame.x0 - 7, frame.y0 - 9)
    pc = ProjectionCell(sci_hdr["PCELLID"])
    assert sci_hdr["PCX0"] == pc.crpix[0] - sci_hdr["CRPIX1"]
    assert sci_hdr["PCY0"] == pc.crpix[1] - sci_hdr["CRPIX2"]


def test_archive_like_empty_ctx_is_left_out(tmp_path):
    wcs = SkyCell.from_name(SKYCELL).frame.wcs
    x, y = (math.floor(float(v) + 0.5) for v in wcs.world_to_pixel_values(RA, DEC))
    src = tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits"
    write_context_product(src, 2, (x - 20, y - 20, 40, 40), ctx_shape="empty")
    out = cut_product(src, RA, DEC, 1.0, tmp_path / "out")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT", "HDRTAB"]
        assert len(hdul["HDRTAB"].data) == 4


# ------------------------------------------------------------------------------------------
# identifying a product: by its name checked against its header, or by its header alone

FINE = "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits"
CUT_FINE = "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w.fits"


def test_renamed_product_is_cut_as_named_in_its_header(tmp_path):
    src, *_ = write_product(tmp_path / FINE)
    renamed = tmp_path / "my copy.fits"
    src.rename(renamed)
    out = cut_product(renamed, RA, DEC, 3, tmp_path / "out")
    assert out.name == CUT_FINE
    write_product(tmp_path / FINE)
    ref = cut_product(tmp_path / FINE, RA, DEC, 3, tmp_path / "ref")
    with fits.open(out) as a, fits.open(ref) as b:
        np.testing.assert_array_equal(a["SCI"].data, b["SCI"].data)
        np.testing.assert_array_equal(a["WHT"].data, b["WHT"].data)
        assert a["SCI"].header["CRPIX1"] == b["SCI"].header["CRPIX1"]
        assert a[0].header["ORIG_FLE"] == "my copy.fits"


def test_custom_prefix_names(tmp_path):
    """A sky-cell product renamed with a custom prefix is identified by its header; a
    custom mosaic (no sky cell anywhere) cannot be cut, as before."""
    src, *_ = write_product(tmp_path / FINE)
    renamed = tmp_path / "mymosaic_wfc3_ir_f160w_all_drz.fits"
    src.rename(renamed)
    assert cut_product(renamed, RA, DEC, 3, tmp_path / "out").name == CUT_FINE
    with fits.open(renamed, mode="update") as hdul:
        del hdul[0].header["SCELLID"]
        hdul[0].header["ROOTNAME"] = "mymosaic_wfc3_ir_f160w_all"
        hdul[0].header["FILENAME"] = renamed.name
    with pytest.raises(ProductError, match="it has no sky-cell prefix"):
        cut_product(renamed, RA, DEC, 3, tmp_path / "out")


def test_header_sources_in_order(tmp_path):
    """ROOTNAME (archive-like, with an exposure-level label), then FILENAME, then keywords."""
    src, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits",
                            scale="coarse", window=(3600, 7250, 120, 60))
    with fits.open(src) as hdul:
        primary, sci = hdul[0].header.copy(), hdul["SCI"].header.copy()
    del primary["FILENAME"]
    layer = product_layer_name("renamed.fits", primary, sci)
    assert layer.filename == src.name  # ROOTNAME alone: the label and ipppssoo are kept
    del primary["ROOTNAME"]
    primary["FILENAME"] = src.name
    assert product_layer_name("renamed.fits", primary, sci).filename == src.name
    del primary["FILENAME"]  # keywords only: scale from the WCS, class 'all'
    assert product_layer_name("renamed.fits", primary, sci).filename == \
        "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits"
    primary["ROOTNAME"] = "ib2v01abq"  # an exposure's rootname is not a layer's: ignored
    primary["FILENAME"] = "ib2v01abq_flt.fits"
    assert product_layer_name("renamed.fits", primary, sci).scale == "coarse"
    del primary["SCELLID"]
    with pytest.raises(ProductError, match=r"not a layer product: 'renamed.fits' is not a sky-cell "
                                           r"layer name and the header has no layer ROOTNAME or "
                                           r"FILENAME, nor SCELLID"):
        product_layer_name("renamed.fits", primary, sci)


@pytest.mark.parametrize("name, key, value, says", [
    ("hst_skycell-p0081x14y14_wfc3_ir_f110w_all_drz.fits", None, None,
     "filter f110w in the name, f160w in FILTER"),
    ("hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits", None, None,
     "scale coarse in the name, fine in the SCI WCS pixel scale"),
    ("hst_skycell-p0081x14y15_wfc3_ir_f160w_all_drz.fits", None, None,
     "skycell skycell-p0081x14y15 in the name, skycell-p0081x14y14 in SCELLID"),
    ("hst_skycell-p0082x14y14_wfc3_ir_f160w_all_drz.fits", "SCELLID", "p0082x14y14",
     "skycell-p0082x14y14 is not on the plane of the WCS"),
    (FINE, "DETECTOR", "UVIS", "detector ir in the name, uvis in DETECTOR"),
    (FINE, "INSTRUME", "ACS", "instrument wfc3 in the name, acs in INSTRUME"),
    (FINE, "ROOTNAME", "hst_skycell-p0081x14y14_wfc3_ir_f160w_short-2012",
     "ROOTNAME is hst_skycell-p0081x14y14_wfc3_ir_f160w_short-2012"),
])
def test_name_and_header_must_agree(tmp_path, name, key, value, says):
    src, *_ = write_product(tmp_path / FINE)
    with fits.open(src) as hdul:
        primary, sci = hdul[0].header.copy(), hdul["SCI"].header.copy()
    primary["FILENAME"] = name
    primary["ROOTNAME"] = LayerName.parse(name).rootname
    if key:
        primary[key] = value
    with pytest.raises(ProductError, match="^the file name and the header disagree: ") as err:
        product_layer_name(name, primary, sci)
    assert says in str(err.value)


def test_files_that_are_not_products(tmp_path):
    good, *_ = write_product(tmp_path / FINE)
    table = tmp_path / "table.fits"  # FITS, but no SCI/WHT
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)), name="SCI")]).writeto(table)
    anon = tmp_path / "anonymous.fits"  # SCI/WHT on the grid, but nothing says what it is
    with fits.open(good) as hdul:
        fits.HDUList([fits.PrimaryHDU(), hdul["SCI"].copy(), hdul["WHT"].copy()]).writeto(anon)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:-40000])
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.fits"
    folder.mkdir()
    missing = tmp_path / "missing.fits"
    cases = {
        missing: "no such file",
        folder: "is a directory, not a FITS file",
        empty: "empty file, not a FITS file",
        truncated: "truncated FITS file: actual file length (129920) is smaller than the "
                   "expected size (169920)",
        table: "not a layer product: no WHT extension (it has PRIMARY, SCI)",
        anon: "not a layer product: 'anonymous.fits' is not a sky-cell layer name and the header has no "
              "layer ROOTNAME or FILENAME, nor SCELLID, INSTRUME, DETECTOR, FILTER",
    }
    for path, reason in cases.items():
        with pytest.raises(ProductError) as err:
            identify_product(path)
        assert str(err.value) == reason, path
    written, failed = make_cutouts([*cases, good], RA, DEC, 3, tmp_path / "out")
    assert [p.name for p in written] == [CUT_FINE]
    assert failed == list(cases.items())
    assert identify_product(good).filename == FINE


def test_unreadable_file(tmp_path, monkeypatch):
    src, *_ = write_product(tmp_path / FINE)
    if os.geteuid() == 0:  # root reads any file: pretend it cannot
        monkeypatch.setattr("mvmflow.cutouts.os.access", lambda path, mode: False)
    src.chmod(0)
    try:
        with pytest.raises(ProductError, match="^cannot read the file: permission denied$"):
            cut_product(src, RA, DEC, 3, tmp_path)
    finally:
        src.chmod(0o644)


def test_layer_name_from_rootname():
    for name in (FINE, "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits",
                 "hst_skycell-p0081x14y14_acs_wfc_f606w-pol60v_short-2012_drc.fits"):
        layer = LayerName.parse(name)
        assert LayerName.from_rootname(layer.rootname, layer.product_type) == layer
    assert LayerName.from_rootname("hst_skycell-p0081x14y14_wfc3_ir_f160w_all").product_type == "drz"
    for bad in ("ib2v01abq", "", "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz", "a/b"):
        with pytest.raises(ValueError, match="is not a layer rootname"):
            LayerName.from_rootname(bad)


def test_a_product_written_by_write_layer_renamed(tmp_path):
    """Our own products (products.write_layer) carry what identifies them: renamed, the
    cutout has the original's name (product type from FILENAME) and the same pixels."""
    from test_products import FRAME, write

    path, _ = write(tmp_path)
    ra, dec = (float(v) for v in FRAME.wcs.pixel_to_world_values(30, 25))
    ref = cut_product(path, ra, dec, 0.5, tmp_path / "ref")
    renamed = path.rename(tmp_path / "renamed.fits")
    assert identify_product(renamed).filename == path.name  # ..._f606w_all_drc.fits
    out = cut_product(renamed, ra, dec, 0.5, tmp_path / "out")
    assert out.name == ref.name == "hst_cutout_skycell-p0081x14y14-ra85d5494-decs69d3733_wfc3_uvis_f606w.fits"
    with fits.open(out) as a, fits.open(ref) as b:
        for ext in ("SCI", "WHT", "CTX"):
            np.testing.assert_array_equal(a[ext].data, b[ext].data)
