"""Distortion-aware WCSs of simulated chips, and the pixel-area map they imply.

Every chip WCS is the detector's real template WCS (TAN + SIP from the real header, plus the
real NPOL ``WCSDVARR`` and D2IM ``D2IMARR`` lookup tables where they exist) with only ``CRVAL``,
``CD`` and (for subarrays) ``CRPIX`` changed, so the distortion in the pixel frame of a chip is
always that of the full chip.

Subarrays
---------
A subarray starting at full-chip pixel ``(x0, y0)`` (0-based) has ``LTV1 = -x0``,
``LTV2 = -y0`` and ``CRPIX = CRPIX(full) - (x0, y0)``. Its lookup tables are the full-chip
tables with ``CRVALi = LTVi``: astropy evaluates a table at ``(pixel - CRVAL) / CDELT + CRPIX``,
so this keeps the corrections at the same physical pixels (checked to machine precision against
the full chip). Note that ``stwcs.updatewcs`` writes ``CRVALi = -LTVi`` instead, which astropy
(and therefore drizzlepac) would evaluate at the wrong pixels for subarrays.

Pixel areas
-----------
``pixel_area_map`` integrates the exact pixel footprints (corners at ``+-0.5``) through the full
distortion (D2IM + SIP + NPOL, astropy's ``pix2foc``) times the linear scale ``|det CD|``, and
divides by ``IDCSCALE**2``: the relative pixel area (PAM) used for the flux convention of
:mod:`mvmflow.simulate`.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from mvmflow.simulate.data import template
from mvmflow.simulate.detectors import Detector, detector

__all__ = [
    "LinearWCS",
    "chip_wcs",
    "distortion_cards",
    "full_chip_wcs",
    "lookup_hdus",
    "pixel_area_map",
    "template_linear_wcs",
]

_SIP = re.compile(r"^(A|B)_(ORDER|\d_\d)$")
_LOOKUP = re.compile(r"^(CPERR\d|CPDIS\d|DP\d\..*|D2IMERR\d|D2IMDIS\d|D2IM\d\..*|NPOLEXT|D2IMEXT)$")


class LinearWCS:
    """The linear part of a chip WCS: ``CRVAL`` (deg) and ``CD`` (deg/px, 2x2)."""

    __slots__ = ("crval", "cd")

    def __init__(self, crval, cd):
        self.crval = np.asarray(crval, dtype=np.float64).copy()
        self.cd = np.asarray(cd, dtype=np.float64).reshape(2, 2).copy()

    @property
    def orientat(self) -> float:
        """Position angle of the chip's y axis at ``CRVAL`` (degrees east of north)."""
        return float(np.degrees(np.arctan2(self.cd[0, 1], self.cd[1, 1])))

    def __repr__(self) -> str:
        return f"LinearWCS(crval={self.crval.tolist()}, cd={self.cd.tolist()})"


def template_linear_wcs(det: Detector, ccdchip: int) -> tuple[LinearWCS, np.ndarray]:
    """The template's ``(CRVAL, CD)`` and full-chip ``CRPIX`` of ``ccdchip``."""
    hdr = template(det.key).sci(det.extver_of(ccdchip))
    lin = LinearWCS([hdr["CRVAL1"], hdr["CRVAL2"]],
                    [[hdr["CD1_1"], hdr["CD1_2"]], [hdr["CD2_1"], hdr["CD2_2"]]])
    return lin, np.array([hdr["CRPIX1"], hdr["CRPIX2"]], dtype=np.float64)


def distortion_cards(det: Detector, ccdchip: int) -> list[fits.Card]:
    """SIP and lookup-table cards of the template SCI header of ``ccdchip``."""
    hdr = template(det.key).sci(det.extver_of(ccdchip))
    return [fits.Card(card.keyword, card.value, card.comment) for card in hdr.cards
            if _SIP.match(card.keyword) or _LOOKUP.match(card.keyword)]


def _lookup_refs(det: Detector, ccdchip: int) -> list[tuple[str, str, int]]:
    """``(keyword, EXTNAME, template EXTVER)`` of every lookup table ``ccdchip`` uses."""
    hdr = template(det.key).sci(det.extver_of(ccdchip))
    refs = []
    for j in (1, 2):
        if f"CPDIS{j}" in hdr:
            refs.append((f"DP{j}.EXTVER", "WCSDVARR", int(hdr[f"DP{j}.EXTVER"])))
    for j in (1, 2):
        if f"D2IMDIS{j}" in hdr:
            refs.append((f"D2IM{j}.EXTVER", "D2IMARR", int(hdr[f"D2IM{j}.EXTVER"])))
    return refs


def lookup_versions(det: Detector, ccdchips) -> dict[int, dict[str, int]]:
    """Renumber the lookup tables of the chips in a file, in file order.

    Returns ``{ccdchip: {keyword: new EXTVER}}``, numbering ``WCSDVARR`` and ``D2IMARR``
    separately from 1 as ``stwcs`` does.
    """
    counters = {"WCSDVARR": 0, "D2IMARR": 0}
    out: dict[int, dict[str, int]] = {}
    for chip in ccdchips:
        out[chip] = {}
        for key, name, _ in _lookup_refs(det, chip):
            counters[name] += 1
            out[chip][key] = counters[name]
    return out


