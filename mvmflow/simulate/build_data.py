"""Regenerate the simulator's package data (``mvmflow/data/hst/``) from the HST reference data.

This is a maintenance tool, never imported by the simulator. It documents exactly how every
shipped template, lookup table, PSF, photometric value and aperture was derived::

    python -m mvmflow.simulate.build_data /work/shared/reference_data/hst [OUTDIR]

The reference directory is the collection described in its ``README.md`` (real HST headers,
reference files, SIAF, PSFs and IMPHTTABs from public repositories). The output is
deterministic: running the tool twice gives identical files.

What is derived, and how
------------------------
Templates (``templates/<instrument>_<detector>.fits``), one header-only FITS file per detector
with the real lookup tables attached:

- **ACS/WFC**: primary, SCI, ERR and DQ headers of ``j94f05bgq_flt.fits`` (F606W, 2005). The
  SCI headers keep their real SIP (order 4, ``IDC_qbu1641sj``). The NPOL tables are the real
  ``qbu16424j_npl.fits`` (the NPOLFILE delivered with IDCTAB qbu1641sj), converted exactly as
  ``stwcs.updatewcs.npol`` does: ``WCSDVARR = inv([[OCX11, OCX10], [OCY11, OCY10]] / IDCSCALE)
  @ (DX, DY)`` (checked against the ready-made tables in ``dist_lookup.fits.gz``: identical to
  4e-9 px). The D2IM table is the real 1-D column-width file ``new_wfc_d2i.fits``.
- **WFC3/UVIS**: primary, SCI, ERR and DQ headers of ``ib4606c5q_flc`` (F555W, 2011) with the
  WCS of the ``IDC_2731450pi`` headerlet (SIP order 4) and its real NPOL (``y7b1516qi``) and D2IM
  (``y7b1516hi``) tables, 64x32 per axis and chip.
- **WFC3/IR**: primary, SCI, ERR, DQ, SAMP and TIME headers of ``ib4606cpq_flt`` (F110W) with its
  a-priori WCS ``IDC_w3m18525i`` (SIP order 4). IR has no NPOL or D2IM.
- **ACS/HRC**: primary and SCI headers of ``j8bt06nyq_sip_flt`` (F606W, SIP order 4,
  ``IDC_n721640fj``); its ERR/DQ headers are built from the ACS/WFC ones (same ACS layout).
- **ACS/SBC** (no real header exists anywhere): the HRC template with the SBC-specific
  keywords changed (DETECTOR, filters, MAMA instead of CCD keywords, reference files), and a
  distortion model converted from the SIAF polynomial of aperture ``JSBCFIX`` into CD + SIP the
  way stwcs converts an IDCTAB (linear part -> CD, higher orders -> SIP), with the sky parity
  taken from the HRC template. ``IDCSCALE`` is 0.025 as for HRC (SBC drizzled products use
  0.025"/px); the real pixel is about 0.034" x 0.030".

All templates lose their alternate WCSs, headerlets, WCSCORR tables, ``HISTORY`` and every
wall-clock keyword (``DATE``, ``IRAF-TLM``, ``WCSCDATE``, ...), which the simulator rewrites
from the exposure's own (simulated) dates.

Apertures (``apertures.csv``): sizes and positions of full-frame and subarray apertures, checked
against the SIAF (``hst_siaf.dat``): each subarray's centre must match the SIAF reference pixel
``(xa0, ya0)`` minus the serial prescan to within 1.5 px, and ``nx * ny`` must match the SIAF
aperture area divided by the plate scale squared to within 6 %.

Photometry (``filters.csv``): ACS/WFC values are the time-independent rows of the operational
IMPHTTAB ``08b18470j_imp.fits``; ACS/SBC values are from the development IMPHTTAB
``acs_sbc_dev_imp.fits``; WFC3/UVIS F555W, WFC3/IR F110W and ACS/HRC F606W are the values in
the real template headers; WFC3/UVIS F275W is a rounded published value (WFC3
Instrument Handbook / ISR 2021-04 zeropoints), marked as such in the file.

PSFs (``psfs/``): unmodified copies of the drizzlepac model PSFs the presets need.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = ["build"]

OUT_DEFAULT = Path(__file__).resolve().parents[1] / "data" / "hst"

# Keywords describing a WCS (primary or alternate) or left behind by WCS updates.
_WCS_KEY = re.compile(
    r"^(WCSAXES|WCSNAME|WCSNAX\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CTYPE\d|CD\d_\d|PC\d_\d|"
    r"LONPOLE|LATPOLE|RADESYS|EQUINOX|MJDREF|RESTFRQ|RESTWAV|CRDER\d|CSYER\d)[A-Z]?$"
)
_DIST_KEY = re.compile(
    r"^(A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d_\d|B_\d_\d|AP_\d_\d|BP_\d_\d|CPDIS\d|DP\d|"
    r"D2IMDIS\d|D2IM\d|CPERR\d|D2IMERR\d|NPOLEXT|D2IMEXT|A_DMAX|B_DMAX)$"
)
_STALE = {
    # old "O"/"S" (original/saved) WCS copies and WCS bookkeeping
    "OCRVAL1", "OCRVAL2", "OCRPIX1", "OCRPIX2", "ONAXIS1", "ONAXIS2", "OCD1_1", "OCD1_2",
    "OCD2_1", "OCD2_2", "OORIENTA", "OCTYPE1", "OCTYPE2", "SCRVAL1", "SCRVAL2", "SCRPIX1",
    "SCRPIX2", "SNAXIS1", "SNAXIS2", "SCD1_1", "SCD1_2", "SCD2_1", "SCD2_2", "SORIENTA",
    "SCTYPE1", "SCTYPE2", "WCSCDATE", "HDRNAME", "WCSTYPE", "RMS_RA", "RMS_DEC", "NMATCHES",
    "FITGEOM", "S_REGION", "MDRIZSKY", "TDD_CTA", "TDD_CTB", "TDD_CYA", "TDD_CYB", "TDD_CXA",
    "TDD_CXB",
    # wall-clock and file bookkeeping (rewritten by the simulator)
    "DATE", "IRAF-TLM", "ORIGIN", "CHECKSUM", "DATASUM", "PROCTIME",
    # headerlet bookkeeping
    "TG_ENAME", "TG_EVER",
}
_ALT_SUFFIX_KEYS = re.compile(r"^(HDRNAME|WCSTYPE|WCSNAME)[A-Z]$")


def _clean(header: fits.Header, keep_comments: bool = False) -> fits.Header:
    """Return a copy of ``header`` without WCS, distortion, history and wall-clock cards."""
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND",
                   "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER", "INHERIT", "NEXTEND"):
            continue
        if key == "HISTORY":
            continue
        if key == "COMMENT" and not keep_comments:
            continue
        if _WCS_KEY.match(key) or _DIST_KEY.match(key) or key in _STALE:
            continue
        if _ALT_SUFFIX_KEYS.match(key):
            continue
        out.append(card, end=True)
    return out


def _strip_blank_tail(header: fits.Header) -> fits.Header:
    """Drop blank cards at the end of a header (left by IRAF)."""
    cards = list(header.cards)
    while cards and not cards[-1].keyword and not str(cards[-1].value).strip():
        cards.pop()
    return fits.Header(cards)


def _wcs_cards(src: fits.Header, alt: str = "") -> list[tuple]:
    """The linear WCS and SIP cards of ``src`` (optionally of alternate ``alt``)."""
    cards = [
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CRPIX1", float(src["CRPIX1" + alt]), "x-coordinate of reference pixel"),
        ("CRPIX2", float(src["CRPIX2" + alt]), "y-coordinate of reference pixel"),
        ("CRVAL1", float(src["CRVAL1" + alt]), "first axis value at reference pixel"),
        ("CRVAL2", float(src["CRVAL2" + alt]), "second axis value at reference pixel"),
        ("CTYPE1", "RA---TAN-SIP", "the coordinate type for the first axis"),
        ("CTYPE2", "DEC--TAN-SIP", "the coordinate type for the second axis"),
        ("CD1_1", float(src["CD1_1" + alt]), "partial of first axis coordinate w.r.t. x"),
        ("CD1_2", float(src["CD1_2" + alt]), "partial of first axis coordinate w.r.t. y"),
        ("CD2_1", float(src["CD2_1" + alt]), "partial of second axis coordinate w.r.t. x"),
        ("CD2_2", float(src["CD2_2" + alt]), "partial of second axis coordinate w.r.t. y"),
    ]
    for ab in "AB":
        order = int(src[f"{ab}_ORDER"])
        axis = 1 if ab == "A" else 2
        cards.append((f"{ab}_ORDER", order, f"SIP polynomial order, axis {axis}, detector to sky"))
        for p in range(order + 1):
            for q in range(order + 1 - p):
                key = f"{ab}_{p}_{q}"
                if key in src:
                    cards.append((key, float(src[key]), "SIP distortion coefficient"))
    return cards


def _idc_cards(src: fits.Header) -> list[tuple]:
    keys = [("OCX10", "original linear term from IDCTAB"),
            ("OCX11", "original linear term from IDCTAB"),
            ("OCY10", "original linear term from IDCTAB"),
            ("OCY11", "original linear term from IDCTAB"),
            ("IDCSCALE", "pixel scale from the IDCTAB reference file"),
            ("IDCTHETA", "orientation of detector's Y-axis w.r.t. V3 axis"),
            ("IDCXREF", "reference pixel location in X"),
            ("IDCYREF", "reference pixel location in Y"),
            ("IDCV2REF", "reference pixel's V2 position"),
            ("IDCV3REF", "reference pixel's V3 position")]
    return [(k, float(src[k]), c) for k, c in keys if k in src]


def _set_cards(header: fits.Header, cards, after: str | None = None) -> None:
    for card in cards:
        key = card[0]
        if key in header:
            header[key] = card[1:]
        elif after is not None and after in header:
            header.insert(after, card, after=True)
            after = key
        else:
            header.append(card, end=True)


def _npol_keywords(j: int, extver: int, error: float) -> list[tuple]:
    return [
        (f"CPERR{j}", error, f"Maximum error of NPOL correction for axis {j}"),
        (f"CPDIS{j}", "Lookup", "Prior distortion function type"),
        (f"DP{j}.EXTVER", extver, "Version number of WCSDVARR extension"),
        (f"DP{j}.NAXES", 2, "Number of independent variables in CPDIS function"),
        (f"DP{j}.AXIS.1", 1, "Axis number of the 1st variable in a CPDIS function"),
        (f"DP{j}.AXIS.2", 2, "Axis number of the 2nd variable in a CPDIS function"),
    ]


def _d2im_keywords(j: int, extver: int, error: float) -> list[tuple]:
    return [
        (f"D2IMERR{j}", error, f"Maximum error of D2IM correction for axis {j}"),
        (f"D2IMDIS{j}", "Lookup", "Detector to image correction type"),
        (f"D2IM{j}.EXTVER", extver, "Version number of WCSDVARR extension"),
        (f"D2IM{j}.NAXES", 2, "Number of independent variables in D2IM function"),
        (f"D2IM{j}.AXIS.1", 1, "Axis number of the 1st variable in a D2IM function"),
        (f"D2IM{j}.AXIS.2", 2, "Axis number of the 2nd variable in a D2IM function"),
    ]


def _lookup_hdu(name: str, extver: int, data: np.ndarray, cdelt: float,
                source: str) -> fits.ImageHDU:
    """A WCSDVARR/D2IMARR extension in the form ``stwcs.updatewcs`` writes it (full chip)."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    hdr = fits.Header()
    hdr["EXTNAME"] = (name, "WCS distortion array")
    hdr["EXTVER"] = (extver, "Distortion array version number")
    for i in (1, 2):
        hdr[f"CDELT{i}"] = (float(cdelt) if data.shape[2 - i] > 1 else 1.0,
                            "Coordinate increment at reference point")
        hdr[f"CRPIX{i}"] = (0.0, "Pixel coordinate of reference point")
        hdr[f"CRVAL{i}"] = (0.0, "Coordinate value at reference point")
    hdr["FILENAME"] = (source, "reference file the table comes from")
    return fits.ImageHDU(data=data, header=hdr)


