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

__all__ = ["read_truth", "true_wcs"]

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
