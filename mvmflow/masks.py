"""Pixel masks of the final drizzle: DQ good-pixel mask and the static mask.

Conventions: every mask returned here is a boolean array that is **True for a good pixel**
(a pixel that is drizzled) and False for a rejected one, as the reference's mask arrays
(1 good, 0 bad).

- :func:`good_pixel_mask`: ``(DQ & ~final_bits) == 0``; ``final_bits`` are the DQ flags that
  are *ignored* (counted as good), given as drizzlepac accepts them (an int, a string of bit
  values such as ``"8,1024"`` or ``"8+1024"``, ``"~4096"`` for "every flag but these", or
  None for "every flag is good").
- :func:`static_mask`: AstroDrizzle's static mask (``staticMask.py``, spec processing.md
  1.7): a pixel is rejected when it is more than ``nsigma`` (4) standard deviations below the
  chip's clipped histogram mode. The statistics reproduce ``stsci.imagestats.ImageStats(
  image, fields="mode", nclip=3, lower=min, upper=max)`` (3 rounds of 3-sigma clipping about
  the mean, then the mode of a histogram of bin width 0.1 sigma over the clipped range,
  refined by a parabola through the peak bin and its neighbours).

Difference from the reference, by design: the reference ANDs the static masks of every chip
with the same signature (detector, shape, chip) across *all* exposures of the run, so a
pixel low in one exposure is masked in all of them. That couples the exposures; here each
chip gets its own mask, which keeps the per-exposure drizzle (the map) independent.
:func:`combine_static_masks` gives the reference's shared mask when wanted (pass it to
``resample.drizzle_exposure(static_masks=...)``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence

import numpy as np
from astropy.io import fits

__all__ = [
    "clipped_mode_stats",
    "combine_static_masks",
    "good_pixel_mask",
    "has_cr_flags",
    "parse_bits",
    "static_mask",
]


def _bit_value(token: str, original) -> int:
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f"bad DQ bit {token!r} in {original!r}: not an integer") from None
    if value < 0 or (value & (value - 1)) != 0:
        raise ValueError(f"bad DQ bit {value} in {original!r}: not a power of 2")
    return value


def parse_bits(bits) -> int | None:
    """Turn a ``final_bits``-style value into the integer of DQ flags counted as good.

    Parameters
    ----------
    bits : int, str, sequence of int, or None
        - an int: the sum of the flags to ignore (``80``, ``65535``, ``0``);
        - a string: bit values joined by ``,`` or ``+`` (``"8,1024"``, ``"2+8+1024"``), each a
          power of 2; a leading ``~`` means "every flag except these" (``"~4096"``);
          ``""``, ``"None"`` and ``"INDEF"`` mean None;
        - a sequence of ints: as the comma-separated string;
        - None: every flag is good (the whole DQ array is ignored).

    Returns
    -------
    int or None
        The flags counted as good, or None for "all flags".

    Raises
    ------
    ValueError
        For a negative int, a token that is not a power of 2, or a value of another type.
    """
    if bits is None:
        return None
    if isinstance(bits, bool):
        raise ValueError(f"DQ bits must be an int, a string or None, not {bits!r}")
    if isinstance(bits, numbers.Integral):
        if bits < 0:
            raise ValueError(f"DQ bits must be non-negative, got {bits}")
        return int(bits)
    if isinstance(bits, str):
        text = bits.strip()
        if text.upper() in ("", "NONE", "INDEF"):
            return None
        flip = text.startswith("~")
        if flip:
            text = text[1:].strip()
        tokens = [t.strip() for t in text.replace("+", ",").split(",")]
        if not all(tokens):
            raise ValueError(f"bad DQ bits string {bits!r}")
        value = 0
        for token in tokens:
            value |= _bit_value(token, bits)
        return ~value & 0xFFFFFFFF if flip else value
    if isinstance(bits, Sequence):
        value = 0
        for item in bits:
            value |= _bit_value(str(item), bits)
        return value
    raise ValueError(f"DQ bits must be an int, a string, a list of ints or None, not {bits!r}")


def good_pixel_mask(dq: np.ndarray | None, final_bits, shape: tuple[int, int] | None = None
                    ) -> np.ndarray:
    """Good-pixel mask ``(dq & ~final_bits) == 0`` (True = good).

    Parameters
    ----------
    dq : numpy.ndarray or None
        Integer DQ array (any signed or unsigned integer type; int16 DQ arrays holding 32768
        are read correctly). None means no DQ: every pixel is good (``shape`` required).
    final_bits : int, str, sequence or None
        Flags counted as good; see :func:`parse_bits`.
    shape : tuple of int, optional
        Shape of the mask when ``dq`` is None.

    Returns
    -------
    numpy.ndarray of bool
    """
    bits = parse_bits(final_bits)
    if dq is None:
        if shape is None:
            raise ValueError("good_pixel_mask needs a shape when dq is None")
        return np.ones(shape, dtype=bool)
    dq = np.asarray(dq)
    if not np.issubdtype(dq.dtype, np.integer):
        raise ValueError(f"DQ array must be of an integer type, not {dq.dtype}")
    if bits is None:
        return np.ones(dq.shape, dtype=bool)
    # Work in unsigned 32-bit: an int16 DQ of -32768 is the flag 32768.
    flags = dq.astype(np.uint32) if dq.dtype.itemsize >= 4 else dq.view(
        np.dtype(f"u{dq.dtype.itemsize}")).astype(np.uint32)
    return (flags & np.uint32(~bits & 0xFFFFFFFF)) == 0


def _moments(sel: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (N-1) of float32 values, in float64: numpy's
    ``mean(dtype=float64)`` and ``std(dtype=float64, ddof=1)`` to the bit, with one sum of
    the values instead of two."""
    n = sel.size
    mean = np.add.reduce(sel, dtype=np.float64) / n
    if n < 2:
        return float(mean), 0.0
    d = np.subtract(sel, mean, dtype=np.float64)
    np.multiply(d, d, out=d)
    return float(mean), float(np.sqrt(np.add.reduce(d) / (n - 1)))


