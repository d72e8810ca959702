"""Local peaks of an image above a threshold, as photutils finds them, at a fraction of the cost.

``photutils.detection.find_peaks`` (and ``DAOStarFinder``, which calls it on its convolved
image) marks a pixel as a peak when it equals the maximum of the image over a footprint
centred on it (``scipy.ndimage.maximum_filter``, values outside the image taken as 0), is
above the threshold, is not masked and is not within the border. photutils 3 computes two
box maximum filters of the whole image and then checks, in a Python loop, every pixel
that is the maximum of the smaller box but not of the larger one: on a full ACS/WFC chip
about 114,000 pixels, mostly noise far below the threshold (1.1 s of a 2.9 s chip).

:func:`local_peaks` gives the same pixels in the same order by looking only where a peak can
be: above the threshold and a maximum of its own 3 x 3 box (every footprint used here holds
that box, so every peak is one). Those few candidates are then checked against the whole
footprint, offset by offset, with the image's edge counting as 0 as in photutils.
:func:`daofind_peaks` reads a ``DAOStarFinder``'s footprint, threshold and border, so its
peaks can be handed back to it (its ``xycoords``) for the same catalogue
(docs/speed.md, "Catalogues, rings and medians"; tests/test_peaks.py compares both
with photutils).

**photutils' fast path misses peaks of an even footprint.** A non-integer radius (such as
DAOStarFinder's default ``min_separation``, 2.5 x FWHM = 5.25 px for ACS/WFC) makes an
even-sized footprint whose centre is off by half a pixel; the box photutils treats as
inscribed (7 x 7 for 5.25 px) then reaches outside the circle, so a pixel that is the
maximum of its circle but not of that box is dropped: 8-16 of about 10,500 peaks per
full-frame ACS/WFC chip. :func:`local_peaks` follows the definition (the maximum filter
with the footprint, which photutils' ``footprint=`` path computes). The full-frame and demo
catalogues are the same as with photutils' search: those peaks failed the later cuts.
"""

from __future__ import annotations

import numpy as np

from mvmflow.filters import filter3

__all__ = ["circular_footprint", "daofind_peaks", "local_peaks"]


def circular_footprint(radius: float) -> np.ndarray:
    """photutils' circular footprint of a ``min_separation`` (``_fast_circular_peaks``): the
    offsets ``arange(-radius, radius + 1)`` on both axes, True within ``radius``; centred on
    index ``size // 2``, as ``scipy.ndimage.maximum_filter`` centres any footprint (so an
    even size, from a non-integer radius, is off centre by half a pixel, as there)."""
    idx = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(idx, idx)
    return (xx**2 + yy**2) <= radius**2


def local_peaks(data: np.ndarray, threshold, footprint: np.ndarray,
                mask: np.ndarray | None = None,
                border: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Pixels that are the maximum of ``data`` over ``footprint`` and above ``threshold``.

    The same pixels, in the same (row-major) order, as ``photutils.detection.find_peaks``
    with this footprint (or ``min_separation``: :func:`circular_footprint`), ``mask`` and
    ``border_width``: ``data == maximum_filter(data, footprint=footprint, mode='constant',
    cval=0)`` and ``data > threshold``, not masked, not in the border; none when ``data``
    is constant (photutils: "no local peaks").

    Parameters
    ----------
    data : numpy.ndarray
        2-D, finite.
    threshold : float or numpy.ndarray
        Scalar or ``data``'s shape; a peak is strictly above it.
    footprint : numpy.ndarray
        bool, 2-D, centred on index ``(ny // 2, nx // 2)``; must hold the 3 x 3 box around
        its centre.
    mask : numpy.ndarray, optional
        bool, True where no peak may be.
    border : (int, int)
        Rows and columns at each edge where no peak may be.

    Returns
    -------
    y, x : numpy.ndarray
        The peaks' pixel indices.
    """
    data = np.asarray(data)
    footprint = np.asarray(footprint, dtype=bool)
    cy, cx = footprint.shape[0] // 2, footprint.shape[1] // 2
    if cy < 1 or cx < 1 or not footprint[cy - 1:cy + 2, cx - 1:cx + 2].all():
        raise ValueError("the footprint must hold the 3 x 3 box around its centre")
    empty = np.zeros(0, dtype=np.intp)
    if data.size == 0 or np.all(data == data.flat[0]):
        return empty, empty
    cand = data > threshold
    by, bx = border
    if by > 0:
        cand[:by] = False
        cand[-by:] = False
    if bx > 0:
        cand[:, :bx] = False
        cand[:, -bx:] = False
    if mask is not None:
        cand &= ~np.asarray(mask, dtype=bool)
    if not cand.any():
        return empty, empty
    cand &= data >= filter3(data, np.maximum)
    y, x = np.nonzero(cand)
    values = data[y, x]
    ny, nx = data.shape
    zero = np.zeros((), dtype=data.dtype)
    keep = np.ones(y.size, dtype=bool)
    for dy, dx in zip(*np.nonzero(footprint), strict=True):
        dy, dx = int(dy) - cy, int(dx) - cx
        if dy == 0 and dx == 0:
            continue
        yy, xx = y + dy, x + dx
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        other = np.where(inside, data[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)], zero)
        keep &= values >= other
    return y[keep], x[keep]


def daofind_peaks(finder, data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | None:
    """The peaks ``finder`` (a ``photutils.detection.DAOStarFinder``) would find in ``data``.

    Convolves ``data`` with the finder's kernel as the finder does and looks for peaks with
    its footprint (``min_separation``'s circle, or the kernel's shape when it is 0),
    effective threshold and border (``exclude_border``). Give the result to a finder with
    the same parameters as ``xycoords``: its catalogue is the one it finds itself.

    Returns
    -------
    numpy.ndarray or None
        ``(n, 2)`` integer ``(x, y)`` positions; None when there is no peak (photutils: no
        sources).
    """
    from scipy import ndimage

    kernel = finder.kernel
    convolved = ndimage.convolve(data, kernel.data, mode="constant", cval=0.0)
    if finder.min_separation and finder.min_separation > 0:
        footprint = circular_footprint(finder.min_separation)
    else:
        footprint = np.asarray(kernel.mask, dtype=bool)
    border = (kernel.y_radius, kernel.x_radius) if finder.exclude_border else (0, 0)
    y, x = local_peaks(convolved, finder.threshold_eff, footprint, mask, border)
    if y.size == 0:
        return None
    return np.transpose((x, y))
