"""The final drizzle by subtraction (mvmflow.crsubtract): the packed drizzle of chosen pixels
is the chip's drizzle with only those pixels weighted, the pixel map at chosen pixels is
resample.pixmap's to the bit, and the separate partial minus the masked pixels is the full
re-drizzle without them within float32 rounding of the masked flux."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from scipy import ndimage

from mvmflow.crsubtract import KeptMap, drizzle_pixels, pixmap_at, subtract_masked
from mvmflow.grid import SkyCell, sky_cells_at
from mvmflow.resample import (
    Chip,
    _chip_inputs,
    _drizzle_chip,
    _settings,
    chip_box,
    drizzle_exposure,
    pixmap,
)

HDR = Path("/work/shared/reference_data/hst/headers")
IR = HDR / "wfc3_ir" / "ib4606cpq_flt_10x10.fits"
LOOKUP = HDR / "acs_wfc" / "acswfc_chip2_sci_npol_d2im_lookup.fits.gz"

pytestmark = pytest.mark.skipif(not HDR.is_dir(), reason="shared HST reference data not available")

PARAMS = {"kernel": "square", "pixfrac": 1.0, "final_bits": 64, "resetbits": 0,
          "static_mask": True, "static_sig": 4.0, "stepsize": 10, "wht_type": "EXP"}


def _wcs(header, hdul=None) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, fobj=hdul)


def acs_chip(ny=160, nx=220, x0=1900, y0=900, seed=1, extver=1) -> Chip:
    """A window of an ACS/WFC chip (SIP + NPOL + D2IM) with sky, stars, NaN and DQ pixels."""
    with fits.open(LOOKUP) as hdul:
        sci = hdul[1].header.copy()
        sci["CRPIX1"] -= x0
        sci["CRPIX2"] -= y0
        sci["NAXIS1"], sci["NAXIS2"] = nx, ny
        wcs = _wcs(sci, hdul)  # (the lookup tables stay those of the chip's corner)
    wcs.pixel_shape = (nx, ny)
    rng = np.random.default_rng(seed)
    data = rng.normal(40.0, 6.0, (ny, nx)).astype(np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for _ in range(6):
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        data += (3000.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 3.0)).astype(np.float32)
    data[rng.integers(0, ny, 5), rng.integers(0, nx, 5)] = np.nan
    data[rng.integers(0, ny, 5), rng.integers(0, nx, 5)] = -500.0  # static-masked
    dq = np.zeros((ny, nx), np.int16)
    dq[rng.integers(0, ny, 20), rng.integers(0, nx, 20)] = 4  # bad
    dq[rng.integers(0, ny, 20), rng.integers(0, nx, 20)] = 64  # counted as good
    return Chip(data, wcs, 500.0, "ELECTRONS", dq, extver, 0.05, "jabc01abq_flc.fits")


def ir_chip(n=80, extver=1, crpix_shift=0.0, seed=2) -> Chip:
    with fits.open(IR) as hdul:
        sci = hdul["SCI", 1].header.copy()
    shift = 507 - n // 2
    sci["NAXIS1"] = sci["NAXIS2"] = n
    sci["CRPIX1"] -= shift - crpix_shift
    sci["CRPIX2"] -= shift
    wcs = _wcs(sci)
    wcs.pixel_shape = (n, n)
    data = np.random.default_rng(seed).normal(3.0, 0.3, (n, n)).astype(np.float32)
    return Chip(data, wcs, 400.0, "ELECTRONS/S", None, extver, float(sci["IDCSCALE"]),
                "ib4606cpq_flt.fits")


def frame_for(chips):
    ra, dec = chips[0].wcs.all_pix2world([[10, 10]], 0)[0]
    cell = SkyCell.from_name(sky_cells_at(ra, dec)[0]).frame
    boxes = [chip_box(c.wcs, cell, c.shape) for c in chips]
    x0, y0 = min(b.x0 for b in boxes) - 3, min(b.y0 for b in boxes) - 3
    x1, y1 = max(b.x0 + b.nx for b in boxes) + 3, max(b.y0 + b.ny for b in boxes) + 3
    return cell.window(x0, y0, x1 - x0, y1 - y0)


def cosmic_rays(chip, seed=3, n=60, block=True) -> np.ndarray:
    """A mask of single pixels, short tracks, edge pixels and (``block``) a 12 x 12 patch."""
    ny, nx = chip.shape
    rng = np.random.default_rng(seed)
    mask = np.zeros((ny, nx), bool)
    y, x = rng.integers(0, ny, n), rng.integers(0, nx, n)
    mask[y, x] = True
    mask[y, np.minimum(x + 1, nx - 1)] = True
    mask[0, rng.integers(0, nx, 5)] = mask[-1, rng.integers(0, nx, 5)] = True
    mask[rng.integers(0, ny, 5), 0] = mask[rng.integers(0, ny, 5), -1] = True
    mask[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    if block:
        mask[40:52, 60:72] = True
    return mask


def scatter(shape, iy, ix, values) -> np.ndarray:
    out = np.zeros(shape)
    np.add.at(out, (iy, ix), values)
    return out


# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["acs", "ir"])
def test_pixmap_at_is_pixmap_to_the_bit(which):
    chip = acs_chip() if which == "acs" else ir_chip()
    if which == "acs":
        assert chip.wcs.det2im1 is not None and chip.wcs.cpdis1 is not None
    frame = frame_for([chip])
    box = chip_box(chip.wcs, frame, chip.shape, clip=False)
    full = pixmap(chip.wcs, frame, chip.shape, step=10, box=box)
    rng = np.random.default_rng(0)
    ny, nx = chip.shape
    rows = np.concatenate([rng.integers(0, ny, 500), [0, ny - 1, 0, ny - 1]])
    cols = np.concatenate([rng.integers(0, nx, 500), [0, 0, nx - 1, nx - 1]])
    assert np.array_equal(pixmap_at(chip.wcs, frame, chip.shape, rows, cols, 10, box),
                          full[rows, cols])


@pytest.mark.parametrize("kernel,pixfrac", [("square", 1.0), ("square", 0.7), ("turbo", 1.0),
                                            ("point", 1.0)])
def test_packed_drizzle_is_the_chip_drizzle_of_those_pixels(kernel, pixfrac):
    """drizzle_pixels of a set of pixels (edges and corners included) equals drizzling the
    whole chip with only those pixels weighted: the same output pixels, and the same values
    to float32 rounding of drizzle's running sums (to the bit where one pixel contributes)."""
    chip = acs_chip()
    frame = frame_for([chip])
    params = {**PARAMS, "kernel": kernel, "pixfrac": pixfrac}
    s = _settings(params)
    data, weight, *_ = _chip_inputs(chip, s, 0.0, None, None)
    chosen = cosmic_rays(chip) & (weight > 0)
    rows, cols = np.nonzero(chosen)
    full = chip_box(chip.wcs, frame, chip.shape, s.pixfrac, clip=False)
    pm = pixmap(chip.wcs, frame, chip.shape, box=full)
    d = np.arange(-1, 2)
    r = np.clip(rows[:, None] + d, 0, chip.shape[0] - 1)[:, :, None]
    c = np.clip(cols[:, None] + d, 0, chip.shape[1] - 1)[:, None, :]
    nb = pm[r, c]
    # past the chip's edges drizzle extrapolates the map linearly
    for edge, a, b, e in ((rows == 0, 0, 1, 2), (rows == chip.shape[0] - 1, 2, 1, 0)):
        nb[edge, a] = 2 * nb[edge, b] - nb[edge, e]
    for edge, a, b, e in ((cols == 0, 0, 1, 2), (cols == chip.shape[1] - 1, 2, 1, 0)):
        nb[edge, :, a] = 2 * nb[edge, :, b] - nb[edge, :, e]
    iy, ix, flux, wht = drizzle_pixels(chip, data, weight, rows, cols, nb, (full.ny, full.nx),
                                       params, frame.scale)
    shape = (full.ny, full.nx)
    w_p, f_p = scatter(shape, iy, ix, wht), scatter(shape, iy, ix, flux)
    n_p = scatter(shape, iy, ix, np.ones(iy.size))
    sci, w_full, _ = _drizzle_chip(chip, frame, full, s,
                                   (data, np.where(chosen, weight, 0).astype(np.float32)))
    covered = w_full > 0
    assert covered.sum() > 100 and np.array_equal(covered, w_p > 0)
    f_full = sci[covered].astype(np.float64) * w_full[covered]
    assert np.allclose(w_p[covered], w_full[covered], rtol=1e-6, atol=0)
    assert np.allclose(f_p[covered], f_full, rtol=1e-6, atol=1e-6 * np.abs(f_full).max())
    one = n_p[covered] == 1
    assert one.sum() > 50
    assert np.array_equal(w_p[covered][one].astype(np.float32), w_full[covered][one])