def _histogram_mode(values: np.ndarray, vmin: float, vmax: float, hwidth: float) -> float:
    """``ImageStats`` mode: histogram over ``[vmin, vmax]``, parabola through the peak."""
    drange = vmax - vmin
    tiny = 10.0 * np.finfo(np.float32).eps
    if hwidth < tiny or abs(drange) < tiny or hwidth > drange:
        return vmin + 0.5 * hwidth
    nbins = int(drange / hwidth) + 1
    dz = drange / (nbins - 1)
    idx = np.floor((values - vmin) / dz)
    idx = idx[(idx >= 0) & (idx < nbins)].astype(np.int64)
    hist = np.bincount(idx, minlength=nbins)
    if nbins == 2:
        if hist[0] > hist[1]:
            return vmin + 0.5 * hwidth
        if hist[0] < hist[1]:
            return vmin + 1.5 * hwidth
        return vmin + hwidth
    peak = int(np.argmax(hist))
    if peak == 0:
        return vmin + 0.5 * hwidth
    if peak == nbins - 1:
        return vmin + (nbins - 0.5) * hwidth
    dh1 = int(hist[peak]) - int(hist[peak - 1])
    dh2 = int(hist[peak]) - int(hist[peak + 1])
    if dh1 + dh2 == 0:
        return vmin + (peak + 0.5) * hwidth
    pos = peak + 1 + 0.5 * (dh1 - dh2) / (dh1 + dh2)
    return vmin + (pos - 0.5) * hwidth