def _chip_table(path: Path, ccdchip: int) -> dict[str, np.ndarray]:
    """DX/DY arrays of one chip from an NPOL or D2IM reference file."""
    out = {}
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            if int(hdu.header.get("CCDCHIP", 1)) == ccdchip:
                out[hdu.header["EXTNAME"].strip()] = hdu.data.astype(np.float64)
    return out


def _ext_header(src: fits.Header, extname: str, extver: int, bunit: str | None) -> fits.Header:
    hdr = _clean(src)
    hdr.insert(0, ("EXTNAME", extname, "extension name"))
    hdr.insert(1, ("EXTVER", extver, "extension version number"))
    hdr.insert(2, ("INHERIT", True, "inherit the primary header"))
    if bunit is not None:
        hdr["BUNIT"] = (bunit, "brightness units")
    return _strip_blank_tail(hdr)


def _primary(src: fits.Header, **updates) -> fits.Header:
    hdr = _strip_blank_tail(_clean(src))
    for key, value in updates.items():
        key = key.replace("__", "-")
        if value is None:
            hdr.remove(key, ignore_missing=True)
        elif key in hdr:
            hdr[key] = value
        else:
            hdr.append((key, value), end=True)
    return hdr


def _add_mtflag(hdr: fits.Header) -> None:
    if "MTFLAG" not in hdr:
        after = "REFFRAME" if "REFFRAME" in hdr else "FGSLOCK"
        hdr.insert(after, ("MTFLAG", " ", "moving target flag; T if it is a moving target"),
                   after=True)