def _compare(new, old, separate, tol=1e-5):
    """Differences of a subtracted partial from the full re-drizzle (module notes)."""
    assert (new.box_x0, new.box_y0, new.shape) == (old.box_x0, old.box_y0, old.shape)
    assert new.chips == old.chips
    w_sep = separate.weight.astype(np.float64)
    wn, wo = new.weight.astype(np.float64), old.weight.astype(np.float64)
    # coverage: the same, but for slivers below the tolerance of the separate weight
    dropped = (wo > 0) & (wn == 0)
    # weight: float32 rounding of the separate sums (a few 1e-7 of them)
    assert np.all(np.abs(wn - wo)[~dropped] <= 1e-6 * w_sep[~dropped])
    assert np.all(wo[dropped] <= (tol + 1e-6) * w_sep[dropped])
    assert not np.any((wn > 0) & (wo == 0))
    assert np.array_equal(new.nchips, np.where(dropped, 0, old.nchips))
    assert np.all(new.flux[wn == 0] == 0) and np.all(new.weight[wn == 0] == 0)
    # flux: float32 rounding of the separate flux (the masked, bright, pixels included)
    f_sep = np.abs(separate.flux.astype(np.float64))
    fn, fo = new.flux.astype(np.float64), old.flux.astype(np.float64)
    assert np.all(np.abs(fn - fo) <= 1e-6 * f_sep + 1e-6 * wn * np.abs(fo / np.where(
        wo > 0, wo, 1)) + 1e-30)
    # untouched pixels are the separate partial's, equal to the re-drizzle's to the bit
    touched = (new.weight != separate.weight) | (new.flux != separate.flux)
    assert np.array_equal(new.weight[~touched], old.weight[~touched])
    return int(touched.sum()), int(dropped.sum())


