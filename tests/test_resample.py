"""mvmflow.resample (the drizzle map step) and mvmflow.masks.

Synthetic exposures use real HST WCSs from the shared reference data: the WFC3/IR SCI header
of ``ib4606cpq`` (TAN + order-4 SIP) cut to a small subarray (NAXIS and CRPIX moved, so the
SIP polynomial is unchanged), and the ACS/WFC chip-2 header with the real NPOL and D2IM lookup
tables for full-chip pixel-map accuracy.

The flux relation tested (module notes of mvmflow.resample): input pixel values are surface
brightness per nominal pixel (``IDCSCALE``), so for a source

    sum_out(SCI) = sum_k d_k * A_k / s_nom**2,

with ``A_k`` the true sky area of input pixel k (from the exact distortion) and ``d_k`` in
e-/s; a flat input ``d`` gives a flat output ``d * (s_out / s_nom)**2``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from mvmflow.combine import combine_partials
from mvmflow.grid import ProjectionCell, SkyCell, sky_cells_at
from mvmflow.masks import (
    clipped_mode_stats,
    combine_static_masks,
    good_pixel_mask,
    parse_bits,
    static_cut,
    static_mask,
)
from mvmflow.partials import PartialFile, write_partial
from mvmflow.resample import (
    Chip,
    Partial,
    chip_box,
    drizzle_exposure,
    drizzle_file,
    input_units,
    load_chips,
    nominal_scale,
    pixmap,
)

HDR = Path("/work/shared/reference_data/hst/headers")
IR = HDR / "wfc3_ir" / "ib4606cpq_flt_10x10.fits"
LOOKUP = HDR / "acs_wfc" / "acswfc_chip2_sci_npol_d2im_lookup.fits.gz"

pytestmark = pytest.mark.skipif(not HDR.is_dir(), reason="shared HST reference data not available")

EXPTIME = 699.232483
SQUARE = {"kernel": "square", "pixfrac": 1.0, "final_bits": 65535, "static_mask": False,
          "stepsize": 10, "wht_type": "EXP"}


# --------------------------------------------------------------------------------------
# helpers


def quiet_wcs(header, hdul=None) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, fobj=hdul)


def ir_headers(n=200, crval=None):
    """Primary and SCI headers of the IR exposure as an ``n`` x ``n`` central subarray."""
    with fits.open(IR) as hdul:
        primary = hdul[0].header.copy()
        sci = hdul["SCI", 1].header.copy()
    shift = 507 - n // 2
    sci["NAXIS1"] = sci["NAXIS2"] = n
    sci["CRPIX1"] -= shift
    sci["CRPIX2"] -= shift
    if crval is not None:
        sci["CRVAL1"], sci["CRVAL2"] = crval
    return primary, sci


def ir_chip(data, crval=None, bunit="ELECTRONS/S", dq=None, exptime=EXPTIME,
            filename="ib4606cpq_flt.fits", extver=1, crpix_shift=(0.0, 0.0)) -> Chip:
    n = data.shape[0]
    _, sci = ir_headers(n, crval)
    sci["CRPIX1"] += crpix_shift[0]
    sci["CRPIX2"] += crpix_shift[1]
    wcs = quiet_wcs(sci)
    wcs.pixel_shape = (n, n)
    return Chip(np.asarray(data, np.float32), wcs, exptime, bunit, dq, extver,
                float(sci["IDCSCALE"]), filename)


def frame_at(wcs, n):
    ra, dec = wcs.all_pix2world([[n / 2, n / 2]], 0)[0]
    return SkyCell.from_name(sky_cells_at(ra, dec)[0]).frame


def gaussian(n, x0, y0, sigma=1.5, amp=500.0):
    y, x = np.mgrid[:n, :n]
    return amp * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


def exact_map(chip_wcs, frame, x, y):
    ra, dec = chip_wcs.all_pix2world(x, y, 0)
    fx, fy = frame.wcs.world_to_pixel_values(ra, dec)
    return np.asarray(fx), np.asarray(fy)


def pixel_areas(chip_wcs, frame, shape):
    """True area of every input pixel in frame pixels (exact mapping of its corners)."""
    ny, nx = shape
    cy, cx = np.mgrid[: ny + 1, : nx + 1] - 0.5
    fx, fy = exact_map(chip_wcs, frame, cx, cy)
    # shoelace over the corners (x0,y0) (x1,y0) (x1,y1) (x0,y1)
    x00, x10, x11, x01 = fx[:-1, :-1], fx[:-1, 1:], fx[1:, 1:], fx[1:, :-1]
    y00, y10, y11, y01 = fy[:-1, :-1], fy[:-1, 1:], fy[1:, 1:], fy[1:, :-1]
    return 0.5 * np.abs((x11 - x00) * (y01 - y10) - (x01 - x10) * (y11 - y00))


def centroid(image, x0, y0, r):
    y, x = np.indices(image.shape)
    sel = ((x - x0) ** 2 + (y - y0) ** 2 < r * r) & np.isfinite(image)
    w = np.where(sel, image, 0.0)
    return (w * x).sum() / w.sum(), (w * y).sum() / w.sum()


@pytest.fixture(scope="module")
def star_case():
    """A 200 x 200 IR chip with a Gaussian star on zero background, and its partial."""
    n = 200
    data = gaussian(n, 90.3, 110.7).astype(np.float32)
    chip = ir_chip(data)
    frame = frame_at(chip.wcs, n)
    return chip, frame, drizzle_exposure([chip], frame, SQUARE)


# --------------------------------------------------------------------------------------
# masks


def test_parse_bits_forms():
    assert parse_bits(80) == 80
    assert parse_bits("8,1024") == 1032
    assert parse_bits("2+8+1024") == 1034
    assert parse_bits([16, 64]) == 80
    assert parse_bits(None) is None and parse_bits("INDEF") is None and parse_bits("") is None
    assert parse_bits("~4096") == 0xFFFFFFFF & ~4096
    for bad in ("3", "8,,16", "x", -1, 1.5, True):
        with pytest.raises(ValueError):
            parse_bits(bad)


def test_good_pixel_mask():
    dq = np.array([0, 16, 64, 80, 4096, 16 | 4096, 1024, 8], np.int16)
    assert good_pixel_mask(dq, 80).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert good_pixel_mask(dq, "8,1024").tolist() == [1, 0, 0, 0, 0, 0, 1, 1]
    assert good_pixel_mask(dq, 0).tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert good_pixel_mask(dq, 65535).all() and good_pixel_mask(dq, None).all()
    # an int16 DQ array holding the flag 32768 reads it as negative
    big = np.array([0, -32768, 16], np.int16)
    assert good_pixel_mask(big, 16).tolist() == [True, False, True]
    assert good_pixel_mask(big.view(np.uint16), 32768 + 16).all()
    assert good_pixel_mask(None, 0, shape=(2, 3)).shape == (2, 3)
    with pytest.raises(ValueError):
        good_pixel_mask(dq.astype(float), 0)


def test_clipped_mode_matches_imagestats():
    imagestats = pytest.importorskip("stsci.imagestats")
    rng = np.random.default_rng(3)
    image = rng.normal(40.0, 6.0, (300, 400)).astype(np.float32)
    image[rng.random(image.shape) < 0.02] += 800.0
    ref = imagestats.ImageStats(image, nclip=3, fields="mode", lower=image.min(),
                                upper=image.max())
    mode, std = clipped_mode_stats(image)
    assert std == pytest.approx(ref.stddev, rel=1e-6)
    assert mode == pytest.approx(ref.mode, abs=0.02 * std)


def _clipped_stats_plainly(values, nclip, lsig, usig):
    """The clipping of clipped_mode_stats written plainly: every round selects from all
    values, numpy's own mean and std. Also: whether a round took in values the round
    before had left out. None when a round keeps fewer than 2 values."""
    values = values[np.isfinite(values)]
    lower, upper = float(values.min()), float(values.max())
    lo, hi, sel, widened = lower, upper, values, False
    for it in range(nclip + 1):
        prev, sel = sel, values[(values >= lo) & (values <= hi)]
        widened |= sel.size > np.count_nonzero((prev >= lo) & (prev <= hi))
        if sel.size < 2:
            return None, widened
        mean = float(sel.mean(dtype=np.float64))
        std = float(sel.std(dtype=np.float64, ddof=1))
        if it < nclip:
            lo, hi = max(lower, mean - lsig * std), min(upper, mean + usig * std)
    return std, widened


def test_clipped_stats_are_numpys_to_the_bit():
    """Narrower rounds select from the previous round's values and share one sum: the
    standard deviation is numpy's to the bit, also when a round widens the range."""
    rng = np.random.default_rng(0)
    widened = 0
    for trial in range(1000):
        if trial < 10:  # outliers, clipped as in the static mask
            values = rng.normal(0.0, 1.0, 2000 + 500 * trial).astype(np.float32)
            values[rng.random(values.size) < 0.02] = np.nan
            values[:3] = [np.inf, 40.0, -25.0]
            lsig, usig = 3.0, 3.0
        else:  # lopsided clipping of a skewed sample: a round may widen the range
            values = rng.exponential(1.0, 200).astype(np.float32)
            lsig, usig = rng.uniform(0.2, 3.0, 2)
        want, wider = _clipped_stats_plainly(values, 3, lsig, usig)
        if want is not None:
            widened += wider
            assert clipped_mode_stats(values, lsig=lsig, usig=usig)[1] == want
    assert widened >= 3  # ranges that widen over values were met


