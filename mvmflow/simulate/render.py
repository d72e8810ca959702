"""Render the pixels of one chip of one exposure: sources, sky, noise, defects, DQ and ERR.

Flux convention (see :mod:`mvmflow.simulate`): photons are collected per pixel in proportion
to the pixel's true area on the sky; the FLT/FLC value is the (dark-subtracted) charge divided
by the relative pixel area ``PAM`` (true area / ``IDCSCALE**2``), i.e. flat-fielded data, so a
uniform sky is flat in the FLT and ``sum(SCI * PAM)`` over a star is its collected charge.

Per pixel, with ``t`` the exposure time::

    signal   = sum_sources(rate * t * PSF) + sky * t * PAM       (expected photo-electrons)
    charge   = Poisson(signal) + Poisson(dark * t) + cosmic rays  (CCD: bleeds above full well)
    raw      = charge + Normal(0, read noise)                     (clipped at the A/D limit)
    SCI      = (raw - dark_ref * t) / PAM                         (e-;  e-/s for IR and SBC)
    ERR      = sqrt(max(raw, 0) + read noise**2) / PAM            (as calacs/calwf3 compute it)

``dark_ref`` is the reference dark: the true dark of normal pixels, and the true dark of hot
and warm pixels times a fixed per-pixel mismatch (hot pixels change between reference darks),
so hot pixels leave residuals.

WFC3/IR and ACS/SBC are count rates: the IR value is the up-the-ramp rate, so cosmic rays are
removed by the ramp fit and only flagged (DQ 8192); saturated IR pixels keep a valid rate from
their unsaturated reads (``TIME`` and ``SAMP`` shrink) and are flagged 256.

DQ bits: 4 bad column, 16 hot pixel, 64 warm pixel, 256 saturation, 512 IR "blob",
4096 cosmic ray (CCDs; unless cosmic rays are to be left unflagged), 8192 IR ramp cosmic ray.
Hot/warm pixels, bad columns and blobs are fixed per detector chip for a given seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy import signal

from mvmflow.simulate.detectors import Detector, detector
from mvmflow.simulate.distortion import pixel_area_map
from mvmflow.simulate.psf import PSF

__all__ = ["ChipImage", "ChipSetup", "DQ", "render_chip"]

SDQFLAGS = 31743


class DQ:
    """The DQ bits the simulator sets (HST ACS/WFC3 definitions)."""

    BAD_COLUMN = 4
    HOT = 16
    WARM = 64
    SATURATED = 256
    BLOB = 512
    COSMIC_RAY = 4096
    RAMP_CR = 8192


@dataclass(frozen=True)
class ChipSetup:
    """Everything needed to render one chip.

    ``region`` is ``(x0, y0, nx, ny)`` in full-chip pixels; ``wcs`` the true WCS in the pixel
    frame of the region; ``readnoise`` the read noise of the left and right chip halves (e-).
    ``cosmic_rays=False`` renders the same chip without its cosmic rays: they are still drawn
    (so every other random number, hence the noise, is identical) but not deposited.
    ``render`` is ``fft`` (one FFT convolution of the chip's deposits with the PSF) or
    ``sparse`` (one PSF stamp per source; see :func:`_signal`).
    """

    det: Detector
    ccdchip: int
    region: tuple[int, int, int, int]
    wcs: WCS
    exptime: float
    psf: PSF
    sky_rate: float
    readnoise: tuple[float, float]
    flag_crs: bool
    seed: int
    nsamp: int = 0
    cosmic_rays: bool = True
    render: str = "fft"


@dataclass
class ChipImage:
    """The arrays of one chip (``samp``/``time`` only for WFC3/IR) and header statistics."""

    sci: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    samp: np.ndarray | None
    time: np.ndarray | None
    stats: dict
    n_sources: int


# ---------------------------------------------------------------------------------------------
# fixed detector defects


@dataclass(frozen=True)
class _Defects:
    hot_index: np.ndarray  # flat full-chip indices
    hot_dark: np.ndarray  # e-/s
    hot_flag: np.ndarray  # DQ value (16 or 64)
    hot_mismatch: np.ndarray  # reference dark / true dark
    bad_columns: tuple  # (x, y_start, y_stop)
    blobs: tuple  # (x, y, radius)


@lru_cache(maxsize=16)
def _defects(key: str, ccdchip: int, seed: int) -> _Defects:
    det = detector(key)
    code = zlib.crc32(f"{det.key}:{ccdchip}".encode())
    rng = np.random.default_rng([seed, 7, code])
    nx, ny = det.shape
    npix = nx * ny
    n_hot = int(round(det.hot_fraction * npix))
    n_warm = int(round(det.warm_fraction * npix))
    index = rng.choice(npix, n_hot + n_warm, replace=False)
    lo, hi = np.log(det.hot_dark)
    dark_hot = np.exp(rng.uniform(lo, hi, n_hot))
    if n_warm:
        lo, hi = np.log(det.warm_dark)
        dark_warm = np.exp(rng.uniform(lo, hi, n_warm))
    else:
        dark_warm = np.zeros(0)
    flags = np.concatenate([np.full(n_hot, DQ.HOT), np.full(n_warm, DQ.WARM)])
    mismatch = np.clip(rng.normal(1.0, 0.15, n_hot + n_warm), 0.5, 1.5)
    order = np.argsort(index)
    cols = []
    for _ in range(det.bad_columns):
        x = int(rng.integers(0, nx))
        y1 = int(rng.integers(0, ny))
        cols.append((x, y1, ny if rng.random() < 0.5 else int(rng.integers(y1, ny + 1))))
    blobs = tuple((float(rng.uniform(20, nx - 20)), float(rng.uniform(20, ny - 20)),
                   float(rng.uniform(6, 14))) for _ in range(det.ir_blobs))
    return _Defects(hot_index=index[order],
                    hot_dark=np.concatenate([dark_hot, dark_warm])[order],
                    hot_flag=flags[order].astype(np.int16), hot_mismatch=mismatch[order],
                    bad_columns=tuple(cols), blobs=blobs)


def _defect_maps(setup: ChipSetup):
    """Extra dark (e-/s), reference-dark factor and DQ of the defects in the chip's region."""
    det = setup.det
    x0, y0, nx, ny = setup.region
    d = _defects(det.key, setup.ccdchip, setup.seed)
    fy, fx = np.divmod(d.hot_index, det.shape[0])
    inside = (fx >= x0) & (fx < x0 + nx) & (fy >= y0) & (fy < y0 + ny)
    extra = np.zeros((ny, nx))
    factor = np.ones((ny, nx))
    dq = np.zeros((ny, nx), dtype=np.int16)
    iy, ix = fy[inside] - y0, fx[inside] - x0
    extra[iy, ix] = d.hot_dark[inside]
    factor[iy, ix] = d.hot_mismatch[inside]
    dq[iy, ix] |= d.hot_flag[inside]
    for x, ya, yb in d.bad_columns:
        if x0 <= x < x0 + nx:
            a, b = max(ya, y0) - y0, min(yb, y0 + ny) - y0
            if b > a:
                dq[a:b, x - x0] |= DQ.BAD_COLUMN
    if d.blobs:
        yy, xx = np.mgrid[y0:y0 + ny, x0:x0 + nx]
        for bx, by, r in d.blobs:
            dq[(xx - bx) ** 2 + (yy - by) ** 2 <= r * r] |= DQ.BLOB
    return extra, factor, dq


# ---------------------------------------------------------------------------------------------
# sources


def _source_pixels(setup: ChipSetup, ra: np.ndarray, dec: np.ndarray, margin: float):
    """Pixel positions (region frame) of sources within ``margin`` px of the region."""
    nx, ny = setup.region[2], setup.region[3]
    # quick linear preselection (the distortion moves pixels by < 100 px)
    lx, ly = setup.wcs.wcs_world2pix(ra, dec, 0)
    pre = (lx > -margin - 150) & (lx < nx + margin + 150) & (ly > -margin - 150) & (
        ly < ny + margin + 150)
    idx = np.nonzero(pre)[0]
    if idx.size == 0:
        return idx, np.zeros(0), np.zeros(0)
    x, y = setup.wcs.all_world2pix(ra[idx], dec[idx], 0, tolerance=1e-7, maxiter=60,
                                   quiet=True)
    keep = (x > -margin) & (x < nx + margin) & (y > -margin) & (y < ny + margin)
    return idx[keep], x[keep], y[keep]


def _sersic_b(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def _galaxy_stamp(setup: ChipSetup, ra: float, dec: float, x: float, y: float, row,
                  ref: tuple[float, float], oversample: int = 5):
    """Pixel-integrated Sersic profile (unit sum) around deposit position ``(x, y)``.

    Returns ``(stamp, ix0, iy0)``: stamp pixel ``[j, i]`` is the deposit pixel whose "star
    position" is ``(ix0 + i + ref_x, iy0 + j + ref_y)`` in the region frame.
    """
    # local Jacobian: arcsec (east, north) per pixel
    eps = 0.5
    px = np.array([x, x + eps, x])
    py = np.array([y, y, y + eps])
    wra, wdec = setup.wcs.all_pix2world(px, py, 0)
    cosd = np.cos(np.radians(dec))
    jac = np.array([[(wra[1] - wra[0]) * cosd, (wra[2] - wra[0]) * cosd],
                    [wdec[1] - wdec[0], wdec[2] - wdec[0]]]) * 3600.0 / eps
    pix_scale = np.sqrt(abs(np.linalg.det(jac)))
    r_e = float(row["r_eff"])
    n = float(row["sersic_n"])
    half = int(np.ceil(min(8.0 * r_e / pix_scale, 60)))
    ix0 = int(np.floor(x - ref[0])) - half
    iy0 = int(np.floor(y - ref[1])) - half
    size = 2 * half + 2
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    gx = (np.arange(size)[:, None] + sub[None, :]).ravel() + ix0 + ref[0] - x
    gy = (np.arange(size)[:, None] + sub[None, :]).ravel() + iy0 + ref[1] - y
    mx, my = np.meshgrid(gx, gy)
    east = jac[0, 0] * mx + jac[0, 1] * my
    north = jac[1, 0] * mx + jac[1, 1] * my
    th = np.radians(float(row["theta"]))
    major = east * np.sin(th) + north * np.cos(th)
    minor = east * np.cos(th) - north * np.sin(th)
    q = float(row["axis_ratio"])
    r = np.sqrt(major**2 + (minor / q) ** 2)
    prof = np.exp(-_sersic_b(n) * ((r / r_e) ** (1.0 / n) - 1.0))
    prof[r > 8.0 * r_e] = 0.0
    stamp = prof.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return stamp / stamp.sum(), ix0, iy0


def _signal(setup: ChipSetup, sources: Table, ra: np.ndarray, dec: np.ndarray,
            rates: np.ndarray, pam: np.ndarray) -> tuple[np.ndarray, int]:
    """Expected photo-electrons per pixel from the sources and the sky.

    Stars are deposited with bilinear weights on their four nearest pixels and galaxies as
    pixel-integrated profiles; the deposits are then convolved with the PSF. ``fft``
    rendering convolves the whole padded chip at once (its cost grows with the chip's area);
    ``sparse`` rendering (:func:`_sparse_image`) adds each source's convolved stamp where it
    lies (its cost grows with the number of sources): the same image up to rounding (a few
    1e-16 of the peak), for chips with few sources.
    """
    x0, y0, nx, ny = setup.region
    psf = setup.psf
    kh, kw = psf.shape
    pad = max(kh, kw) + 2
    idx, x, y = _source_pixels(setup, ra, dec, margin=pad - 2)
    if setup.render == "sparse":
        image = _sparse_image(setup, sources, ra, dec, rates, idx, x, y, pad)
        image += setup.sky_rate * setup.exptime * pam
        return image, int(idx.size)
    points = np.zeros((ny + 2 * pad, nx + 2 * pad))
    counts = rates[idx] * setup.exptime
    is_star = np.asarray(sources["type"])[idx] == "star"
    # stars: bilinear deposits at (position - PSF reference) + pad
    px = x[is_star] - psf.ref[0] + pad
    py = y[is_star] - psf.ref[1] + pad
    c = counts[is_star]
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    ok = (ix >= 0) & (iy >= 0) & (ix + 1 < points.shape[1]) & (iy + 1 < points.shape[0])
    ix, iy, fx, fy, c = ix[ok], iy[ok], fx[ok], fy[ok], c[ok]
    np.add.at(points, (iy, ix), c * (1 - fx) * (1 - fy))
    np.add.at(points, (iy, ix + 1), c * fx * (1 - fy))
    np.add.at(points, (iy + 1, ix), c * (1 - fx) * fy)
    np.add.at(points, (iy + 1, ix + 1), c * fx * fy)
    # galaxies: pixel-integrated intrinsic profiles, convolved with the PSF below
    for k in np.nonzero(~is_star)[0]:
        j = idx[k]
        stamp, gx0, gy0 = _galaxy_stamp(setup, ra[j], dec[j], x[k], y[k], sources[j], psf.ref)
        gx0 += pad
        gy0 += pad
        sy, sx = stamp.shape
        a0, b0 = max(gy0, 0), max(gx0, 0)
        a1, b1 = min(gy0 + sy, points.shape[0]), min(gx0 + sx, points.shape[1])
        if a1 > a0 and b1 > b0:
            points[a0:a1, b0:b1] += counts[k] * stamp[a0 - gy0:a1 - gy0, b0 - gx0:b1 - gx0]
    image = signal.fftconvolve(points, psf.image, mode="full")[pad:pad + ny, pad:pad + nx]
    np.maximum(image, 0.0, out=image)
    image += setup.sky_rate * setup.exptime * pam
    return image, int(idx.size)


def _sparse_image(setup: ChipSetup, sources: Table, ra: np.ndarray, dec: np.ndarray,
                  rates: np.ndarray, idx: np.ndarray, x: np.ndarray, y: np.ndarray,
                  pad: int) -> np.ndarray:
    """The sources' expected photo-electrons, one PSF-convolved stamp per source.

    A star at deposit position ``p = position - PSF.ref`` is the PSF shifted by bilinear
    weights (:meth:`PSF.stamp`), exactly the deposit-then-convolve of :func:`_signal`; a
    galaxy is its pixel-integrated profile (:func:`_galaxy_stamp`) convolved with the PSF.
    Deposits beyond ``pad`` pixels of the chip are dropped, as in the FFT rendering.
    """
    nx, ny = setup.region[2], setup.region[3]
    psf = setup.psf
    kh, kw = psf.shape
    image = np.zeros((ny, nx))
    counts = rates[idx] * setup.exptime
    kinds = np.asarray(sources["type"])

    def add(stamp: np.ndarray, ix0: int, iy0: int) -> None:
        sy, sx = stamp.shape
        a0, b0 = max(iy0, 0), max(ix0, 0)
        a1, b1 = min(iy0 + sy, ny), min(ix0 + sx, nx)
        if a1 > a0 and b1 > b0:
            image[a0:a1, b0:b1] += stamp[a0 - iy0:a1 - iy0, b0 - ix0:b1 - ix0]

    for k, j in enumerate(idx):
        if kinds[j] == "star":
            px, py = x[k] - psf.ref[0], y[k] - psf.ref[1]
            ix, iy = int(np.floor(px)), int(np.floor(py))
            if ix + pad < 0 or iy + pad < 0 or ix + pad + 1 >= nx + 2 * pad or (
                    iy + pad + 1 >= ny + 2 * pad):
                continue  # outside the FFT rendering's deposit array
            fx, fy = px - ix, py - iy
            stamp = np.zeros((kh + 1, kw + 1))
            stamp[:-1, :-1] += (counts[k] * (1 - fx) * (1 - fy)) * psf.image
            stamp[:-1, 1:] += (counts[k] * fx * (1 - fy)) * psf.image
            stamp[1:, :-1] += (counts[k] * (1 - fx) * fy) * psf.image
            stamp[1:, 1:] += (counts[k] * fx * fy) * psf.image
            add(stamp, ix, iy)
        else:
            stamp, gx0, gy0 = _galaxy_stamp(setup, ra[j], dec[j], x[k], y[k], sources[j],
                                            psf.ref)
            conv = signal.fftconvolve(counts[k] * stamp, psf.image, mode="full")
            np.maximum(conv, 0.0, out=conv)
            add(conv, gx0, gy0)
    return image


# ---------------------------------------------------------------------------------------------
# cosmic rays and saturation


def _cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], rate: float,
                 exptime: float) -> np.ndarray:
    """Charge (e-) deposited by cosmic rays: short straight tracks of random length."""
    ny, nx = shape
    n = int(rng.poisson(rate * nx * ny * exptime))
    out = np.zeros(shape)
    if n == 0:
        return out
    x = rng.uniform(-0.5, nx - 0.5, n)
    y = rng.uniform(-0.5, ny - 0.5, n)
    length = rng.exponential(2.5, n) + 0.3
    angle = rng.uniform(0, np.pi, n)
    charge = rng.lognormal(np.log(900.0), 0.8, n)
    steps = np.maximum(1, np.ceil(length * 2).astype(int))
    owner = np.repeat(np.arange(n), steps)
    frac = (np.arange(owner.size) - np.repeat(np.cumsum(steps) - steps, steps) + 0.5) / np.repeat(
        steps, steps)
    px = x[owner] + (frac - 0.5) * length[owner] * np.cos(angle[owner])
    py = y[owner] + (frac - 0.5) * length[owner] * np.sin(angle[owner])
    q = charge[owner] / steps[owner]
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        jx, jy = ix + dx, iy + dy
        ok = (jx >= 0) & (jx < nx) & (jy >= 0) & (jy < ny)
        np.add.at(out, (jy[ok], jx[ok]), q[ok] * w[ok])
    return out