def _write(path: Path, hdus: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True, output_verify="silentfix")


# ---------------------------------------------------------------------------------------------
# detectors


def _acs_wfc(ref: Path, out: Path) -> None:
    src = fits.open(ref / "headers/acs_wfc/j94f05bgq_flt.fits")
    npl = ref / "distortion/acs_wfc/qbu16424j_npl.fits"
    d2i = ref / "distortion/acs_wfc/new_wfc_d2i.fits"
    prim = _primary(src[0].header, IDCTAB="jref$qbu1641sj_idc.fits",
                    NPOLFILE="jref$qbu16424j_npl.fits", D2IMFILE="jref$new_wfc_d2i.fits",
                    DGEOFILE="N/A", FLASHDUR=0.0, FLASHCUR="OFF", FLASHSTA="NOT PERFORMED",
                    MDRIZTAB=None, DISTNAME=None, SIPNAME=None, UPWCSVER=None, PYWCSVER=None,
                    ASN_TAB="NONE")
    _add_mtflag(prim)
    hdus = [fits.PrimaryHDU(header=prim)]
    lookups = []
    for extver in (1, 2):
        sci_src = src["SCI", extver].header
        ccdchip = int(sci_src["CCDCHIP"])
        sci = _ext_header(sci_src, "SCI", extver, "ELECTRONS")
        sci.remove("IDCTAB", ignore_missing=True)
        _set_cards(sci, _wcs_cards(sci_src) + _idc_cards(sci_src))
        # NPOL: converted the way stwcs.updatewcs.npol does it
        table = _chip_table(npl, ccdchip)
        oc = np.array([[sci_src["OCX11"], sci_src["OCX10"]],
                       [sci_src["OCY11"], sci_src["OCY10"]]]) / sci_src["IDCSCALE"]
        conv = np.linalg.inv(oc.astype(np.float32))
        dx, dy = table["DX"], table["DY"]
        ndx, ndy = np.dot(conv, [dx.ravel(), dy.ravel()]).astype(np.float32)
        ndx, ndy = ndx.reshape(dx.shape), ndy.reshape(dy.shape)
        for j, arr in ((1, ndx), (2, ndy)):
            ver = 2 * (extver - 1) + j
            _set_cards(sci, _npol_keywords(j, ver, float(arr.max())))
            lookups.append(_lookup_hdu("WCSDVARR", ver, arr, 64.0, "qbu16424j_npl.fits"))
        sci["NPOLEXT"] = "jref$qbu16424j_npl.fits"
        d2 = _chip_table(d2i, ccdchip)["DX"]
        _set_cards(sci, _d2im_keywords(1, extver, float(d2.max())))
        sci["D2IMEXT"] = "jref$new_wfc_d2i.fits"
        lookups.append(_lookup_hdu("D2IMARR", extver, d2, 1.0, "new_wfc_d2i.fits"))
        sci["WCSNAME"] = "IDC_qbu1641sj"
        hdus.append(fits.ImageHDU(header=sci))
        hdus.append(fits.ImageHDU(header=_ext_header(src["ERR", extver].header, "ERR", extver,
                                                     "ELECTRONS")))
        hdus.append(fits.ImageHDU(header=_ext_header(src["DQ", extver].header, "DQ", extver,
                                                     "UNITLESS")))
    _write(out / "templates/acs_wfc.fits", hdus + lookups)