def test_static_cut_is_recorded_exactly_and_reused(tmp_path):
    n = 100
    data = _sky_image(n)
    data[30, 70] = -50.0
    cut = static_cut(data)
    assert np.isfinite(cut)
    assert np.array_equal(static_mask(data, cut=cut), static_mask(data))
    assert not np.array_equal(static_mask(data, cut=cut + 3.0), static_mask(data))
    chip = ir_chip(data)
    frame = frame_at(chip.wcs, n)
    partial = drizzle_exposure([chip], frame, dict(SQUARE, static_mask=True))
    assert partial.chips[0]["static_cut"] == cut
    assert "static_cut" not in drizzle_exposure([chip], frame, SQUARE).chips[0]
    # the file keeps it to the bit (a float card would round it)
    path = write_partial(partial, tmp_path / "p.fits")
    assert PartialFile.open(path).chips[0]["static_cut"] == cut
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["C1SCUT"] = "a third"
    with pytest.raises(ValueError, match=r"p\.fits: corrupt partial file: C1SCUT"):
        PartialFile.open(path)


def test_static_mask_flags_low_pixels_only():
    rng = np.random.default_rng(4)
    image = rng.normal(100.0, 5.0, (200, 200)).astype(np.float32)
    image[10, 10] = 100.0 - 5 * 5.0  # 5 sigma below: flagged
    image[20, 20] = 100.0 - 3 * 5.0  # 3 sigma below: kept
    image[30, 30] = 5000.0  # high outliers are not the static mask's business
    image[40, 40] = np.nan
    keep = static_mask(image)
    assert not keep[10, 10] and keep[20, 20] and keep[30, 30] and not keep[40, 40]
    assert (~keep).sum() <= 2 + 10  # a handful of Gaussian-tail pixels at most
    assert combine_static_masks([keep, np.ones_like(keep)]).sum() == keep.sum()
    with pytest.raises(ValueError):
        static_mask(image, np.zeros(3))


# --------------------------------------------------------------------------------------
# pixel map


