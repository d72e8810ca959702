"""Model PSFs and how a star at a sub-pixel position is drawn with them.

The PSFs are the drizzlepac model PSFs (TinyTim-style, at the detectors' native sampling, one
per filter; ``mvmflow/data/hst/filters.csv`` says which PSF each filter uses, e.g. ACS/WFC
F658N uses F625W). On loading, each PSF is convolved with the 3x3 charge-diffusion kernel given
in its header comments when that kernel is physical (all elements >= 0; normalised to unit
sum; the WFC3/UVIS F275W and WFC3/IR F110W header kernels have negative elements and are not
applied), and normalised to unit sum: the stamp holds all of a star's flux.

Sub-pixel placement
-------------------
The PSFs are effective (pixel-integrated) PSFs sampled at one pixel phase, and strongly
undersampled, so band-limited (Fourier, sinc, spline) interpolation rings (negative pixels of
up to 20 % of the peak). A star at a fractional pixel offset is therefore the PSF shifted by
bilinear interpolation: flux and first moment are exact, pixels stay positive, and it is the
exact effective PSF in the undersampled limit (a point source on box pixels); for the
better-sampled cores it slightly lowers the peak at half-pixel phases. Rendering uses the
equivalent, vectorised form: each star's flux is deposited with bilinear weights on its four
nearest pixels, and the deposit image is convolved once with the PSF.

Bilinear shifting makes the drawn star the piecewise-linear interpolation of the stamp's
samples, whose peak lies on a sample. The model PSFs are sampled with the star at an
arbitrary pixel phase (WFC3/IR F110W: 0.34 px from a pixel centre in x and y), so as loaded
the interpolation peaks up to 0.35 px from the star's centroid: the drawn stars are
lopsided, and a core estimator (a 2-D Gaussian fit) sits 0.05 px (6-7 mas) from the
windowed centroid on average over pixel phases, towards the stamp's brightest pixel; drizzled
WFC3/IR F110W layers showed it as a 5-6 mas offset. :func:`load_psf` therefore re-samples
each stamp once (a cubic spline of its logarithm, :func:`_on_pixel_centre`) so the star's
position falls on a pixel centre: the interpolation then peaks at the star, and core and
windowed centroids agree to the model PSFs' own asymmetry, at most 0.04 px or 1.6 mas on
average over pixel phases (WFC3/IR F110W: 0.011 px, 1.4 mas).

The *position* of a star is the Gaussian-windowed centroid (``sigma = 2`` px, SExtractor's
``XWIN``) of its PSF (``PSF.ref``), which is what centroiding algorithms measure; the first
moment of the whole stamp differs by up to 0.1 px because the model PSFs have asymmetric
wings, and box centroids have pixel-phase errors of up to 0.1 px on these undersampled PSFs.
:func:`windowed_centroid` recovers the position of a bilinearly placed star to 0.012 px at any
pixel phase (noise-free).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from mvmflow.simulate.data import psf_array

__all__ = ["PSF", "WINDOW_SIGMA", "load_psf", "windowed_centroid"]

WINDOW_SIGMA = 2.0
"""Width (pixels) of the Gaussian window of the centroid that defines a star's position."""


def _kernel(header) -> np.ndarray | None:
    rows = []
    for card in header.cards:
        if card.keyword != "COMMENT":
            continue
        try:
            values = [float(p) for p in str(card.value).split()]
        except ValueError:
            continue
        if len(values) == 3:
            rows.append(values)
    if len(rows) != 3:
        return None
    kernel = np.array(rows)
    if (kernel < 0).any():
        return None
    return kernel / kernel.sum()


def windowed_centroid(image: np.ndarray, x: float, y: float, sigma: float = WINDOW_SIGMA,
                      tol: float = 1e-8, max_iter: int = 100) -> tuple[float, float]:
    """Gaussian-windowed centroid (SExtractor's ``XWIN``) of ``image`` near ``(x, y)``.

    Iterates ``x <- x + 2 sum(w I (X - x)) / sum(w I)`` with ``w`` a Gaussian of width ``sigma``
    centred on the current estimate, over a cutout of +-6 sigma. Background must already be
    subtracted. This is the estimator that defines a simulated star's position (``PSF.ref``).
    """
    half = int(np.ceil(6 * sigma))
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    x0, y0 = max(ix - half, 0), max(iy - half, 0)
    cut = np.asarray(image[y0:iy + half + 1, x0:ix + half + 1], dtype=np.float64)
    yy, xx = np.indices(cut.shape)
    xx = xx + x0
    yy = yy + y0
    cx, cy = float(x), float(y)
    for _ in range(max_iter):
        w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)) * cut
        total = w.sum()
        nx = cx + 2.0 * float((w * (xx - cx)).sum() / total)
        ny = cy + 2.0 * float((w * (yy - cy)).sum() / total)
        done = abs(nx - cx) < tol and abs(ny - cy) < tol
        cx, cy = nx, ny
        if done:
            break
    return cx, cy