def _wfc3_uvis(ref: Path, out: Path) -> None:
    src = fits.open(ref / "headers/wfc3_uvis/ib4606c5q_flc_10x10.fits")
    hlet = fits.open(ref / "distortion/wfc3_uvis/ib4606c5q_flt_IDC_2731450pi_hlet.fits")
    prim = _primary(src[0].header, IDCTAB="iref$2731450pi_idc.fits",
                    NPOLFILE="iref$y7b1516qi_npl.fits", D2IMFILE="iref$y7b1516hi_d2i.fits",
                    DISTNAME=None, SIPNAME=None, UPWCSVER=None, PYWCSVER=None,
                    CRDS_CTX=None, CRDS_VER=None, CSYS_VER=None, AWSYSVER=None, AWSDPVER=None)
    hdus = [fits.PrimaryHDU(header=prim)]
    lookups = []
    for extver in (1, 2):
        sci_src = src["SCI", extver].header
        wcs_src = hlet["SIPWCS", extver].header
        sci = _ext_header(sci_src, "SCI", extver, "ELECTRONS")
        _set_cards(sci, _wcs_cards(wcs_src) + _idc_cards(sci_src) + _idc_cards(wcs_src))
        for j in (1, 2):
            ver = 2 * (extver - 1) + j
            npl = hlet["WCSDVARR", ver].data
            d2 = hlet["D2IMARR", ver].data
            _set_cards(sci, _npol_keywords(j, ver, float(wcs_src[f"CPERR{j}"])))
            _set_cards(sci, _d2im_keywords(j, ver, float(wcs_src[f"D2IMERR{j}"])))
            lookups.append(_lookup_hdu("WCSDVARR", ver, npl, 64.0, "y7b1516qi_npl.fits"))
            lookups.append(_lookup_hdu("D2IMARR", ver, d2, 64.0, "y7b1516hi_d2i.fits"))
        sci["NPOLEXT"] = "iref$y7b1516qi_npl.fits"
        sci["D2IMEXT"] = "iref$y7b1516hi_d2i.fits"
        sci["WCSNAME"] = "IDC_2731450pi"
        hdus.append(fits.ImageHDU(header=sci))
        hdus.append(fits.ImageHDU(header=_ext_header(src["ERR", extver].header, "ERR", extver,
                                                     "ELECTRONS")))
        hdus.append(fits.ImageHDU(header=_ext_header(src["DQ", extver].header, "DQ", extver,
                                                     "UNITLESS")))
    _write(out / "templates/wfc3_uvis.fits", hdus + lookups)


def _wfc3_ir(ref: Path, out: Path) -> None:
    src = fits.open(ref / "headers/wfc3_ir/ib4606cpq_flt_10x10.fits")
    prim = _primary(src[0].header, IDCTAB="iref$w3m18525i_idc.fits", NPOLFILE="N/A",
                    D2IMFILE="N/A", DISTNAME=None, SIPNAME=None, UPWCSVER=None, PYWCSVER=None,
                    CRDS_CTX=None, CRDS_VER=None, CSYS_VER=None, AWSYSVER=None, AWSDPVER=None)
    sci_src = src["SCI", 1].header
    sci = _ext_header(sci_src, "SCI", 1, "ELECTRONS/S")
    cards = _wcs_cards(sci_src, alt="A")  # a-priori IDC_w3m18525i; SIP shared by all WCSs
    sip = _wcs_cards(sci_src)[11:]
    _set_cards(sci, cards[:11] + sip + _idc_cards(sci_src))
    sci["WCSNAME"] = "IDC_w3m18525i"
    hdus = [fits.PrimaryHDU(header=prim), fits.ImageHDU(header=sci)]
    for name, bunit in (("ERR", "ELECTRONS/S"), ("DQ", "UNITLESS"), ("SAMP", "SAMPLES"),
                        ("TIME", "SECONDS")):
        hdus.append(fits.ImageHDU(header=_ext_header(src[name, 1].header, name, 1, bunit)))
    _write(out / "templates/wfc3_ir.fits", hdus)


def _hrc_parts(ref: Path):
    src = fits.open(ref / "headers/acs_hrc/j8bt06nyq_sip_flt.fits")
    wfc = fits.open(ref / "headers/acs_wfc/j94f05bgq_flt.fits")
    return src, wfc


def _acs_hrc(ref: Path, out: Path) -> None:
    src, wfc = _hrc_parts(ref)
    prim = _primary(src[0].header, IDCTAB="jref$n721640fj_idc.fits", NPOLFILE="N/A",
                    D2IMFILE="N/A", DGEOFILE="N/A", MDRIZTAB=None, DISTNAME=None, SIPNAME=None,
                    UPWCSVER=None, PYWCSVER=None)
    _add_mtflag(prim)
    sci_src = src["SCI", 1].header
    sci = _ext_header(sci_src, "SCI", 1, "ELECTRONS")
    sci.remove("IDCTAB", ignore_missing=True)
    _set_cards(sci, _wcs_cards(sci_src) + _idc_cards(sci_src))
    sci["WCSNAME"] = "IDC_n721640fj"
    hdus = [fits.PrimaryHDU(header=prim), fits.ImageHDU(header=sci)]
    for name, bunit in (("ERR", "ELECTRONS"), ("DQ", "UNITLESS")):
        hdus.append(fits.ImageHDU(header=_ext_header(wfc[name, 1].header, name, 1, bunit)))
    _write(out / "templates/acs_hrc.fits", hdus)


