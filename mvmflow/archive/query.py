"""Exposures of a sky region from MAST (docs/archive.md, "Region queries and the workflow").

A :class:`Region` is read from the ``inputs: {mast: {...}}`` config value (or the ``mvmflow
fetch`` options): a cone (``ra``, ``dec``, ``radius``), a box (``ra``, ``dec``, ``size``) or a
sky cell (``skycell``), with optional ``instruments``, ``filters`` and ``dates``.
:func:`query_region` asks the archive with astroquery's ``Observations`` (a fresh instance
pointed at the configured server, nothing cached by astroquery), lists the observations'
FLC and FLT products and returns the product table (:mod:`mvmflow.archive.table`): one row
per file, with the status that says whether it is to be fetched.

Units: ``ra`` and ``dec`` are degrees when numbers; strings are read by astropy
(``"5h39m41s"``, ``"-69d09m00s"``, ``"84.92 deg"``; a sexagesimal RA without a unit is in
hours). ``radius`` and ``size`` are arcsec when numbers (or bare-number strings); strings
with a unit are read by astropy (``"2 arcmin"``, ``"0.01 deg"``). Dates are ISO
(``2012-01-01`` or ``2012-01-01T12:00:00``), UTC; an exposure is kept when it starts within
``[start, end]``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_INSTRUMENTS", "Region", "RegionError", "QueryError", "parse_region",
    "query_region", "query_key", "product_rows", "cached_query", "BATCH_SIZE",
]

#: The instruments MVM processing accepts (``instrument_name`` values of MAST's CAOM table).
DEFAULT_INSTRUMENTS = ("ACS/WFC", "ACS/HRC", "ACS/SBC", "WFC3/UVIS", "WFC3/IR")

#: Observations per product-list request (MAST caps a response at 50,000 rows and 600 s).
BATCH_SIZE = 100

#: Widest region, in degrees (a larger one is certainly a unit mistake).
MAX_EXTENT_DEG = 10.0

_KEYS = {"ra", "dec", "radius", "size", "skycell", "instruments", "filters", "dates"}
_SUBGROUPS = ("FLC", "FLT")
_MJD0 = datetime.datetime(1858, 11, 17, tzinfo=datetime.UTC)


class RegionError(ValueError):
    """A bad region; the message is one line naming the key and the reason."""


class QueryError(RuntimeError):
    """The archive could not answer a query; the message names the URL and the reason."""


@dataclass(frozen=True)
class Region:
    """A sky region and the selections of a MAST query.

    Attributes
    ----------
    kind : {'cone', 'box', 'skycell'}
    ra, dec : float
        Centre in degrees (ICRS); for a sky cell, its centre.
    radius : float
        Cone radius in arcsec; for a box or a sky cell, the radius of the circle that
        encloses it (what MAST is asked for).
    size : tuple of float or None
        Box width (along RA) and height in arcsec.
    skycell : str or None
        Sky-cell name.
    instruments : tuple of str
        ``instrument_name`` values (``ACS/WFC``, ``WFC3/UVIS``, ...).
    filters : tuple of str
        Filter names (upper case); empty: every filter.
    dates : tuple of str or None
        ISO start and end of the exposures' start times.
    """

    kind: str
    ra: float
    dec: float
    radius: float
    size: tuple[float, float] | None = None
    skycell: str | None = None
    instruments: tuple[str, ...] = DEFAULT_INSTRUMENTS
    filters: tuple[str, ...] = ()
    dates: tuple[str, str] | None = None

    def normalized(self) -> dict:
        """The region as plain data, with every value in its documented unit: what the
        product table's metadata records and what :func:`query_key` hashes."""
        out: dict = {"kind": self.kind}
        if self.kind == "skycell":
            out["skycell"] = self.skycell
        else:
            out["ra"] = round(self.ra, 9)
            out["dec"] = round(self.dec, 9)
            if self.kind == "cone":
                out["radius_arcsec"] = round(self.radius, 6)
            else:
                out["size_arcsec"] = [round(v, 6) for v in self.size]
        out["instruments"] = sorted(self.instruments)
        out["filters"] = sorted(self.filters)
        out["dates"] = list(self.dates) if self.dates else None
        return out

    def describe(self) -> str:
        """A few words for messages: ``cone of 30" at (84.92, -69.15)``."""
        if self.kind == "skycell":
            return f"sky cell {self.skycell}"
        if self.kind == "cone":
            return f'cone of {self.radius:g}" at ({self.ra:.6f}, {self.dec:.6f})'
        return f'box of {self.size[0]:g}" x {self.size[1]:g}" at ({self.ra:.6f}, {self.dec:.6f})'

    # -- which rows of the enclosing circle are in the region ------------------------------

    def contains_footprint(self, s_region: str | None, ra: float | None,
                           dec: float | None) -> bool:
        """Whether an observation's footprint overlaps the region.

        A cone keeps everything MAST returned (MAST tests the footprint against the
        circle). A box and a sky cell test the ``s_region`` polygons (or, without them, the
        position ``ra``, ``dec``).
        """
        if self.kind == "cone":
            return True
        polygons = parse_s_region(s_region)
        if self.kind == "skycell":
            from mvmflow.grid import sky_cells_at, sky_cells_for_footprint

            if polygons:
                return self.skycell in sky_cells_for_footprint(polygons)
            return ra is not None and self.skycell in sky_cells_at(ra, dec)
        half_w, half_h = self.size[0] / 7200.0, self.size[1] / 7200.0  # degrees
        if polygons:
            return any(_overlaps_box(*_gnomonic(p[:, 0], p[:, 1], self.ra, self.dec),
                                     half_w, half_h) for p in polygons)
        if ra is None:
            return False
        x, y = _gnomonic(np.array([ra]), np.array([dec]), self.ra, self.dec)
        return bool(abs(x[0]) <= half_w and abs(y[0]) <= half_h)