def test_pixmap_full_ir_chip_matches_calc_pixmap():
    from drizzle.utils import calc_pixmap

    _, sci = ir_headers(1014)
    wcs = quiet_wcs(sci)
    wcs.pixel_shape = (1014, 1014)
    frame = frame_at(wcs, 1014)
    approx = pixmap(wcs, frame, (1014, 1014))
    exact = calc_pixmap(wcs, frame.wcs, shape=(1014, 1014))
    err = np.hypot(*(approx - exact).transpose(2, 0, 1))
    assert err.max() < 0.005
    print(f"IR chip pixmap: max error {err.max():.2e} px")


@pytest.mark.skipif(not LOOKUP.exists(), reason="ACS/WFC lookup-table header not available")
def test_pixmap_acs_chip_with_npol_and_d2im():
    with fits.open(LOOKUP) as hdul:
        sci = hdul[1].header.copy()
        sci["NAXIS1"], sci["NAXIS2"] = 4096, 2048
        wcs = quiet_wcs(sci, hdul)
    wcs.pixel_shape = (4096, 2048)
    assert wcs.det2im1 is not None and wcs.cpdis1 is not None and wcs.sip is not None
    frame = frame_at(wcs, 2048)
    approx = pixmap(wcs, frame, (2048, 4096))
    # exact at every edge pixel and at 200000 random pixels (all 8 Mpix takes 5 s)
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.integers(0, 4096, 200000), np.arange(4096), np.arange(4096),
                         np.zeros(2048, int), np.full(2048, 4095)])
    ys = np.concatenate([rng.integers(0, 2048, 200000), np.zeros(4096, int),
                         np.full(4096, 2047), np.arange(2048), np.arange(2048)])
    fx, fy = exact_map(wcs, frame, xs.astype(float), ys.astype(float))
    err = np.hypot(approx[ys, xs, 0] - fx, approx[ys, xs, 1] - fy)
    assert err.max() < 0.005
    # the D2IM correction (column-scale structure, up to 0.005 px here) is really applied
    smooth = wcs.deepcopy()
    smooth.det2im1 = None
    gx, gy = exact_map(smooth, frame, xs.astype(float), ys.astype(float))
    assert np.hypot(gx - fx, gy - fy).max() > 0.003
    print(f"ACS chip pixmap: max error {err.max():.2e} px")


@pytest.mark.parametrize("scale", ["fine", "coarse"])
def test_pixmap_is_the_same_on_every_frame_of_a_grid(scale):
    """A chip's map onto any frame (or box of one) of a grid is the grid's map shifted by an
    integer, to the bit: the drizzle, the blot and the mosaic's drizzle agree exactly."""
    from mvmflow.resample import Box

    n = 300
    _, sci = ir_headers(n)
    wcs = quiet_wcs(sci)
    wcs.pixel_shape = (n, n)
    ra, dec = wcs.all_pix2world([[n / 2, n / 2]], 0)[0]
    cell = SkyCell.from_name(sky_cells_at(ra, dec)[0])
    frame = cell.frame if scale == "fine" else SkyCell(cell.projection_cell, cell.x, cell.y,
                                                       "coarse").frame
    base = pixmap(wcs, frame, (n, n))
    assert np.isfinite(base).all()
    if scale == "coarse":
        assert frame.x0 != int(frame.x0)  # a grid with a fractional phase
    for x0, y0 in ((0, 0), (17, -5), (-1203, 388)):
        other = frame.window(x0, y0, 50, 40)
        assert other.grid_frame() == frame.grid_frame()
        moved = pixmap(wcs, other, (n, n))
        assert np.array_equal(moved[..., 0], base[..., 0] - x0)
        assert np.array_equal(moved[..., 1], base[..., 1] - y0)
        boxed = pixmap(wcs, other, (n, n), box=Box(3, 4, 10, 10))
        assert np.array_equal(boxed[..., 0], base[..., 0] - x0 - 3)
        assert np.array_equal(boxed[..., 1], base[..., 1] - y0 - 4)
    # and within the pixel map's accuracy of the exact mapping
    exact = exact_map(wcs, frame, np.array([0.0, n - 1.0, 123.0]), np.array([0.0, 7.0, n - 1.0]))
    got = base[[0, 7, n - 1], [0, n - 1, 123]]
    assert np.abs(got[:, 0] - exact[0]).max() < 0.005 and np.abs(got[:, 1] - exact[1]).max() < 0.005
    with pytest.raises(ValueError, match="box"):
        pixmap(wcs, frame.wcs, (n, n), box=Box(0, 0, 1, 1))


def test_pixmap_across_ra_zero():
    from drizzle.utils import calc_pixmap

    n = 200
    _, sci = ir_headers(n, crval=(0.0005, 0.3))
    wcs = quiet_wcs(sci)
    wcs.pixel_shape = (n, n)
    ra = wcs.all_pix2world([[0, 0], [n - 1, n - 1], [0, n - 1], [n - 1, 0]], 0)[:, 0]
    assert ra.max() > 359.0 and ra.min() < 1.0  # the chip straddles RA = 0
    for name in sky_cells_at(0.0005, 0.3)[:2]:
        frame = SkyCell.from_name(name).frame
        err = np.abs(pixmap(wcs, frame, (n, n)) - calc_pixmap(wcs, frame.wcs, shape=(n, n)))
        assert err.max() < 0.005