@dataclass(frozen=True)
class PSF:
    """A normalised model PSF and the array position ``ref`` of a star's position in it."""

    name: str
    image: np.ndarray
    ref: tuple[float, float]
    pixscale: float
    kernel_applied: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape

    def stamp(self, x: float, y: float) -> tuple[np.ndarray, int, int]:
        """The image of a unit-flux star at pixel position ``(x, y)``.

        Returns ``(stamp, ix0, iy0)``: the stamp's pixel ``[j, i]`` is image pixel
        ``(ix0 + i, iy0 + j)``. Equivalent to what the renderer draws.
        """
        px, py = x - self.ref[0], y - self.ref[1]
        ix0, iy0 = int(np.floor(px)), int(np.floor(py))
        fx, fy = px - ix0, py - iy0
        ny, nx = self.image.shape
        out = np.zeros((ny + 1, nx + 1))
        out[:-1, :-1] += (1 - fx) * (1 - fy) * self.image
        out[:-1, 1:] += fx * (1 - fy) * self.image
        out[1:, :-1] += (1 - fx) * fy * self.image
        out[1:, 1:] += fx * fy * self.image
        return out, ix0, iy0

    def encircled_energy(self, radius: float, x: float = 0.0, y: float = 0.0) -> float:
        """Flux fraction in pixels whose centres lie within ``radius`` of a star at ``(x, y)``.

        Only the fractional part of ``(x, y)`` matters.
        """
        stamp, ix0, iy0 = self.stamp(x % 1.0, y % 1.0)
        yy, xx = np.indices(stamp.shape)
        inside = (xx + ix0 - x % 1.0) ** 2 + (yy + iy0 - y % 1.0) ** 2 <= radius**2
        return float(stamp[inside].sum())


def _on_pixel_centre(image: np.ndarray) -> np.ndarray:
    """``image`` re-sampled so that its windowed centroid falls on the nearest pixel centre.

    The shift is a cubic spline in the logarithm of the image: a PSF core is close to a
    Gaussian, whose logarithm (a parabola) the spline reproduces, and the result stays
    positive, whereas a spline of the values themselves rings by up to 4 % of the peak on
    these undersampled cores (negative pixels, and clipping them moves the centroid).
    Pixels below ``1e-8`` of the peak are raised to it first. The spline changes the
    centroid a little, so the shift is iterated to 1e-4 px. See the module docstring.
    """
    log = np.log(np.maximum(image, 1e-8 * image.max()))
    shifted = image
    sx = sy = 0.0
    for _ in range(10):
        peak_y, peak_x = np.unravel_index(np.argmax(shifted), shifted.shape)
        cx, cy = windowed_centroid(shifted, float(peak_x), float(peak_y))
        if abs(np.round(cx) - cx) < 1e-4 and abs(np.round(cy) - cy) < 1e-4:
            break
        sx, sy = sx + np.round(cx) - cx, sy + np.round(cy) - cy
        shifted = np.exp(ndimage.shift(log, (sy, sx), order=3, mode="nearest"))
        shifted /= shifted.sum()
    return shifted


@cache
def load_psf(name: str) -> PSF:
    """The prepared PSF ``name`` (e.g. ``acs_wfc_f814w``); see the module docstring."""
    raw, header = psf_array(name)
    image = raw / raw.sum()
    kernel = _kernel(header)
    if kernel is not None:
        image = ndimage.convolve(image, kernel, mode="constant", cval=0.0)
    image = np.clip(image, 0.0, None)
    image /= image.sum()
    image = _on_pixel_centre(image)
    image.setflags(write=False)
    peak_y, peak_x = np.unravel_index(np.argmax(image), image.shape)
    ref = windowed_centroid(image, float(peak_x), float(peak_y))
    return PSF(name=name, image=image, ref=ref, pixscale=float(header.get("PIXSCALE", 0.0)),
               kernel_applied=kernel is not None)