def test_subtraction_equals_the_full_redrizzle():
    """Two chips (ACS/WFC windows, static mask, DQ, NaN): subtracting the masked pixels'
    drizzle from the separate partial gives the full re-drizzle without them within the
    stated tolerances; pixels all of whose contributions are masked end with weight 0,
    flux 0 and nchips 0, exactly as the re-drizzle."""
    chips = [acs_chip(seed=1, extver=1), acs_chip(x0=2100, y0=960, seed=4, extver=2)]
    frame = frame_for(chips)
    masks = [cosmic_rays(chips[0], 3), cosmic_rays(chips[1], 5, block=False)]
    for chip, mask in zip(chips, masks, strict=True):  # and on pixels the drizzle drops
        mask |= ~np.isfinite(chip.data) | (chip.dq == 4) | (chip.data < -100)
    separate = drizzle_exposure(chips, frame, PARAMS)
    assert separate.nchips.max() == 2  # the windows overlap on the sky: a seam
    old = drizzle_exposure(chips, frame, PARAMS, cr_masks=masks)
    new = subtract_masked(separate, chips, frame, PARAMS, masks)
    # a cosmic ray on the seam: the chips' own weights are unknown there
    assert new is None
    # masks off the seam: away from where the other chip has weight
    seam = []
    for k, chip in enumerate(chips):
        other = drizzle_exposure([chips[1 - k]], frame, PARAMS)
        near = np.zeros((frame.ny + 10, frame.nx + 10), bool)
        near[other.box_y0:other.box_y0 + other.shape[0],
             other.box_x0:other.box_x0 + other.shape[1]] = other.weight > 0
        near = ndimage.binary_dilation(near, iterations=3)
        pm = np.rint(pixmap(chip.wcs, frame, chip.shape)).astype(int)
        seam.append(near[pm[..., 1].clip(0, frame.ny), pm[..., 0].clip(0, frame.nx)])
    masks = [m & ~s for m, s in zip(masks, seam, strict=True)]
    old = drizzle_exposure(chips, frame, PARAMS, cr_masks=masks)
    new = subtract_masked(separate, chips, frame, PARAMS, masks)
    assert new is not None
    touched, _ = _compare(new, old, separate)
    assert touched > 1000
    emptied = (old.weight == 0) & (separate.weight > 0)
    assert emptied.sum() > 50  # the 12 x 12 patch's inside
    assert np.all(new.weight[emptied] == 0) and np.all(new.flux[emptied] == 0)
    assert np.all(new.nchips[emptied] == 0)
    # the separate partial is not modified (copy=True)
    assert np.array_equal(separate.weight, drizzle_exposure(chips, frame, PARAMS).weight)


