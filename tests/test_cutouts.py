"""Tests of mvmflow.cutouts (hapcut's make_the_cut, spec processing.md §5.3)."""

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from mvmflow.cli import main
from mvmflow.cutouts import cut_product, cutout_box, make_cutouts
from mvmflow.grid import ProjectionCell, SkyCell
from mvmflow.headers import ChipRow, hdrtab

RA, DEC = 85.25665514291263, -69.14985113186759  # spec's verified example position
SKYCELL = "skycell-p0081x14y14"


def write_product(path, scale="fine", window=(10900, 21800, 200, 100), compressed=False):
    """A small synthetic layer product: a window of the sky cell's frame."""
    frame = SkyCell.from_name(SKYCELL, scale=scale).frame.window(*window)
    nx, ny = frame.nx, frame.ny
    sci = (np.arange(ny * nx, dtype=np.float32).reshape(ny, nx) + 1.0) / 7.0
    wht = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx) + 100.0
    primary = fits.PrimaryHDU()
    primary.header.update(INSTRUME="WFC3", DETECTOR="IR", FILTER="F160W",
                          FILENAME=path.name, TARGNAME="TEST")
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
    badname = tmp_path / "whatever.fits"
    badname.write_bytes(inside.read_bytes())
    assert cut_product(far, RA, DEC, 3, tmp_path / "out") is None
    written, failed = make_cutouts([corrupt, far, inside, badname], RA, DEC, 3, tmp_path / "out")
    assert [p.name for p in written] == [
        "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w.fits"]
    assert [p for p, _ in failed] == [corrupt, badname]
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