def lookup_hdus(det: Detector, ccdchip: int, versions: dict[str, int],
                ltv: tuple[float, float] = (0.0, 0.0)) -> list[fits.ImageHDU]:
    """The real lookup tables of ``ccdchip`` as extensions for a file with offset ``ltv``."""
    tmpl = template(det.key)
    hdus = []
    for key, name, old in _lookup_refs(det, ccdchip):
        hdr, data = tmpl.lookup[(name, old)]
        hdr = hdr.copy()
        hdr["EXTVER"] = versions[key]
        hdr["CRVAL1"] = float(ltv[0])
        hdr["CRVAL2"] = float(ltv[1])
        hdus.append(fits.ImageHDU(data=data.astype(np.float32), header=hdr))
    return hdus


def wcs_header(det: Detector, ccdchip: int, lin: LinearWCS, x0: int = 0, y0: int = 0,
               nx: int | None = None, ny: int | None = None,
               versions: dict[str, int] | None = None) -> fits.Header:
    """A minimal SCI header holding the full distortion WCS of a (sub)array of ``ccdchip``."""
    _, crpix = template_linear_wcs(det, ccdchip)
    nx = det.shape[0] - x0 if nx is None else nx
    ny = det.shape[1] - y0 if ny is None else ny
    hdr = fits.Header()
    hdr["NAXIS"] = 2
    hdr["NAXIS1"] = nx
    hdr["NAXIS2"] = ny
    hdr["WCSAXES"] = 2
    hdr["CRPIX1"] = float(crpix[0] - x0)
    hdr["CRPIX2"] = float(crpix[1] - y0)
    hdr["CRVAL1"] = float(lin.crval[0])
    hdr["CRVAL2"] = float(lin.crval[1])
    hdr["CTYPE1"] = "RA---TAN-SIP"
    hdr["CTYPE2"] = "DEC--TAN-SIP"
    hdr["CD1_1"] = float(lin.cd[0, 0])
    hdr["CD1_2"] = float(lin.cd[0, 1])
    hdr["CD2_1"] = float(lin.cd[1, 0])
    hdr["CD2_2"] = float(lin.cd[1, 1])
    hdr["LTV1"] = float(-x0)
    hdr["LTV2"] = float(-y0)
    for card in distortion_cards(det, ccdchip):
        hdr.append(card, end=True)
    if versions is not None:
        for key, ver in versions.items():
            hdr[key] = ver
    return hdr


def chip_wcs(header: fits.Header, hdus: list[fits.ImageHDU]) -> WCS:
    """An astropy WCS evaluating SIP and the lookup tables in ``hdus``."""
    fobj = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(header=header), *hdus])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, fobj)


def full_chip_wcs(det: Detector, ccdchip: int, lin: LinearWCS, x0: int = 0, y0: int = 0,
                  nx: int | None = None, ny: int | None = None) -> WCS:
    """The complete WCS of a (sub)array of ``ccdchip`` whose linear part is ``lin``."""
    versions = lookup_versions(det, [ccdchip])[ccdchip]
    hdr = wcs_header(det, ccdchip, lin, x0, y0, nx, ny, versions)
    return chip_wcs(hdr, lookup_hdus(det, ccdchip, versions, (-x0, -y0)))


@lru_cache(maxsize=16)
def _pam(key: str, ccdchip: int, x0: int, y0: int, nx: int, ny: int) -> np.ndarray:
    det = detector(key)
    lin, _ = template_linear_wcs(det, ccdchip)
    wcs = full_chip_wcs(det, ccdchip, lin, x0, y0, nx, ny)
    idcscale = float(template(det.key).sci(det.extver_of(ccdchip))["IDCSCALE"])
    xs = np.arange(nx + 1, dtype=np.float64) - 0.5
    out = np.empty((ny, nx), dtype=np.float64)
    scale = abs(np.linalg.det(lin.cd)) * 3600.0**2 / idcscale**2
    step = max(1, 2_000_000 // (nx + 1))  # rows of corners per block (bounded memory)
    prev = None
    for start in range(0, ny + 1, step):
        rows = np.arange(start, min(ny + 1, start + step), dtype=np.float64) - 0.5
        gx, gy = np.meshgrid(xs, rows)
        foc = wcs.pix2foc(np.column_stack([gx.ravel(), gy.ravel()]), 0)
        foc = foc.reshape(len(rows), nx + 1, 2)
        if prev is not None:
            foc = np.concatenate([prev, foc], axis=0)
        p0, p1 = foc[:-1, :-1], foc[:-1, 1:]
        p2, p3 = foc[1:, 1:], foc[1:, :-1]
        area = 0.5 * np.abs((p2[..., 0] - p0[..., 0]) * (p3[..., 1] - p1[..., 1])
                            - (p3[..., 0] - p1[..., 0]) * (p2[..., 1] - p0[..., 1]))
        row0 = start - 1 if prev is not None else start
        out[row0:row0 + area.shape[0]] = area * scale
        prev = foc[-1:]
    out.setflags(write=False)
    return out


def pixel_area_map(det: Detector, ccdchip: int, x0: int, y0: int, nx: int, ny: int) -> np.ndarray:
    """Relative pixel areas (true area / ``IDCSCALE**2``) of a region of ``ccdchip``.

    The map depends only on the distortion model, not on the pointing; it is cached.
    """
    return _pam(det.key, ccdchip, x0, y0, nx, ny)