def _bleed(charge: np.ndarray, full_well: float) -> np.ndarray:
    """Spill charge above ``full_well`` up and down the columns (in place); return the mask."""
    over = charge > full_well
    for col in np.nonzero(over.any(axis=0))[0]:
        c = charge[:, col]
        rows = np.nonzero(c > full_well)[0]
        # contiguous runs of saturated pixels
        breaks = np.nonzero(np.diff(rows) > 1)[0]
        for run in np.split(rows, breaks + 1):
            excess = float((c[run] - full_well).sum())
            c[run] = full_well
            lo, hi = run[0] - 1, run[-1] + 1
            while excess > 0 and (lo >= 0 or hi < c.size):
                for k in (hi, lo):
                    if 0 <= k < c.size and excess > 0:
                        room = max(full_well - c[k], 0.0)
                        take = min(room, excess / 2 if (lo >= 0 and hi < c.size) else excess)
                        c[k] += take
                        excess -= take
                hi += 1
                lo -= 1
    return charge >= full_well


# ---------------------------------------------------------------------------------------------


def _readnoise_map(setup: ChipSetup) -> np.ndarray:
    x0, _, nx, ny = setup.region
    half = setup.det.shape[0] // 2
    cols = np.arange(x0, x0 + nx)
    rn = np.where(cols < half, setup.readnoise[0], setup.readnoise[1])
    return np.broadcast_to(rn[None, :], (ny, nx))