def _poly_terms(coef, deg):
    """(power of x, power of y, coefficient) of a SIAF polynomial.

    Term ``k = i (i + 1) / 2 + j`` is ``x^j y^(i-j)`` (the IDCTAB ordering); checked on ACS/HRC,
    whose SIAF ``JHRCFIX`` polynomial reproduces the real HRC header SIP exactly.
    """
    k = 0
    for i in range(deg + 1):
        for j in range(i + 1):
            yield j, i - j, coef[k]
            k += 1


def siaf_to_sip(aperture: dict) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """Convert a SIAF SIAS->SICS polynomial to (linear matrix [arcsec/px], SIP A, SIP B).

    ``X = P_x(u, v)``, ``Y = P_y(u, v)`` with ``(u, v)`` the pixel offsets from the reference
    pixel; ``L`` is the linear part and ``(u + f, v + g) = L^-1 P(u, v)`` defines the SIP
    polynomials ``f, g`` (exactly the IDCTAB -> SIP conversion of stwcs).
    """
    poly = np.array(aperture["poly"])
    deg = aperture["ideg"]
    px = {(a, b): c for a, b, c in _poly_terms(poly[:, 0], deg)}
    py = {(a, b): c for a, b, c in _poly_terms(poly[:, 1], deg)}
    lin = np.array([[px[(1, 0)], px[(0, 1)]], [py[(1, 0)], py[(0, 1)]]])
    inv = np.linalg.inv(lin)
    a, b = {}, {}
    for (p, q), cx in px.items():
        if p + q < 2:
            continue
        cy = py[(p, q)]
        fa, fb = inv @ np.array([cx, cy])
        a[f"A_{p}_{q}"] = float(fa)
        b[f"B_{p}_{q}"] = float(fb)
    return lin, a, b