@pytest.mark.parametrize("d2im", ["none", "row", "column", "both", "full"])
@pytest.mark.parametrize("shape", [(2048, 4096), (37, 23), (4, 5)])
def test_map_spline_is_fitpacks_spline_and_its_points_are_its_rows(d2im, shape):
    """MapSpline evaluates FITPACK's interpolating spline (and the first-order D2IM term)
    as a tensor product: FITPACK's values to float64 rounding, and the same bits at
    scattered pixels as on whole rows."""
    from scipy.interpolate import RectBivariateSpline

    from mvmflow.resample import MapSpline, _samples

    ny, nx = shape
    rng = np.random.default_rng(7)
    xs, ys = _samples(nx, 10), _samples(ny, 10)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    # a distortion-like smooth map onto a far frame (values ~ 3e5 px, as on a sky cell's
    # projection-cell plane)
    values = 3.0e5 + 0.8 * gx - 0.3 * gy + 2e-6 * gx * gy + 1e-9 * gx ** 3 + np.sin(gy / 300)
    row = 0.004 * np.sin(np.arange(nx) / 3.0)[None, :]
    col = 0.003 * np.cos(np.arange(ny) / 5.0)[:, None]
    offsets = {"none": [None, None], "row": [row, None], "column": [None, col],
               "both": [row, col], "full": [row + 0.1 * col, None]}[d2im]
    spline = MapSpline(xs, ys, values, shape, offsets)
    got = np.concatenate([spline.rows(r0, min(r0 + 256, ny)) for r0 in range(0, ny, 256)])
    ref = RectBivariateSpline(ys, xs, values, kx=min(3, ys.size - 1), ky=min(3, xs.size - 1),
                              s=0)
    y, x = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    want = ref(y, x)
    if offsets[0] is not None:
        want += ref(y, x, dy=1) * offsets[0]
    if offsets[1] is not None:
        want += ref(y, x, dx=1) * offsets[1]
    assert np.abs(got - want).max() < 64 * np.spacing(3.0e5)  # 4e-9 px
    if d2im != "none":  # the D2IM term is there
        assert np.abs(got - ref(y, x)).max() > 4e-4
    r, c = rng.integers(0, ny, 5000), rng.integers(0, nx, 5000)
    assert np.array_equal(spline.at(r, c), got[r, c])


def test_pixmap_small_and_degenerate_shapes():
    from drizzle.utils import calc_pixmap

    _, sci = ir_headers(200)
    wcs = quiet_wcs(sci)
    frame = frame_at(wcs, 200)
    for shape in ((3, 7), (1, 50), (50, 1), (12, 12)):
        got = pixmap(wcs, frame, shape, step=10)
        assert got.shape == shape + (2,)
        assert np.abs(got - calc_pixmap(wcs, frame.wcs, shape=shape)).max() < 0.005


# --------------------------------------------------------------------------------------
# flux and astrometry


def test_flux_conservation_star(star_case):
    chip, frame, partial = star_case
    s_nom = nominal_scale(chip)
    area = pixel_areas(chip.wcs, frame, chip.shape) * frame.scale**2  # arcsec^2
    expected = float((chip.data.astype(np.float64) * area).sum() / s_nom**2)
    got = float(np.nansum(partial.sci().astype(np.float64)))
    assert got == pytest.approx(expected, rel=2e-5)
    # the plain input sum differs by the pixel-area correction (0.3 % here, near the
    # IR chip's centre): the test tells the two apart
    assert abs(float(chip.data.sum()) / expected - 1) > 0.002


def test_flux_conservation_flat_patch():
    n, c = 200, 3.0
    data = np.zeros((n, n), np.float32)
    data[60:140, 50:150] = c
    chip = ir_chip(data)
    frame = frame_at(chip.wcs, n)
    partial = drizzle_exposure([chip], frame, SQUARE)
    s_nom = nominal_scale(chip)
    area = pixel_areas(chip.wcs, frame, chip.shape) * frame.scale**2
    expected = float((data * area).sum() / s_nom**2)
    assert float(np.nansum(partial.sci().astype(np.float64))) == pytest.approx(expected, rel=2e-5)
    # surface brightness: the patch interior is flat at c * (s_out / s_nom)**2
    px, py = exact_map(chip.wcs, frame, np.array([100.0]), np.array([100.0]))
    ix, iy = int(round(px[0])) - partial.box_x0, int(round(py[0])) - partial.box_y0
    inner = partial.sci()[iy - 40:iy + 40, ix - 40:ix + 40]
    assert np.allclose(inner, c * (frame.scale / s_nom) ** 2, rtol=1e-6)


def test_astrometry_star_centroid(star_case):
    chip, frame, partial = star_case
    ra, dec = chip.wcs.all_pix2world([[90.3, 110.7]], 0)[0]
    fx, fy = frame.wcs.world_to_pixel_values(ra, dec)
    cx, cy = centroid(partial.sci(), fx - partial.box_x0, fy - partial.box_y0, r=40)
    assert abs(cx + partial.box_x0 - fx) < 0.02 and abs(cy + partial.box_y0 - fy) < 0.02


def test_matches_drizzle_with_exact_pixmap(star_case):
    from drizzle.resample import Drizzle
    from drizzle.utils import calc_pixmap

    chip, frame, partial = star_case
    window = partial.window
    pm = calc_pixmap(chip.wcs, window.wcs, shape=chip.shape)
    r = frame.scale / nominal_scale(chip)
    driz = Drizzle(kernel="square", out_shape=partial.shape, fillval="INDEF", disable_ctx=True)
    driz.add_image(chip.data, exptime=EXPTIME, pixmap=pm,
                   weight_map=np.full(chip.shape, EXPTIME, np.float32), pixfrac=1.0,
                   in_units="cps", iscale=r * r, pixel_scale_ratio=r)
    mine = partial.sci()
    assert np.array_equal(np.isnan(mine), np.isnan(driz.out_img))
    good = ~np.isnan(mine)
    peak = float(np.nanmax(mine))
    assert np.abs(mine[good] - driz.out_img[good]).max() < 1e-5 * peak
    assert np.abs(partial.weight - driz.out_wht).max() < 1e-4 * driz.out_wht.max()


def test_units_electrons_and_rate_agree():
    n = 120
    rate = (gaussian(n, 60.2, 55.9) + 2.0).astype(np.float32)
    a = ir_chip(rate, bunit="ELECTRONS/S")
    b = ir_chip(rate * np.float32(EXPTIME), bunit="ELECTRONS")
    frame = frame_at(a.wcs, n)
    pa = drizzle_exposure([a], frame, SQUARE)
    pb = drizzle_exposure([b], frame, SQUARE)
    assert input_units("ELECTRONS") == "counts" and input_units("electrons/s") == "cps"
    assert input_units("") == "cps" and input_units("COUNTS") == "counts"
    assert pa.chips[0]["in_units"] == "cps" and pb.chips[0]["in_units"] == "counts"
    assert np.array_equal(pa.weight, pb.weight)
    assert np.allclose(pa.sci(), pb.sci(), rtol=1e-6, equal_nan=True)