def test_subtraction_with_kept_maps_and_the_pixmap_at_path_agree():
    chip = acs_chip(seed=7)
    frame = frame_for([chip])
    mask = cosmic_rays(chip, 9)
    separate = drizzle_exposure([chip], frame, PARAMS)
    # a map kept on another frame of the grid (as the blot's, on the median's frame)
    other = frame.window(-17, 11, frame.nx + 40, frame.ny + 20)
    box = chip_box(chip.wcs, other, chip.shape, margin=7, clip=False)
    pm = pixmap(chip.wcs, other, chip.shape, box=box)
    region = np.zeros(chip.shape, bool)
    region[: chip.shape[0] // 2] = True  # half kept, half computed
    kept = KeptMap.keep(pm, other, box, region)
    assert kept is not None and kept.index.size == region.sum()
    a = subtract_masked(separate, [chip], frame, PARAMS, [mask], kept=[kept])
    b = subtract_masked(separate, [chip], frame, PARAMS, [mask])
    for name in ("flux", "weight", "nchips"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    old = drizzle_exposure([chip], frame, PARAMS, cr_masks=[mask])
    _compare(a, old, separate)
    # the kept values shifted onto the drizzle's box are its map to the bit
    full = chip_box(chip.wcs, frame, chip.shape, clip=False)
    rows, cols = np.nonzero(region)
    got = kept.at(frame, full, 10, lambda r, c: None)(rows, cols)
    assert np.array_equal(got, pixmap(chip.wcs, frame, chip.shape, box=full)[rows, cols])


def test_unusable_separate_partial_is_refused():
    chip = acs_chip(seed=8)
    frame = frame_for([chip])
    mask = cosmic_rays(chip, 10)
    separate = drizzle_exposure([chip], frame, PARAMS)
    assert subtract_masked(separate, [chip], frame, {**PARAMS, "pixfrac": 0.8}, [mask]) is None
    assert subtract_masked(separate, [chip], frame.window(1, 0, frame.nx, frame.ny),
                           PARAMS, [mask]) is None
    no_static = drizzle_exposure([chip], frame, {**PARAMS, "static_mask": False})
    assert subtract_masked(no_static, [chip], frame, PARAMS, [mask]) is None
    with_sky = drizzle_exposure([chip], frame, PARAMS, sky=10.0)
    assert subtract_masked(with_sky, [chip], frame, PARAMS, [mask]) is None
    # no mask: the separate partial itself
    same = subtract_masked(separate, [chip], frame, PARAMS, [None])
    assert np.array_equal(same.flux, separate.flux) and np.array_equal(same.weight,
                                                                       separate.weight)


def test_subtraction_reuses_the_separate_drizzles_static_cut():
    """The separate partial records each chip's static-mask cut; the subtraction uses it
    instead of computing the chip's statistics again, with the same result."""
    chip = acs_chip(seed=5)
    frame = frame_for([chip])
    mask = cosmic_rays(chip, 9)
    separate = drizzle_exposure([chip], frame, PARAMS)
    cut = separate.chips[0]["static_cut"]
    assert np.isfinite(cut)
    forgot = dataclasses.replace(separate, chips=[{k: v for k, v in c.items()
                                                   if k != "static_cut"}
                                                  for c in separate.chips])
    a = subtract_masked(separate, [chip], frame, PARAMS, [mask])
    b = subtract_masked(forgot, [chip], frame, PARAMS, [mask])
    for name in ("flux", "weight", "nchips"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.chips[0]["static_cut"] == cut and a.chips[0]["ngood"] == b.chips[0]["ngood"]
    # a recorded cut is what decides: one above every cosmic-ray pixel masks them all
    above = dataclasses.replace(separate, chips=[dict(separate.chips[0],
                                                      static_cut=float(np.nanmax(chip.data)) + 1)])
    c = subtract_masked(above, [chip], frame, PARAMS, [mask])
    assert c.chips[0]["ngood"] == separate.chips[0]["ngood"]  # nothing left to subtract
    assert a.chips[0]["ngood"] < separate.chips[0]["ngood"]