def _acs_sbc(ref: Path, out: Path) -> None:
    src, wfc = _hrc_parts(ref)
    siaf = read_siaf(ref / "apertures/hst_siaf.dat")
    sbc, hrc_ap = siaf["JSBCFIX"], siaf["JHRCFIX"]
    # parity: compare the HRC SIAF linear part with the real HRC CD matrix
    hrc_sci = src["SCI", 1].header
    hrc_cd = np.array([[hrc_sci["CD1_1"], hrc_sci["CD1_2"]], [hrc_sci["CD2_1"], hrc_sci["CD2_2"]]])
    hrc_lin, _, _ = siaf_to_sip(hrc_ap)
    flip = np.sign(np.linalg.det(hrc_cd)) != np.sign(np.linalg.det(hrc_lin))
    lin, a, b = siaf_to_sip(sbc)
    # orient like the HRC template (north roughly where HRC's is): CD = R @ F @ L / 3600
    refl = np.diag([-1.0, 1.0]) if flip else np.eye(2)
    m = refl @ lin
    theta_hrc = np.arctan2(hrc_cd[0, 1], hrc_cd[1, 1])
    theta_m = np.arctan2(m[0, 1], m[1, 1])
    rot = theta_hrc - theta_m
    c, s = np.cos(rot), np.sin(rot)
    r = np.array([[c, s], [-s, c]])
    cd = r @ m / 3600.0
    prim = _primary(
        src[0].header, DETECTOR="SBC", FILTER1="F150LP", FILTER2="N/A",
        APERTURE="SBC", PROPAPER="SBC", IDCTAB="jref$sbc_siaf_jsbcfix_idc.fits",
        NPOLFILE="N/A", D2IMFILE="N/A", DGEOFILE="N/A", MDRIZTAB=None, DISTNAME=None,
        SIPNAME=None, UPWCSVER=None, PYWCSVER=None, CCDAMP=None, CCDGAIN=None,
        CCDOFSTA=None, CCDOFSTB=None, CCDOFSTC=None, CCDOFSTD=None, ATODGNA=None,
        ATODGNB=None, ATODGNC=None, ATODGND=None, READNSEA=None, READNSEB=None,
        READNSEC=None, READNSED=None, BIASLEVA=None, BIASLEVB=None, BIASLEVC=None,
        BIASLEVD=None, FLASHDUR=None, FLASHCUR=None, FLASHSTA=None, SHUTRPOS=None,
        BIASFILE="N/A", BIASCORR="OMIT", BLEVCORR="OMIT", ATODCORR="OMIT", FLSHCORR="OMIT",
        SHADCORR="OMIT", CRCORR="OMIT", EXPSCORR="OMIT", GLINCORR="COMPLETE",
        LFLGCORR="COMPLETE", CCDTAB="N/A", OSCNTAB="N/A", CRREJTAB="N/A", SHADFILE="N/A",
        FLSHFILE="N/A", CTEDIR=None, CTEIMAGE=None,
        CRSPLIT=None)
    _add_mtflag(prim)
    sci_src = src["SCI", 1].header
    sci = _ext_header(sci_src, "SCI", 1, "ELECTRONS/S")
    for key in ("IDCTAB",):
        sci.remove(key, ignore_missing=True)
    xref, yref = 512.0, 512.0
    cards = [
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CRPIX1", xref, "x-coordinate of reference pixel"),
        ("CRPIX2", yref, "y-coordinate of reference pixel"),
        ("CRVAL1", float(hrc_sci["CRVAL1"]), "first axis value at reference pixel"),
        ("CRVAL2", float(hrc_sci["CRVAL2"]), "second axis value at reference pixel"),
        ("CTYPE1", "RA---TAN-SIP", "the coordinate type for the first axis"),
        ("CTYPE2", "DEC--TAN-SIP", "the coordinate type for the second axis"),
        ("CD1_1", float(cd[0, 0]), "partial of first axis coordinate w.r.t. x"),
        ("CD1_2", float(cd[0, 1]), "partial of first axis coordinate w.r.t. y"),
        ("CD2_1", float(cd[1, 0]), "partial of second axis coordinate w.r.t. x"),
        ("CD2_2", float(cd[1, 1]), "partial of second axis coordinate w.r.t. y"),
        ("A_ORDER", int(sbc["ideg"]), "SIP polynomial order, axis 1, detector to sky"),
        ("B_ORDER", int(sbc["ideg"]), "SIP polynomial order, axis 2, detector to sky"),
    ]
    cards += [(k, v, "SIP distortion coefficient (from SIAF JSBCFIX)") for k, v in a.items()]
    cards += [(k, v, "SIP distortion coefficient (from SIAF JSBCFIX)") for k, v in b.items()]
    cards += [
        ("OCX10", float(lin[0, 1]), "linear term from SIAF JSBCFIX (SICS X per y)"),
        ("OCX11", float(lin[0, 0]), "linear term from SIAF JSBCFIX (SICS X per x)"),
        ("OCY10", float(lin[1, 1]), "linear term from SIAF JSBCFIX (SICS Y per y)"),
        ("OCY11", float(lin[1, 0]), "linear term from SIAF JSBCFIX (SICS Y per x)"),
        ("IDCSCALE", 0.025, "pixel scale of the distortion solution (as HRC)"),
        ("IDCTHETA", 0.0, "orientation of detector's Y-axis w.r.t. V3 axis"),
        ("IDCXREF", xref, "reference pixel location in X"),
        ("IDCYREF", yref, "reference pixel location in Y"),
        ("IDCV2REF", float(sbc["v2"]), "reference pixel's V2 position (SIAF JSBCFIX)"),
        ("IDCV3REF", float(sbc["v3"]), "reference pixel's V3 position (SIAF JSBCFIX)"),
    ]
    _set_cards(sci, cards)
    sci["WCSNAME"] = "IDC_sbc_siaf"
    for key in ("MEANBLEV", "MEANFLSH"):
        sci.remove(key, ignore_missing=True)
    sci["PHOTMODE"] = "ACS SBC F150LP"
    hdus = [fits.PrimaryHDU(header=prim), fits.ImageHDU(header=sci)]
    for name, bunit in (("ERR", "ELECTRONS/S"), ("DQ", "UNITLESS")):
        hdus.append(fits.ImageHDU(header=_ext_header(wfc[name, 1].header, name, 1, bunit)))
    _write(out / "templates/acs_sbc.fits", hdus)


# ---------------------------------------------------------------------------------------------
# SIAF apertures


def read_siaf(path: Path) -> dict[str, dict]:
    """Parse the HST SIAF ``siaf.dat`` (PRD format, as pysiaf's ``read_hst_siaf``)."""
    aps: dict[str, dict] = {}
    caj = 0
    cur: dict | None = None
    for text in Path(path).read_text().splitlines():
        rec = text.rstrip()
        if rec.endswith("CAJ"):
            if caj == 0:
                cur = {"name": text[0:10].strip(), "v2": float(text[10:25]),
                       "v3": float(text[25:40]), "shape": text[40:44], "poly": []}
            elif caj == 1:
                cur["scale"] = float(text[15:30])
                cur["area"] = float(text[30:45])
            else:
                cur["ideg"] = int(text[2])
                cur["xa0"] = float(text[3:18])
                cur["ya0"] = float(text[18:33])
            caj = (caj + 1) % 3
        elif cur is not None and rec.endswith("CAK"):
            cur["poly"].append([float(text[15 * i:15 * (i + 1)]) for i in range(4)])
        elif cur is not None and rec.endswith("AK"):
            cur["poly"].append([float(text[15 * i:15 * (i + 1)]) for i in range(4)])
            aps[cur["name"]] = cur
    return aps


