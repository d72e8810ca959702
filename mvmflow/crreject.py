"""Cosmic-ray rejection for layers whose inputs carry no cosmic-ray flags.

The reference's MVM processing trusts the cosmic-ray flags (DQ 4096) written upstream and
runs no rejection of its own (spec processing.md 1.7, 2.1 notes). Inputs straight from the
calibration pipeline, or simulated with ``--unflagged-cr``, have none, so a layer would keep
every cosmic ray. This module is the library half of AstroDrizzle's rejection, as map and
reduce steps (docs/design.md, "Drizzle as map and reduce"):

1. separate drizzle (map): an exposure's partial *is* its single drizzled image
   (:mod:`mvmflow.resample`);
2. median (reduce): :func:`mvmflow.median.median_layer`, strip by strip, bounded memory;
3. blot + driz_cr (map): :func:`cr_mask_exposure` blots the median (and, for the default
   method, the median file's envelope and the exposure's own single image) onto each chip
   (:class:`mvmflow.blot.ChipBlotter`) and runs the derivative test (:func:`driz_cr`;
   :func:`chip_cr_mask` decides it at the pixels outside the model's noise alone, the
   same flags: docs/speed.md, "The cosmic-ray path (stop 30)"), writing one mask file per
   exposure; inputs are never modified;
4. final drizzle (map): ``resample.drizzle_exposure(chips, frame, params,
   cr_masks=read_cr_masks(mask_path, chips))``, then the usual sum; in the workflow's job
   (:func:`cr_mask_and_drizzle`) the separate partial minus the drizzle of the masked
   pixels alone (:mod:`mvmflow.crsubtract`), the same to float32 rounding, written as a
   patch of the separate partial (the changed pixels alone,
   :class:`mvmflow.partials.PartialPatch`).

When to run it: :func:`cr_mode_applies` (config ``cosmic_rays: auto | always | never`` per
detector).

**The derivative test** (AstroDrizzle's ``drizCR._driz_cr``, drizzlepac 3.11.0; ``cr.method:
reference``), in electrons (the chip's data and blot times ``EXPTIME`` for a count-rate
``BUNIT``), with ``b`` the blotted median (sky included), ``D`` its
:func:`mvmflow.blot.derivative` and ``rn`` the read noise::

    t1     = |data - b|
    noise  = sqrt(|b| + rn**2)
    pass1  = t1 <= scale1 * D + snr1 * noise
    good   = (t1 <= scale2 * D + snr2 * noise)  or  pass1 holds on the whole 3x3 box
    CR     = not good, then grown to a grow x grow square (grow 1: no growth)

so a pixel is a cosmic ray when it fails the looser second test next to (or at) a pixel
that fails the strict first one. ``scale x D`` allows for the model's errors where the image
is steep; the gain is 1 (data in electrons) and the sky is part of ``b`` (the reference adds
its subtracted sky back as ``backg``). Boundaries of the 3x3 and grow boxes mirror the edge
(the reference's ``boundary='symm'``). Pixels without a model (no valid median), non-finite
data or bad DQ (not counted as good by the layer's ``final_bits`` after ``resetbits``: they
are dropped from the drizzle anyway) are not tested and do not seed neighbours.

**Why a second method.** With three or four dithered exposures of an undersampled PSF
(WFC3/UVIS at the 0.04" frame scale), the exposures' drizzled images of a star differ by
20-40 % in the core pixels (each samples the PSF at another sub-pixel phase), minmed takes
the lowest of them, and the raw chip is sharper than any drizzled image. The blotted model of
a star core is then up to two times below the data and ``scale x D`` does not cover it: the
reference test flags star cores, and removing even one core pixel of one exposure moves the
drizzled flux by percents (the remaining exposures sample the core differently). On the
``cr`` simulation (four 400 s WFC3/UVIS F555W exposures, six seeds) the reference test
changes unsaturated isolated stars by up to 3-7.5 % (up to 4.4 % for stars without any
cosmic ray); the method below keeps stars without a cosmic ray within 0.08 %. The
reference's derivative allowance also hides cosmic rays on the steep wings of stars.

**The sampling-aware test** (``cr.method: sampling``, the default) keeps the reference test
and changes two things, using two more images of the median file (:func:`mvmflow.median.
envelope`: ``UPPER``, the second-highest valid input, and ``SPREAD``, its distance to the
lowest; both blotted like the median) and the exposure's own single image blotted back
(``own``, from its partial):

1. the model error is ``E = min(D, SPREAD)`` instead of ``D``: where the other exposures
   agree (a star's wings, the sky) the test is as tight as their agreement, so cosmic rays
   on star wings are caught; where they do not (cores), the derivative still bounds it;
2. where the model is steep (``scale1 x D > snr1 x noise``: sources), a pixel that fails the
   test is a cosmic ray only if (a) the exposure's own resampled image stands out, within
   the pixel's 3x3 box, above the envelope ``h = max(UPPER, b)`` by more than
   ``core_tolerance x h + snr1 x noise`` (a cosmic ray survives the resampling; a sampling
   difference does not exceed what another exposure reaches by that much), and (b) the
   pixel itself exceeds ``h`` (a cosmic ray only adds charge) by ``snr2 x noise``, or by
   the same ``core_tolerance x h + snr1 x noise`` within a pixel of a local maximum of ``h``
   (a star core).

Where the model is flat the reference test alone decides. A cosmic ray on a star core
itself is kept when it adds less than ``core_tolerance`` of the core (it cannot be told from
a better-sampled core): on the six seeds, stars hit that way change by up to 1.5 % (faint
stars, 55-75 e-/s), the others by less than 0.1 %; fewer than 0.6 % of the injected
cosmic-ray pixels keep a residual above 3 sigma in the layer (reference: 0.35-0.9 %). A
lower ``core_tolerance`` (0.6) clips bright cores again; 1.0 keeps more cosmic rays (0.4-0.85
%). On ACS/WFC (0.05" pixels on the 0.04" frame) both methods keep stars within 0.6 %.

**Mask file** (:func:`write_cr_masks`): PRIMARY (``MVMTYPE='CRMASK'``, ``FILENAME``, the
median's file name ``MEDIAN``, ``SKY``, ``READNSE``, ``CRPARAMS`` JSON, ``NCRPIX`` total),
then per chip an ImageHDU ``EXTNAME='CRMASK'``, ``EXTVER`` = the chip's SCI EXTVER, uint8,
1 = cosmic ray, with ``NCRPIX`` and ``NTESTED``. Deterministic (no dates).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from mvmflow.blot import ChipBlotter, bool_filter3, derivative_at
from mvmflow.combine import placement
from mvmflow.crparams import CRParams, cr_parameters
from mvmflow.crsubtract import KeptMap, masked_changes, subtract_masked
from mvmflow.grid import Frame
from mvmflow.masks import good_pixel_mask, has_cr_flags, parse_bits
from mvmflow.median import median_frame, median_layer
from mvmflow.partials import Partial, PartialFile, PartialPatch
from mvmflow.resample import DEFAULT_STEP, Chip, drizzle_exposure, load_chips
from mvmflow.workflow import atomic_path

__all__ = [
    "CR_MODES",
    "CRMaskInfo",
    "chip_cr_mask",
    "cr_mask_exposure",
    "cr_mode_applies",
    "cr_parameters",
    "driz_cr",
    "exposure_readnoise",
    "has_cr_flags",
    "median_layer",
    "read_cr_masks",
    "write_cr_masks",
]

log = logging.getLogger(__name__)

CR_MODES = ("auto", "always", "never")
"""Values of the per-detector ``cosmic_rays`` switch."""

CRMASK_VERSION = 1
"""Layout version of mask files (primary keyword ``CRMVER``)."""


# --------------------------------------------------------------------------------------
# When to reject


def cr_mode_applies(mode: str, cr_flagged, coverage) -> bool:
    """Whether a layer gets cosmic-ray rejection.

    Parameters
    ----------
    mode : {'auto', 'always', 'never'}
        ``never``: trust the inputs' flags (the reference's behaviour); ``always``: reject;
        ``auto``: reject when some pixel of the layer is covered by at least two exposures
        (the *maximum* coverage: the test works per pixel, and a pixel seen once is never
        flagged, so partly overlapping mosaics still gain) **and** no input carries
        cosmic-ray flags yet (upstream processing already rejected them).
    cr_flagged : bool or iterable of bool
        Whether each input has any cosmic-ray flag (:func:`has_cr_flags`).
    coverage : int, float or array-like
        Exposures per pixel: the layer's maximum, or a per-pixel array (e.g. the ``nexp``
        of :func:`mvmflow.combine.combine_partials` on the partials), whose maximum is used.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        For an unknown mode.
    """
    text = str(mode).strip().lower()
    if text not in CR_MODES:
        raise ValueError(f"cosmic_rays must be one of {CR_MODES}, got {mode!r}")
    if text == "never":
        return False
    if text == "always":
        return True
    flags = [bool(cr_flagged)] if np.isscalar(cr_flagged) else [bool(f) for f in cr_flagged]
    cov = np.asarray(coverage)
    max_coverage = float(cov.max()) if cov.size else 0.0
    return max_coverage >= 2 and not any(flags)


def exposure_readnoise(path: str | os.PathLike) -> float:
    """Read noise of an exposure (e-): the mean of the primary ``READNSE[A-D]`` above 0."""
    header = fits.getheader(path, 0)
    values = [float(header[k]) for k in ("READNSEA", "READNSEB", "READNSEC", "READNSED")
              if k in header and header[k] not in (None, "") and float(header[k]) > 0]
    return float(np.mean(values)) if values else 0.0


# --------------------------------------------------------------------------------------
# The derivative test


def driz_cr(data: np.ndarray, blot: np.ndarray, deriv: np.ndarray, readnoise: float,
            snr: tuple[float, float] = (3.5, 3.0), scale: tuple[float, float] = (1.2, 0.7),
            grow: int = 1, testable: np.ndarray | None = None, *,
            spread: np.ndarray | None = None, upper: np.ndarray | None = None,
            own: np.ndarray | None = None, core_tolerance: float = 0.75) -> np.ndarray:
    """Cosmic-ray pixels of one chip (module notes).

    Parameters
    ----------
    data, blot, deriv : numpy.ndarray
        The chip, the blotted median and its derivative, in electrons.
    readnoise : float
        e-.
    snr, scale : tuple of float
        Thresholds and derivative multipliers of the two passes.
    grow : int
        Side of the square each cosmic-ray pixel is grown to (1: none).
    testable : numpy.ndarray, optional
        bool, False where a pixel is not tested (and does not seed neighbours).
    spread, upper, own : numpy.ndarray, optional
        The sampling-aware test (all three, in electrons): the blotted SPREAD and UPPER of
        the median file (a huge spread where unknown) and the exposure's own single image
        blotted back. Without them: AstroDrizzle's test.
    core_tolerance : float
        Sampling-aware test: the fraction of the envelope by which ``own`` may exceed it.

    Returns
    -------
    numpy.ndarray
        bool, True for a cosmic ray.
    """
    data = np.asarray(data, dtype=np.float32)
    blot = np.asarray(blot, dtype=np.float32)
    deriv = np.asarray(deriv, dtype=np.float32)
    sampling = spread is not None and upper is not None and own is not None
    error = np.minimum(deriv, np.asarray(spread, dtype=np.float32)) if sampling else deriv
    cr = reference_test(data, blot, error, readnoise, snr, scale, testable)
    del error
    if sampling:
        cr = sampling_test(cr, data, blot, deriv, upper, own, readnoise, snr, scale,
                           testable, core_tolerance)
    return grow_mask(cr, grow)


def grow_mask(cr: np.ndarray, grow: int) -> np.ndarray:
    """Each flagged pixel grown to a ``grow`` x ``grow`` square (1: none), edges mirrored."""
    if grow > 1:
        return ndimage.maximum_filter(cr, size=int(grow), mode="reflect")
    return cr


def _noise(blot: np.ndarray, readnoise: float) -> np.ndarray:
    """The derivative test's noise, ``sqrt(|blot| + rn**2)`` (float32)."""
    return np.sqrt(np.abs(blot) + np.float32(readnoise) ** 2)


