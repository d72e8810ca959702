"""The median step of cosmic-ray rejection: combine the separately drizzled exposures.

The *separate drizzle* of an exposure onto a layer frame is exactly its partial
(:mod:`mvmflow.resample`): its single image is ``FLUX / WEIGHT`` over the partial's box
(AstroDrizzle's ``*_single_sci``, in e-/s, with ``WEIGHT`` its ``*_single_wht``: EXP weights
over good pixels). :func:`median_layer` combines those single images pixel by pixel into a
cosmic-ray-free model of the layer (AstroDrizzle's ``createMedian``, spec processing.md 1.7
"Other steps"; drizzlepac 3.11.0 ``createMedian._median`` and ``minmed.min_med``).

Per pixel, input ``i`` is *valid* when its weight is at least ``maskpt`` times the mean of
its weights over its covered pixels (AstroDrizzle's ``median_newmasks``: the threshold is
``combine_maskpt x`` the mean of the weight image above 1e-8, so partly covered edge pixels
and pixels with few good input pixels drop out). Where no input is valid but some cover the
pixel, every covering input is used instead (AstroDrizzle would write 0 there, which the blot
turns into false cosmic rays along chip edges); where none covers it the median is NaN.

Combinations (``cr.combine_type``):

``median``
    The median of the valid values after rejecting the ``nlow`` lowest and ``nhigh``
    highest; when fewer than one value would remain, ``nlow`` and ``nhigh`` are both lowered
    by one (if positive) until one remains. This is ``stsci.image.numcombine.num_combine``'s
    rule, checked against it in the tests. An even count averages the two middle values.
``mean``
    The mean of the same values.
``minmed``
    AstroDrizzle's default (``minmed.min_med``): a *median* (the mean of two valid values,
    or the median after rejecting the highest of three or more) and the *minimum* of the
    valid values; with ``W = sum of the weights``, the noise is
    ``rms = sqrt(median W + sum_i(w_i s_i) + sum_valid(rn_i**2))`` (``s_i`` the sky removed
    from input i, ``rn_i`` its read noise in e-), and the minimum is taken where
    ``minimum W < median W - nsigma1 rms``, or ``nsigma2`` within ``combine_grow`` pixels of
    such a pixel. So a cosmic ray in one input of two or three never enters the model.

    The reference decides "mean of two" versus "median without the highest" from the total
    number of inputs; here it is decided per pixel from the number of valid inputs, so a
    pixel covered by two exposures of a 20-exposure mosaic gets the mean of two, not their
    minimum. Where every input is valid (and there are three or more, or two) both agree;
    the tests compare against ``drizzlepac.minmed.min_med``.

Sky: the partials carry their sky (it is applied in the reduce); ``sky`` offsets, in the
partials' units (e-/s per output pixel, as :func:`mvmflow.combine.combine_partials`), are
subtracted from each single image before combining, as AstroDrizzle combines sky-subtracted
images. The blot adds an exposure's offset back.

**Memory.** The frame is processed in strips of rows; for each strip only the rows and
columns of each partial that fall in it (plus ``combine_grow`` rows of halo for minmed's
neighbourhood test) are read, by :meth:`mvmflow.partials.PartialFile.read_arrays` (the
partial file's one reader, docs/conventions.md "One owner per file type"; no whole-array
reads, no open file handles kept). A strip holds ``n_inputs x rows x width`` values,
weights and masks plus per-pixel work arrays; ``strip_rows`` defaults to what fits
``max_memory_mb``. The output file is preallocated and written strip by strip (seek and
write, no memory map), so a job's memory is one strip's working set plus the interpreter:
three ACS/WFC full-frame exposures on a 7306 x 6746 frame took 13 s and 315 MB peak RSS with
the default 256 MB budget (263 MB with 64 MB; about 100 MB of it is Python and its
libraries; measured with partial layout 1). The result does not depend on the
strip height (the tests check it bit for bit): every per-pixel sum runs sequentially over
the inputs in file-name order, and the halo makes the neighbourhood test exact.

**Median file** (:func:`median_layer`): PRIMARY (``MVMTYPE='MEDIAN'``, the frame (``PCELL
PSCALE FRCRPIX1/2 FRNAXIS1/2``), the parameters, ``NINPUTS``), INPUTS (a table: ``file``,
``exptime``, ``mean_weight``, ``threshold``, ``sky``, ``readnoise``, ``box_x0``, ``box_y0``,
``box_nx``, ``box_ny`` in the frame), MEDIAN (float32 e-/s per frame pixel, NaN where no input
covers; the frame's TAN WCS), UPPER and SPREAD (float32, :func:`envelope`: the second-
highest valid value and its distance to the lowest, used by the sampling-aware cosmic-ray
test; UPPER is NaN exactly where MEDIAN is, SPREAD also where fewer than three inputs are
valid), NINPUT (valid inputs per pixel; uint8, or int16 beyond 255 inputs), each with the
frame's TAN WCS. Deterministic: no dates are written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from mvmflow.crparams import CRParams, cr_parameters
from mvmflow.filters import bool_filter3
from mvmflow.grid import Frame
from mvmflow.integrity import FITS_BLOCK
from mvmflow.partials import PartialFile
from mvmflow.workflow import atomic_path

__all__ = [
    "MEDIAN_VERSION",
    "MedianInfo",
    "masked_mean",
    "masked_median",
    "median_frame",
    "median_layer",
    "envelope",
    "min_med",
    "read_median",
]

log = logging.getLogger(__name__)

MEDIAN_VERSION = 1
"""Layout version of median files (primary keyword ``MEDVER``)."""

WEIGHT_FLOOR = 1e-8
"""Weights below this do not count as covered (AstroDrizzle's ``ImageStats(lower=1e-8)``)."""

_STAT_ROWS = 256  # row block for the weight statistics (fixed: results must not depend on it)
_BYTES_PER_VALUE = 18  # value + weight + mask + two sorted copies, per input and pixel
_BYTES_PER_PIXEL = 160  # per-pixel work arrays (float64 sums, sort indices...)


# --------------------------------------------------------------------------------------
# Combinations (pure functions on stacks of shape (n, ny, nx))


def _effective_rejection(ngood: np.ndarray, nlow: int, nhigh: int):
    """Per pixel ``(nlow, nhigh)`` after numcombine's rule (lower both until one remains)."""
    nl = np.full(ngood.shape, int(nlow), dtype=np.int64)
    nh = np.full(ngood.shape, int(nhigh), dtype=np.int64)
    while True:
        over = (ngood - nl - nh < 1) & (ngood > 0) & ((nl > 0) | (nh > 0))
        if not over.any():
            return nl, nh
        nl -= over & (nl > 0)
        nh -= over & (nh > 0)


_NETWORK_MAX = 8  # stacks of up to this many inputs are sorted by compare-exchanges


def _sort_stack(work: np.ndarray) -> None:
    """Sort a stack ``(n, ...)`` along axis 0, in place.

    For a few inputs, by an odd-even transposition network (``n`` rounds of element-wise
    minimum and maximum of neighbouring planes): the same values in the same places as
    ``sort(axis=0)`` (a 0 and a -0, equal, may trade places), which sorts each pixel's short
    column on its own and took a third of a full-frame median job (docs/speed.md,
    "Catalogues, rings and medians"). With NaNs (which ``sort`` puts last and a minimum
    would spread) or more inputs: ``sort``.
    """
    n = work.shape[0]
    if n > _NETWORK_MAX or np.isnan(work).any():
        work.sort(axis=0)
        return
    low = np.empty_like(work[0])
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            np.minimum(work[i], work[i + 1], out=low)
            np.maximum(work[i], work[i + 1], out=work[i + 1])
            np.copyto(work[i], low)


def _sorted_valid(values: np.ndarray, bad: np.ndarray, in_place: bool = False):
    """Values sorted along axis 0 with the bad ones last (as +inf), and the valid counts
    (int16 for fewer than 2**15 inputs). ``in_place``: sort ``values`` itself (float32)."""
    if in_place and values.dtype == np.float32:
        work = values
        np.copyto(work, np.float32(np.inf), where=bad)
    else:
        work = np.where(bad, np.float32(np.inf), values.astype(np.float32, copy=False))
    _sort_stack(work)
    count = np.int16 if bad.shape[0] < 2**15 else np.int64
    ngood = count(bad.shape[0]) - bad.sum(axis=0, dtype=count)
    return work, ngood


def masked_median(values: np.ndarray, bad: np.ndarray, nlow: int = 0, nhigh: int = 0,
                  presorted=None) -> tuple[np.ndarray, np.ndarray]:
    """Median over axis 0 of the valid values, after min/max rejection.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n, ny, nx)`` finite values.
    bad : numpy.ndarray
        ``(n, ny, nx)`` bool, True where a value is excluded.
    nlow, nhigh : int
        Lowest / highest valid values rejected per pixel (numcombine's rule when fewer than
        one would remain; module notes).
    presorted : tuple, optional
        ``_sorted_valid(values, bad)`` when the caller has it (read, not modified); the
        other combinations and :func:`envelope` take it too, so a strip is sorted once.

    Returns
    -------
    median : numpy.ndarray
        float32 ``(ny, nx)``; NaN where no value is valid.
    ngood : numpy.ndarray
        Valid values per pixel.
    """
    work, ngood = _sorted_valid(values, bad) if presorted is None else presorted
    nl, nh = _effective_rejection(ngood, nlow, nhigh)
    m = np.maximum(ngood - nl - nh, 1)
    lo = _select(work, nl + (m - 1) // 2).astype(np.float64)
    hi = _select(work, nl + m // 2).astype(np.float64)
    del work
    out = (0.5 * (lo + hi)).astype(np.float32)
    out[ngood == 0] = np.nan
    return out, ngood


def masked_mean(values: np.ndarray, bad: np.ndarray, nlow: int = 0, nhigh: int = 0,
                presorted=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 of the valid values after min/max rejection (as :func:`masked_median`)."""
    work, ngood = _sorted_valid(values, bad) if presorted is None else presorted
    nl, nh = _effective_rejection(ngood, nlow, nhigh)
    total = np.zeros(ngood.shape, dtype=np.float64)
    for j in range(work.shape[0]):
        keep = (j >= nl) & (j < ngood - nh)
        total += np.where(keep, work[j], 0.0)
    count = np.maximum(ngood - nl - nh, 1)
    out = (total / count).astype(np.float32)
    out[ngood == 0] = np.nan
    return out, ngood


def envelope(values: np.ndarray, bad: np.ndarray, presorted=None
             ) -> tuple[np.ndarray, np.ndarray]:
    """What the other exposures support at each pixel: the upper envelope and the spread.

    Parameters
    ----------
    values, bad : numpy.ndarray
        As :func:`masked_median`.

    Returns
    -------
    upper : numpy.ndarray
        float32: the second-highest valid value (the highest when one is valid), NaN where
        none is. Whichever input is tested, some *other* input reaches at least ``upper``
        when the tested one is the highest, and the tested one is below it otherwise.
    spread : numpy.ndarray
        float32: ``upper`` minus the lowest valid value with three or more valid inputs (how
        much inputs without the highest disagree: sampling differences at star cores, noise
        elsewhere); NaN with fewer (unknown).
    """
    work, ngood = _sorted_valid(values, bad) if presorted is None else presorted
    upper = _select(work, np.maximum(ngood - 2, 0)).astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        spread = (upper - work[0]).astype(np.float32)
    upper[ngood == 0] = np.nan
    spread[ngood < 3] = np.nan
    return upper, spread


def _sequential_sum(stack: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Sum over axis 0 in input order, in float64 (so the result does not depend on how many
    all-zero inputs a strip holds)."""
    total = np.zeros(stack.shape[1:], dtype=np.float64)
    for j in range(stack.shape[0]):
        if where is None:
            total += stack[j]
        else:
            total += np.where(where[j], stack[j], 0.0)
    return total


def min_med(values: np.ndarray, bad: np.ndarray, weights: np.ndarray,
            readnoise: Sequence[float], sky: Sequence[float],
            nsigma: tuple[float, float] = (4.0, 3.0), grow: int = 1, presorted=None
            ) -> tuple[np.ndarray, np.ndarray]:
    """AstroDrizzle's minmed combination (module notes), pixel by pixel.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n, ny, nx)`` single-image values (e-/s), sky offsets removed.
    bad : numpy.ndarray
        ``(n, ny, nx)`` bool, True where an input is not valid.
    weights : numpy.ndarray
        ``(n, ny, nx)`` drizzle weights (EXP: seconds), 0 where an input does not cover.
    readnoise : sequence of float
        Read noise of each input (e-).
    sky : sequence of float
        Sky removed from each input (e-/s per output pixel).
    nsigma : tuple of float
        Thresholds alone and next to a pixel where the minimum was taken.
    grow : int
        Radius of that neighbourhood (0: single pass).

    Returns
    -------
    combined : numpy.ndarray
        float32 ``(ny, nx)``, NaN where no input is valid.
    ngood : numpy.ndarray
        Valid inputs per pixel.
    """
    n = values.shape[0]
    work, ngood = _sorted_valid(values, bad) if presorted is None else presorted
    # "median": the mean of two valid values, else the median without the highest:
    # numcombine's rule for nlow 0, nhigh 1 (_effective_rejection) keeps m values, m =
    # ngood - 1 from three valid values on, else ngood (at least 1)
    m = ngood - (ngood >= 3)
    np.maximum(m, 1, out=m)
    median = _select(work, (m - 1) // 2).astype(np.float64)
    median += _select(work, m // 2)
    median *= 0.5
    median = median.astype(np.float32)
    del m
    minimum = work[0].copy()
    del work
    none = ngood == 0
    median[none] = 0.0
    minimum[none] = 0.0
    wsum = _sequential_sum(weights)
    skies = np.asarray(sky, dtype=np.float64)
    level = median * wsum  # the median in electrons
    min_w = minimum * wsum
    rms = np.zeros(wsum.shape, dtype=np.float64)  # the background, then the variance
    for j in range(n):
        if skies[j]:
            rms += weights[j] * skies[j]
    rms = np.add(level, rms, out=rms)  # (level + background) + read noise: in this order
    rns = np.asarray(readnoise, dtype=np.float64) ** 2
    rn2 = np.zeros(wsum.shape, dtype=np.float64)
    for j in range(n):
        np.add(rn2, rns[j], out=rn2, where=~bad[j])
    del wsum
    rms += rn2
    del rn2
    np.fmax(rms, 0.0, out=rms)
    np.sqrt(rms, out=rms)
    threshold = level - nsigma[0] * rms
    if grow:
        flagged = min_w < threshold
        if int(grow) == 1:  # a 3 x 3 maximum: the same for any edge mode
            near = bool_filter3(flagged, np.logical_or)
        else:
            near = ndimage.maximum_filter(flagged, size=2 * int(grow) + 1, mode="constant",
                                          cval=False)
        del flagged
        at = np.flatnonzero(near)  # few: next to the minima taken
        threshold.ravel()[at] = level.ravel()[at] - nsigma[1] * rms.ravel()[at]
    out = np.where(min_w < threshold, minimum, median).astype(np.float32)
    out[none] = np.nan
    return out, ngood


def _select(work: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``work[index[y, x], y, x]``: a value of each pixel's sorted column, by one masked copy
    per index value in use (few: the index is a rank among a few inputs), faster than a
    fancy gather of the whole stack."""
    out = work[0].copy()
    top = int(index.max(initial=0))
    for k in range(1, top + 1):
        np.copyto(out, work[k], where=index == k)
    return out


def _combine(values, bad, weights, crp: CRParams, readnoise, sky, presorted=None):
    if crp.combine_type == "minmed":
        return min_med(values, bad, weights, readnoise, sky, crp.nsigma, crp.combine_grow,
                       presorted=presorted)
    if crp.combine_type == "median":
        return masked_median(values, bad, crp.nlow, crp.nhigh, presorted=presorted)
    return masked_mean(values, bad, crp.nlow, crp.nhigh, presorted=presorted)


# --------------------------------------------------------------------------------------
# Reading partials by rows


@dataclass
class _Input:
    """One partial file as the median step reads it."""

    file: PartialFile
    ox: int  # box origin in the median frame
    oy: int
    mean_weight: float = 0.0
    sky: float = 0.0
    readnoise: float = 0.0

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def filename(self) -> str:
        return self.file.filename

    @property
    def exptime(self) -> float:
        return self.file.exptime

    @property
    def nx(self) -> int:
        return self.file.box.nx

    @property
    def ny(self) -> int:
        return self.file.box.ny

    def read(self, rows: tuple[int, int], cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """``(flux, weight)`` over box rows ``rows[0]:rows[1]`` and columns ``cols``."""
        arrays = self.file.read_arrays(("flux", "weight"), slice(*rows), cols)
        return arrays["flux"], arrays["weight"]


def _open_input(path: Path, frame: Frame) -> _Input | None:
    pf = PartialFile.open(path)
    if pf.empty:
        return None
    ox, oy = pf.placement(frame)
    return _Input(file=pf, ox=ox, oy=oy)


def _own_reader(inp: _Input) -> _Input:
    """``inp`` with a reader of its own, for another thread (a :class:`PartialFile`'s chunk
    cache is not shared)."""
    return replace(inp, file=PartialFile.open(inp.path))


def _mean_weight(inp: _Input) -> float:
    """Mean of the partial's weights >= 1e-8 (row blocks of fixed height)."""
    total, count = 0.0, 0
    for r0 in range(0, inp.ny, _STAT_ROWS):
        w = inp.file.rows(r0, min(r0 + _STAT_ROWS, inp.ny), ("weight",))["weight"]
        covered = w >= WEIGHT_FLOOR
        total += float(w[covered].astype(np.float64).sum())
        count += int(np.count_nonzero(covered))
    return total / count if count else 0.0


def _mean_weights(inputs: Sequence[_Input], workers: int) -> list[float]:
    """:func:`_mean_weight` of each input, ``workers`` at a time in threads (each input with
    its own reader)."""
    if workers <= 1 or len(inputs) <= 1:
        return [_mean_weight(inp) for inp in inputs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda i: _mean_weight(_own_reader(i)), inputs))


def _per_input(value, inputs: Sequence[_Input], what: str) -> list[float]:
    if value is None:
        return [0.0] * len(inputs)
    if isinstance(value, Mapping):
        return [float(value.get(i.filename, value.get(str(i.path), 0.0)) or 0.0)
                for i in inputs]
    if np.isscalar(value):
        return [float(value)] * len(inputs)
    raise ValueError(f"{what}: expected a number or a mapping of file name to number")


# --------------------------------------------------------------------------------------
# The median file


def _image_header(name: str, dtype, frame: Frame, bunit: str) -> fits.Header:
    hdu = fits.ImageHDU(data=np.zeros((1, 1), dtype=dtype), name=name)
    header = hdu.header.copy()
    header["NAXIS1"] = frame.nx
    header["NAXIS2"] = frame.ny
    wcs = frame.header()
    for key in ("NAXIS1", "NAXIS2"):
        del wcs[key]
    header.extend(wcs)
    header["BUNIT"] = bunit
    return header


def _allocate(path: Path, headers: Sequence[fits.Header], shape) -> list[int]:
    """Append image HDUs (header + zero data, padded to FITS blocks) to ``path``; return the
    byte offsets of their data. The data are written later, strip by strip (no memory map:
    written pages would count as the job's memory)."""
    offsets = []
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        for header in headers:
            f.write(header.tostring().encode("ascii"))
            start = f.tell()
            nbytes = shape[0] * shape[1] * abs(int(header["BITPIX"])) // 8
            f.truncate(start + math.ceil(nbytes / FITS_BLOCK) * FITS_BLOCK)
            f.seek(0, os.SEEK_END)
            offsets.append(start)
    return offsets


def _write_rows(f, offset: int, r0: int, rows: np.ndarray, dtype) -> None:
    """Write rows ``r0:`` of an image whose data start at ``offset`` (big-endian)."""
    data = np.ascontiguousarray(rows, dtype=np.dtype(dtype).newbyteorder(">"))
    f.seek(offset + r0 * data.shape[1] * data.itemsize)
    f.write(data)  # its buffer: no copy


@dataclass
class MedianInfo:
    """What :func:`median_layer` did.

    Attributes
    ----------
    path : Path
        The median file.
    ninputs : int
        Partials used (empty ones and ones off the frame are skipped).
    strip_rows : int
        Rows per strip.
    nstrips : int
    covered : int
        Frame pixels with at least one valid input.
    seconds : float
        Wall time.
    peak_strip_mb : float
        Estimated largest strip working set (MB).
    """

    path: Path
    ninputs: int
    strip_rows: int
    nstrips: int
    covered: int
    seconds: float
    peak_strip_mb: float


def _strip_rows(frame: Frame, n: int, halo: int, max_memory_mb: float) -> int:
    per_row = frame.nx * (_BYTES_PER_VALUE * max(n, 1) + _BYTES_PER_PIXEL)
    rows = int(max_memory_mb * 2**20 // per_row) - 2 * halo
    return max(1, min(rows, frame.ny))


def median_layer(partial_paths: Sequence[str | os.PathLike], frame: Frame, params: Mapping,
                 out_path: str | os.PathLike, *, sky: Mapping | float | None = None,
                 readnoise: Mapping | float | None = None, strip_rows: int | None = None,
                 max_memory_mb: float = 256.0, threads: int = 1) -> MedianInfo:
    """Combine the single images of a layer's partials into its median image, strip by strip.

    Parameters
    ----------
    partial_paths : sequence of path
        Partial files (:func:`mvmflow.partials.write_partial`) of the layer's exposures, on
        the projection-cell plane and scale of ``frame``; any order (they are used in file-
        name order).
    frame : Frame
        The layer frame; the median covers it.
    params : mapping
        Layer parameters; their ``cr`` entry (:func:`mvmflow.crparams.cr_parameters`) gives
        ``combine_type``, ``nlow``, ``nhigh``, ``maskpt``, ``nsigma``, ``combine_grow``.
    out_path : path
        The median FITS file (written atomically).
    sky : mapping or float, optional
        Sky offset per exposure file name (e-/s per output pixel, as
        :func:`mvmflow.combine.combine_partials`), subtracted before combining; default 0.
    readnoise : mapping or float, optional
        Read noise per exposure file name, e- (:func:`mvmflow.crreject.exposure_readnoise`),
        for minmed's noise model; default 0 (then faint cosmic rays are more often taken for
        noise... and noise for a minimum: pass it).
    strip_rows : int, optional
        Frame rows per strip; default: as many as fit in ``max_memory_mb``.
    max_memory_mb : float
        Working-set budget of the strips in progress when ``strip_rows`` is not given.
    threads : int
        Strips computed at once, each in a thread with its own readers of the partials
        (numpy and zlib release the interpreter lock); the file is the same, to the byte,
        for any number (docs/speed.md, "Threads").

    Returns
    -------
    MedianInfo
    """
    start = time.perf_counter()
    crp = cr_parameters(params)
    paths = [Path(p) for p in partial_paths]
    inputs = []
    for path in paths:
        inp = _open_input(path, frame)
        if inp is None:
            log.info("%s: empty partial, not used", path.name)
            continue
        if (inp.ox >= frame.nx or inp.oy >= frame.ny or inp.ox + inp.nx <= 0
                or inp.oy + inp.ny <= 0):
            log.info("%s: off the frame, not used", path.name)
            continue
        inputs.append(inp)
    inputs.sort(key=lambda i: (i.filename, str(i.path)))
    names = [i.filename for i in inputs]
    if len(set(names)) != len(names):
        raise ValueError(f"median_layer: an exposure appears twice in {names}")
    workers = max(1, int(threads))
    for inp, s, rn, mean in zip(inputs, _per_input(sky, inputs, "sky"),
                                _per_input(readnoise, inputs, "readnoise"),
                                _mean_weights(inputs, workers), strict=True):
        inp.sky, inp.readnoise, inp.mean_weight = s, rn, mean
    halo = crp.combine_grow if crp.combine_type == "minmed" else 0
    if strip_rows is None:
        strip_rows = _strip_rows(frame, len(inputs), halo, max_memory_mb / workers)
    strip_rows = int(strip_rows)
    if strip_rows < 1:
        raise ValueError(f"strip_rows must be >= 1, got {strip_rows}")
    nin_dtype = np.uint8 if len(inputs) <= 255 else np.int16

    primary = fits.Header([
        ("MVMTYPE", "MEDIAN", "cosmic-ray-free model of a layer"),
        ("MEDVER", MEDIAN_VERSION, "median file layout version"),
        *frame.header_cards(),
        ("NINPUTS", len(inputs), "partials combined"),
        ("COMBTYPE", crp.combine_type, "combination"),
        ("NLOW", crp.nlow, "lowest valid values rejected (median, mean)"),
        ("NHIGH", crp.nhigh, "highest valid values rejected (median, mean)"),
        ("MASKPT", crp.maskpt, "valid: weight >= MASKPT x mean weight"),
        ("NSIGMA1", crp.nsigma[0], "minmed significance"),
        ("NSIGMA2", crp.nsigma[1], "minmed significance next to a minimum"),
        ("COMBGROW", crp.combine_grow, "minmed neighbourhood radius"),
        ("BUNIT", "ELECTRONS/S", "per frame pixel"),
    ])
    primary["CRPARAMS"] = json.dumps(crp.as_dict(), sort_keys=True)
    table = Table({
        "file": [i.filename for i in inputs],
        "exptime": np.array([i.exptime for i in inputs], dtype=np.float64),
        "mean_weight": np.array([i.mean_weight for i in inputs], dtype=np.float64),
        "threshold": np.array([crp.maskpt * i.mean_weight for i in inputs], dtype=np.float64),
        "sky": np.array([i.sky for i in inputs], dtype=np.float64),
        "readnoise": np.array([i.readnoise for i in inputs], dtype=np.float64),
        "box_x0": np.array([i.ox for i in inputs], dtype=np.int64),
        "box_y0": np.array([i.oy for i in inputs], dtype=np.int64),
        "box_nx": np.array([i.nx for i in inputs], dtype=np.int64),
        "box_ny": np.array([i.ny for i in inputs], dtype=np.int64),
    })
    table_hdu = fits.BinTableHDU(table, name="INPUTS")

    out_path = Path(out_path)
    nstrips, covered, peak = 0, 0, 0.0
    with atomic_path(out_path) as tmp:
        fits.HDUList([fits.PrimaryHDU(header=primary), table_hdu]).writeto(tmp, overwrite=True)
        dtypes = [np.float32, np.float32, np.float32, nin_dtype]
        offsets = _allocate(
            tmp, [_image_header(name, np.float32, frame, "ELECTRONS/S")
                  for name in ("MEDIAN", "UPPER", "SPREAD")]
            + [_image_header("NINPUT", nin_dtype, frame, "INPUTS")], frame.shape)
        with open(tmp, "r+b") as f:
            ranges = [(r0, min(r0 + strip_rows, frame.ny))
                      for r0 in range(0, frame.ny, strip_rows)]
            for (r0, _), (*images, mb) in zip(
                    ranges, _strips(inputs, frame, crp, ranges, halo, workers), strict=True):
                for offset, image, dtype in zip(offsets, images, dtypes, strict=True):
                    _write_rows(f, offset, r0, image, dtype)
                covered += int(np.count_nonzero(images[3]))
                peak = max(peak, mb)
                nstrips += 1
    seconds = time.perf_counter() - start
    log.info("median of %d inputs over %dx%d in %d strips of %d rows: %.1f s",
             len(inputs), frame.nx, frame.ny, nstrips, strip_rows, seconds)
    return MedianInfo(out_path, len(inputs), strip_rows, nstrips, covered, seconds, peak)


def _strips(inputs: Sequence[_Input], frame: Frame, crp: CRParams,
            ranges: Sequence[tuple[int, int]], halo: int, workers: int):
    """:func:`_strip` of each row range, in order; ``workers`` at a time in threads, each
    thread with its own :class:`PartialFile` readers (their chunk caches are not shared)."""
    if workers <= 1 or len(ranges) <= 1:
        for r0, r1 in ranges:
            yield _strip(inputs, frame, crp, r0, r1, halo)
        return
    local = threading.local()

    def one(r0: int, r1: int):
        if not hasattr(local, "inputs"):
            local.inputs = [_own_reader(i) for i in inputs]
        return _strip(local.inputs, frame, crp, r0, r1, halo)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        todo = iter(ranges)
        for r0, r1 in todo:
            pending.append(pool.submit(one, r0, r1))
            if len(pending) == workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:  # at most ``workers`` strips in memory at once
                pending.append(pool.submit(one, *nxt))
            yield result


def _strip(inputs: Sequence[_Input], frame: Frame, crp: CRParams, r0: int, r1: int,
           halo: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Median and valid counts of frame rows ``r0:r1`` (full frame width)."""
    a0, a1 = max(r0 - halo, 0), min(r1 + halo, frame.ny)
    median = np.full((r1 - r0, frame.nx), np.nan, dtype=np.float32)
    upper = np.full((r1 - r0, frame.nx), np.nan, dtype=np.float32)
    spread = np.full((r1 - r0, frame.nx), np.nan, dtype=np.float32)
    ngood = np.zeros((r1 - r0, frame.nx), dtype=np.int64)
    active = [i for i in inputs if i.oy < a1 and i.oy + i.ny > a0
              and i.ox < frame.nx and i.ox + i.nx > 0]
    if not active:
        return median, upper, spread, ngood, 0.0
    x_lo = max(min(i.ox for i in active), 0)
    x_hi = min(max(i.ox + i.nx for i in active), frame.nx)
    shape = (len(active), a1 - a0, x_hi - x_lo)
    values = np.zeros(shape, dtype=np.float32)
    weights = np.zeros(shape, dtype=np.float32)
    bad = np.ones(shape, dtype=bool)
    for j, inp in enumerate(active):
        y0, y1 = max(a0, inp.oy), min(a1, inp.oy + inp.ny)
        x0, x1 = max(x_lo, inp.ox), min(x_hi, inp.ox + inp.nx)
        rows = (y0 - inp.oy, y1 - inp.oy)
        cols = slice(x0 - inp.ox, x1 - inp.ox)
        f, w = inp.read(rows, cols)
        dst = (j, slice(y0 - a0, y1 - a0), slice(x0 - x_lo, x1 - x_lo))
        # the single image FLUX / WEIGHT in float64 where covered, less the sky, rounded to
        # float32; 0 (values and weights are zeros) where not covered or not finite
        covered = w >= WEIGHT_FLOOR
        sci = np.divide(f, w, out=None, where=covered, dtype=np.float64)
        covered &= np.isfinite(sci)
        if inp.sky:
            np.subtract(sci, inp.sky, out=sci, where=covered)
        np.copyto(values[dst], sci, where=covered, casting="same_kind")
        np.copyto(weights[dst], w, where=covered)
        bad[dst] = ~(covered & (w >= crp.maskpt * inp.mean_weight))
    # no valid input but some covering ones: use the covering ones
    fallback = np.flatnonzero(bad.all(axis=0) & (weights > 0).any(axis=0))
    if fallback.size:
        flat = bad.reshape(len(active), -1)
        flat[:, fallback] = ~(weights.reshape(len(active), -1)[:, fallback] > 0)
    mb = (values.nbytes * 3 + bad.nbytes + values[0].size * _BYTES_PER_PIXEL) / 2**20
    # sorted once (in place: the values are not read again) for the combination and the
    # envelope (each pixel on its own, so the envelope's rows without the halo are those
    # rows of the whole sort)
    work, counts = _sorted_valid(values, bad, in_place=True)
    combined, good = _combine(values, bad, weights, crp, [i.readnoise for i in active],
                              [i.sky for i in active], presorted=(work, counts))
    keep = slice(r0 - a0, r1 - a0)
    median[:, x_lo:x_hi] = combined[keep]
    ngood[:, x_lo:x_hi] = good[keep]
    env_upper, env_spread = envelope(values[:, keep], bad[:, keep],
                                     presorted=(work[:, keep], counts[keep]))
    del work, counts
    upper[:, x_lo:x_hi] = env_upper
    spread[:, x_lo:x_hi] = env_spread
    return median, upper, spread, ngood, mb


# --------------------------------------------------------------------------------------
# Reading the median


def median_frame(path: str | os.PathLike) -> Frame:
    """The frame of a median file (header only)."""
    header = fits.getheader(path, 0)
    if header.get("MVMTYPE") != "MEDIAN":
        raise ValueError(f"{Path(path).name} is not an mvmflow median (MVMTYPE)")
    if header.get("MEDVER") != MEDIAN_VERSION:
        raise ValueError(f"{Path(path).name}: median layout version {header.get('MEDVER')}, "
                         f"expected {MEDIAN_VERSION}")
    return Frame.from_header(header)


def read_median(path: str | os.PathLike, box: tuple[int, int, int, int] | None = None,
                extname: str = "MEDIAN") -> np.ndarray:
    """Read a median file's image, or only a box of it (section read).

    Parameters
    ----------
    path : path
    box : tuple of int, optional
        ``(x0, y0, nx, ny)`` in frame pixels; parts outside the frame are NaN (images) or 0
        (NINPUT). Default: the whole frame.
    extname : str
        ``MEDIAN``, ``UPPER``, ``SPREAD`` or ``NINPUT``.

    Returns
    -------
    numpy.ndarray
        Native byte order; float32 (images) or integers (NINPUT).
    """
    frame = median_frame(path)
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        hdu = hdul[extname]
        if box is None:
            data = np.array(hdu.data)
            return data.astype(data.dtype.newbyteorder("="))
        x0, y0, nx, ny = (int(v) for v in box)
        floating = extname != "NINPUT"
        fill = np.nan if floating else 0
        dtype = np.float32 if floating else hdu.data.dtype.newbyteorder("=")
        out = np.full((ny, nx), fill, dtype=dtype)
        xa, xb = max(x0, 0), min(x0 + nx, frame.nx)
        ya, yb = max(y0, 0), min(y0 + ny, frame.ny)
        if xb > xa and yb > ya:
            stored = _STORED.get(hdu.header["BITPIX"])
            if hdu.header.get("BSCALE", 1) == 1 and hdu.header.get("BZERO", 0) == 0 and stored:
                _read_rows(path, hdu.fileinfo()["datLoc"], np.dtype(stored), frame.nx,
                           (ya, yb), (xa, xb), out[ya - y0:yb - y0, xa - x0:xb - x0])
            else:
                out[ya - y0:yb - y0, xa - x0:xb - x0] = hdu.section[ya:yb, xa:xb]
        return out


_STORED = {8: "u1", 16: ">i2", 32: ">i4", -32: ">f4", -64: ">f8"}  # FITS BITPIX
_READ_ROWS = 256


def _read_rows(path, offset: int, stored: np.dtype, width: int, rows: tuple[int, int],
               cols: tuple[int, int], out: np.ndarray) -> None:
    """Columns ``cols`` of image rows ``rows`` into ``out``, read with ``pread`` in blocks of
    whole rows through one small buffer: astropy's section reads row by row (0.1-1 s for a
    full-frame chip's box, 0.03 s so), and a memory map would count the file's pages in
    the job's peak memory."""
    buf = np.empty((_READ_ROWS, width), dtype=stored)
    fd = os.open(path, os.O_RDONLY)
    try:
        for r0 in range(rows[0], rows[1], _READ_ROWS):
            k = min(_READ_ROWS, rows[1] - r0)
            view = memoryview(buf[:k]).cast("B")
            if os.preadv(fd, [view], offset + r0 * width * stored.itemsize) != view.nbytes:
                raise ValueError(f"{Path(path).name}: truncated median file")
            out[r0 - rows[0]:r0 - rows[0] + k] = buf[:k, cols[0]:cols[1]]
    finally:
        os.close(fd)
