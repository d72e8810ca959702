"""The truth files of a simulated data set and the true WCS of a written chip.

``<out>/truth/`` holds (all ECSV):

- ``sources.ecsv``: every source (``id``, ``type`` star/galaxy, ``ra``/``dec`` at ``epoch``
  2016.0, ``pmra``/``pmdec`` in mas/yr, ``mag_v``, ``teff``, Sersic parameters, and per
  filter ``mag_<inst>_<det>_<filter>`` (ST) and ``rate_<inst>_<det>_<filter>`` (true count
  rate, e-/s: the total charge a star deposits is ``rate * EXPTIME``);
- ``exposures.ecsv``: one row per file (``file``, ``rootname``, ``instrument``, ``detector``,
  ``filter``, ``aperture``, ``subarray``, ``visit``, ``proposid``, ``expstart`` (MJD),
  ``epoch`` (Julian year at mid-exposure), ``exptime``, true pointing ``ra``/``dec`` of the
  aperture reference pixel and ``pa``, the injected pointing error ``offset_dx``/``offset_dy``
  (arcsec east/north) and ``rotation`` (deg) about ``error_ra``/``error_dec``,
  ``cr_flagged``);
- ``chips.ecsv``: one row per SCI extension with the true and the header ``CRVAL``/``CD``,
  ``CRPIX`` and the readout region;
- ``refcat.ecsv``: the Gaia-like reference catalogue (see :mod:`mvmflow.simulate.scene`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

__all__ = ["layer_epoch", "read_truth", "true_wcs", "truth_comparison"]

TRUTH_FILES = ("sources", "exposures", "chips", "refcat")


def write_table(table: Table, path: Path) -> Path:
    """Write an ECSV deterministically (no dates in the metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def read_truth(truth_dir: str | Path, name: str) -> Table:
    """Read one truth table (``sources``, ``exposures``, ``chips`` or ``refcat``)."""
    if name not in TRUTH_FILES:
        raise ValueError(f"unknown truth table {name!r}; one of {TRUTH_FILES}")
    return Table.read(Path(truth_dir) / f"{name}.ecsv", format="ascii.ecsv")


def true_wcs(exposure_path: str | Path, extver: int = 1,
             truth_dir: str | Path | None = None) -> WCS:
    """The true WCS of ``(SCI, extver)`` of a written exposure.

    The exposure's header WCS (SIP and lookup tables included) with ``CRVAL`` and ``CD``
    replaced by the true values recorded in ``chips.ecsv``; pixel positions of the truth
    sources through this WCS are where they were drawn.

    Parameters
    ----------
    exposure_path : path
        The ``_flt.fits``/``_flc.fits`` file.
    extver : int
        Which SCI extension.
    truth_dir : path, optional
        The truth directory (default: ``truth/`` next to the exposure).
    """
    exposure_path = Path(exposure_path)
    truth_dir = exposure_path.parent / "truth" if truth_dir is None else Path(truth_dir)
    chips = read_truth(truth_dir, "chips")
    name = exposure_path.name
    row = chips[(chips["file"] == name) & (chips["extver"] == extver)]
    if len(row) != 1:
        raise ValueError(f"no truth for {name} SCI,{extver} in {truth_dir}")
    row = row[0]
    with fits.open(exposure_path) as hdul:
        hdr = hdul["SCI", extver].header.copy()
        hdr["CRVAL1"] = float(row["crval1"])
        hdr["CRVAL2"] = float(row["crval2"])
        for key in ("cd1_1", "cd1_2", "cd2_1", "cd2_2"):
            hdr[key.upper()] = float(row[key])
        lookups = [fits.ImageHDU(data=np.array(h.data), header=h.header.copy())
                   for h in hdul if h.name in ("WCSDVARR", "D2IMARR")]
    fobj = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(header=hdr), *lookups])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(hdr, fobj)


# ----------------------------------------------------------------------------------
# A layer catalogue against the truth (tests/test_layercat.py, benchmarks/quality_figures.py)


def layer_epoch(layer: Path, truth_dir: Path) -> float:
    """Exposure-time-weighted mean epoch (Julian year) of a layer's inputs, from the truth."""
    exposures = Table.read(truth_dir / "exposures.ecsv")
    epoch = {str(f)[:9]: (float(e), float(t)) for f, e, t in
             zip(exposures["file"], exposures["epoch"], exposures["exptime"], strict=True)}
    roots = sorted(set(str(r).strip() for r in fits.getdata(layer, "HDRTAB")["ROOTNAME"]))
    e, t = np.array([epoch[r] for r in roots if r in epoch]).T
    return float(np.sum(e * t) / np.sum(t))


def truth_comparison(cat: Table, layer: Path, truth_dir: Path, *, min_snr: float = 20.0,
                     isolation: float = 0.5, tolerance: float = 0.1) -> dict:
    """Positions (mas) and ST magnitudes of a layer catalogue
    (:func:`mvmflow.layercat.layer_catalog`) against the true stars.

    Clean sources (flags 0) with S/N above ``min_snr`` are matched to the true stars
    (proper motions applied to the layer's epoch) within ``tolerance`` arcsec; only stars
    with no other true source within ``isolation`` arcsec count.
    """
    src = Table.read(truth_dir / "sources.ecsv")
    name = "_".join(cat.meta["layer"].split("_")[2:5])  # <instr>_<det>_<filter>
    epoch = layer_epoch(layer, truth_dir)
    dt = epoch - np.asarray(src["epoch"], dtype=float)
    dec = np.asarray(src["dec"]) + np.asarray(src["pmdec"]) * dt / 3.6e6
    ra = np.asarray(src["ra"]) + np.asarray(src["pmra"]) * dt / 3.6e6 / np.cos(np.radians(dec))
    cosd = np.cos(np.radians(np.median(dec)))
    tx, ty = (ra - np.median(ra)) * cosd * 3600, (dec - np.median(dec)) * 3600
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([tx, ty]))
    crowd = np.array([len(n) for n in tree.query_ball_point(np.column_stack([tx, ty]),
                                                            isolation)])
    good = (np.asarray(cat["flags"]) == 0) & (np.asarray(cat["snr"]) > min_snr)
    c = cat[good]
    cx = (np.asarray(c["ra"]) - np.median(ra)) * cosd * 3600
    cy = (np.asarray(c["dec"]) - np.median(dec)) * 3600
    d, j = tree.query(np.column_stack([cx, cy]), distance_upper_bound=tolerance)
    ok = np.isfinite(d)
    ok[ok] &= (np.asarray(src["type"])[j[ok]] == "star") & (crowd[j[ok]] == 1)
    j = j[ok]
    dra = (np.asarray(c["ra"])[ok] - ra[j]) * np.cos(np.radians(dec[j])) * 3.6e6
    ddec = (np.asarray(c["dec"])[ok] - dec[j]) * 3.6e6
    dmag = np.asarray(c["mag_st"])[ok] - np.asarray(src[f"mag_{name}"])[j]
    pull = dmag / np.asarray(c["mag_err"])[ok]

    def mad(v):
        return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else np.nan

    return {"n": int(ok.sum()), "dra_mas": float(np.median(dra)) if j.size else np.nan,
            "ddec_mas": float(np.median(ddec)) if j.size else np.nan,
            "pos_scatter_mas": mad(np.hypot(dra, ddec)) if j.size else np.nan,
            "pos_median_mas": float(np.median(np.hypot(dra, ddec))) if j.size else np.nan,
            "dmag": float(np.median(dmag)) if j.size else np.nan,
            "dmag_scatter": mad(dmag), "pull_scatter": mad(pull)}