def _stats(sci: np.ndarray, err: np.ndarray, dq: np.ndarray) -> dict:
    good = (dq & SDQFLAGS) == 0
    if not good.any():
        good = np.ones_like(good)
    s, e = sci[good], err[good]
    snr = s / np.where(e > 0, e, np.inf)
    return {"NGOODPIX": int(good.sum()), "GOODMIN": float(s.min()), "GOODMAX": float(s.max()),
            "GOODMEAN": float(s.mean()), "SNRMIN": float(snr.min()), "SNRMAX": float(snr.max()),
            "SNRMEAN": float(snr.mean())}


def render_chip(setup: ChipSetup, sources: Table, ra: np.ndarray, dec: np.ndarray,
                rates: np.ndarray, rng: np.random.Generator) -> ChipImage:
    """Render one chip; ``ra, dec`` are the source positions at the exposure epoch."""
    det = setup.det
    x0, y0, nx, ny = setup.region
    t = setup.exptime
    pam = pixel_area_map(det, setup.ccdchip, x0, y0, nx, ny)
    expected, n_src = _signal(setup, sources, ra, dec, rates, pam)
    extra_dark, ref_factor, dq = _defect_maps(setup)
    dark = det.dark + extra_dark
    dark_ref = det.dark + extra_dark * ref_factor
    photons = rng.poisson(expected).astype(np.float64)
    dark_counts = rng.poisson(dark * t).astype(np.float64)
    crs = _cosmic_rays(rng, (ny, nx), det.cr_rate, t)
    if not setup.cosmic_rays:
        crs[...] = 0.0  # drawn all the same: the rest of the random stream is unchanged
    samp = time = None

    if det.ccd:
        rn = _readnoise_map(setup)
        charge = photons + dark_counts + crs
        sat = _bleed(charge, det.full_well)
        raw = charge + rng.normal(0.0, 1.0, (ny, nx)) * rn
        sat |= raw >= det.adc_max
        np.minimum(raw, det.adc_max, out=raw)
        for x, ya, yb in _defects(det.key, setup.ccdchip, setup.seed).bad_columns:
            if x0 <= x < x0 + nx:  # charge traps: lower values along the bad column
                a, b = max(ya, y0) - y0, min(yb, y0 + ny) - y0
                raw[a:b, x - x0] -= 25.0
        sci = (raw - dark_ref * t) / pam
        err = np.sqrt(np.maximum(raw, 0.0) + rn**2) / pam
        dq[sat] |= DQ.SATURATED
        if setup.flag_crs:
            sigma = np.sqrt(expected + dark * t + rn**2)
            core = crs > 3.0 * sigma
            grown = core.copy()
            grown[1:, :] |= core[:-1, :]
            grown[:-1, :] |= core[1:, :]
            grown[:, 1:] |= core[:, :-1]
            grown[:, :-1] |= core[:, 1:]
            dq[(core | (grown & (crs > sigma)))] |= DQ.COSMIC_RAY
    else:
        rn = det.effective_readnoise or 0.0
        total = expected + dark * t
        frac = np.minimum(1.0, det.full_well / np.maximum(total, 1e-9))
        used = (photons + dark_counts) * frac
        time = (t * frac).astype(np.float32)
        noise = rng.normal(0.0, 1.0, (ny, nx)) * rn
        sci = (used + noise - dark_ref * time) / time / pam
        err = np.sqrt(np.maximum(used + noise, 0.0) + rn**2 + (0.0 if rn else 1.0)) / time / pam
        dq[frac < 1.0] |= DQ.SATURATED
        if det.cr_rate > 0:
            dq[crs > 0.5 * np.sqrt(expected + rn**2)] |= DQ.RAMP_CR
        if setup.nsamp:
            samp = np.maximum(1, np.round((setup.nsamp - 1) * frac)).astype(np.int16)
    sci = sci.astype(np.float32)
    err = err.astype(np.float32)
    return ChipImage(sci=sci, err=err, dq=dq, samp=samp, time=time,
                     stats={**_stats(sci, err, dq), "MEANDARK": float(det.dark * t)},
                     n_sources=n_src)