# (APERTURE, SIAF name, instrument, detector, ccdchip, nx, ny, prescan, corner, note)
# corner: where the readout amplifier corner is ("ll", "lr", "ul", "ur") or "center"
_APERTURES = [
    ("WFC", "JWFC", "ACS", "WFC", 0, 4096, 2048, 24, "full", "both chips"),
    ("WFC1-2K", "JWFC1S2K", "ACS", "WFC", 1, 2048, 2046, 24, "ur", "pre-2016 amp B subarray"),
    ("WFC1-1K", "JWFC1S1K", "ACS", "WFC", 1, 1024, 1024, 24, "ur", "pre-2016 amp B subarray"),
    ("WFC1-512", "JWFC1S512", "ACS", "WFC", 1, 512, 512, 24, "ur", "pre-2016 amp B subarray"),
    ("WFC1A-2K", "JWFC1A2K", "ACS", "WFC", 1, 2048, 2048, 24, "ul", "2016+ amp A subarray"),
    ("WFC1B-2K", "JWFC1B2K", "ACS", "WFC", 1, 2048, 2048, 24, "ur", "2016+ amp B subarray"),
    ("WFC2C-2K", "JWFC2C2K", "ACS", "WFC", 2, 2048, 2048, 24, "ll", "2016+ amp C subarray"),
    ("WFC2D-2K", "JWFC2D2K", "ACS", "WFC", 2, 2048, 2048, 24, "lr", "2016+ amp D subarray"),
    ("WFC1A-1K", "JWFC1A1K", "ACS", "WFC", 1, 2048, 1024, 24, "ul", "2016+ amp A subarray"),
    ("WFC1A-512", "JWFC1A512", "ACS", "WFC", 1, 2048, 512, 24, "ul", "2016+ amp A subarray"),
    ("HRC", "JHRCFIX", "ACS", "HRC", 1, 1024, 1024, 19, "full", ""),
    ("HRC-512", "JHRCS512", "ACS", "HRC", 1, 512, 512, 19, "ll", "amp C subarray"),
    ("SBC", "JSBCFIX", "ACS", "SBC", 1, 1024, 1024, 0, "full", ""),
    ("UVIS", "IUVIS", "WFC3", "UVIS", 0, 4096, 2051, 25, "full", "both chips"),
    ("UVIS2-C1K1C-SUB", "IUV2CC_1K1", "WFC3", "UVIS", 2, 1024, 1024, 25, "ll", "amp C"),
    ("UVIS2-C512C-SUB", "IUV2CC_512", "WFC3", "UVIS", 2, 512, 512, 25, "ll", "amp C"),
    ("IR", "IIRFIX", "WFC3", "IR", 1, 1014, 1014, 0, "full", ""),
    ("IRSUB512", "IIRS512", "WFC3", "IR", 1, 512, 512, 0, "center", "centred on the detector"),
    ("IRSUB256", "IIRS256", "WFC3", "IR", 1, 256, 256, 0, "center", "centred on the detector"),
]
_CHIP_SHAPE = {("ACS", "WFC"): (4096, 2048), ("WFC3", "UVIS"): (4096, 2051),
               ("WFC3", "IR"): (1014, 1014), ("ACS", "HRC"): (1024, 1024),
               ("ACS", "SBC"): (1024, 1024)}


def _apertures(ref: Path, out: Path) -> None:
    siaf = read_siaf(ref / "apertures/hst_siaf.dat")
    rows = []
    for name, sname, inst, det, chip, nx, ny, prescan, corner, note in _APERTURES:
        ap = siaf[sname]
        fx, fy = _CHIP_SHAPE[(inst, det)]
        if corner == "full":
            x0 = y0 = 0
        elif corner == "center":
            x0, y0 = (fx - nx) // 2, (fy - ny) // 2
        else:
            x0 = 0 if corner[1] == "l" else fx - nx
            y0 = 0 if corner[0] == "l" else fy - ny
        if corner not in ("full", "center"):
            cx, cy = ap["xa0"] - prescan - 1, ap["ya0"] - 1
            ex, ey = x0 + (nx - 1) / 2, y0 + (ny - 1) / 2
            if abs(cx - ex) > 1.5 or abs(cy - ey) > 1.5:
                raise ValueError(f"{name}: SIAF centre ({cx}, {cy}) != ({ex}, {ey})")
            npix = ap["area"] / ap["scale"] ** 2
            if abs(npix / (nx * ny) - 1) > 0.06:
                raise ValueError(f"{name}: SIAF area {npix:.0f} px != {nx}x{ny}")
        rows.append({"aperture": name, "siaf": sname, "instrument": inst, "detector": det,
                     "ccdchip": chip, "x0": x0, "y0": y0, "nx": nx, "ny": ny,
                     "siaf_v2": ap["v2"], "siaf_v3": ap["v3"],
                     "siaf_area_px": round(ap["area"] / ap["scale"] ** 2), "note": note})
    path = out / "apertures.csv"
    with path.open("w", newline="") as fh:
        fh.write("# HST apertures used by mvmflow.simulate; generated by "
                 "mvmflow/simulate/build_data.py from SIAF hst_siaf.dat.\n")
        fh.write("# x0, y0: 0-based first column/row of the readout in full-chip FLT "
                 "coordinates; ccdchip 0 = every chip.\n")
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------
# photometry and PSFs

# (instrument, detector, filter, FILTER1, FILTER2, psf file, psf note)
_FILTERS = [
    ("ACS", "WFC", "F606W", "F606W", "CLEAR2L", "acs_wfc_f606w", ""),
    ("ACS", "WFC", "F625W", "F625W", "CLEAR2L", "acs_wfc_f625w", ""),
    ("ACS", "WFC", "F658N", "F658N", "CLEAR2L", "acs_wfc_f625w", "nearest PSF: F625W"),
    ("ACS", "WFC", "F814W", "CLEAR1L", "F814W", "acs_wfc_f814w", ""),
    ("ACS", "HRC", "F606W", "F606W", "CLEAR2S", "acs_hrc_f606w", ""),
    ("ACS", "SBC", "F150LP", "F150LP", "N/A", "acs_sbc_f150lp", ""),
    ("ACS", "SBC", "F122M", "F122M", "N/A", "acs_sbc_f122m", ""),
    ("WFC3", "UVIS", "F275W", "", "", "wfc3_uvis_f275w", ""),
    ("WFC3", "UVIS", "F555W", "", "", "wfc3_uvis_f555w", ""),
    ("WFC3", "IR", "F110W", "", "", "wfc3_ir_f110w", ""),
]