def test_flux_is_sci_times_weight(star_case):
    _, _, partial = star_case
    covered = partial.weight > 0
    assert not np.any(partial.flux[~covered])
    assert partial.flux.dtype == np.float32 and partial.weight.dtype == np.float32
    assert partial.nchips.dtype == np.uint8
    assert set(np.unique(partial.nchips)) == {0, 1}
    assert np.array_equal(partial.nchips > 0, covered)


# --------------------------------------------------------------------------------------
# masks in the drizzle


def _sky_image(n=100, seed=7):
    return np.random.default_rng(seed).normal(5.0, 0.2, (n, n)).astype(np.float32)


def _weight_lost(base: Partial, masked: Partial) -> float:
    assert (base.box_x0, base.box_y0, base.shape) == (masked.box_x0, masked.box_y0,
                                                     masked.shape)
    return float((base.weight.astype(np.float64) - masked.weight).sum())


def test_dq_flagged_pixel_gets_zero_weight():
    n = 100
    data = _sky_image(n)
    data[50, 40] = 1e6  # a hot pixel, flagged 16
    dq = np.zeros((n, n), np.int16)
    dq[50, 40] = 16
    chip = ir_chip(data, dq=dq)
    frame = frame_at(chip.wcs, n)
    params = dict(SQUARE, final_bits=0)
    masked = drizzle_exposure([chip], frame, params)
    base = drizzle_exposure([chip], frame, dict(SQUARE, final_bits=16))
    assert np.nanmax(masked.sci()) < 10.0 < np.nanmax(base.sci())
    # exactly the masked pixel's weight is missing (drizzle spreads an input pixel's
    # weight over its footprint with fractions summing to 1)
    assert _weight_lost(base, masked) == pytest.approx(EXPTIME, rel=1e-5)
    assert masked.chips[0]["ngood"] == n * n - 1
    # resetbits clears the flag before masking (SBC)
    reset = drizzle_exposure([chip], frame, dict(params, resetbits=16))
    assert reset.chips[0]["ngood"] == n * n


def test_static_mask_in_drizzle():
    n = 100
    data = _sky_image(n)
    data[30, 70] = -50.0  # far below mode - 4 sigma
    chip = ir_chip(data)
    frame = frame_at(chip.wcs, n)
    on = drizzle_exposure([chip], frame, dict(SQUARE, static_mask=True))
    off = drizzle_exposure([chip], frame, SQUARE)
    assert on.chips[0]["nstatic"] >= 1 and off.chips[0]["nstatic"] == 0
    flagged = int((~static_mask(data)).sum())
    assert on.chips[0]["nstatic"] == flagged and not static_mask(data)[30, 70]
    assert _weight_lost(off, on) == pytest.approx(EXPTIME * flagged, rel=1e-5)
    # a supplied (run-wide) static mask replaces the chip's own
    keep = np.ones((n, n), bool)
    keep[10, 10] = False
    given = drizzle_exposure([chip], frame, dict(SQUARE, static_mask=True),
                             static_masks=[keep])
    assert _weight_lost(off, given) == pytest.approx(EXPTIME, rel=1e-5)


def test_cr_mask_and_sky():
    n = 100
    data = _sky_image(n)
    chip = ir_chip(data)
    frame = frame_at(chip.wcs, n)
    cr = np.zeros((n, n), bool)
    cr[20:22, 60:63] = True
    base = drizzle_exposure([chip], frame, SQUARE)
    masked = drizzle_exposure([chip], frame, SQUARE, cr_masks=[cr])
    assert _weight_lost(base, masked) == pytest.approx(EXPTIME * cr.sum(), rel=1e-5)
    # a sky value is subtracted in input units before drizzling
    sky = drizzle_exposure([chip], frame, SQUARE, sky=0.5)
    r2 = (frame.scale / nominal_scale(chip)) ** 2
    good = base.weight > 0
    assert np.allclose(base.sci()[good] - sky.sci()[good], 0.5 * r2, rtol=1e-4)
    assert sky.chips[0]["sky"] == 0.5


# --------------------------------------------------------------------------------------
# boxes, offsets, placement


def test_box_is_minimal_and_complete(star_case):
    chip, frame, partial = star_case
    ys, xs = np.nonzero(partial.weight > 0)
    ny, nx = partial.shape
    # every drizzled pixel is inside and the box is at most 2 px wider per side
    assert 0 <= xs.min() <= 2 and nx - 3 <= xs.max() <= nx - 1
    assert 0 <= ys.min() <= 2 and ny - 3 <= ys.max() <= ny - 1
    # drizzling onto a much larger window gives no weight outside the box
    big = frame.window(partial.box_x0 - 50, partial.box_y0 - 50, nx + 100, ny + 100)
    wide = drizzle_exposure([chip], big, SQUARE)
    assert (wide.box_x0, wide.box_y0) == (50, 50) and wide.shape == partial.shape
    assert (wide.x0, wide.y0) == (partial.x0, partial.y0)
    assert np.allclose(wide.weight, partial.weight, rtol=1e-6, atol=1e-3)


