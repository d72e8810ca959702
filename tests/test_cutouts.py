"""Tests of mvmflow.cutouts (hapcut's make_the_cut, spec processing.md §5.3)."""

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from mvmflow.cli import main
from mvmflow.cutouts import cut_product, cutout_box, make_cutouts
from mvmflow.grid import SkyCell

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


def test_reads_only_the_box(tmp_path, monkeypatch):
    """The source arrays are never loaded whole: only ``section`` slices are read."""
    src, *_ = write_product(tmp_path / "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits")
    loaded = []
    real_open = fits.open

    def spy_open(*args, **kwargs):
        hdul = real_open(*args, **kwargs)
        real_close = hdul.close

        def close(*a, **k):  # record which arrays were loaded before the file closes
            loaded.extend(h.name for h in hdul if "data" in h.__dict__)
            return real_close(*a, **k)

        hdul.close = close
        return hdul

    monkeypatch.setattr(fits, "open", spy_open)
    assert cut_product(src, RA, DEC, 1.0, tmp_path) is not None
    assert loaded == []