# Published WFC3/UVIS values (UVIS1, FLUXCORR=COMPLETE), rounded; not in the reference data.
_PUBLISHED = {
    ("WFC3", "UVIS", "F275W"): (3.19e-18, 2709.7, 164.4, 3.19e-18, 3.31e-18,
                                "published WFC3/UVIS1 value (WFC3 IHB / ISR 2021-04), rounded"),
}


def _imphttab(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with fits.open(path) as hdul:
        for ext in ("PHOTFLAM", "PHOTPLAM", "PHOTBW"):
            for row in hdul[ext].data:
                mode = row["OBSMODE"].strip().lower()
                if "#" in mode:
                    continue
                out.setdefault(mode, {})[ext] = float(row[ext])
    return out


def _photometry(ref: Path, out: Path) -> None:
    wfc = _imphttab(ref / "photometry/08b18470j_imp.fits")
    sbc = _imphttab(ref / "photometry/acs_sbc_dev_imp.fits")
    uvis = fits.getheader(ref / "headers/wfc3_uvis/ib4606c5q_flc_10x10.fits", 1)
    ir = fits.getheader(ref / "headers/wfc3_ir/ib4606cpq_flt_10x10.fits", 0)
    hrc = fits.getheader(ref / "headers/acs_hrc/j8bt06nyq_sip_flt.fits", 1)
    rows = []
    for inst, det, filt, f1, f2, psf, note in _FILTERS:
        phtflam1 = phtflam2 = ""
        if inst == "ACS" and det == "WFC":
            v = wfc[f"acs,wfc1,{filt.lower()}"]
            flam, plam, bw = v["PHOTFLAM"], v["PHOTPLAM"], v["PHOTBW"]
            mode, src = f"ACS WFC1 {filt}", "IMPHTTAB 08b18470j_imp.fits (operational)"
        elif inst == "ACS" and det == "SBC":
            v = sbc[f"acs,sbc,{filt.lower()}"]
            flam, plam, bw = v["PHOTFLAM"], v["PHOTPLAM"], v["PHOTBW"]
            mode, src = f"ACS SBC {filt}", "IMPHTTAB acs_sbc_dev_imp.fits (development, MODEL)"
        elif inst == "ACS" and det == "HRC":
            flam, plam, bw = hrc["PHOTFLAM"], hrc["PHOTPLAM"], hrc["PHOTBW"]
            mode, src = hrc["PHOTMODE"].strip(), "template header j8bt06nyq (real)"
        elif det == "IR":
            flam, plam, bw = ir["PHOTFLAM"], ir["PHOTPLAM"], ir["PHOTBW"]
            mode, src = ir["PHOTMODE"].strip(), "template header ib4606cpq (real)"
        elif filt == "F555W":
            flam, plam, bw = uvis["PHOTFLAM"], uvis["PHOTPLAM"], uvis["PHOTBW"]
            phtflam1, phtflam2 = uvis["PHTFLAM1"], uvis["PHTFLAM2"]
            mode, src = f"WFC3 UVIS2 {filt}", "template header ib4606c5q (real)"
        else:
            flam, plam, bw, phtflam1, phtflam2, src = _PUBLISHED[(inst, det, filt)]
            mode = f"WFC3 UVIS2 {filt}"
        rows.append({"instrument": inst, "detector": det, "filter": filt, "filter1": f1,
                     "filter2": f2, "photmode": mode, "photflam": f"{flam:.8e}",
                     "photplam": f"{plam:.4f}", "photbw": f"{bw:.4f}", "photzpt": "-21.1",
                     "phtflam1": f"{phtflam1:.8e}" if phtflam1 != "" else "",
                     "phtflam2": f"{phtflam2:.8e}" if phtflam2 != "" else "",
                     "psf": psf, "psf_note": note, "source": src})
    path = out / "filters.csv"
    with path.open("w", newline="") as fh:
        fh.write("# Photometric keywords and model PSF per instrument/detector/filter; generated "
                 "by mvmflow/simulate/build_data.py.\n")
        fh.write("# 'source' says where each value comes from; 'published' rows are rounded "
                 "values from the WFC3 documentation, not from the reference data.\n")
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        name = row["psf"]
        dst = out / "psfs" / f"{name}.fits"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with fits.open(ref / "psfs" / f"{name}.fits") as hdul:
            hdr = fits.Header()
            for key in ("INSTRUME", "FILTER", "PIXSCALE", "SPECTRUM", "X_PSF", "Y_PSF"):
                if key in hdul[0].header:
                    hdr[key] = hdul[0].header[key]
            for card in hdul[0].header.cards:
                if card.keyword == "COMMENT":
                    hdr.append(card, end=True)
            hdr["ORIGFILE"] = (f"drizzlepac/pars/psfs/{name}_psf.fits", "source of the PSF")
            fits.PrimaryHDU(data=hdul[0].data.astype(">f4"), header=hdr).writeto(
                dst, overwrite=True)


def build(ref: Path, out: Path = OUT_DEFAULT) -> None:
    """Regenerate every file of the simulator's package data from ``ref``."""
    ref, out = Path(ref), Path(out)
    for sub in ("templates", "psfs"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    _acs_wfc(ref, out)
    _wfc3_uvis(ref, out)
    _wfc3_ir(ref, out)
    _acs_hrc(ref, out)
    _acs_sbc(ref, out)
    _apertures(ref, out)
    _photometry(ref, out)


if __name__ == "__main__":  # pragma: no cover - maintenance tool
    build(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else OUT_DEFAULT)
