"""Astrometric reference catalogues for absolute alignment: Gaia (online) or a file.

A reference catalogue is normalised (:func:`normalize_refcat`) to these columns:

- ``ra``, ``dec`` (deg) at ``epoch``;
- ``ra_error``, ``dec_error`` (mas; 0 when unknown);
- ``pmra`` (mas/yr, times cos Dec, as Gaia), ``pmdec`` (mas/yr); 0 when unknown;
- ``pmra_error``, ``pmdec_error`` (mas/yr); :data:`UNKNOWN_PM_ERROR` for a source without a
  proper motion (Gaia two-parameter solutions), 0 when the file gives proper motions
  without errors;
- ``epoch`` (Julian year of the positions);
- ``source_id`` (int) and ``mag`` (NaN when unknown).

Sources:

- ``gaia``: Gaia DR3 ``gaiadr3.gaia_source`` from the ESA archive's TAP service through
  astroquery's TAP client (``astroquery.utils.tap.TapPlus``, which ``astroquery.gaia`` is
  built on; an asynchronous ADQL job, so there is no row limit), a cone covering the
  exposures; the server is an argument (:func:`query_gaia`), so tests use a local one.
- a file: ECSV or CSV (any format astropy reads) with at least ``ra`` and ``dec``; names are
  matched case-insensitively with the usual aliases (``RA_ICRS``, ``DE_ICRS``, ``e_RA``,
  ``pmRA``, ``ref_epoch``, ``Epoch``...). Without an epoch column the table metadata
  ``epoch`` or ``ref_epoch`` is used, else :data:`DEFAULT_EPOCH` (Gaia DR3's 2016.0).
- ``none``: no catalogue (relative alignment only).

:func:`positions_at` propagates positions with the proper motions to an epoch (linear in RA
and Dec, as Gaia's own epoch propagation to first order; parallax is ignored) and grows the
errors accordingly. :func:`mjd_to_jyear` converts an exposure's MJD to a Julian year.

:func:`make_refcat` is the optional workflow step that fetches or reads the catalogue once
for an alignment group and writes it as a normalised ECSV.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from mvmflow.workflow import atomic_path

__all__ = [
    "DEFAULT_EPOCH",
    "GAIA_TABLE",
    "GAIA_TAP_URL",
    "UNKNOWN_PM_ERROR",
    "catalog_label",
    "cone_of",
    "gaia_query_text",
    "load_refcat",
    "make_refcat",
    "mjd_to_jyear",
    "normalize_refcat",
    "positions_at",
    "query_gaia",
    "read_refcat",
]

log = logging.getLogger(__name__)

GAIA_TAP_URL = "https://gea.esac.esa.int/"
"""The ESA Gaia archive (TAP service at ``<url>tap-server/tap``)."""

GAIA_TABLE = "gaiadr3.gaia_source"
DEFAULT_EPOCH = 2016.0
UNKNOWN_PM_ERROR = 5.0
"""Proper-motion error (mas/yr) assumed for a source without a proper motion."""

_ALIASES = {
    "ra": ("ra", "ra_icrs", "raj2000", "radeg", "ra_deg", "alpha"),
    "dec": ("dec", "de_icrs", "dej2000", "dedeg", "dec_deg", "decl", "delta", "de"),
    "ra_error": ("ra_error", "e_ra_icrs", "e_ra", "ra_err", "sigma_ra", "raerr"),
    "dec_error": ("dec_error", "e_de_icrs", "e_dec", "e_de", "dec_err", "sigma_dec", "decerr"),
    "pmra": ("pmra", "pm_ra", "pmracosdec"),
    "pmdec": ("pmdec", "pmde", "pm_dec"),
    "pmra_error": ("pmra_error", "e_pmra", "pmra_err"),
    "pmdec_error": ("pmdec_error", "e_pmde", "e_pmdec", "pmdec_err"),
    "epoch": ("epoch", "ref_epoch", "epoch_jyear", "refepoch"),
    "mag": ("mag", "phot_g_mean_mag", "gmag", "g"),
    "source_id": ("source_id", "id", "sourceid", "objid"),
}


def mjd_to_jyear(mjd):
    """Julian year of a Modified Julian Date (``2000.0 + (mjd - 51544.5) / 365.25``)."""
    return 2000.0 + (np.asarray(mjd, dtype=np.float64) - 51544.5) / 365.25


def catalog_label(source) -> str:
    """The catalogue part of a fit's WCSNAME: ``GAIADR3``, ``NONE`` or, for a file, its
    ``name`` metadata (upper case, letters and digits) or ``REFCAT``."""
    if source is None:
        return "NONE"
    if isinstance(source, Table):
        name = str(source.meta.get("name", "REFCAT"))
        return re.sub(r"[^A-Z0-9]", "", name.upper()) or "REFCAT"
    text = str(source).strip()
    if text.lower() == "none" or not text:
        return "NONE"
    if text.lower() == "gaia":
        return "GAIADR3"
    return "REFCAT"


def _column(table: Table, key: str):
    lower = {name.lower(): name for name in table.colnames}
    for alias in _ALIASES[key]:
        if alias in lower:
            return table[lower[alias]]
    return None


def _values(col, unit=None) -> np.ndarray:
    """A column as float64 (masked -> NaN), converted to ``unit`` when it has one."""
    if col is None:
        return None
    if unit is not None and getattr(col, "unit", None) is not None:
        try:
            col = col.quantity.to_value(unit)
        except Exception:  # noqa: BLE001 - incompatible unit: take the numbers as they are
            col = np.asarray(col)
    values = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
    return np.asarray(values, dtype=np.float64)


def normalize_refcat(table: Table, name: str | None = None) -> Table:
    """A reference catalogue with the standard columns (module notes), rows with a finite
    position only, in the input order.

    Raises
    ------
    ValueError
        When no RA or Dec column is found.
    """
    ra = _values(_column(table, "ra"), "deg")
    dec = _values(_column(table, "dec"), "deg")
    if ra is None or dec is None:
        raise ValueError(f"reference catalogue has no RA/Dec columns (columns: "
                         f"{', '.join(table.colnames)})")
    n = len(table)

    def get(key, unit, default):
        values = _values(_column(table, key), unit)
        return np.full(n, default, dtype=np.float64) if values is None else values

    epoch_default = table.meta.get("epoch", table.meta.get("ref_epoch", DEFAULT_EPOCH))
    out = Table()
    ids = _column(table, "source_id")
    out["source_id"] = (np.arange(1, n + 1, dtype=np.int64) if ids is None
                        else np.asarray(ids, dtype=np.int64))
    out["ra"] = np.mod(ra, 360.0)
    out["dec"] = dec
    out["ra_error"] = np.nan_to_num(get("ra_error", "mas", 0.0), nan=0.0)
    out["dec_error"] = np.nan_to_num(get("dec_error", "mas", 0.0), nan=0.0)
    pmra = get("pmra", "mas/yr", np.nan)
    pmdec = get("pmdec", "mas/yr", np.nan)
    no_pm = ~(np.isfinite(pmra) & np.isfinite(pmdec))
    has_pm_column = _column(table, "pmra") is not None
    pmra_err = np.nan_to_num(get("pmra_error", "mas/yr", 0.0), nan=0.0)
    pmdec_err = np.nan_to_num(get("pmdec_error", "mas/yr", 0.0), nan=0.0)
    if has_pm_column:
        pmra_err[no_pm] = UNKNOWN_PM_ERROR
        pmdec_err[no_pm] = UNKNOWN_PM_ERROR
    out["pmra"] = np.where(no_pm, 0.0, pmra)
    out["pmdec"] = np.where(no_pm, 0.0, pmdec)
    out["pmra_error"] = pmra_err
    out["pmdec_error"] = pmdec_err
    epoch = get("epoch", None, float(epoch_default))
    out["epoch"] = np.where(np.isfinite(epoch), epoch, float(epoch_default))
    out["mag"] = get("mag", None, np.nan)
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("ra_error", "mas"), ("dec_error", "mas"),
                      ("pmra", "mas / yr"), ("pmdec", "mas / yr"), ("pmra_error", "mas / yr"),
                      ("pmdec_error", "mas / yr"), ("epoch", "yr")):
        out[col].unit = unit
    keep = np.isfinite(out["ra"]) & np.isfinite(out["dec"])
    out = out[keep]
    label = name or table.meta.get("name") or "REFCAT"
    out.meta = {"name": str(label), "refcat_version": 1}
    return out


def read_refcat(path: str | os.PathLike, name: str | None = None) -> Table:
    """Read and normalise a catalogue file (ECSV, CSV or anything astropy reads)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference catalogue {path} does not exist")
    suffix = "".join(path.suffixes).lower()
    if suffix.endswith(".ecsv"):
        table = Table.read(path, format="ascii.ecsv")
    elif suffix.endswith(".csv"):
        table = Table.read(path, format="ascii.csv")
    else:
        table = Table.read(path)
    if "refcat_version" in table.meta:  # already normalised by make_refcat
        return table
    return normalize_refcat(table, name=name or table.meta.get("name") or "REFCAT")