# -- parsing ------------------------------------------------------------------------------

def _read_angle(value, name: str, parse_text, what: str) -> float:
    """A number as it is, else text: a plain number, else ``parse_text(text)``; a bool,
    None or unreadable text is a :class:`RegionError` naming ``inputs.mast.<name>``."""
    if isinstance(value, bool) or value is None:
        raise RegionError(f"inputs.mast.{name}: {value!r} is not an angle{what}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_text(text)
    except Exception as exc:  # noqa: BLE001 - astropy raises several kinds
        raise RegionError(f"inputs.mast.{name}: cannot read {value!r} as an angle{what} "
                          f"({exc})") from None


def _angle_deg(value, name: str, hours: bool) -> float:
    """A position in degrees: a number, or text astropy's ``Angle`` reads (a sexagesimal RA
    without a unit is hours)."""
    import astropy.units as u
    from astropy.coordinates import Angle

    def parse(text):
        plain = not re.search(r"[a-z]", text.replace("h", ""), re.I)
        return float(Angle(text, unit=u.hourangle if hours and plain else u.deg).degree)

    result = _read_angle(value, name, parse, "")
    if not math.isfinite(result):
        raise RegionError(f"inputs.mast.{name}: {value!r} is not finite")
    return result


def _arcsec(value, name: str) -> float:
    """An extent in arcsec: a number (arcsec), or a string with an angular unit."""
    import astropy.units as u

    result = _read_angle(value, name, lambda text: float(u.Quantity(text).to_value(u.arcsec)),
                         " (a number in arcsec, or e.g. '30 arcsec', '2 arcmin', '0.01 deg')")
    if not math.isfinite(result) or result <= 0:
        raise RegionError(f"inputs.mast.{name}: {value!r} must be a positive angle")
    if result > MAX_EXTENT_DEG * 3600:
        raise RegionError(f"inputs.mast.{name}: {value!r} is {result / 3600:g} deg, more than "
                          f"{MAX_EXTENT_DEG:g} deg (numbers are arcsec)")
    return result


def _names(value, name: str, upper: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or \
            not all(isinstance(v, str) and v.strip() for v in value):
        raise RegionError(f"inputs.mast.{name}: {value!r} is not a list of names")
    out = [v.strip().upper() if upper else v.strip() for v in value]
    return tuple(dict.fromkeys(out))


def _instruments(value) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_INSTRUMENTS
    names = _names(value, "instruments", upper=True)
    bad = [n for n in names if n not in DEFAULT_INSTRUMENTS]
    if bad:
        raise RegionError(f"inputs.mast.instruments: {bad[0]!r} is not one of "
                          f"{', '.join(DEFAULT_INSTRUMENTS)}")
    return names


def _iso_date(value, which: str) -> str:
    text = value.isoformat() if isinstance(value, (datetime.date, datetime.datetime)) \
        else str(value).strip()
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        raise RegionError(f"inputs.mast.dates: the {which} {value!r} is not an ISO date "
                          "(e.g. 2012-01-31 or 2012-01-31T12:00:00)") from None
    return text


def _dates(value) -> tuple[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise RegionError(f"inputs.mast.dates: {value!r} is not [start, end] (ISO dates)")
    start, end = _iso_date(value[0], "start"), _iso_date(value[1], "end")
    if iso_to_mjd(start) > iso_to_mjd(end):
        raise RegionError(f"inputs.mast.dates: the start {start} is after the end {end}")
    return start, end


def iso_to_mjd(text: str) -> float:
    """MJD of an ISO date or date-time (UTC when no zone is given)."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - _MJD0).total_seconds() / 86400.0


def mjd_to_iso(mjd) -> str:
    """ISO date-time (UTC, to the second) of an MJD; empty for a missing value."""
    try:
        value = float(mjd)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(value):
        return ""
    moment = _MJD0 + datetime.timedelta(days=value)
    return moment.replace(tzinfo=None, microsecond=0).isoformat()


def parse_region(spec: Mapping) -> Region:
    """Read a region from the config value ``{mast: {...}}`` (or its inner mapping).

    Parameters
    ----------
    spec : Mapping
        ``{mast: {ra, dec, radius}}``, ``{mast: {ra, dec, size: [w, h]}}`` (or one number
        for a square) or ``{mast: {skycell: NAME}}``, each with optional ``instruments``,
        ``filters`` and ``dates: [start, end]``. Units: see the module documentation.

    Raises
    ------
    RegionError
        One line naming the key and the problem (unknown key, missing or conflicting
        keys, unreadable or out-of-range value).
    """
    if isinstance(spec, Mapping) and set(spec) == {"mast"}:
        spec = spec["mast"]
    if not isinstance(spec, Mapping):
        raise RegionError(f"inputs.mast: {spec!r} is not a mapping such as "
                          "{ra: 84.92, dec: -69.15, radius: 30}")
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], sorted(_KEYS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(_KEYS))}"
        raise RegionError(f"inputs.mast: unknown key {unknown[0]!r}{hint}")
    common = {"instruments": _instruments(spec.get("instruments")),
              "filters": _names(spec.get("filters"), "filters", upper=True),
              "dates": _dates(spec.get("dates"))}
    if "skycell" in spec:
        extra = sorted({"ra", "dec", "radius", "size"} & set(spec))
        if extra:
            raise RegionError(f"inputs.mast: give either skycell or {extra[0]}, not both")
        return _skycell_region(spec["skycell"], common)
    missing = [k for k in ("ra", "dec") if k not in spec]
    if missing:
        raise RegionError(f"inputs.mast: missing {missing[0]!r} (a region is ra, dec and "
                          "radius or size, or a skycell)")
    ra = _angle_deg(spec["ra"], "ra", hours=True)
    dec = _angle_deg(spec["dec"], "dec", hours=False)
    if not 0.0 <= ra < 360.0:
        raise RegionError(f"inputs.mast.ra: {spec['ra']!r} is outside [0, 360) degrees")
    if not -90.0 <= dec <= 90.0:
        raise RegionError(f"inputs.mast.dec: {spec['dec']!r} is outside [-90, 90] degrees")
    if ("radius" in spec) == ("size" in spec):
        raise RegionError("inputs.mast: give exactly one of radius (a cone) or size (a box)")
    if "radius" in spec:
        return Region("cone", ra, dec, _arcsec(spec["radius"], "radius"), **common)
    size = spec["size"]
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise RegionError(f"inputs.mast.size: {size!r} is not [width, height]")
        w, h = _arcsec(size[0], "size"), _arcsec(size[1], "size")
    else:
        w = h = _arcsec(size, "size")
    # the circle enclosing the box: the angle from the centre to a corner of the tangent plane
    radius = math.degrees(math.atan(math.hypot(math.tan(math.radians(w / 7200.0)),
                                               math.tan(math.radians(h / 7200.0))))) * 3600.0
    return Region("box", ra, dec, radius, size=(w, h), **common)


def _skycell_region(name, common: dict) -> Region:
    from mvmflow.grid import SkyCell

    try:
        cell = SkyCell.from_name(str(name))
    except (ValueError, TypeError) as exc:
        raise RegionError(f"inputs.mast.skycell: {name!r} is not a sky-cell name such as "
                          f"skycell-p0081x14y14 ({exc})") from None
    corners = cell.footprint()
    ra, dec = cell.center
    radius = max(_separation_deg(ra, dec, c[0], c[1]) for c in corners) * 3600.0
    return Region("skycell", ra, dec, radius * 1.001, skycell=cell.name, **common)


# -- geometry -----------------------------------------------------------------------------

def _separation_deg(ra1, dec1, ra2, dec2) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    c = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane coordinates (degrees) about (ra0, dec0): the RA offset is scaled by
    cos(dec) as the sky is, so a box's width is a true angle at any declination."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    cosc = np.where(cosc > 1e-6, cosc, np.nan)  # behind the plane: never inside
    x = np.cos(dec) * np.sin(ra - a0) / cosc
    y = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.degrees(np.arctan(x)), np.degrees(np.arctan(y))


def _overlaps_box(x: np.ndarray, y: np.ndarray, hw: float, hh: float) -> bool:
    """Whether polygon (x, y) overlaps the rectangle |x| <= hw, |y| <= hh with non-zero
    area (Sutherland-Hodgman clipping)."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return False
    pts = list(zip(x.tolist(), y.tolist(), strict=True))
    for axis, limit, keep_low in ((0, -hw, False), (0, hw, True), (1, -hh, False),
                                  (1, hh, True)):
        def inside(p, axis=axis, limit=limit, keep_low=keep_low):
            return p[axis] <= limit if keep_low else p[axis] >= limit

        out = []
        for i, cur in enumerate(pts):
            prev = pts[i - 1]
            if inside(cur) != inside(prev):
                t = (limit - prev[axis]) / (cur[axis] - prev[axis])
                out.append(tuple(prev[k] + t * (cur[k] - prev[k]) for k in (0, 1)))
            if inside(cur):
                out.append(cur)
        pts = out
        if not pts:
            return False
    if len(pts) < 3:
        return False
    px, py = np.array(pts).T
    return 0.5 * abs(float(np.dot(px, np.roll(py, -1)) - np.dot(py, np.roll(px, -1)))) > 0


def parse_s_region(text) -> list[np.ndarray]:
    """The polygons of an STC-S ``s_region`` (``POLYGON [frame] ra dec ra dec ...``, several
    allowed), each an (N, 2) array of (RA, Dec) degrees; CIRCLE and unreadable values give
    none."""
    if not isinstance(text, str):
        return []
    polygons = []
    for chunk in re.split(r"(?i)\bPOLYGON\b", text)[1:]:
        numbers = []
        for token in chunk.split():
            try:
                numbers.append(float(token))
            except ValueError:
                if numbers:
                    break  # the next shape
        if len(numbers) >= 6 and len(numbers) % 2 == 0:
            poly = np.array(numbers, float).reshape(-1, 2)
            if len(poly) > 3 and np.allclose(poly[0], poly[-1]):
                poly = poly[:-1]
            polygons.append(poly)
    return polygons


# -- asking the archive -------------------------------------------------------------------

def query_key(region: Region, url: str) -> str:
    """The hex key of a query: sha256 of the normalised region and the base URL."""
    text = json.dumps({"region": region.normalized(), "url": url.rstrip("/")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _observations(url: str, timeout: float):
    """A fresh ``ObservationsClass`` talking to ``url``
    (:func:`mvmflow.archive.service.astroquery_client`)."""
    from astroquery.mast import ObservationsClass

    from mvmflow.archive.service import astroquery_client

    return astroquery_client(ObservationsClass, url, timeout)


def _criteria(region: Region) -> dict:
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    criteria = {
        "coordinates": SkyCoord(region.ra * u.deg, region.dec * u.deg, frame="icrs"),
        "radius": (region.radius * u.arcsec).to(u.deg),
        "obs_collection": "HST",
        "instrument_name": list(region.instruments),
        "dataproduct_type": "image",
        "intentType": "science",
    }
    if region.filters:
        criteria["filters"] = list(region.filters)
    if region.dates:
        criteria["t_min"] = [iso_to_mjd(region.dates[0]), iso_to_mjd(region.dates[1])]
    return criteria


def query_region(region: Region, url: str, *, batch_size: int = BATCH_SIZE,
                 timeout: float = 600.0, now: datetime.datetime | None = None):
    """Ask the archive at ``url`` for the FLC and FLT exposures of ``region``.

    Parameters
    ----------
    region : Region
    url : str
        The archive's base URL (:func:`mvmflow.archive.service.mast_url`).
    batch_size : int
        Observations per product-list request.
    timeout : float
        Seconds astroquery waits for one answer.
    now : datetime, optional
        The time a release date is compared with (default: now, UTC).

    Returns
    -------
    astropy.table.Table
        The product table (:func:`mvmflow.archive.table.product_table`), with the query
        (region, URL, time) in its metadata.

    Raises
    ------
    QueryError
        If the archive cannot be reached or answers with an error; one line naming the URL.
    """
    import warnings

    import requests
    from astroquery.exceptions import NoResultsWarning, RemoteServiceError

    from mvmflow.archive.table import product_table

    url = url.rstrip("/")
    now = now or datetime.datetime.now(datetime.UTC)
    obs_api = _observations(url, timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            observations = obs_api.query_criteria(**_criteria(region))
            observations = observations[[region.contains_footprint(
                _value(r, "s_region"), _float(r, "s_ra"), _float(r, "s_dec"))
                for r in observations]] if len(observations) else observations
            products = []
            ids = [str(v) for v in observations["obsid"]] if len(observations) else []
            for start in range(0, len(ids), max(1, batch_size)):
                batch = obs_api.get_product_list(ids[start:start + batch_size])
                if len(batch):
                    products.append(obs_api.filter_products(
                        batch, productSubGroupDescription=list(_SUBGROUPS), type="S"))
    except (requests.RequestException, RemoteServiceError, TimeoutError, ValueError,
            KeyError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise QueryError(f"MAST query at {url} failed: {text}") from None
    rows = product_rows(observations, products, now)
    meta = {"query": region.normalized(), "mast_url": url,
            "queried": now.replace(microsecond=0).isoformat()}
    return product_table(rows, meta)


def cached_query(region: Region, url: str, cache_dir, *, requery: bool = False, **kwargs):
    """The product table of ``region``: the answer kept in ``cache_dir`` for the same region
    and URL (:func:`query_key`), or, if there is none or ``requery``, a new query (then
    kept).

    A second run of the same region, even into another output directory, makes no request:
    the archive is asked once, and a newer archive does not silently change the files of a
    region until ``requery`` is asked for.

    Returns
    -------
    (astropy.table.Table, bool)
        The table, and whether it was the kept answer.
    """
    from pathlib import Path

    from mvmflow.archive.table import ProductTableError, read_table, write_table

    path = Path(cache_dir) / f"{query_key(region, url.rstrip('/'))}.ecsv"
    if not requery and path.is_file():
        try:
            return read_table(path), True
        except ProductTableError:
            pass  # unreadable: ask again, and replace it
    table = query_region(region, url, **kwargs)
    write_table(table, path)
    return table, False


def _value(row, name: str):
    if name not in row.colnames:
        return None
    value = row[name]
    if value is np.ma.masked or (hasattr(value, "mask") and np.all(value.mask)):
        return None
    return value.item() if hasattr(value, "item") else value


def _float(row, name: str) -> float | None:
    value = _value(row, name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _checksum_column(colnames: Sequence[str]) -> tuple[str, str] | None:
    """(column, algorithm) of a checksum column MAST gives, if any (``md5``,
    ``sha256``, ``checksum``...)."""
    for name in colnames:
        low = name.lower()
        for algorithm in ("sha256", "sha1", "md5"):
            if algorithm in low:
                return name, algorithm
        if "checksum" in low:
            return name, ""
    return None


def _checksum(row, column: tuple[str, str] | None) -> str:
    if column is None:
        return ""
    value = _value(row, column[0])
    if value is None or not str(value).strip():
        return ""
    text = str(value).strip().lower()
    if ":" in text:
        return text
    algorithm = column[1] or {32: "md5", 40: "sha1", 64: "sha256"}.get(len(text), "")
    return f"{algorithm}:{text}" if algorithm else ""


def product_rows(observations, products: list, now: datetime.datetime) -> list[dict]:
    """The product table's rows from the observations and their (filtered) products.

    One row per file name (a file listed under several observations once); the status is
    ``fetch``, ``proprietary`` (``dataRights`` not PUBLIC, or a release date after ``now``)
    or ``skipped: <reason>`` (an FLT whose FLC is fetched: screening would drop it).
    """
    by_obsid = {str(_value(r, "obsid")): r for r in observations}
    now_mjd = iso_to_mjd(now.replace(tzinfo=None).isoformat())
    rows: dict[str, dict] = {}
    for table in products:
        checksum_col = _checksum_column(table.colnames)
        for p in table:
            name = str(_value(p, "productFilename") or "").strip()
            if not name or name in rows:
                continue
            parent = by_obsid.get(str(_value(p, "parent_obsid"))) or \
                by_obsid.get(str(_value(p, "obsID")))
            inst = str(_value(parent, "instrument_name") or "") if parent is not None else ""
            instrument, _, detector = inst.partition("/")
            rights = str(_value(p, "dataRights") or
                         (_value(parent, "dataRights") if parent is not None else None) or "")
            release = _float(parent, "t_obs_release") if parent is not None else None
            row = {
                "obs_id": str(_value(p, "obs_id") or ""),
                "rootname": name.split("_", 1)[0].lower(),
                "instrument": instrument.upper(),
                "detector": detector.upper(),
                "filter": str(_value(parent, "filters") or "") if parent is not None else "",
                "exptime": _float(parent, "t_exptime") if parent is not None else None,
                "date_obs": mjd_to_iso(_value(parent, "t_min")) if parent is not None else "",
                "dataURI": str(_value(p, "dataURI") or ""),
                "filename": name,
                "size": int(_value(p, "size") or -1),
                "checksum": _checksum(p, checksum_col),
                "rights": rights.upper(),
                "release": mjd_to_iso(release) if release is not None else "",
                "subgroup": str(_value(p, "productSubGroupDescription") or "").upper(),
            }
            public = row["rights"] in ("PUBLIC", "") and (release is None or release <= now_mjd)
            row["status"] = "fetch" if public else "proprietary"
            rows[name] = row
    fetched_flc = {r["rootname"] for r in rows.values()
                   if r["subgroup"] == "FLC" and r["status"] == "fetch"}
    for row in rows.values():
        if row["status"] == "fetch" and row["subgroup"] == "FLT" and \
                row["rootname"] in fetched_flc:
            row["status"] = "skipped: FLC of the same exposure is fetched (FLC over FLT)"
    for row in rows.values():
        del row["subgroup"]
    return sorted(rows.values(), key=lambda r: r["filename"])
