"""MAST's CAOM services for the test server, built from simulated exposures.

:class:`CaomArchive` holds observation rows (the columns of MAST's ``Mast.Caom.*`` answers,
as in the recorded ``caom.json``) and product rows (as ``products.json``), one observation
per exposure, made from the exposure's own headers and WCS (``s_region`` is the union of its
chips' footprints). :meth:`CaomArchive.install` serves them on a :class:`MastServer`:

- ``Mast.Caom.Filtered.Position`` and ``Mast.Caom.Filtered``: the request's ``filters``
  applied (discrete values, ``;``-separated fields, ``{min, max}`` ranges) and, for the
  position service, the cone ``"ra, dec, radius"`` (degrees) tested against the footprint;
- ``Mast.Caom.Products``: the products of the ``obsid`` list, with decoys (RAW, SPT, a DRC
  of the visit) that the product filter must drop;
- every product's bytes by its dataURI.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

OBS_FIELDS = [
    ("dataproduct_type", "string"), ("calib_level", "int"), ("obs_collection", "string"),
    ("obs_id", "string"), ("target_name", "string"), ("s_ra", "float"), ("s_dec", "float"),
    ("t_min", "float"), ("t_max", "float"), ("t_exptime", "float"), ("wavelength_region",
                                                                      "string"),
    ("filters", "string"), ("em_min", "float"), ("em_max", "float"),
    ("target_classification", "string"), ("obs_title", "string"), ("t_obs_release", "float"),
    ("instrument_name", "string"), ("proposal_pi", "string"), ("proposal_id", "string"),
    ("proposal_type", "string"), ("project", "string"), ("sequence_number", "int"),
    ("provenance_name", "string"), ("s_region", "string"), ("jpegURL", "string"),
    ("dataURL", "string"), ("dataRights", "string"), ("mtFlag", "boolean"),
    ("srcDen", "float"), ("intentType", "string"), ("obsid", "string"), ("objID", "string"),
]

PRODUCT_FIELDS = [
    ("obsID", "string"), ("obs_collection", "string"), ("dataproduct_type", "string"),
    ("obs_id", "string"), ("description", "string"), ("type", "string"),
    ("dataURI", "string"), ("productType", "string"), ("productGroupDescription", "string"),
    ("productSubGroupDescription", "string"), ("productDocumentationURL", "string"),
    ("project", "string"), ("prvversion", "string"), ("proposal_id", "string"),
    ("productFilename", "string"), ("size", "int"), ("parent_obsid", "string"),
    ("dataRights", "string"), ("calib_level", "int"), ("filters", "string"),
]

#: Separator of multi-valued CAOM fields (as in the recorded columnsconfig).
SEPARATED = {"filters", "obs_collection", "project", "wavelength_region",
             "target_classification"}


def _fields(spec):
    return [{"name": n, "type": t} for n, t in spec]


def footprint_region(path: str | Path) -> tuple[str, float, float]:
    """``s_region`` (one POLYGON per SCI chip), and the centre (RA, Dec) of an exposure."""
    import warnings

    from astropy.wcs import FITSFixedWarning

    polygons, corners = [], []
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        for h in hdul:
            if h.name == "SCI":
                wcs = WCS(h.header, hdul)
                if wcs.pixel_shape is None:  # a header-only file (NPIX1/NPIX2)
                    wcs.pixel_shape = (h.header["NPIX1"], h.header["NPIX2"])
                fp = wcs.calc_footprint(undistort=False)
                corners.append(fp)
                text = " ".join(f"{ra:.8f} {dec:.8f}" for ra, dec in fp)
                polygons.append(f"POLYGON ICRS {text}")
    allc = np.concatenate(corners)
    return " ".join(polygons), float(np.mean(allc[:, 0])), float(np.mean(allc[:, 1]))


def _sep_deg(ra1, dec1, ra2, dec2) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    c = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


class CaomArchive:
    """Observations and products of simulated exposures, served as MAST's CAOM services."""

    def __init__(self):
        self.observations: list[dict] = []
        self.products: list[dict] = []
        self.files: dict[str, bytes] = {}
        self._next = 24000000

    def add_exposure(self, path: str | Path, *, name: str | None = None,
                     rights: str = "PUBLIC", release_mjd: float | None = None,
                     decoys: bool = True, obsid: str | None = None) -> dict:
        """Add one exposure as an observation with its product (and decoy products).

        Parameters
        ----------
        path : path
            The simulated ``_flc``/``_flt`` file (its bytes are served).
        name : str, optional
            The product file name (default: the file's name); ``obsid`` reuses an
            observation added before (an FLT beside its FLC).
        rights, release_mjd
            ``dataRights`` and ``t_obs_release`` (default: public, released a year after
            the exposure).
        """
        path = Path(path)
        name = name or path.name
        root = name.split("_", 1)[0].lower()
        data = path.read_bytes()
        if obsid is None:
            h = fits.getheader(path)
            inst, det = h["INSTRUME"].strip(), h["DETECTOR"].strip()
            filt = h.get("FILTER") or next(
                (h[k] for k in ("FILTER1", "FILTER2") if not str(h.get(k, "CLEAR")).startswith(
                    "CLEAR")), "")
            region, ra, dec = footprint_region(path)
            start, exptime = float(h["EXPSTART"]), float(h["EXPTIME"])
            self._next += 1
            obsid = str(self._next)
            self.observations.append({
                "dataproduct_type": "image", "calib_level": 2, "obs_collection": "HST",
                "obs_id": root, "target_name": "SIM", "s_ra": ra, "s_dec": dec,
                "t_min": start, "t_max": start + exptime / 86400.0, "t_exptime": exptime,
                "wavelength_region": "OPTICAL", "filters": filt, "em_min": 700.0,
                "em_max": 900.0, "target_classification": "", "obs_title": "simulated",
                "t_obs_release": start + 365.0 if release_mjd is None else release_mjd,
                "instrument_name": f"{inst}/{det}", "proposal_pi": "Sim",
                "proposal_id": str(h.get("PROPOSID", "")), "proposal_type": "GO",
                "project": "CALACS" if inst == "ACS" else "CALWF3", "sequence_number": None,
                "provenance_name": "CALACS", "s_region": region, "jpegURL": None,
                "dataURL": None, "dataRights": rights, "mtFlag": False, "srcDen": 5000.0,
                "intentType": "science", "obsid": obsid, "objID": str(self._next + 1000),
            })
        obs = next(o for o in self.observations if o["obsid"] == obsid)
        sub = name.rsplit("_", 1)[1].split(".", 1)[0].upper()
        self._product(obs, name, sub, "SCIENCE", "S", len(data), rights)
        self.files[f"mast:HST/product/{name}"] = data
        if decoys:
            self._product(obs, f"{root}_raw.fits", "RAW", "SCIENCE", "S", 100000, rights)
            self._product(obs, f"{root}_spt.fits", "SPT", "AUXILIARY", "S", 20000, rights)
            self._product(obs, f"{root[:6]}010_drc.fits", "DRC", "SCIENCE", "C", 90000, rights)
        return obs

    def _product(self, obs, name, sub, ptype, kind, size, rights):
        self.products.append({
            "obsID": obs["obsid"], "obs_collection": "HST", "dataproduct_type": "image",
            "obs_id": obs["obs_id"], "description": f"DADS {sub} file", "type": kind,
            "dataURI": f"mast:HST/product/{name}", "productType": ptype,
            "productGroupDescription": "Minimum Recommended Products",
            "productSubGroupDescription": sub, "productDocumentationURL": "",
            "project": obs["project"], "prvversion": "", "proposal_id": obs["proposal_id"],
            "productFilename": name, "size": size, "parent_obsid": obs["obsid"],
            "dataRights": rights, "calib_level": 2, "filters": obs["filters"],
        })

    # -- the services ---------------------------------------------------------------------

    @staticmethod
    def _match(row: dict, entry: dict) -> bool:
        name, values = entry["paramName"], entry["values"]
        value = row.get(name)
        if values and isinstance(values[0], dict):
            low, high = values[0]["min"], values[0]["max"]
            return value is not None and float(low) <= float(value) <= float(high)
        have = str(value or "").split(";") if name in SEPARATED else [str(value or "")]
        wanted = {str(v) for v in values}
        if entry.get("freeText"):
            import fnmatch

            pattern = entry["freeText"].replace("%", "*")
            if any(fnmatch.fnmatch(h, pattern) for h in have):
                return True
        return bool(wanted & set(have))

    def _in_cone(self, obs: dict, position: str) -> bool:
        ra, dec, radius = (float(v) for v in position.split(","))
        if _sep_deg(ra, dec, obs["s_ra"], obs["s_dec"]) <= radius:
            return True
        from mvmflow.archive.query import parse_s_region

        # the footprint's bounding circle about its centre touches the cone
        reach = max(_sep_deg(obs["s_ra"], obs["s_dec"], a, b)
                    for p in parse_s_region(obs["s_region"]) for a, b in p)
        return _sep_deg(ra, dec, obs["s_ra"], obs["s_dec"]) <= radius + reach

    def filtered(self, params: dict):
        rows = [o for o in self.observations
                if all(self._match(o, f) for f in params.get("filters", []))]
        if params.get("position"):
            rows = [o for o in rows if self._in_cone(o, params["position"])]
        return _fields(OBS_FIELDS), rows

    def product_list(self, params: dict):
        ids = [i.strip() for i in str(params.get("obsid", "")).split(",") if i.strip()]
        return _fields(PRODUCT_FIELDS), [p for p in self.products if p["obsID"] in ids]

    def install(self, server, *, files: bool = True) -> None:
        """Serve the services (and, with ``files``, every product's bytes) on ``server``."""
        server.add_service("Mast.Caom.Filtered.Position", self.filtered)
        server.add_service("Mast.Caom.Filtered", self.filtered)
        server.add_service("Mast.Caom.Products", self.product_list)
        if files:
            for uri, data in self.files.items():
                server.add_file(uri, data)


def archive_of(paths, **kwargs) -> CaomArchive:
    """A :class:`CaomArchive` of the exposures ``paths`` (each its own observation)."""
    archive = CaomArchive()
    for p in paths:
        archive.add_exposure(p, **kwargs)
    return archive