def positions_at(refcat: Table, epoch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions at Julian year ``epoch`` (a scalar or one per source) and their errors.

    Returns
    -------
    ra, dec : numpy.ndarray
        Degrees.
    sigma : numpy.ndarray
        Position error per axis (mas): ``sqrt((ra_err**2 + dec_err**2) / 2 + (pm_err * dt)**2)``.
    """
    dt = np.asarray(epoch, dtype=np.float64) - np.asarray(refcat["epoch"], dtype=np.float64)
    dec0 = np.asarray(refcat["dec"], dtype=np.float64)
    dec = dec0 + np.asarray(refcat["pmdec"]) * dt / 3.6e6
    ra = np.asarray(refcat["ra"]) + np.asarray(refcat["pmra"]) * dt / 3.6e6 / np.cos(
        np.radians(dec0))
    pos2 = 0.5 * (np.asarray(refcat["ra_error"]) ** 2 + np.asarray(refcat["dec_error"]) ** 2)
    pm2 = 0.5 * (np.asarray(refcat["pmra_error"]) ** 2 + np.asarray(refcat["pmdec_error"]) ** 2)
    sigma = np.sqrt(pos2 + pm2 * dt**2)
    return np.mod(ra, 360.0), dec, sigma


def cone_of(exposure_paths: Sequence[str | os.PathLike],
            margin_arcsec: float = 30.0) -> tuple[float, float, float]:
    """``(ra, dec, radius)`` (deg) of a circle covering every chip of the exposures plus a
    margin (the header WCS may be off by a few arcseconds)."""
    from mvmflow.exposure import Exposure
    from mvmflow.fitting import Plane

    points = []
    for path in exposure_paths:
        exposure = Exposure.open(path)
        for extver in exposure.extvers:
            points.append(exposure.footprint(extver, samples_per_edge=4))
    if not points:
        raise ValueError("no exposures to cover")
    world = np.concatenate(points)
    plane = Plane.around(world[:, 0], world[:, 1])
    x, y = plane.to_plane(world[:, 0], world[:, 1])
    radius = (float(np.max(np.hypot(x, y))) + margin_arcsec) / 3600.0
    return plane.ra, plane.dec, radius


def gaia_query_text(ra: float, dec: float, radius: float, table: str = GAIA_TABLE) -> str:
    """The ADQL cone query (columns needed for alignment), ordered by ``source_id``."""
    return (
        "SELECT source_id, ra, dec, ra_error, dec_error, pmra, pmdec, pmra_error, "
        "pmdec_error, ref_epoch, phot_g_mean_mag "
        f"FROM {table} "
        f"WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.9f}, {dec:.9f}, "
        f"{radius:.9f})) ORDER BY source_id"
    )


def query_gaia(ra: float, dec: float, radius: float, *, url: str = GAIA_TAP_URL,
               table: str = GAIA_TABLE) -> Table:
    """Gaia sources in a cone, from a Gaia TAP server (asynchronous job, no row limit).

    Parameters
    ----------
    ra, dec, radius : float
        Cone centre and radius (deg).
    url : str
        The archive's base URL (the TAP service is ``<url>tap-server/tap``); default the ESA
        Gaia archive. Tests point it at a local server.
    table : str
        The Gaia table.

    Returns
    -------
    astropy.table.Table
        Normalised (:func:`normalize_refcat`), named ``GAIADR3``.

    Raises
    ------
    RuntimeError
        When the query fails (network, server error): the message says so; the caller
        decides whether to fall back to relative alignment.
    """
    # astroquery's generic TAP client (what astroquery.gaia.GaiaClass builds on): importing
    # astroquery.gaia itself contacts the ESA archive at import time.
    from astroquery.utils.tap.core import TapPlus

    query = gaia_query_text(ra, dec, radius, table)
    service = url.rstrip("/") + "/tap-server/tap"
    log.info("querying Gaia at %s: %s", service, query)
    try:
        tap = TapPlus(url=service, verbose=False)
        job = tap.launch_job_async(query, output_format="votable_plain", verbose=False)
        result = job.get_results()
    except Exception as exc:  # noqa: BLE001 - any transport or server failure
        raise RuntimeError(f"Gaia query to {url} failed: {exc}") from exc
    log.info("Gaia returned %d sources", len(result))
    return normalize_refcat(Table(result), name="GAIADR3")


def load_refcat(source, exposure_paths: Sequence[str | os.PathLike] = (), *,
                gaia_url: str = GAIA_TAP_URL, margin_arcsec: float = 30.0) -> Table | None:
    """The reference catalogue named by ``source``: ``"gaia"``, a file path, a Table,
    or ``"none"``/None (returns None).

    Gaia is queried over :func:`cone_of` the exposures.
    """
    if source is None or isinstance(source, Table):
        return None if source is None else (
            source if "refcat_version" in source.meta else normalize_refcat(source))
    text = str(source).strip()
    if not text or text.lower() == "none":
        return None
    if text.lower() == "gaia":
        if not exposure_paths:
            raise ValueError("a Gaia query needs the exposures to cover")
        ra, dec, radius = cone_of(exposure_paths, margin_arcsec)
        return query_gaia(ra, dec, radius, url=gaia_url)
    return read_refcat(text)


def make_refcat(source, exposure_paths: Sequence[str | os.PathLike],
                out_path: str | os.PathLike, *, gaia_url: str = GAIA_TAP_URL,
                margin_arcsec: float = 30.0) -> Path:
    """Workflow step: fetch (Gaia) or read (file) the reference catalogue of an alignment
    group and write it as a normalised ECSV (an empty table named ``NONE`` for ``none``).

    Rows are sorted by ``source_id`` so the file does not depend on the server's order.
    """
    table = load_refcat(source, exposure_paths, gaia_url=gaia_url, margin_arcsec=margin_arcsec)
    if table is None:
        table = normalize_refcat(Table({"ra": np.zeros(0), "dec": np.zeros(0)}), name="NONE")
    else:
        table = table[np.argsort(np.asarray(table["source_id"]), kind="stable")]
    table.meta["name"] = table.meta.get("name") or catalog_label(source)
    path = Path(out_path)
    with atomic_path(path) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path