def test_absolute_offsets_in_neighbouring_sky_cells():
    pc = ProjectionCell(1000)
    sx, sy = 10, 12
    # a sky position in the 512 px overlap of sky cells (10, 12) and (11, 12)
    plane_x, plane_y = sx * 21442 + 256.0, (sy - 1) * 21442 + 10000.0
    ra, dec = pc.wcs.pixel_to_world_values(plane_x, plane_y)
    n = 100
    data = gaussian(n, 48.6, 51.2).astype(np.float32)
    chip = ir_chip(data, crval=(float(ra), float(dec)))
    a = drizzle_exposure([chip], SkyCell(pc, sx, sy).frame, SQUARE)
    b = drizzle_exposure([chip], SkyCell(pc, sx + 1, sy).frame, SQUARE)
    assert a.absolute and b.absolute
    assert (a.x0, a.y0) == (b.x0, b.y0) and a.shape == b.shape
    assert a.box_x0 - b.box_x0 == 21442
    assert np.allclose(a.flux, b.flux, rtol=1e-5, atol=1e-6 * a.flux.max())
    # the star's sky position lands on the same plane pixel in both
    sra, sdec = chip.wcs.all_pix2world([[48.6, 51.2]], 0)[0]
    px, py = pc.wcs.world_to_pixel_values(sra, sdec)
    for p in (a, b):
        cx, cy = centroid(p.sci(), px - p.x0, py - p.y0, r=15)
        assert abs(cx + p.x0 - px) < 0.02 and abs(cy + p.y0 - py) < 0.02


@pytest.mark.parametrize("kernel,pixfrac", [("square", 1.0), ("square", 0.7), ("turbo", 1.0)])
def test_a_frame_that_cuts_a_chip_gets_its_pixels_to_the_bit(kernel, pixfrac):
    """Onto a frame that holds part of a chip, only the chip pixels that can reach it are
    drizzled (drizzle's input window), and the frame's pixels are those of a frame holding
    the whole chip, to the bit."""
    from mvmflow.resample import Box, _input_window

    n = 300
    data = _sky_image(n)
    data[100:110, 140:150] += 400.0
    chip = ir_chip(data)
    params = dict(SQUARE, kernel=kernel, pixfrac=pixfrac)
    cell = frame_at(chip.wcs, n)
    whole = drizzle_exposure([chip], cell, params)
    # windows of the sky cell that cut the chip: a corner, a strip, a sliver
    for dx, dy, fx, fy in ((0.5, 0.5, 1.0, 1.0), (0.0, 0.3, 1.0, 0.2), (0.9, 0.0, 1.0, 1.0)):
        x0 = whole.box_x0 + int(dx * whole.shape[1])
        y0 = whole.box_y0 + int(dy * whole.shape[0])
        frame = cell.window(x0, y0, max(1, int(fx * whole.shape[1] * (1 - dx))),
                            max(1, int(fy * whole.shape[0])))
        part = drizzle_exposure([chip], frame, params)
        assert 0 < part.flux.size < whole.flux.size
        ys = slice(part.box_y0 + y0 - whole.box_y0, part.box_y0 + y0 - whole.box_y0 + part.shape[0])
        xs = slice(part.box_x0 + x0 - whole.box_x0, part.box_x0 + x0 - whole.box_x0 + part.shape[1])
        for name in ("flux", "weight", "nchips"):
            assert np.array_equal(getattr(part, name), getattr(whole, name)[ys, xs]), name
    # the window: the chip pixels near the wanted box, not the whole chip
    pm = pixmap(chip.wcs, cell, (n, n))
    box = Box(int(pm[150, 150, 0]) - 20, int(pm[150, 150, 1]) - 15, 40, 30)
    w = _input_window(pm, box, 4.0)
    assert 0 < (w["xmax"] - w["xmin"] + 1) * (w["ymax"] - w["ymin"] + 1) < n * n / 4
    inside = ((pm[..., 0] > box.x0 - 4) & (pm[..., 0] < box.x0 + box.nx + 4)
              & (pm[..., 1] > box.y0 - 4) & (pm[..., 1] < box.y0 + box.ny + 4))
    rows, cols = np.nonzero(inside)
    assert w["ymin"] <= rows.min() and rows.max() <= w["ymax"]
    assert w["xmin"] <= cols.min() and cols.max() <= w["xmax"]
    lo = np.floor(np.nanmin(pm, axis=(0, 1))).astype(int) - 10
    hi = np.ceil(np.nanmax(pm, axis=(0, 1))).astype(int) + 10
    assert _input_window(pm, Box(lo[0], lo[1], *(hi - lo)), 4.0) == {}  # all of it