def _residual(data: np.ndarray, blot: np.ndarray, readnoise: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """``t1 = |data - blot|`` and the noise (float32): the derivative test's two terms, the
    same expressions for every form of the test (whole chip, :func:`error_region`, the
    pixels outside the noise alone), so their bounds are exact."""
    blot = np.asarray(blot, dtype=np.float32)
    return np.abs(np.asarray(data, dtype=np.float32) - blot), _noise(blot, readnoise)


def _outside(t1: np.ndarray, noise: np.ndarray, snr: tuple[float, float]) -> np.ndarray:
    """Where a pixel is outside ``min(snr)`` noise of the model (:func:`error_region`)."""
    return t1 > np.float32(min(snr)) * noise


def _passes(t1: np.ndarray, noise: np.ndarray, error: np.ndarray,
            snr: tuple[float, float], scale: tuple[float, float]
            ) -> tuple[np.ndarray, np.ndarray]:
    """The two passes of the derivative test (module notes), pixel by pixel."""
    return (t1 <= np.float32(scale[0]) * error + np.float32(snr[0]) * noise,
            t1 <= np.float32(scale[1]) * error + np.float32(snr[1]) * noise)


def reference_test(data: np.ndarray, blot: np.ndarray, error: np.ndarray, readnoise: float,
                   snr: tuple[float, float] = (3.5, 3.0),
                   scale: tuple[float, float] = (1.2, 0.7),
                   testable: np.ndarray | None = None) -> np.ndarray:
    """The two passes of the derivative test (module notes) with the model error ``error``
    (``D``, or ``min(D, SPREAD)`` for the sampling-aware test): True where a pixel fails the
    second pass next to (or at) a pixel failing the first; no growth.

    ``error`` is read only where ``|data - blot|`` exceeds ``min(snr)`` times the noise
    (:func:`error_region`): elsewhere both passes hold for any ``error >= 0``.
    """
    t1, noise = _residual(data, blot, readnoise)
    pass1, pass2 = _passes(t1, noise, error, snr, scale)
    del t1, noise
    if testable is not None:
        pass1 |= ~testable
        pass2 |= ~testable
    box_ok = bool_filter3(pass1, np.logical_and)
    return ~(pass2 | box_ok)


def sampling_test(cr: np.ndarray, data: np.ndarray, blot: np.ndarray, deriv: np.ndarray,
                  upper: np.ndarray, own: np.ndarray, readnoise: float,
                  snr: tuple[float, float] = (3.5, 3.0),
                  scale: tuple[float, float] = (1.2, 0.7),
                  testable: np.ndarray | None = None,
                  core_tolerance: float = 0.75) -> np.ndarray:
    """The sampling-aware test's second condition (module notes): of the pixels ``cr``
    flagged by :func:`reference_test` where the model is steep, those whose exposure's own
    image and value do not stand out above the envelope are cleared.

    Only those flags can change (the suspects: ``cr`` where :func:`steep_model`), and they
    read ``own`` and ``upper`` only near them (:func:`sampling_regions`): the test is
    evaluated at the suspects alone, on their neighbourhoods (edges reflected, as 3 x 3
    filters of the whole chip reflect them; docs/speed.md, "The cosmic-ray path (stop 29)").
    """
    shape = np.shape(cr)
    flagged = np.flatnonzero(cr)
    out = np.array(cr, dtype=bool, copy=True)
    if not flagged.size:
        return out
    fy, fx = np.divmod(flagged, shape[1])
    steep = steep_model(deriv[fy, fx], blot[fy, fx], readnoise, snr[0], scale[0])
    suspects = flagged[steep]
    if suspects.size:
        def at(image, dtype=np.float32):
            values = np.asarray(image, dtype=dtype).ravel()
            return values.take

        keep = _sampling_at(suspects, shape, at(data), at(blot), at(upper), at(own),
                            None if testable is None else at(testable, bool), readnoise,
                            snr, core_tolerance)
        out.ravel()[suspects] = keep
    return out


def _sampling_at(suspects: np.ndarray, shape: tuple[int, int], data, blot, upper, own,
                 testable, readnoise: float, snr: tuple[float, float],
                 core_tolerance: float) -> np.ndarray:
    """:func:`sampling_test`'s verdict at its suspects (flat indices): True where the flag
    stays. ``data``, ``blot``, ``upper``, ``own`` and ``testable`` (or None) are functions
    of an array of flat indices returning the image's values there: the suspects' own
    (``data``), their 3 x 3 neighbourhoods (``own``, ``testable``) and those neighbours' 3 x
    3 neighbourhoods (``upper`` and ``blot``, :func:`sampling_regions`)."""
    py, px = np.divmod(suspects, shape[1])
    # the suspects' 3 x 3 neighbours q and the 3 x 3 neighbours of each q, as flat indices,
    # edges reflected as the whole-chip 3 x 3 filters reflect them (a neighbour outside is
    # the edge pixel: the index clipped)
    k = np.arange(-1, 2)
    qy = np.clip(py[:, None] + k, 0, shape[0] - 1)  # (n, 3)
    qx = np.clip(px[:, None] + k, 0, shape[1] - 1)
    ry = np.clip(qy[:, :, None] + k, 0, shape[0] - 1)  # (n, 3, 3)
    rx = np.clip(qx[:, :, None] + k, 0, shape[1] - 1)
    q = qy[:, :, None] * shape[1] + qx[:, None, :]  # (n, 3, 3)
    r = ry[:, :, None, :, None] * shape[1] + rx[:, None, :, None, :]  # (n, 3, 3, 3, 3)
    b = blot(q)
    noise = _noise(b, readnoise)
    high = np.maximum(upper(q), b)
    allowed = np.float32(core_tolerance) * high + np.float32(snr[0]) * noise
    confirmed = own(q) - high > allowed
    if testable is not None:
        confirmed &= testable(q)
    confirmed = confirmed.any(axis=(1, 2))
    # next to a local maximum of the envelope (h at a neighbour equal to the largest h
    # around that neighbour)
    around = np.maximum(upper(r), blot(r))
    local = np.fmax.reduce(around.reshape(*around.shape[:3], 9), axis=3)
    peak = (high == local).any(axis=(1, 2))
    centre = (slice(None), 1, 1)
    above = data(suspects) - high[centre] > np.where(peak, allowed[centre],
                                                     np.float32(snr[1]) * noise[centre])
    return confirmed & above


def steep_model(deriv: np.ndarray, blot: np.ndarray, readnoise: float,
                snr1: float = 3.5, scale1: float = 1.2) -> np.ndarray:
    """Where the model is steep (``scale1 x D > snr1 x noise``): the pixels whose flag the
    sampling-aware test can clear."""
    return np.float32(scale1) * deriv > np.float32(snr1) * _noise(blot, readnoise)


# --------------------------------------------------------------------------------------
# One exposure


@dataclass
class CRMaskInfo:
    """What :func:`cr_mask_exposure` found.

    Attributes
    ----------
    path : Path
        The mask file.
    filename : str
        The exposure.
    chips : list of dict
        Per chip: ``extver``, ``ncr`` (cosmic-ray pixels), ``ntested`` (pixels tested).
    seconds : float
    """

    path: Path
    filename: str
    chips: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ncr(self) -> int:
        """Cosmic-ray pixels in all chips."""
        return sum(c["ncr"] for c in self.chips)


def _testable(chip: Chip, params: dict) -> np.ndarray:
    ok = np.isfinite(chip.data)
    if chip.dq is not None:
        dq = np.asarray(chip.dq)
        reset = parse_bits(params.get("resetbits", 0)) or 0
        if reset:
            dq = dq & np.array(~reset, dtype=np.int64).astype(dq.dtype)
        ok &= good_pixel_mask(dq, params.get("final_bits", 0), shape=chip.shape)
    return ok


_UNKNOWN_SPREAD = 1e30  # blotted where the spread is unknown (fewer than 3 inputs)
_WINDOW_ROWS = 512  # rows of a partial read at a time for a single image's window


class _Single:
    """An exposure's single image (``FLUX / WEIGHT`` of its partial) on a frame, read box by
    box (a partial file is read by windows, :meth:`mvmflow.partials.PartialFile.read_arrays`,
    not whole)."""

    def __init__(self, source, frame: Frame):
        if isinstance(source, Partial):
            self.partial, self.file = source, None
            self.shape = source.shape
            self.filename = source.filename
            self.ox, self.oy = placement(source, frame)
        else:
            self.partial = None
            self.file = source if isinstance(source, PartialFile) else PartialFile.open(source)
            self.shape = self.file.shape
            self.filename = self.file.filename
            self.ox, self.oy = self.file.placement(frame)

    def window(self, box) -> np.ndarray:
        """float32 over ``box`` (frame pixels), NaN where the exposure has no weight."""
        out = np.full((box.ny, box.nx), np.nan, dtype=np.float32)
        ny, nx = self.shape
        x0, x1 = max(box.x0, self.ox), min(box.x0 + box.nx, self.ox + nx)
        y0, y1 = max(box.y0, self.oy), min(box.y0 + box.ny, self.oy + ny)
        if x1 <= x0 or y1 <= y0:
            return out
        cols = slice(x0 - self.ox, x1 - self.ox)
        # a block of rows at a time: the flux and weight read are a block's, not the box's
        # (docs/speed.md, "The cosmic-ray path (stop 29)")
        for r0 in range(y0, y1, _WINDOW_ROWS):
            r1 = min(r0 + _WINDOW_ROWS, y1)
            rows = slice(r0 - self.oy, r1 - self.oy)
            if self.partial is not None:
                flux, weight = self.partial.flux[rows, cols], self.partial.weight[rows, cols]
            else:
                arrays = self.file.read_arrays(("flux", "weight"), rows, cols)
                flux, weight = arrays["flux"], arrays["weight"]
            # FLUX / WEIGHT in float64, rounded to float32, where there is weight (NaN
            # elsewhere). For float32 inputs that is float32 division itself: a quotient
            # correctly rounded to 53 bits and then to 24 is the one correctly rounded to 24
            # (double rounding is harmless for division when the wider format has at least
            # 2 x 24 + 2 bits, Figueroa 1995), and float32 division is twice as fast as the
            # float64 one with its casts (docs/speed.md, "Catalogues, rings and medians")
            target = out[r0 - box.y0:r1 - box.y0, x0 - box.x0:x1 - box.x0]
            if flux.dtype == np.float32 and weight.dtype == np.float32:
                np.divide(flux, weight, out=target, where=weight > 0)
            else:
                np.divide(flux, weight, out=target, where=weight > 0, dtype=np.float64,
                          casting="same_kind")
        return out


def chip_cr_mask(chip: Chip, median_path: str | os.PathLike, params: dict, *, sky: float = 0.0,
                 readnoise: float = 0.0, own=None, crp: CRParams | None = None,
                 maps: list | None = None) -> tuple[np.ndarray, int]:
    """Cosmic-ray mask of one chip against a median (blot, derivative, test).

    Parameters
    ----------
    chip : Chip
    median_path : path
    params : dict
        Layer parameters (``cr``, ``final_bits``, ``resetbits``, ``stepsize``).
    sky : float
        The exposure's sky offset as given to the median (e-/s per frame pixel).
    readnoise : float
        e-.
    own : Partial, PartialFile or path, optional
        The exposure's partial (on the median's frame's plane: its single image); required by
        the ``sampling`` method.
    crp : CRParams, optional
        Default: from ``params``.
    maps : list, optional
        If given, the blot's pixel map near the pixels that can be flagged is appended
        (:class:`mvmflow.crsubtract.KeptMap` or None), for the final drizzle by
        subtraction.

    Returns
    -------
    mask : numpy.ndarray
        bool, the chip's shape, True = cosmic ray.
    ntested : int
        Pixels tested.
    """
    crp = crp or cr_parameters(params)
    frame = median_frame(median_path)
    step = int(params.get("stepsize", DEFAULT_STEP))
    blotter = ChipBlotter(chip, frame, step=step)
    if blotter.box is None:
        if maps is not None:
            maps.append(None)
        return np.zeros(chip.shape, dtype=bool), 0
    model = blotter.blot(blotter.read(median_path), sky=sky, interp=crp.interp, overwrite=True)
    valid = model.valid
    testable = valid & _testable(chip, params)
    conv = np.float32(model.conversion)
    blot_e = model.data
    blot_e *= conv
    del model
    if crp.method == "sampling":
        if own is None:
            raise ValueError("the sampling cosmic-ray test needs the exposure's partial")
        if not isinstance(own, _Single):
            own = _Single(own, frame)
        # the upper envelope is defined where the median is (mvmflow.median): it is read
        # only for its blot, below
        own_image = own.window(blotter.box)
        own_valid = blotter.defined(own_image)
        testable &= own_valid
    data_e = np.where(testable, np.asarray(chip.data, dtype=np.float32) * conv, 0.0
                      ).astype(np.float32)
    # The test is decided at the pixels outside min(snr) noise of the model alone: the
    # model error (derivative, spread) and both passes are computed there (docs/speed.md,
    # "The cosmic-ray path (stop 30)")
    t1, noise = _residual(data_e, blot_e, readnoise)
    region = _outside(t1, noise, crp.snr)
    region &= testable
    at = np.flatnonzero(region)
    del region
    t1, noise = t1.ravel().take(at), noise.ravel().take(at)
    deriv = derivative_at(blot_e, at)
    if crp.method == "sampling":
        # Each of the sampling test's images is blotted only where it can change a flag
        # (docs/speed.md, "Cosmic-ray rejection"): the spread where a pixel is outside the
        # noise of the model, the own image and the upper envelope near the flagged pixels
        # the sampling test may clear.
        spread = blotter.read(median_path, "SPREAD")
        error, known = blotter.blot_at(spread, at, interp="linear", undefined=_UNKNOWN_SPREAD)
        del spread
        error *= conv
        error[~known] = np.inf
        np.minimum(deriv, error, out=error)
    else:
        error = deriv
    flagged = _reference_test_at(at, t1, noise, error, chip.shape, crp.snr, crp.scale)
    cr = np.zeros(chip.shape, dtype=bool)
    cr.ravel()[at[flagged]] = True
    if maps is not None:
        # the final drizzle's map near the flagged pixels (a superset of the mask's)
        maps.append(KeptMap.keep(blotter.pixmap, frame, blotter.box,
                                 bool_filter3(cr, np.logical_or), crp.grow, step))
    if crp.method == "sampling":
        steep = steep_model(deriv[flagged], blot_e.ravel().take(at[flagged]), readnoise,
                            crp.snr[0], crp.scale[0])
        suspects = at[flagged][steep]
        del t1, noise, error, deriv, flagged
        if suspects.size:
            mark = np.zeros(chip.shape, dtype=bool)
            mark.ravel()[suspects] = True
            near3, near5 = sampling_regions(mark)
            del mark
            own_at = _Points(np.flatnonzero(near3 & testable))
            own_at.values = blotter.blot_at(own_image, own_at.index, interp=crp.interp)[0]
            del own_image, near3
            upper_at = _Points(np.flatnonzero(near5))
            upper_at.values = blotter.blot_at(blotter.read(median_path, "UPPER"),
                                              upper_at.index, sky=sky, interp=crp.interp)[0]
            del near5
            own_at.values *= conv
            upper_at.values *= conv
            keep = _sampling_at(suspects, chip.shape, data_e.ravel().take,
                                blot_e.ravel().take, upper_at, own_at,
                                testable.ravel().take, readnoise, crp.snr,
                                crp.core_tolerance)
            cr.ravel()[suspects] = keep
    del blotter
    return grow_mask(cr, crp.grow), int(np.count_nonzero(testable))


def _reference_test_at(at: np.ndarray, t1: np.ndarray, noise: np.ndarray,
                       error: np.ndarray, shape: tuple[int, int],
                       snr: tuple[float, float], scale: tuple[float, float]) -> np.ndarray:
    """:func:`reference_test` decided at the testable pixels ``at`` (flat indices, sorted)
    outside ``min(snr)`` noise of the model (:func:`error_region`), from ``t1``, the noise
    and the model error there: whether each is flagged, to the bit.

    Elsewhere both passes hold whatever the error (:func:`error_region`), and untestable
    pixels pass by definition, so a pixel fails a pass only in ``at``: it is flagged when
    it fails the second pass and a pixel of its 3 x 3 box (edges reflected: a neighbour
    outside is the edge pixel) fails the first.
    """
    pass1, pass2 = _passes(t1, noise, error, snr, scale)
    fail1, fail2 = ~pass1, ~pass2
    seeds = np.zeros(shape, dtype=bool)
    seeds.ravel()[at[fail1]] = True
    candidates = np.flatnonzero(fail2)
    rows, cols = np.divmod(at[candidates], shape[1])
    near = np.zeros(candidates.size, dtype=bool)
    for dy in (-1, 0, 1):
        r = np.clip(rows + dy, 0, shape[0] - 1)
        for dx in (-1, 0, 1):
            near |= seeds[r, np.clip(cols + dx, 0, shape[1] - 1)]
    flagged = np.zeros(at.size, dtype=bool)
    flagged[candidates[near]] = True
    return flagged


class _Points:
    """A chip image blotted at some pixels alone (``values`` at the sorted flat indices
    ``index``), read by flat indices as :meth:`ChipBlotter.blot` with ``where`` would give
    it: 0 at the other pixels."""

    def __init__(self, index: np.ndarray):
        self.index = index
        self.values = np.zeros(index.size, dtype=np.float32)

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        if not self.index.size:
            return np.zeros(np.shape(flat), dtype=np.float32)
        pos = np.minimum(np.searchsorted(self.index, flat), self.index.size - 1)
        return np.where(self.index[pos] == flat, self.values[pos], np.float32(0.0))


def error_region(data: np.ndarray, blot: np.ndarray, readnoise: float,
                 snr: tuple[float, float] = (3.5, 3.0)) -> np.ndarray:
    """Where :func:`reference_test` reads its model error (for the sampling-aware test, the
    blotted spread): the pixels outside ``min(snr)`` noise of the model.

    Elsewhere both passes hold whatever the error (>= 0: the derivative and the spread
    are), computed by the same float32 expressions as :func:`reference_test`, so the bound
    is exact.
    """
    return _outside(*_residual(data, blot, readnoise), snr)


def sampling_regions(suspects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where :func:`sampling_test` reads the exposure's own image (the first array) and the
    upper envelope (the second), given its ``suspects``: the pixels flagged by
    :func:`reference_test` where the model is steep (:func:`steep_model`), the only ones
    whose flag it can clear.

    A suspect reads ``own`` and ``upper`` in its 3 x 3 neighbourhood, and ``upper`` in the
    3 x 3 neighbourhood of those for the peak test: 5 x 5. Elsewhere they change no result.
    """
    near3 = bool_filter3(suspects, np.logical_or)
    return near3, bool_filter3(near3, np.logical_or)


def cr_mask_exposure(exposure_path: str | os.PathLike, median_path: str | os.PathLike,
                     frame: Frame | None, params: dict, out_path: str | os.PathLike,
                     solution=None, sky: float = 0.0, readnoise: float | None = None,
                     partial=None) -> CRMaskInfo:
    """Find the cosmic rays of one exposure against the layer's median; write the mask file.

    Parameters
    ----------
    exposure_path : path
        The ``_flt.fits`` / ``_flc.fits`` file (read only).
    median_path : path
        The layer's median (:func:`mvmflow.median.median_layer`).
    frame : Frame or None
        The layer frame, checked against the median's (None: take the median's).
    params : dict
        Layer parameters: ``cr`` (snr, scale, grow, interp), ``final_bits``, ``resetbits``,
        ``stepsize``.
    out_path : path
        The mask file (written atomically; module notes).
    solution : dict, path or None
        The exposure's alignment solution (:func:`mvmflow.solution.apply_solution`), as used
        for its drizzle.
    sky : float
        The exposure's sky offset as given to the median (e-/s per frame pixel).
    readnoise : float, optional
        e-; default :func:`exposure_readnoise`.
    partial : Partial, PartialFile or path, optional
        The exposure's partial on the layer frame (its separate drizzle, as given to the
        median); used by the ``sampling`` method, which otherwise drizzles the exposure
        again.

    Returns
    -------
    CRMaskInfo
    """
    start = time.perf_counter()
    if frame is not None and median_frame(median_path) != frame:
        raise ValueError(f"{Path(median_path).name} is not on the given frame")
    chips, crp, readnoise, own = _mask_inputs(exposure_path, median_path, params, solution,
                                              readnoise, partial)
    masks, info = [], CRMaskInfo(Path(out_path), chips[0].filename)
    for chip in chips:
        mask, ntested = chip_cr_mask(chip, median_path, params, sky=sky, readnoise=readnoise,
                                     own=own, crp=crp)
        masks.append(mask)
        info.chips.append(_chip_record(chip, mask, ntested))
    write_cr_masks(out_path, chips, masks, median=Path(median_path).name, sky=sky,
                   readnoise=readnoise, crp=crp, tested=[c["ntested"] for c in info.chips])
    info.seconds = time.perf_counter() - start
    return info


def _mask_inputs(exposure_path, median_path, params: dict, solution, readnoise, partial):
    """The chips (aligned), test parameters, read noise and own single image of a mask."""
    crp = cr_parameters(params)
    chips = load_chips(exposure_path)
    if solution is not None:
        from mvmflow.solution import apply_solution

        chips = apply_solution(chips, solution)
    if readnoise is None:
        readnoise = exposure_readnoise(exposure_path)
    own = None
    if crp.method == "sampling":
        if partial is None:
            partial = drizzle_exposure(chips, median_frame(median_path), params)
        own = _Single(partial, median_frame(median_path))
        if own.filename != chips[0].filename:
            raise ValueError(f"partial of {own.filename} given for {chips[0].filename}")
    return chips, crp, readnoise, own


def _chip_record(chip: Chip, mask: np.ndarray, ntested: int) -> dict:
    record = {"extver": chip.extver, "ncr": int(np.count_nonzero(mask)), "ntested": ntested}
    log.info("%s[SCI,%d]: %d cosmic-ray pixels of %d tested", chip.filename, chip.extver,
             record["ncr"], ntested)
    return record


def cr_mask_and_drizzle(exposure_path: str | os.PathLike, median_path: str | os.PathLike,
                        map_frame: Frame, params: dict, map_params: dict,
                        mask_path: str | os.PathLike, *, solution=None, sky: float = 0.0,
                        readnoise: float | None = None, partial=None,
                        final: str = "subtract") -> tuple[CRMaskInfo, Partial | PartialPatch]:
    """Find an exposure's cosmic rays and drizzle it without them, chip by chip, in one pass.

    The same as :func:`cr_mask_exposure` followed by :func:`read_cr_masks` and
    :func:`mvmflow.resample.drizzle_exposure` with ``cr_masks`` (``final='drizzle'``: to
    the bit), with the exposure read once and in one process (one job instead of two).

    With ``final='subtract'`` (the default) the final partial is the separate one
    (``partial``) minus the drizzle of the masked pixels alone
    (:func:`mvmflow.crsubtract.subtract_masked`, with the blot's pixel map kept near the
    pixels that can be flagged): equal to the full drizzle to float32 rounding of the
    masked flux (docs/speed.md, "Cosmic-ray rejection"), at a fifth of its cost. Given
    as a file, the separate partial is read only at the pixels that change, and the final
    partial is a :class:`mvmflow.partials.PartialPatch` of it: those pixels alone. It
    drizzles again when ``partial`` is not the separate drizzle on ``map_frame`` with
    ``map_params``, or not given.

    With ``final='drizzle'`` each chip's pixel map is made twice, for the blot and for the
    drizzle, and not kept in between: keeping it saves about 0.7 s per 8 Mpx chip but adds
    its 134 MB to the job's peak (docs/data_path.md, "Pixel maps").

    Parameters
    ----------
    exposure_path, median_path, params, solution, sky, readnoise, partial
        As :func:`cr_mask_exposure` (``params``: the layer's parameters).
    map_frame : Frame
        The frame of the final drizzle (the exposure's box on the sky cell), on the median
        frame's grid.
    map_params : dict
        The parameters of the final drizzle (recorded in the partial).
    mask_path : path
        The mask file to write (atomically).
    final : {'subtract', 'drizzle'}
        How the final partial is made (above).

    Returns
    -------
    info : CRMaskInfo
    partial : Partial or PartialPatch
        The final partial (not written; :func:`mvmflow.partials.write_partial` writes
        either).
    """
    if final not in ("subtract", "drizzle"):
        raise ValueError(f"final must be 'subtract' or 'drizzle', not {final!r}")
    start = time.perf_counter()
    if partial is not None and not isinstance(partial, (Partial, PartialFile)):
        partial = PartialFile.open(partial)  # opened once, for the own image and the patch
    chips, crp, readnoise, own = _mask_inputs(exposure_path, median_path, params, solution,
                                              readnoise, partial)
    subtract = final == "subtract" and partial is not None
    masks, records, kept = [], [], [] if subtract else None
    for chip in chips:
        mask, ntested = chip_cr_mask(chip, median_path, params, sky=sky, readnoise=readnoise,
                                     own=own, crp=crp, maps=kept)
        masks.append(mask)
        records.append(_chip_record(chip, mask, ntested))
    out = None
    if subtract and isinstance(partial, Partial):
        out = subtract_masked(partial, chips, map_frame, map_params, masks, kept=kept)
    elif subtract:
        # the final partial as a patch of the separate one: only the pixels that change are
        # read and written (mvmflow.partials, "Patches"; docs/speed.md)
        changes = masked_changes(partial, chips, map_frame, map_params, masks,
                                 partial.read_points, kept=kept)
        if changes is not None:
            out = PartialPatch(partial, changes.rows, changes.cols, changes.flux,
                               changes.weight, changes.nchips, changes.chips,
                               dict(map_params))
    if out is None:
        out = drizzle_exposure(chips, map_frame, map_params, cr_masks=masks)
    info = CRMaskInfo(Path(mask_path), chips[0].filename, records)
    write_cr_masks(mask_path, chips, masks, median=Path(median_path).name, sky=sky,
                   readnoise=readnoise, crp=crp, tested=[c["ntested"] for c in records])
    info.seconds = time.perf_counter() - start
    return info, out


# --------------------------------------------------------------------------------------
# Mask files


def write_cr_masks(out_path: str | os.PathLike, chips: Sequence[Chip],
                   masks: Sequence[np.ndarray], *, median: str = "", sky: float = 0.0,
                   readnoise: float = 0.0, crp: CRParams | None = None,
                   tested: Sequence[int] | None = None) -> Path:
    """Write per-chip cosmic-ray masks (True = cosmic ray) as a mask file, atomically."""
    if len(chips) != len(masks):
        raise ValueError("write_cr_masks: one mask per chip")
    crp = crp or CRParams()
    total = int(sum(int(np.count_nonzero(m)) for m in masks))
    primary = fits.Header([
        ("MVMTYPE", "CRMASK", "cosmic-ray masks of one exposure"),
        ("CRMVER", CRMASK_VERSION, "mask file layout version"),
        ("FILENAME", chips[0].filename if chips else "", "exposure file"),
        # no comment: a layer's median file name leaves no room for one (astropy would
        # cut it, with a warning in the job's log)
        ("MEDIAN", median),
        ("SKY", float(sky), "[e-/s/frame px] sky added to blot"),
        ("READNSE", float(readnoise), "[e-] read noise used"),
        ("NCRPIX", total, "cosmic-ray pixels, all chips"),
    ])
    primary["CRPARAMS"] = json.dumps(crp.as_dict(), sort_keys=True)
    hdus = [fits.PrimaryHDU(header=primary)]
    for k, (chip, mask) in enumerate(zip(chips, masks, strict=True)):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(chip.shape):
            raise ValueError(f"mask of SCI,{chip.extver} has shape {mask.shape}, "
                             f"chip {chip.shape}")
        hdu = fits.ImageHDU(mask.astype(np.uint8), name="CRMASK", ver=int(chip.extver))
        hdu.header["NCRPIX"] = (int(np.count_nonzero(mask)), "cosmic-ray pixels")
        if tested is not None:
            hdu.header["NTESTED"] = (int(tested[k]), "pixels tested")
        hdus.append(hdu)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fits.HDUList(hdus).writeto(tmp, overwrite=True, output_verify="exception")
    return out_path


def read_cr_masks(path: str | os.PathLike, chips: Iterable[Chip]) -> list[np.ndarray | None]:
    """Masks for ``resample.drizzle_exposure(..., cr_masks=...)``: per chip, a bool array
    (True = cosmic ray, weight 0), or None for a chip the file has no mask for.

    Raises
    ------
    ValueError
        If the file is not a mask file, is for another exposure, or a shape differs.
    """
    chips = list(chips)
    out: list[np.ndarray | None] = []
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header
        if header.get("MVMTYPE") != "CRMASK":
            raise ValueError(f"{Path(path).name} is not an mvmflow cosmic-ray mask file")
        name = header.get("FILENAME", "")
        for chip in chips:
            if name and chip.filename and chip.filename != name:
                raise ValueError(f"{Path(path).name} holds the masks of {name}, "
                                 f"not {chip.filename}")
            try:
                data = hdul["CRMASK", int(chip.extver)].data
            except KeyError:
                out.append(None)
                continue
            mask = np.asarray(data) != 0
            if mask.shape != tuple(chip.shape):
                raise ValueError(f"{Path(path).name}[CRMASK,{chip.extver}] has shape "
                                 f"{mask.shape}, chip {chip.shape}")
            out.append(mask)
    return out


def union_cr_masks(paths: Iterable[str | os.PathLike], chips: Iterable[Chip]
                   ) -> list[np.ndarray | None] | None:
    """The union (logical or) of several mask files of one exposure, per chip.

    A custom mosaic's drizzle of an exposure uses the masks its sky-cell layers found (each
    covers the part of the exposure on its sky cell). None when ``paths`` is empty.
    """
    chips = list(chips)
    out = None
    for path in paths:
        masks = read_cr_masks(path, chips)
        if out is None:
            out = masks
            continue
        out = [b if a is None else a if b is None else (a | b)
               for a, b in zip(out, masks, strict=True)]
    return out