def clipped_mode_stats(data: np.ndarray, nclip: int = 3, lsig: float = 3.0, usig: float = 3.0,
                       binwidth: float = 0.1) -> tuple[float, float]:
    """Clipped histogram mode and standard deviation, as ``stsci.imagestats.ImageStats``.

    ``nclip`` rounds of clipping at ``mean - lsig*std`` .. ``mean + usig*std`` (starting from
    the full range of the finite pixels), then the mean/std of the last clipped set, and the
    mode of a histogram of bin width ``binwidth * std`` over that set's range.

    Parameters
    ----------
    data : numpy.ndarray
        Pixel values; non-finite values are ignored. Computed in float32 input precision.

    Returns
    -------
    mode, stddev : float
        NaN if there is no finite pixel.
    """
    values = np.asarray(data, dtype=np.float32).ravel()
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    del finite
    if values.size == 0:
        return float("nan"), float("nan")
    lower, upper = float(values.min()), float(values.max())
    lo, hi = lower, upper
    # sel: the values within [slo, shi]; a narrower range is selected from it (the same
    # values in the same order as from all of them), a wider one from all values
    sel, slo, shi = values, lower, upper
    for it in range(nclip + 1):
        if slo <= lo and hi <= shi:
            if (slo, shi) != (lo, hi):
                sel = sel[(sel >= lo) & (sel <= hi)]
        else:
            sel = values[(values >= lo) & (values <= hi)]
        slo, shi = lo, hi
        if sel.size == 0:
            return float("nan"), float("nan")
        mean, std = _moments(sel)
        if it < nclip:
            lo = max(lower, mean - lsig * std)
            hi = min(upper, mean + usig * std)
    vmin, vmax = float(sel.min()), float(sel.max())
    # As ImageStats, the histogram is filled from every pixel (its range is that of the
    # clipped set, plus one bin).
    mode = _histogram_mode(values, vmin, vmax, binwidth * std)
    return float(mode), float(std)


def static_cut(sci: np.ndarray, nsigma: float = 4.0) -> float:
    """The static mask's cut of one chip: ``mode - nsigma * stddev`` of its clipped
    statistics (:func:`clipped_mode_stats`), NaN when they are not finite (then only
    non-finite pixels are masked). :func:`static_mask` rejects the pixels below it."""
    if isinstance(nsigma, bool) or not isinstance(nsigma, numbers.Real) or not nsigma > 0:
        raise ValueError(f"static mask nsigma must be a positive number, got {nsigma!r}")
    mode, std = clipped_mode_stats(sci)
    if not np.isfinite(mode) or not np.isfinite(std):
        return float("nan")
    return float(mode - nsigma * std)


def static_mask(sci: np.ndarray, nsigma: float = 4.0, cut: float | None = None) -> np.ndarray:
    """AstroDrizzle's static mask of one chip (True = good).

    A pixel is rejected when its value is below ``mode - nsigma * stddev`` of the chip's
    clipped statistics (:func:`static_cut`); such pixels are typically dark-current
    over-subtractions. The statistics use every finite pixel of the chip, whatever its DQ
    flags, as the reference does; non-finite pixels are rejected.

    Parameters
    ----------
    sci : numpy.ndarray
        The chip's SCI array (any unit; the test is scale-free).
    nsigma : float
        ``static_sig`` (4 for every MVM layer).
    cut : float, optional
        The chip's :func:`static_cut`, when already known (a partial records it): the
        statistics are then not computed again.

    Returns
    -------
    numpy.ndarray of bool
        True where the pixel is kept.
    """
    sci = np.asarray(sci)
    if cut is None:
        cut = static_cut(sci, nsigma)
    finite = np.isfinite(sci)
    if math.isnan(cut):
        return finite
    with np.errstate(invalid="ignore"):
        return finite & ~(sci < cut)


def combine_static_masks(masks: Iterable[np.ndarray]) -> np.ndarray:
    """AND of several exposures' static masks of the same chip (the reference's shared mask).

    Raises
    ------
    ValueError
        If there is no mask or the shapes differ.
    """
    out = None
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        if out is None:
            out = mask.copy()
        elif mask.shape != out.shape:
            raise ValueError(f"static masks have different shapes: {out.shape} and {mask.shape}")
        else:
            out &= mask
    if out is None:
        raise ValueError("no static mask to combine")
    return out


def has_cr_flags(path: str | os.PathLike, crbit: int = 4096, resetbits=0) -> bool:
    """True if any DQ array of the exposure has the cosmic-ray flag (after ``resetbits``)."""
    reset = parse_bits(resetbits) or 0
    if crbit & reset:
        return False
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        for hdu in hdul:
            if hdu.name == "DQ" and hdu.data is not None:
                if np.any(np.asarray(hdu.data) & crbit):
                    return True
    return False