def test_partials_reduce_to_the_weighted_mean_on_a_layer(tmp_path):
    """The reduce (mvmflow.combine.combine_partials) of two drizzled exposures: placed by
    frame and box, the same sums in either order, from files, clipped to a smaller frame."""
    n = 100
    c1 = ir_chip(_sky_image(n, 1), filename="ib4606cpq_flt.fits")
    c2 = ir_chip(_sky_image(n, 2), filename="ib4606cqq_flt.fits", crpix_shift=(30.0, 20.0))
    sky_frame = frame_at(c1.wcs, n)
    p1 = drizzle_exposure([c1], sky_frame, SQUARE)
    p2 = drizzle_exposure([c2], sky_frame, SQUARE)
    # a layer frame: a window of the sky cell around both boxes
    x0 = min(p1.box_x0, p2.box_x0) - 7
    y0 = min(p1.box_y0, p2.box_y0) - 5
    x1 = max(p1.box_x0 + p1.shape[1], p2.box_x0 + p2.shape[1]) + 3
    y1 = max(p1.box_y0 + p1.shape[0], p2.box_y0 + p2.shape[0]) + 4
    layer = sky_frame.window(x0, y0, x1 - x0, y1 - y0)
    s12 = combine_partials([p1, p2], layer)
    s21 = combine_partials([p2, p1], layer)
    np.testing.assert_array_equal(s12.sci, s21.sci)
    assert np.array_equal(s12.wht, s21.wht) and np.array_equal(s12.nchips, s21.nchips)
    manual_w, manual_f = np.zeros(layer.shape), np.zeros(layer.shape)
    for p in (p1, p2):
        ny, nx = p.shape
        box = (slice(p.box_y0 - y0, p.box_y0 - y0 + ny), slice(p.box_x0 - x0, p.box_x0 - x0 + nx))
        manual_w[box] += p.weight
        manual_f[box] += p.flux
    assert np.array_equal(s12.wht, manual_w.astype(np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        manual_sci = np.where(manual_w > 0, manual_f / manual_w, np.nan).astype(np.float32)
    np.testing.assert_array_equal(s12.sci, manual_sci)
    assert s12.nexp.max() == 2 and s12.nchips.max() == 2
    # from files (written in the other order), and clipped to a smaller frame
    paths = [write_partial(p, tmp_path / f"{p.ipppssoo}_partial.fits") for p in (p2, p1)]
    from_files = combine_partials([PartialFile.open(q).read() for q in reversed(paths)], layer)
    np.testing.assert_array_equal(from_files.sci, s12.sci)
    assert np.array_equal(from_files.wht, s12.wht)
    small = layer.window(10, 10, 40, 30)
    clipped = combine_partials([p1, p2], small)
    assert np.array_equal(clipped.wht, s12.wht[10:40, 10:50])
    np.testing.assert_array_equal(clipped.sci, s12.sci[10:40, 10:50])
    # the reduce's SCI is the weighted mean of the exposures' own drizzled images
    both = s12.nexp == 2
    assert both.sum() > 1000
    one1, one2 = combine_partials([p1], layer), combine_partials([p2], layer)
    summed = (np.nan_to_num(one1.sci) * one1.wht.astype(np.float64)
              + np.nan_to_num(one2.sci) * one2.wht.astype(np.float64))
    assert np.allclose(s12.sci[both], summed[both] / s12.wht[both], rtol=1e-6)
    with pytest.raises(ValueError):
        combine_partials([p1], SkyCell(ProjectionCell(5), 3, 3).frame)


def test_multi_chip_exposure_counts_chips():
    n = 100
    # two chips overlapping by a few columns on the sky, as a test of nchips
    c1 = ir_chip(_sky_image(n, 1), extver=1)
    c2 = ir_chip(_sky_image(n, 2), extver=2, crpix_shift=(96.0, 0.0))
    frame = frame_at(c1.wcs, n)
    both = drizzle_exposure([c1, c2], frame, SQUARE)
    one = drizzle_exposure([c1], frame, SQUARE)
    two = drizzle_exposure([c2], frame, SQUARE)
    assert both.nchips.max() == 2 and len(both.chips) == 2
    layer = both.window
    two.filename = "ib4606cpq_flt.fits[SCI,2]"  # the reduce needs one name per partial
    stacked = combine_partials([one, two], layer)
    assert np.allclose(stacked.wht, both.weight, rtol=1e-6)
    flux = np.nan_to_num(stacked.sci) * stacked.wht.astype(np.float64)
    assert np.allclose(flux, both.flux, rtol=1e-6, atol=1e-6 * both.flux.max())
    assert np.array_equal(stacked.nchips, both.nchips)


def test_coarse_frame_offsets_are_relative():
    n = 100
    chip = ir_chip(_sky_image(n))
    ra, dec = chip.wcs.all_pix2world([[50, 50]], 0)[0]
    found = [SkyCell.from_name(s, "coarse") for s in sky_cells_at(ra, dec)]
    coarse = next(sc.frame for sc in found if (sc.x - 1) % 3 != 0)
    partial = drizzle_exposure([chip], coarse, SQUARE)
    assert not partial.absolute
    assert (partial.x0, partial.y0) == (partial.box_x0, partial.box_y0)
    stack = combine_partials([partial],
                             coarse.window(partial.box_x0 - 2, partial.box_y0 - 2, 400, 400))
    assert stack.wht.astype(np.float64).sum() == pytest.approx(
        partial.weight.astype(np.float64).sum())
    ny, nx = partial.shape
    assert np.array_equal(stack.wht[2:2 + ny, 2:2 + nx], partial.weight)
    # weight per coarse pixel: EXPTIME x (0.12 / 0.1283)^2 pixel-area ratio, roughly
    assert 0.7 * EXPTIME < np.median(partial.weight[partial.weight > 0]) < 1.1 * EXPTIME


def test_chip_outside_frame_gives_empty_partial(tmp_path):
    chip = ir_chip(_sky_image(50))
    far = SkyCell(ProjectionCell(5), 3, 3).frame
    assert chip_box(chip.wcs, far, chip.shape) is None
    partial = drizzle_exposure([chip], far, SQUARE)
    assert partial.empty and partial.shape == (0, 0)
    back = PartialFile.open(write_partial(partial, tmp_path / "empty_partial.fits")).read()
    assert back.empty and back.filename == chip.filename
    arrays = combine_partials([back], far.window(0, 0, 10, 10))
    assert arrays.wht.sum() == 0 and arrays.used == (False,)


# --------------------------------------------------------------------------------------
# files and reruns


def test_write_read_roundtrip(tmp_path, star_case):
    _, frame, partial = star_case
    path = write_partial(partial, tmp_path / "ib4606cp_partial.fits")
    back = PartialFile.open(path).read()
    for name in ("flux", "weight", "nchips"):
        assert np.array_equal(getattr(back, name), getattr(partial, name))
        assert getattr(back, name).dtype == getattr(partial, name).dtype
    assert back.frame == frame
    assert (back.x0, back.y0, back.box_x0, back.box_y0) == (partial.x0, partial.y0,
                                                            partial.box_x0, partial.box_y0)
    assert back.filename == "ib4606cpq_flt.fits" and back.ipppssoo == "ib4606cp"
    assert back.exptime == EXPTIME and back.params == SQUARE
    assert back.chips[0]["ngood"] == partial.chips[0]["ngood"]
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SPANS", "CHUNKS", "FLUX", "WEIGHT",
                                          "NCHIPS"]
        assert hdul[0].header["PLANEX0"] == partial.x0
        assert hdul[0].header["KERNEL"] == "square" and hdul[0].header["PIXSTEP"] == 10


def test_reruns_are_bit_identical(tmp_path):
    n = 120
    data = (gaussian(n, 60.2, 55.9) + _sky_image(n)).astype(np.float32)
    chip = ir_chip(data)
    frame = frame_at(chip.wcs, n)
    params = dict(SQUARE, static_mask=True, final_bits=80)
    a = drizzle_exposure([chip], frame, params)
    b = drizzle_exposure([chip], frame, params)
    assert a.flux.tobytes() == b.flux.tobytes() and a.weight.tobytes() == b.weight.tobytes()
    pa = write_partial(a, tmp_path / "a_partial.fits")
    pb = write_partial(b, tmp_path / "b_partial.fits")
    assert pa.read_bytes() == pb.read_bytes()
    assert not list(tmp_path.glob(".*part"))  # atomic write left no temporary file


def test_drizzle_file_reads_a_flt(tmp_path):
    n = 80
    primary, sci = ir_headers(n)
    data = (_sky_image(n) + gaussian(n, 40.0, 41.0)).astype(np.float32)
    dq = np.zeros((n, n), np.int16)
    dq[5, 5] = 512
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary),
                         fits.ImageHDU(data, sci, name="SCI"),
                         fits.ImageHDU(dq, name="DQ")])
    hdul[2].header["EXTVER"] = 1
    path = tmp_path / "ib4606cpq_flt.fits"
    hdul.writeto(path)
    chips = load_chips(path)
    assert len(chips) == 1 and chips[0].bunit == "ELECTRONS/S"
    assert chips[0].exptime == pytest.approx(EXPTIME) and chips[0].idcscale == sci["IDCSCALE"]
    frame = frame_at(chips[0].wcs, n)
    from_file = drizzle_file(path, frame, dict(SQUARE, final_bits=16))
    in_memory = drizzle_exposure([ir_chip(data, dq=dq)], frame, dict(SQUARE, final_bits=16))
    assert from_file.chips[0]["ngood"] == n * n - 1
    assert np.array_equal(from_file.flux, in_memory.flux)


