"""The archive's own MVM layer products of a box, and cutouts of them from MAST's HAP cutout
service (the reference's ``hapcut_utils.mvm_id_filenames`` / ``mvm_retrieve_files``; docs/archive.md,
"HAP products and PSF databases").

- :func:`query_products`: the MVM drizzled products (``DRZ``/``DRC`` FITS) of the sky cells
  around a position, written as the reference's ``mvm_query-ra<..>-dec<..>_<radius>_cutout.ecsv``
  (same name, same columns: astroquery's product list);
- :func:`retrieve`: downloads them through :mod:`mvmflow.archive.download` (verified sizes,
  atomic, retries, bounded parallel transfers), never replacing a local file unless asked;
- :func:`archive_cutouts`: cutouts of those layers made by MAST (``astroquery.mast.Hapcut``).

Every call builds its own astroquery client pointed at the configured server
(:func:`portal_client`): no global astroquery setting is changed and nothing is cached
between calls, so the same process can talk to two servers.

Deviations from drizzlepac 3.11.0 (``hapcut_utils``)
----------------------------------------------------
1. The box that keeps a sky cell (its centre ``s_ra``, ``s_dec``) is half the size on each
   side, with ``cos(dec)`` on the RA extent and RA wrapped at 0/360; the reference uses the
   full size on each side, no ``cos(dec)`` and no wrap.
2. Size order: ``(w, h)`` arcsec with ``w`` along RA, as ``mvmflow cut``; the reference
   documents ``(ny, nx)`` and uses element 0 for RA. A scalar (plain or a Quantity) is a
   square; the reference raises IndexError for a scalar Quantity.
3. :func:`retrieve` works when every file is already local (the reference raises
   UnboundLocalError), downloads straight into the destination (no ``mastDownload/`` tree)
   and checks each file's size.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
from astropy.table import Table

from mvmflow.archive import service
from mvmflow.names import cutout_size_arcsec, query_filename, query_radius
from mvmflow.workflow import atomic_path

__all__ = ["ArchiveError", "portal_client", "query_products", "read_table", "retrieve",
           "archive_cutouts", "in_box", "INSTRUMENTS"]

log = logging.getLogger(__name__)

#: The two instrument queries of the reference (ACS then WFC3), in its order.
INSTRUMENTS = ("ACS*", "WFC3*")

#: Product subgroups kept: the MVM drizzled layers.
PRODUCT_TYPES = ["DRZ", "DRC"]


class ArchiveError(ValueError):
    """A request to the archive failed; the message names the URL or file and the reason."""


def portal_client(cls, url: str | None = None):
    """A fresh astroquery client pointed at ``url``
    (:func:`mvmflow.archive.service.astroquery_client`)."""
    return service.astroquery_client(cls, url)


def _request_error(exc: Exception, what: str) -> ArchiveError:
    """One line naming the URL and the reason of a failed request."""
    response = getattr(exc, "response", None)
    url = getattr(response, "url", None) or getattr(getattr(exc, "request", None), "url", None)
    reason = " ".join(str(exc).split()) or type(exc).__name__
    where = f" ({url})" if url and url not in reason else ""
    return ArchiveError(f"{what}{where}: {reason}")


def in_box(ra, dec, ra0: float, dec0: float, size) -> np.ndarray:
    """Which (``ra``, ``dec``) degrees lie in the box of ``size`` centred on (ra0, dec0).

    ``size`` is arcsec, a scalar or ``(w, h)`` with ``w`` along RA (see
    :func:`mvmflow.names.cutout_size_arcsec`). The box extends ``w / 2`` either side along
    RA, measured on the sky (``dRA * cos(dec0)``, RA wrapped at 0/360), and ``h / 2`` along
    Dec; the edges are inside.
    """
    w, h = cutout_size_arcsec(size)
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    dra = (ra - ra0 + 180.0) % 360.0 - 180.0
    x = np.abs(dra * np.cos(np.radians(dec0))) * 3600.0
    y = np.abs(dec - dec0) * 3600.0
    return (x <= w / 2.0) & (y <= h / 2.0)


def _overlaps(obs: Table, ra: float, dec: float, size) -> np.ndarray:
    """Which sky-cell observations reach the box: their footprint (``s_region``) overlaps
    it, or, without a footprint, their centre is in it (:func:`in_box`). The reference tests
    the centre only, so a box smaller than a sky cell could miss the sky cell it lies in."""
    from mvmflow.archive.query import Region

    w, h = cutout_size_arcsec(size)
    box = Region(kind="box", ra=float(ra), dec=float(dec), radius=0.0, size=(w, h))
    centre = in_box(obs["s_ra"], obs["s_dec"], ra, dec, size)
    regions = obs["s_region"] if "s_region" in obs.colnames else [None] * len(obs)
    return np.array([box.contains_footprint(str(r), None, None) if r not in (None, "")
                     and str(r).strip() and str(r) != "--" else bool(c)
                     for r, c in zip(regions, centre, strict=True)], dtype=bool)


def query_products(ra: float, dec: float, size, url: str | None = None,
                   out_dir: str | os.PathLike | None = ".") -> Table:
    """The archive's MVM layer products (DRZ/DRC FITS) of the sky cells in a box.

    As the reference's ``mvm_id_filenames``: two ``query_criteria`` calls
    (``instrument_name="ACS*"`` then ``"WFC3*"``, ``project="HAP"``,
    ``obs_collection="HST"``, ``dataproduct_type="IMAGE"``) within
    :func:`mvmflow.names.query_radius` arcsec of the position; observations kept when their
    ``obs_id`` starts with ``hst_skycell`` and their footprint overlaps the box (their centre
    in it, :func:`in_box`, when MAST gives no footprint);
    their products filtered to ``DRZ``/``DRC`` FITS of ``hst_skycell`` observations, unique
    by ``productFilename``.

    Parameters
    ----------
    ra, dec : float
        Box centre, ICRS degrees.
    size : number, (w, h) or Quantity
        Box size, arcsec unless a Quantity; a scalar is a square, ``w`` is along RA.
    url : str, optional
        The archive (:func:`mvmflow.archive.service.mast_url`).
    out_dir : path or None
        Where ``mvm_query-<coords>_<radius>_cutout.ecsv`` is written (atomically); None
        writes nothing. Nothing is written when no product is found.

    Returns
    -------
    astropy.table.Table
        The product table (astroquery's product-list columns), empty when nothing is found.

    Raises
    ------
    ArchiveError
        When a request fails (the message names the URL).
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import unique, vstack
    from astroquery.exceptions import NoResultsWarning
    from astroquery.mast import ObservationsClass

    cutout_size_arcsec(size)  # a bad size is an error before any request
    radius = query_radius(size)
    name = query_filename(ra, dec, size)
    client = portal_client(ObservationsClass, url)
    coord = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    found = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            for instrument in INSTRUMENTS:
                obs = client.query_criteria(coordinates=coord, radius=radius * u.arcsec,
                                            dataproduct_type="IMAGE",
                                            instrument_name=instrument, project="HAP",
                                            obs_collection="HST")
                if len(obs):
                    found.append(obs)
            obs = vstack(found) if found else Table()
            if len(obs):
                keep = np.array([str(o).startswith("hst_skycell") for o in obs["obs_id"]])
                keep &= _overlaps(obs, ra, dec, size)
                obs = obs[keep]
            log.info("%d sky-cell observations in the box at (%s, %s)", len(obs), ra, dec)
            if not len(obs):
                return Table()
            products = client.get_product_list(obs)
    except Exception as exc:  # noqa: BLE001 - requests, astroquery and JSON errors alike
        raise _request_error(exc, f"archive query for {name}") from None
    if not len(products):
        return Table()
    products = client.filter_products(products, productSubGroupDescription=PRODUCT_TYPES,
                                      extension="fits")
    keep = np.array([str(o).startswith("hst_skycell") for o in products["obs_id"]], dtype=bool)
    products = products[keep]
    if not len(products):
        return Table()
    products = unique(products, keys="productFilename")
    if out_dir is not None:
        target = Path(out_dir) / name
        with atomic_path(target) as tmp:
            products.write(tmp, format="ascii.ecsv", overwrite=True)
        log.info("wrote %s (%d products)", target, len(products))
    return products


def read_table(path: str | os.PathLike) -> Table:
    """Read a product table written by :func:`query_products` (or the reference).

    Raises
    ------
    ArchiveError
        Naming the file, when it is missing, unreadable or lacks ``productFilename``/``dataURI``.
    """
    path = Path(path)
    try:
        table = Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - astropy's readers raise many kinds
        raise ArchiveError(f"{path}: not an ECSV table: {' '.join(str(exc).split())}") from None
    missing = [c for c in ("productFilename", "dataURI") if c not in table.colnames]
    if missing:
        raise ArchiveError(f"{path}: not a product table: no {', '.join(missing)} column")
    return table


def _size_of(row) -> int | None:
    value = row["size"] if "size" in row.colnames else None
    if value is None or np.ma.is_masked(value):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size > 0 else None


def retrieve(table: Table | str | os.PathLike, dest_dir: str | os.PathLike = ".",
             clobber: bool = False, url: str | None = None, workers: int = 4) -> list[Path]:
    """Download the products of a table into ``dest_dir``; return the local files.

    A file already in ``dest_dir`` is kept and not requested (even if its size differs
    from the table's: it is reported, as the user may have changed it) unless ``clobber``;
    with ``clobber`` it is replaced only by a verified new copy. Downloads go through
    :func:`mvmflow.archive.download.fetch_all`: temporary name, size check, retries,
    at most ``workers`` at a time. No ``mastDownload/`` tree is made.

    Parameters
    ----------
    table : Table or path
        A product table (:func:`query_products`, or its ECSV file).
    dest_dir : path
        Where the files go (created if needed).
    clobber : bool
        Replace local files.
    url : str, optional
        The archive (:func:`mvmflow.archive.service.mast_url`).
    workers : int
        Parallel transfers (progress of long ones is logged by the downloader).

    Returns
    -------
    list of Path
        Every file of the table now in ``dest_dir`` (table order, one per file name).

    Raises
    ------
    ArchiveError
        After every other file was tried, when some could not be downloaded; its ``failed``
        attribute maps each such file to its one-line error (naming the file, the reason
        and the URL) and ``done`` lists the files present.
    """
    from mvmflow.archive.download import Transfer, fetch_all

    if not isinstance(table, Table):
        table = read_table(table)
    base = service.mast_url(url)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    order: list[Path] = []
    transfers = []
    staging = None
    for row in table:
        name = str(row["productFilename"])
        if not name or Path(name).name != name or name in (".", ".."):
            raise ArchiveError(f"unsafe productFilename {name!r} in the product table")
        final = dest_dir / name
        if final in order:
            continue
        order.append(final)
        size = _size_of(row)
        if final.exists() and not clobber:
            have = final.stat().st_size
            if size is not None and have != size:
                log.warning("%s: kept the local file (%d bytes; the archive's has %d): "
                            "use clobber to replace it", final, have, size)
            else:
                log.info("%s: already local", final)
            continue
        dest = final
        if final.exists():  # clobber: a verified new copy replaces it, else it stays
            if staging is None:
                staging = Path(tempfile.mkdtemp(prefix=".mvmflow-retrieve-", dir=dest_dir))
            dest = staging / name
        transfers.append((final, Transfer(service.file_url(base, str(row["dataURI"])), dest,
                                          size=size)))
    failed: dict[Path, str] = {}
    try:
        if transfers:
            results = fetch_all([t for _, t in transfers], workers=workers)
            for final, transfer in transfers:
                error = results.get(transfer.dest)
                if error is not None:
                    failed[final] = str(error)
                elif transfer.dest != final:
                    os.replace(transfer.dest, final)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    done = [p for p in order if p not in failed and p.exists()]
    if failed:
        error = ArchiveError(f"{len(failed)} of {len(order)} files not retrieved: "
                             + "; ".join(failed.values()))
        error.failed, error.done = failed, done
        raise error
    return done


def _hapcut_size(size):
    """Our ``(w, h)`` arcsec as Hapcut's ``(ny, nx)`` angular Quantity."""
    from astropy import units as u

    w, h = cutout_size_arcsec(size)
    return [h, w] * u.arcsec


def _safe_member(info: zipfile.ZipInfo) -> str:
    """The file name of a zip member, or :class:`ArchiveError` for anything but a plain file."""
    name = info.filename
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.is_dir() or (kind and kind != stat.S_IFREG):
        raise ArchiveError(f"member {name!r} is not a plain file")
    if name.startswith(("/", "\\")) or ".." in Path(name).parts or "\\" in name \
            or Path(name).name != name or name in ("", ".", ".."):
        raise ArchiveError(f"member {name!r} is not a plain file name (absolute path, "
                           "directory or '..')")
    return name


def archive_cutouts(ra: float, dec: float, size, dest_dir: str | os.PathLike = ".",
                    url: str | None = None) -> list[Path]:
    """Cutouts of the archive's MVM layers at a position, made by MAST's HAP cutout service.

    The request is astroquery's ``Hapcut.download_cutouts`` (one FITS file per layer that
    overlaps, ``SCI`` and ``WHT``), pointed at the archive ``url``. The zip it returns is
    kept in a temporary directory; its members must be plain FITS files with plain names
    (no directory, ``..``, absolute path or link) and are written into ``dest_dir``
    atomically (an older cutout of the same name is replaced).

    Parameters
    ----------
    ra, dec : float
        Position, ICRS degrees.
    size : number, (w, h) or Quantity
        Box size, arcsec unless a Quantity; ``w`` along RA (sent as Hapcut's ``(ny, nx)``).
    dest_dir : path
        Where the cutouts go.
    url : str, optional
        The archive (:func:`mvmflow.archive.service.mast_url`).

    Returns
    -------
    list of Path
        The cutouts written (empty when no layer overlaps).

    Raises
    ------
    ArchiveError
        When the request fails or the answer is not a zip of FITS files (naming the URL or
        member).
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astroquery.exceptions import NoResultsWarning
    from astroquery.mast import HapcutClass

    hsize = _hapcut_size(size)
    client = portal_client(HapcutClass, url)
    where = client._service_api_connection.REQUEST_URL + "astrocut"
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    log.info("HAP cutouts at (%s, %s) from %s", ra, dec, where)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix=".mvmflow-hapcut-", dir=dest_dir) as tmp:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NoResultsWarning)
                with contextlib.redirect_stdout(io.StringIO()):  # astroquery prints
                    answer = client.download_cutouts(SkyCoord(ra * u.deg, dec * u.deg),
                                                     size=hsize, path=tmp, inflate=False,
                                                     verbose=False)
        except Exception as exc:  # noqa: BLE001 - requests, JSON and zip errors alike
            raise _request_error(exc, f"HAP cutout service {where}") from None
        for w in caught:
            if issubclass(w.category, NoResultsWarning):
                log.info("HAP cutout service: %s", w.message)
        if not len(answer):
            return []
        zpath = Path(str(answer["Local Path"][0]))
        try:
            with zipfile.ZipFile(zpath) as archive:
                members = [(_safe_member(i), i) for i in archive.infolist()]
                for name, info in members:  # all checked before any is written
                    with archive.open(info) as member:
                        if member.read(9) != b"SIMPLE  =":
                            raise ArchiveError(f"member {name!r} is not a FITS file")
                for name, info in members:
                    data = archive.read(info)
                    target = dest_dir / name
                    with atomic_path(target) as part:
                        part.write_bytes(data)
                    written.append(target)
        except zipfile.BadZipFile as exc:
            raise ArchiveError(f"HAP cutout service {where}: not a zip file: {exc}") from None
        except ArchiveError as exc:
            raise ArchiveError(f"HAP cutout service {where}: {exc}") from None
    return written
