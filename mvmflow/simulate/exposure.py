"""Assemble one simulated exposure file (``_flt.fits`` / ``_flc.fits``) from its plan and pixels.

Headers start from the detector's real template (see :mod:`mvmflow.simulate.build_data`); this
module rewrites every keyword that identifies the exposure or describes its pointing, timing,
readout, filter, photometry and WCS, so that they are mutually consistent:

- ``FILENAME``, ``ROOTNAME`` (``<i><program><visit><exposure>q``), ``EXPNAME``,
  ``PROPOSID``, ``LINENUM`` (``<visit>.<nnn>``), ``ASN_ID``/``ASN_TAB``/``ASN_MTYP``;
- ``DATE-OBS``, ``TIME-OBS``, ``EXPSTART``, ``EXPEND`` (MJD), ``EXPTIME``; ``DATE`` and
  ``PROCTIME`` are a fixed two days after the exposure (no wall-clock time anywhere);
- ``FILTER`` (WFC3) or ``FILTER1``/``FILTER2`` (ACS), ``APERTURE``, ``SUBARRAY``, ``CCDAMP``,
  ``LTV1/2``, ``CENTERA1/2``, ``SIZAXIS1/2`` and, for WFC3/IR, ``SUBTYPE``, ``SAMP_SEQ``,
  ``NSAMP``;
- ``PHOT*`` where the real files have them (ACS: SCI; WFC3/IR: primary; WFC3/UVIS: both);
- the WCS: ``CRPIX``/``CRVAL``/``CD`` of the *header* (a-priori, pointing-error included) WCS
  with the template's SIP and lookup tables, ``WCSNAME = IDC_<idctab root>``, ``ORIENTAT``,
  ``RA_APER``/``DEC_APER``/``PA_APER``, ``PA_V3``, ``S_REGION``; ERR/DQ (and SAMP/TIME) carry
  the linear part, as in real files;
- viability keywords MVM screens on: ``OBSTYPE = IMAGING``, ``DRIZCORR = COMPLETE``,
  ``MTFLAG`` blank, ``SCAN_TYP = N`` (WFC3), ``CHINJECT = NONE`` (UVIS), ``QUALITY`` blank,
  ``FGSLOCK = FINE``, ``PRIMESI = INSTRUME``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.time import Time

from mvmflow.simulate.data import ApertureInfo, FilterInfo, template
from mvmflow.simulate.detectors import Detector
from mvmflow.simulate.distortion import (
    LinearWCS,
    distortion_cards,
    lookup_hdus,
    lookup_versions,
    template_linear_wcs,
)
from mvmflow.simulate.pointing import aperture_reference
from mvmflow.simulate.render import ChipImage

__all__ = ["ExposurePlan", "make_header_hdulist", "make_hdulist"]

_STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT",
               "EXTEND"}


@dataclass
class ExposurePlan:
    """Everything that defines one exposure except its pixels."""

    index: int
    rootname: str
    suffix: str
    det: Detector
    aperture: ApertureInfo
    filter: FilterInfo
    proposid: int
    visit: str
    linenum: str
    asn_id: str
    targname: str
    target: tuple[float, float]
    expstart: float
    exptime: float
    dither: tuple[float, float]
    pointing: tuple[float, float, float]  # true RA, Dec of the aperture reference, PA
    true_chips: dict  # ccdchip -> LinearWCS
    header_chips: dict  # ccdchip -> LinearWCS
    header_pointing: tuple[float, float]  # header RA_APER, DEC_APER
    error: tuple[float, float, float]
    error_ref: tuple[float, float]
    nsamp: int = 0
    samp_seq: str = ""

    @property
    def filename(self) -> str:
        return f"{self.rootname}_{self.suffix}.fits"

    @property
    def expend(self) -> float:
        return self.expstart + self.exptime / 86400.0

    @property
    def epoch(self) -> float:
        """Julian year at mid-exposure."""
        return float(Time(self.expstart + self.exptime / 172800.0, format="mjd").jyear)

    @property
    def ccdchips(self) -> tuple[int, ...]:
        """``CCDCHIP`` of ``SCI,1``, ``SCI,2``, ... in this file."""
        if self.aperture.subarray or len(self.det.chips) == 1:
            return (self.aperture.ccdchip or self.det.chips[0],)
        return self.det.chips

    def region(self, ccdchip: int) -> tuple[int, int, int, int]:
        """``(x0, y0, nx, ny)`` of the readout on ``ccdchip`` (full-chip pixels)."""
        ap = self.aperture
        if ap.subarray:
            return ap.x0, ap.y0, ap.nx, ap.ny
        return 0, 0, self.det.shape[0], self.det.shape[1]

    @property
    def ccdamp(self) -> str:
        if self.det.name == "IR":
            return "ABCD"
        if not self.det.ccd:
            return "N/A"
        if self.aperture.subarray:
            x0, _, nx, _ = self.region(self.aperture.ccdchip)
            left, right = self.det.readnoise_keys[self.aperture.ccdchip]
            return left if x0 + nx <= self.det.shape[0] // 2 else right
        if self.det.name == "HRC":
            return "C"
        return "ABCD"


def _iso(mjd: float) -> tuple[str, str]:
    t = Time(mjd, format="mjd", scale="utc")
    text = t.isot
    return text[:10], text[11:19]


def _idc_root(det: Detector) -> str:
    idctab = str(template(det.key).primary.get("IDCTAB", ""))
    return idctab.split("$")[-1].replace("_idc.fits", "")


def _set(hdr: fits.Header, key: str, value, comment: str | None = None) -> None:
    if key in hdr:
        if comment is None:
            hdr[key] = value
        else:
            hdr[key] = (value, comment)
    else:
        hdr.append((key, value, comment or ""), end=True)


def _update_existing(hdr: fits.Header, **values) -> None:
    for key, value in values.items():
        key = key.replace("__", "-")
        if key in hdr:
            hdr[key] = value


def _clean_copy(src: fits.Header) -> fits.Header:
    """A deep copy of a (cached, shared) template header without structural keywords."""
    hdr = src.copy()
    for key in _STRUCTURAL:
        hdr.remove(key, ignore_missing=True, remove_all=True)
    return hdr


def _primary(plan: ExposurePlan, nextend: int) -> fits.Header:
    det, info, ap = plan.det, plan.filter, plan.aperture
    hdr = _clean_copy(template(det.key).primary)
    date_obs, time_obs = _iso(plan.expstart)
    proc = plan.expend + 2.0
    header_pa = plan.header_chips[det.chips[0]].orientat
    pa_v3 = (header_pa + det.pa_v3_offset) % 360.0
    idc = _idc_root(det)
    npl = str(hdr.get("NPOLFILE", "N/A")).split("$")[-1].replace("_npl.fits", "")
    d2i = str(hdr.get("D2IMFILE", "N/A")).split("$")[-1].replace("_d2i.fits", "")
    updates = {
        "NEXTEND": nextend, "FILENAME": plan.filename, "ROOTNAME": plan.rootname,
        "IMAGETYP": "EXT", "PRIMESI": det.instrument, "TARGNAME": plan.targname,
        "RA_TARG": plan.target[0], "DEC_TARG": plan.target[1], "PROPOSID": plan.proposid,
        "LINENUM": plan.linenum, "PR_INV_L": "SIMULATED", "PR_INV_F": "MVMFLOW",
        "PR_INV_M": "", "FGSLOCK": "FINE", "DATE__OBS": date_obs, "TIME__OBS": time_obs,
        "EXPSTART": plan.expstart, "EXPEND": plan.expend, "EXPTIME": float(plan.exptime),
        "EXPFLAG": "NORMAL", "QUALCOM1": "", "QUALCOM2": "", "QUALCOM3": "", "QUALITY": "",
        "PA_V3": round(pa_v3, 6), "POSTARG1": float(plan.dither[0]),
        "POSTARG2": float(plan.dither[1]), "OBSTYPE": "IMAGING", "OBSMODE": "ACCUM",
        "SUBARRAY": bool(ap.subarray), "DETECTOR": det.name, "APERTURE": ap.name,
        "PROPAPER": ap.name, "DIRIMAGE": "NONE", "CRSPLIT": 1, "NRPTEXP": 1,
        "DRIZCORR": "COMPLETE", "ASN_ID": plan.asn_id, "ASN_TAB": f"{plan.asn_id.lower()}_asn.fits",
        "ASN_MTYP": "EXP-DTH", "CCDAMP": plan.ccdamp, "SCAN_TYP": "N", "CHINJECT": "NONE",
        "DARKTIME": float(plan.exptime) + 3.3, "PATTSTEP": 0,
    }
    if det.instrument == "WFC3":
        updates["FILTER"] = info.filter
    else:
        updates["FILTER1"] = info.filter1
        updates["FILTER2"] = info.filter2
    _update_existing(hdr, **updates)
    _set(hdr, "DATE", f"{_iso(proc)[0]}", "date this file was written (yyyy-mm-dd)")
    _set(hdr, "PROCTIME", round(proc, 8), "Pipeline processing time (MJD)")
    if det.ccd and det.name in ("WFC", "UVIS"):
        _set(hdr, "PCTECORR", "COMPLETE" if plan.suffix == "flc" else "PERFORM",
             "cte correction")
    _set(hdr, "DISTNAME", f"{plan.rootname}_{idc}-{npl}-{d2i}".replace("N/A", "NOMODEL"),
         "Distortion model name")
    _set(hdr, "SIPNAME", f"{plan.rootname}_{idc}", "origin of SIP polynomial")
    if det.name == "IR":
        subtype = "FULLIMAG" if not ap.subarray else f"SQ{ap.nx}SUB"
        _update_existing(hdr, SUBTYPE=subtype, SAMP_SEQ=plan.samp_seq, NSAMP=plan.nsamp,
                         SAMPZERO=2.911756 if not ap.subarray else 0.853253)
        _update_existing(hdr, PHOTMODE=info.photmode, PHOTFLAM=info.photflam,
                         PHOTFNU=info.photfnu, PHOTZPT=info.photzpt, PHOTPLAM=info.photplam,
                         PHOTBW=info.photbw)
    if det.name == "UVIS":
        ratio = (info.phtflam2 / info.phtflam1) if info.phtflam1 else 1.0
        _update_existing(hdr, PHOTFLAM=info.photflam, PHOTZPT=info.photzpt,
                         PHTFLAM1=info.phtflam1, PHTFLAM2=info.phtflam2, PHTRATIO=ratio)
    return hdr


def _s_region(det: Detector, ccdchip: int, lin: LinearWCS, region) -> str:
    from mvmflow.simulate.distortion import full_chip_wcs

    x0, y0, nx, ny = region
    wcs = full_chip_wcs(det, ccdchip, lin, x0, y0, nx, ny)
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5], [-0.5, ny - 0.5]])
    world = wcs.all_pix2world(corners, 0)
    return "POLYGON ICRS " + " ".join(f"{ra:.8f} {dec:.8f}" for ra, dec in world)


def _linear_cards(det: Detector, ccdchip: int, lin: LinearWCS, region, wcsname: str):
    _, crpix = template_linear_wcs(det, ccdchip)
    x0, y0 = region[0], region[1]
    return [
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CRPIX1", float(crpix[0] - x0), "x-coordinate of reference pixel"),
        ("CRPIX2", float(crpix[1] - y0), "y-coordinate of reference pixel"),
        ("CRVAL1", float(lin.crval[0]), "first axis value at reference pixel"),
        ("CRVAL2", float(lin.crval[1]), "second axis value at reference pixel"),
        ("CTYPE1", "RA---TAN", "the coordinate type for the first axis"),
        ("CTYPE2", "DEC--TAN", "the coordinate type for the second axis"),
        ("CD1_1", float(lin.cd[0, 0]), "partial of first axis coordinate w.r.t. x"),
        ("CD1_2", float(lin.cd[0, 1]), "partial of first axis coordinate w.r.t. y"),
        ("CD2_1", float(lin.cd[1, 0]), "partial of second axis coordinate w.r.t. x"),
        ("CD2_2", float(lin.cd[1, 1]), "partial of second axis coordinate w.r.t. y"),
        ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""),
        ("RADESYS", "ICRS", "Equatorial coordinate system"),
        ("WCSNAME", wcsname, "Coordinate system title"),
    ]


def _insert_wcs(hdr: fits.Header, cards) -> None:
    """Insert WCS cards before ``LTV1`` (where real HST files keep them) or at the end."""
    for card in cards:
        hdr.remove(card[0], ignore_missing=True)
    if "LTV1" in hdr:
        idx = hdr.index("LTV1")
        for k, card in enumerate(cards):
            hdr.insert(idx + k, card)
    else:
        for card in cards:
            hdr.append(card, end=True)


def _readout(hdr: fits.Header, plan: ExposurePlan, region) -> None:
    x0, y0, nx, ny = region
    fx, fy = plan.det.shape
    c1 = int(hdr.get("CENTERA1", fx // 2)) + int(round(x0 + (nx - 1) / 2 - (fx - 1) / 2))
    c2 = int(hdr.get("CENTERA2", fy // 2)) + int(round(y0 + (ny - 1) / 2 - (fy - 1) / 2))
    _update_existing(hdr, LTV1=float(-x0), LTV2=float(-y0), LTM1_1=1.0, LTM2_2=1.0,
                     CENTERA1=c1, CENTERA2=c2, SIZAXIS1=nx, SIZAXIS2=ny, BINAXIS1=1, BINAXIS2=1)


def _ext_header(plan: ExposurePlan, name: str, extver: int, ccdchip: int, region,
                lin: LinearWCS, wcsname: str) -> fits.Header:
    det = plan.det
    tmpl = template(det.key)
    key = (name, det.extver_of(ccdchip)) if (name, det.extver_of(ccdchip)) in tmpl.ext else (
        name, 1)
    hdr = _clean_copy(tmpl.ext[key])
    hdr["EXTNAME"] = name
    hdr["EXTVER"] = extver
    _update_existing(hdr, ROOTNAME=plan.rootname, EXPNAME=plan.rootname, CCDCHIP=ccdchip)
    _readout(hdr, plan, region)
    _insert_wcs(hdr, _linear_cards(det, ccdchip, lin, region, wcsname))
    return hdr


def _sci_header(plan: ExposurePlan, extver: int, ccdchip: int, versions: dict,
                image: ChipImage) -> fits.Header:
    det, info = plan.det, plan.filter
    region = plan.region(ccdchip)
    lin = plan.header_chips[ccdchip]
    wcsname = f"IDC_{_idc_root(det)}"
    hdr = _clean_copy(template(det.key).sci(det.extver_of(ccdchip)))
    hdr["EXTVER"] = extver
    _update_existing(hdr, ROOTNAME=plan.rootname, EXPNAME=plan.rootname, BUNIT=det.bunit,
                     CCDCHIP=ccdchip)
    cards = _linear_cards(det, ccdchip, lin, region, wcsname)
    cards[5] = ("CTYPE1", "RA---TAN-SIP", "the coordinate type for the first axis")
    cards[6] = ("CTYPE2", "DEC--TAN-SIP", "the coordinate type for the second axis")
    _insert_wcs(hdr, cards)
    _readout(hdr, plan, region)
    ra_aper, dec_aper = plan.header_pointing
    ref_chip = aperture_reference(det, plan.aperture)[0]
    _update_existing(hdr, ORIENTAT=round(lin.orientat, 8), RA_APER=ra_aper, DEC_APER=dec_aper,
                     PA_APER=round(plan.header_chips[ref_chip].orientat, 6), VAFACTOR=1.0)
    if det.name != "IR":
        phot = {"PHOTMODE": info.photmode.replace("WFC1", f"WFC{ccdchip}") if det.name == "WFC"
                else info.photmode.replace("UVIS2", f"UVIS{ccdchip}"),
                "PHOTFLAM": info.photflam, "PHOTZPT": info.photzpt, "PHOTPLAM": info.photplam,
                "PHOTBW": info.photbw, "PHOTFNU": info.photfnu}
        if info.phtflam1:
            phot.update(PHTFLAM1=info.phtflam1, PHTFLAM2=info.phtflam2,
                        PHTRATIO=info.phtflam2 / info.phtflam1)
        _update_existing(hdr, **phot)
    if det.name == "IR":
        _update_existing(hdr, SAMPNUM=plan.nsamp - 1, SAMPTIME=float(plan.exptime),
                         DELTATIM=float(plan.exptime) / max(plan.nsamp - 1, 1),
                         ROUTTIME=plan.expend)
    _update_existing(hdr, **image.stats, SDQFLAGS=31743, MEANFLSH=0.0)
    _set(hdr, "S_REGION", _s_region(det, ccdchip, lin, region), "spatial extent of the chip")
    for card in distortion_cards(det, ccdchip):
        hdr.append(card, end=True)
    for key, ver in versions.items():
        hdr[key] = ver
    return hdr


def _constant_hdu(header: fits.Header, shape: tuple[int, int], value) -> fits.ImageHDU:
    """An HST constant-value extension: no data; ``NPIX1``/``NPIX2`` and ``PIXVALUE`` after
    ``EXTVER``. (Astropy writes ``BITPIX = 8`` for an HDU without data; readers of constant
    arrays take the type from ``EXTNAME``.)"""
    hdu = fits.ImageHDU(header=header)
    for key, val, comment in (("PIXVALUE", value, "values of pixels in array"),
                              ("NPIX2", shape[0], "length of constant array axis 2"),
                              ("NPIX1", shape[1], "length of constant array axis 1")):
        hdu.header.set(key, val, comment, after="EXTVER")
    return hdu


def make_header_hdulist(plan: ExposurePlan, sci_value: float = 1.0,
                        err_value: float = 1.0) -> fits.HDUList:
    """The file of an exposure without pixels: constant-value image extensions.

    The headers are those :func:`make_hdulist` writes (WCS, distortion keywords and lookup
    tables, photometry, identity, times), except that every image extension (``SCI``,
    ``ERR``, ``DQ``; WFC3/IR also ``SAMP``, ``TIME``) is an HST constant-value extension:
    ``NAXIS = 0`` with ``NPIX1``/``NPIX2`` (the array's shape) and ``PIXVALUE`` (``sci_value``
    for ``SCI``, ``err_value`` for ``ERR``, 0 for ``DQ``, the exposure time and the number of
    samples for ``TIME``/``SAMP``). Readers that expand constant arrays (astropy does not;
    :class:`mvmflow.exposure.Exposure` does) see a flat, unflagged image; the pixel
    statistics (``GOOD*``, ``SNR*``, ``NGOODPIX``) describe it.
    """
    det = plan.det
    versions = lookup_versions(det, plan.ccdchips)
    wcsname = f"IDC_{_idc_root(det)}"
    extensions, lookups = [], []
    for extver, ccdchip in enumerate(plan.ccdchips, start=1):
        region = plan.region(ccdchip)
        shape = (region[3], region[2])
        lin = plan.header_chips[ccdchip]
        snr = float(sci_value) / float(err_value) if err_value else 0.0
        stats = {"NGOODPIX": int(shape[0] * shape[1]), "GOODMIN": float(sci_value),
                 "GOODMAX": float(sci_value), "GOODMEAN": float(sci_value), "SNRMIN": snr,
                 "SNRMAX": snr, "SNRMEAN": snr, "MEANDARK": float(det.dark * plan.exptime)}
        image = ChipImage(sci=None, err=None, dq=None, samp=None, time=None, stats=stats,
                          n_sources=0)
        sci = _sci_header(plan, extver, ccdchip, versions[ccdchip], image)
        extensions.append(_constant_hdu(sci, shape, float(sci_value)))
        values = [("ERR", float(err_value)), ("DQ", 0)]
        if det.name == "IR":
            values += [("SAMP", max(plan.nsamp - 1, 1)), ("TIME", float(plan.exptime))]
        for name, value in values:
            extensions.append(_constant_hdu(
                _ext_header(plan, name, extver, ccdchip, region, lin, wcsname), shape, value))
        lookups += lookup_hdus(det, ccdchip, versions[ccdchip], (-region[0], -region[1]))
    hdus = extensions + lookups
    primary = fits.PrimaryHDU(header=_primary(plan, len(hdus)))
    return fits.HDUList([primary, *hdus])


def make_hdulist(plan: ExposurePlan, images: dict[int, ChipImage]) -> fits.HDUList:
    """The complete FITS file of an exposure; ``images`` maps ``CCDCHIP`` to its pixels."""
    det = plan.det
    chips = plan.ccdchips
    versions = lookup_versions(det, chips)
    wcsname = f"IDC_{_idc_root(det)}"
    extensions = []
    lookups = []
    for extver, ccdchip in enumerate(chips, start=1):
        image = images[ccdchip]
        region = plan.region(ccdchip)
        lin = plan.header_chips[ccdchip]
        sci = _sci_header(plan, extver, ccdchip, versions[ccdchip], image)
        extensions.append(fits.ImageHDU(data=image.sci, header=sci))
        extensions.append(fits.ImageHDU(
            data=image.err, header=_ext_header(plan, "ERR", extver, ccdchip, region, lin,
                                               wcsname)))
        extensions.append(fits.ImageHDU(
            data=image.dq, header=_ext_header(plan, "DQ", extver, ccdchip, region, lin,
                                              wcsname)))
        if det.name == "IR":
            extensions.append(fits.ImageHDU(
                data=image.samp, header=_ext_header(plan, "SAMP", extver, ccdchip, region,
                                                    lin, wcsname)))
            extensions.append(fits.ImageHDU(
                data=image.time, header=_ext_header(plan, "TIME", extver, ccdchip, region,
                                                    lin, wcsname)))
        lookups += lookup_hdus(det, ccdchip, versions[ccdchip], (-region[0], -region[1]))
    hdus = extensions + lookups
    primary = fits.PrimaryHDU(header=_primary(plan, len(hdus)))
    return fits.HDUList([primary, *hdus])