def test_bad_parameters_are_rejected(star_case):
    chip, frame, _ = star_case
    for bad in ({"kernel": "lanczos3"}, {"wht_type": "ERR"}, {"pixfrac": 0.0},
                {"final_bits": "3"}):
        with pytest.raises(ValueError):
            drizzle_exposure([chip], frame, dict(SQUARE, **bad))
    other = ir_chip(chip.data, filename="ib4606cqq_flt.fits")
    with pytest.raises(ValueError, match="share"):
        drizzle_exposure([chip, other], frame, SQUARE)
    with pytest.raises(ValueError, match="one per chip"):
        drizzle_exposure([chip], frame, SQUARE, sky=[0.0, 1.0])


# --------------------------------------------------------------------------------------
# the reference


@pytest.mark.reference
def test_against_drizzlepac_cdriz(star_case):
    """drizzlepac's own final-drizzle kernel call (adrizzle.do_driz: cdriz 0.8 with the
    WCSLIB mapping on a stepsize=10 grid, as run_driz_chip calls it for MVM) on the same
    chip and output box."""
    pytest.importorskip("drizzlepac")
    from drizzlepac import adrizzle
    from stwcs.wcsutil import HSTWCS

    chip, frame, partial = star_case
    primary, sci = ir_headers(chip.shape[0])
    data = (chip.data + np.float32(2.0)).astype(np.float32)  # a flat sky under the star
    mine = drizzle_exposure([Chip(data, chip.wcs, EXPTIME, chip.bunit, None, 1,
                                  chip.idcscale, chip.filename)], frame, SQUARE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        in_wcs = HSTWCS(fits.HDUList([fits.PrimaryHDU(header=primary),
                                      fits.ImageHDU(data, sci, name="SCI")]), ext=1)
        out_wcs = HSTWCS(fits.HDUList([fits.PrimaryHDU(header=mine.window.header())]), ext=0)
    shape = mine.shape
    outsci = np.zeros(shape, np.float32)
    outwht = np.zeros(shape, np.float32)
    outctx = np.zeros(shape, np.int32)
    adrizzle.do_driz(data, in_wcs, np.full(data.shape, EXPTIME, np.float32), out_wcs, outsci,
                     outwht, outctx, EXPTIME, "cps", 1.0, wcslin_pscale=sci["IDCSCALE"],
                     uniqid=1, pixfrac=1.0, kernel="square", fillval="INDEF", stepsize=10)
    sci_mine = mine.sci()
    both = (outwht > 0) & (mine.weight > 0)
    # total count rate (where both have data) to 1e-4
    total_ref = float(outsci[both].astype(np.float64).sum())
    assert float(sci_mine[both].astype(np.float64).sum()) == pytest.approx(total_ref, rel=1e-4)
    # fully covered pixels: weights and the flat sky to float precision
    full = both & (mine.weight > 0.999 * np.median(mine.weight[both]))
    full &= np.abs(sci_mine - 2.0 * (frame.scale / sci["IDCSCALE"]) ** 2) < 1e-4
    assert full.sum() > 10000
    assert np.allclose(outsci[full], sci_mine[full], rtol=1e-5)
    assert np.allclose(outwht[full], mine.weight[full], rtol=1e-3)
    # per pixel on the star, the mappings differ slightly (bilinear on 10 px vs exact)
    peak = float(np.nanmax(sci_mine))
    assert np.abs(outsci[both] - sci_mine[both]).max() < 3e-3 * peak
    ra, dec = chip.wcs.all_pix2world([[90.3, 110.7]], 0)[0]
    fx, fy = mine.window.wcs.world_to_pixel_values(ra, dec)
    sky = 2.0 * (frame.scale / sci["IDCSCALE"]) ** 2
    c_ref = centroid(np.where(both, outsci - sky, 0), fx, fy, 40)
    c_mine = centroid(np.where(both, sci_mine - sky, 0), fx, fy, 40)
    assert np.hypot(c_ref[0] - c_mine[0], c_ref[1] - c_mine[1]) < 0.005
