"""Encircled energy of the instruments' model PSFs, for total magnitudes.

The layer catalogues (:mod:`mvmflow.layercat`) measure a star's flux within 1.5" with an
aperture correction taken from the layer itself; the light beyond 1.5" (2-4 % for HST PSFs,
more in the red) is taken from the model PSF of the detector and filter
(``mvmflow/data/hst/psfs``: drizzlepac's TinyTim-style models, each normalised to 1 over its
stamp of 6" (ACS/WFC, WFC3/UVIS) to 12" (WFC3/IR) across; docs/design.md, "Quality files
and layer catalogues"). "Total" is
therefore the flux within that stamp: published encircled-energy tables normalised at 5.5"
would put the red filters' totals up to 1-2 % higher.

A filter without its own model uses the model of the same detector nearest in pivot
wavelength (``filters.csv``'s ``psf`` column, else the nearest ``photplam``).
"""

from __future__ import annotations

import csv
import functools
from importlib import resources

import numpy as np

__all__ = ["encircled_energy", "model_psf_name"]

_DATA = "mvmflow.data"


@functools.cache
def _filters() -> tuple[dict, ...]:
    text = (resources.files(_DATA) / "hst" / "filters.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return tuple(dict(r) for r in rows)


def model_psf_name(instrument: str, detector: str, filter_name: str,
                   photplam: float | None = None) -> str | None:
    """The model PSF of a detector and filter (e.g. ``acs_wfc_f814w``), or None when the
    detector has none.

    Parameters
    ----------
    instrument, detector, filter_name : str
        As in the headers (any case).
    photplam : float, optional
        The pivot wavelength (Angstrom), to choose among the detector's models when the
        filter has none of its own.
    """
    inst, det, filt = instrument.upper(), detector.upper(), filter_name.upper()
    rows = [r for r in _filters() if r["instrument"] == inst and r["detector"] == det
            and r.get("psf")]
    for r in rows:
        if r["filter"] == filt:
            return r["psf"]
    if not rows:
        return None
    if photplam is None or not np.isfinite(photplam) or photplam <= 0:
        return None
    return min(rows, key=lambda r: abs(float(r["photplam"]) - float(photplam)))["psf"]


@functools.cache
def _model(name: str) -> tuple[np.ndarray, float]:
    from astropy.io import fits  # lazy (docs/speed.md, "Job start-up")

    with resources.as_file(resources.files(_DATA) / "hst" / "psfs" / f"{name}.fits") as path:
        with fits.open(path) as hdul:
            image = np.asarray(hdul[0].data, dtype=np.float64)
            scale = float(hdul[0].header["PIXSCALE"])
    image = np.clip(image, 0.0, None)
    return image / image.sum(), scale


@functools.cache
def encircled_energy(name: str, radius_arcsec: float, subsample: int = 5) -> float:
    """Fraction of model PSF ``name`` within ``radius_arcsec`` of its centre (the flux
    centroid of the 5 x 5 pixels around the peak), each pixel split into ``subsample``
    squared parts."""
    image, scale = _model(name)
    py, px = np.unravel_index(np.argmax(image), image.shape)
    box = image[py - 2:py + 3, px - 2:px + 3]
    yy, xx = np.mgrid[py - 2:py + 3, px - 2:px + 3]
    cx, cy = float((box * xx).sum() / box.sum()), float((box * yy).sum() / box.sum())
    offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx]
    r = radius_arcsec / scale
    inside = np.zeros_like(image)
    for oy in offsets:
        for ox in offsets:
            inside += ((x + ox - cx) ** 2 + (y + oy - cy) ** 2 <= r * r)
    return float((image * inside).sum() / subsample**2)
