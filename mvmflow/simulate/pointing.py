"""Sky geometry: tangent-plane transforms, rigid chip placement and pointing errors.

Conventions
-----------
- Standard (gnomonic) coordinates ``(xi, eta)`` are in degrees, ``xi`` towards east
  (increasing RA), ``eta`` towards north, as the FITS intermediate world coordinates of
  ``RA---TAN``.
- Position angles are degrees east of north. :func:`rotation` rotates ``(xi, eta)`` so that
  every position angle increases by ``theta``; applied to a ``CD`` matrix (``R @ CD``) it adds
  ``theta`` to the chip's ``ORIENTAT``.
- A pointing error is a rigid motion of the tangent plane at a reference point ``V``: a point
  with true standard coordinates ``p`` appears at ``R(rotation) @ p + (dx, dy)``, with
  ``(dx, dy)`` in arcsec east and north. The header WCS of an exposure is its true WCS moved by
  its visit's pointing error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvmflow.simulate.distortion import LinearWCS

__all__ = [
    "SkyTransform",
    "aperture_reference",
    "place_chips",
    "rotation",
    "tan_deproject",
    "tan_project",
    "transform_linear_wcs",
]


def tan_project(ra0: float, dec0: float, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic standard coordinates (deg) of ``(ra, dec)`` about ``(ra0, dec0)``."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    a, d = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, np.float64))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def tan_deproject(ra0: float, dec0: float, xi, eta) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`tan_project`."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    x, y = np.radians(np.asarray(xi, np.float64)), np.radians(np.asarray(eta, np.float64))
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(rho > 0, y * np.sin(c) / np.where(rho > 0, rho, 1.0), 0.0)
    dec = np.arcsin(np.cos(c) * np.sin(d0) + ratio * np.cos(d0))
    ra = a0 + np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def rotation(theta_deg: float) -> np.ndarray:
    """The matrix adding ``theta_deg`` to every position angle in ``(xi, eta)``."""
    t = np.radians(theta_deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, s], [-s, c]])


@dataclass(frozen=True)
class SkyTransform:
    """``s -> P_dst^-1(R(rotation) @ P_src(s) + shift)``.

    ``P_c`` is the tangent-plane projection about ``c``; ``shift`` is in arcsec (east, north).
    """

    src: tuple[float, float]
    dst: tuple[float, float]
    rotation_deg: float = 0.0
    shift_arcsec: tuple[float, float] = (0.0, 0.0)

    def __call__(self, ra, dec):
        xi, eta = tan_project(*self.src, ra, dec)
        r = rotation(self.rotation_deg)
        nx = r[0, 0] * xi + r[0, 1] * eta + self.shift_arcsec[0] / 3600.0
        ny = r[1, 0] * xi + r[1, 1] * eta + self.shift_arcsec[1] / 3600.0
        return tan_deproject(*self.dst, nx, ny)


def _linear_world(lin: LinearWCS, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions of focal-plane offsets ``u`` (N x 2, pixels) through ``CRVAL``/``CD``."""
    iw = u @ lin.cd.T
    return tan_deproject(lin.crval[0], lin.crval[1], iw[:, 0], iw[:, 1])


_GRID = np.array([(x, y) for x in np.linspace(-2100, 2100, 7) for y in np.linspace(-2100, 2100, 7)])


def transform_linear_wcs(lin: LinearWCS, transform: SkyTransform) -> LinearWCS:
    """The ``CRVAL``/``CD`` whose sky mapping is ``transform`` applied to that of ``lin``.

    Exact at ``CRVAL``; the ``CD`` is the least-squares fit over a chip-sized grid (the residual
    of the projective terms is below 1e-6 arcsec for HST chips).
    """
    ra, dec = _linear_world(lin, _GRID)
    ra2, dec2 = transform(ra, dec)
    c_ra, c_dec = transform(lin.crval[0], lin.crval[1])
    xi, eta = tan_project(float(c_ra), float(c_dec), ra2, dec2)
    cd_t, *_ = np.linalg.lstsq(_GRID, np.column_stack([xi, eta]), rcond=None)
    return LinearWCS([float(c_ra), float(c_dec)], cd_t.T)


def aperture_reference(det, aperture) -> tuple[int, float, float]:
    """``(CCDCHIP, x, y)`` of an aperture's reference pixel in full-chip pixels (0-based).

    Subarrays use their centre; full-frame apertures the SIAF reference point of the detector.
    """
    if aperture.subarray:
        return (aperture.ccdchip, aperture.x0 + (aperture.nx - 1) / 2.0,
                aperture.y0 + (aperture.ny - 1) / 2.0)
    return det.ref_pixel


def place_chips(det, aperture, ra: float, dec: float, pa: float) -> dict[int, LinearWCS]:
    """Place a detector's chips rigidly on the sky.

    The chips keep the relative geometry of the real template exposure, rotated so that the
    y axis of the template's ``SCI,1`` chip has position angle ``pa`` at its reference pixel,
    and translated so that the aperture's reference pixel (through the full distortion) lands
    on ``(ra, dec)``.

    Returns
    -------
    dict
        ``CCDCHIP -> LinearWCS`` (full-chip ``CRPIX`` convention) of every chip.
    """
    from mvmflow.simulate.distortion import full_chip_wcs, template_linear_wcs

    first, _ = template_linear_wcs(det, det.chips[0])
    anchor = (float(first.crval[0]), float(first.crval[1]))
    rot = pa - first.orientat
    ref_chip, ref_x, ref_y = aperture_reference(det, aperture)
    target = (ra, dec)
    chips: dict[int, LinearWCS] = {}
    for _ in range(6):
        transform = SkyTransform(src=anchor, dst=target, rotation_deg=rot)
        chips = {c: transform_linear_wcs(template_linear_wcs(det, c)[0], transform)
                 for c in det.chips}
        wcs = full_chip_wcs(det, ref_chip, chips[ref_chip])
        sra, sdec = wcs.all_pix2world(ref_x, ref_y, 0)
        dxi, deta = tan_project(ra, dec, sra, sdec)
        if max(abs(float(dxi)), abs(float(deta))) * 3600.0 < 1e-7:
            break
        txi, teta = tan_project(ra, dec, *target)
        target = tuple(float(v) for v in tan_deproject(ra, dec, txi - dxi, teta - deta))
    return chips
