"""The HAP all-sky grid: declination bands, projection cells, sky cells and frames.

This reproduces the grid of drizzlepac 3.11.0 (``pars/allsky_cells.fits`` and
``haputils.cell_utils``) exactly; see ``spec/grid_and_names.md`` sections 1 and 2.

- 46 declination bands (``data/allsky_bands.csv``), 2644 projection cells numbered 0..2643
  from the south pole.
- A projection cell is a TAN plane, north up, 0.04"/px, 450287 x 450287 px, centred on
  ``CRVAL = (k * 360 / NBAND, DEC)`` with ``CRPIX = 225144`` (1-based).
- It is cut into 21 x 21 sky cells of 21954 px spaced by 21442 px, so neighbours overlap by
  512 px. Sky cell (X, Y) (1-based) starts at projection-cell pixel ``(X - 1) * 21442``
  (0-based); X grows toward lower RA, Y toward north.
- A sky cell at scale ``s`` (``fine`` = 0.04"/px, ``coarse`` = 0.12"/px, or any float) has
  ratio ``r = 0.04 / s``, ``CD = CD_pc / r``,
  ``CRPIX = (225144 - (X - 1) * 21442) * r`` and ``NAXIS = int(21954 * r)``.

Every product's geometry is a :class:`Frame`: a window of one projection cell's plane at one
scale, described by its CRPIX (which places it on the plane) and its shape.

Differences from the reference, by design:

- projection-cell indices outside 0..2643 and sky-cell indices outside 1..21 are rejected
  (the reference silently accepts them);
- :func:`sky_cells_at` and :func:`sky_cells_for_footprint` consider every projection cell
  near the position in every declination band, so the cells that the reference misses at the
  low-RA wrap (``spec 7.1``) and in neighbouring bands (``spec 7.2``) are found.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from functools import cache, cached_property
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from astropy.wcs import WCS

__all__ = [
    "Band",
    "Frame",
    "ProjectionCell",
    "SkyCell",
    "PC_SCALE",
    "SC_NXY",
    "SC_OLAP",
    "SC_STEP",
    "SC_SIZE",
    "N_PROJECTION_CELLS",
    "bands",
    "band_of",
    "scale_value",
    "sky_cells_at",
    "sky_cells_for_footprint",
    "unit_vectors",
    "nearest_projection_cell",
    "projection_cells_near",
]

PC_SCALE = 0.04
"""Projection-cell (and fine sky-cell) pixel scale in arcsec/px."""
SC_NXY = 21
"""Sky cells along each axis of a projection cell."""
SC_OLAP = 256
"""The grid file's overlap parameter in fine pixels (the real overlap is 2 * 256 = 512)."""
SCALES = {"fine": 0.04, "coarse": 0.12}
"""Named pixel scales in arcsec/px."""

# Radius (deg) around a projection-cell centre beyond which no pixel of the cell (nor of
# its sky cells, which stick out up to 507 px past the edge) can lie: the corner of the
# 5.003 deg TAN square is 3.535 deg from the centre.
_PC_RADIUS_DEG = 3.6


@dataclass(frozen=True)
class Band:
    """One declination band ("ring") of the all-sky grid."""

    zone: int
    projcell: int
    nband: int
    dec: float
    dec_min: float
    dec_max: float
    xcell: int
    ycell: int

    @property
    def last(self) -> int:
        """Index of the last projection cell in this band."""
        return self.projcell + self.nband - 1


@cache
def bands() -> tuple[Band, ...]:
    """The 46 declination bands of the grid, south to north.

    Returns
    -------
    tuple of Band
    """
    text = resources.files("mvmflow").joinpath("data/allsky_bands.csv").read_text()
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    reader = csv.DictReader(rows)
    return tuple(
        Band(
            zone=int(r["zone"]),
            projcell=int(r["projcell"]),
            nband=int(r["nband"]),
            dec=float(r["dec"]),
            dec_min=float(r["dec_min"]),
            dec_max=float(r["dec_max"]),
            xcell=int(r["xcell"]),
            ycell=int(r["ycell"]),
        )
        for r in reader
    )


N_PROJECTION_CELLS = bands()[-1].last + 1
_XCELL = bands()[0].xcell
SC_STEP = int(_XCELL / SC_NXY + 0.5)
"""Spacing of sky-cell origins in fine pixels (21442)."""
SC_SIZE = SC_STEP + 2 * SC_OLAP
"""Fine size of a sky cell in pixels (21954)."""


def band_of(index: int) -> Band:
    """Return the declination band holding projection cell ``index``.

    Raises
    ------
    ValueError
        If ``index`` is not a projection-cell index (0..2643).
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"projection-cell index must be an integer, got {index!r}")
    if not 0 <= index < N_PROJECTION_CELLS:
        raise ValueError(
            f"projection-cell index {index} is outside 0..{N_PROJECTION_CELLS - 1}"
        )
    for band in reversed(bands()):
        if band.projcell <= index:
            return band
    raise AssertionError("unreachable")  # pragma: no cover


def scale_value(scale: str | float) -> float:
    """Return a pixel scale in arcsec/px from ``'fine'``, ``'coarse'`` or a number.

    Raises
    ------
    ValueError
        For an unknown name or a non-positive number.
    """
    if isinstance(scale, str):
        try:
            return SCALES[scale]
        except KeyError:
            raise ValueError(
                f"unknown pixel scale {scale!r}: use 'fine', 'coarse' or arcsec/px"
            ) from None
    value = float(scale)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"pixel scale must be a positive number of arcsec/px, got {scale!r}")
    return value


def scale_name(scale: float, rel_tol: float = 0.0) -> str | None:
    """Return ``'fine'`` or ``'coarse'`` for the named scales (within ``rel_tol``), else None."""
    for name, value in SCALES.items():
        if value == scale or (rel_tol and math.isclose(scale, value, rel_tol=rel_tol)):
            return name
    return None


def _tan_wcs(crval1, crval2, crpix1, crpix2, cd, nx, ny) -> WCS:
    from astropy.wcs import WCS  # lazy: 0.3 s of every job's start-up (docs/speed.md)

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [crval1, crval2]
    wcs.wcs.crpix = [crpix1, crpix2]
    wcs.wcs.cd = cd
    wcs.pixel_shape = (nx, ny)
    return wcs


class ProjectionCell:
    """One projection cell of the HAP grid.

    Parameters
    ----------
    index : int
        Projection-cell index, 0 (south pole) .. 2643 (north pole).

    Examples
    --------
    >>> pc = ProjectionCell(81)
    >>> pc.crval
    (87.27272727272727, -70.0)
    """

    def __init__(self, index: int):
        self.band = band_of(index)
        self.index = int(index)
        self.k = self.index - self.band.projcell
        self.nx = self.band.xcell
        self.ny = self.band.ycell

    def __repr__(self) -> str:
        return f"ProjectionCell({self.index})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ProjectionCell) and other.index == self.index

    def __hash__(self) -> int:
        return hash(("ProjectionCell", self.index))

    @property
    def crval(self) -> tuple[float, float]:
        """(RA, Dec) of the cell's tangent point, in degrees."""
        return (self.k * 360.0 / self.band.nband, self.band.dec)

    @property
    def center(self) -> tuple[float, float]:
        """(RA, Dec) of the cell centre in degrees (the tangent point)."""
        return self.crval

    @property
    def crpix(self) -> tuple[float, float]:
        """1-based reference pixel of the fine projection-cell plane (225144, 225144)."""
        return (self.nx / 2.0 + 0.5, self.ny / 2.0 + 0.5)

    @property
    def wcs(self) -> WCS:
        """A new astropy WCS of the whole cell at 0.04"/px, ``pixel_shape`` set."""
        cd = np.array([[-PC_SCALE / 3600.0, 0.0], [0.0, PC_SCALE / 3600.0]], dtype=np.float64)
        return _tan_wcs(*self.crval, *self.crpix, cd, self.nx, self.ny)

    def frame(self, scale: str | float = "fine") -> Frame:
        """The whole projection-cell plane as a :class:`Frame` at ``scale``."""
        s = scale_value(scale)
        r = PC_SCALE / s
        return Frame(
            self.index, s, self.crpix[0] * r, self.crpix[1] * r,
            int(round(self.nx * r)), int(round(self.ny * r)),
        )

    def sky_cell(self, x: int, y: int, scale: str | float = "fine") -> SkyCell:
        """Sky cell (x, y) of this projection cell."""
        return SkyCell(self, x, y, scale)

    def footprint(self) -> np.ndarray:
        """(4, 2) array of the (RA, Dec) corners, as astropy's ``calc_footprint``."""
        return self.wcs.calc_footprint()


@dataclass(frozen=True)
class Frame:
    """A pixel grid that is a window of one projection cell's tangent plane.

    The frame is a TAN WCS with the projection cell's CRVAL, ``CD = diag(-s, s) / 3600``
    and the given CRPIX (1-based), of shape ``(ny, nx)``. Two frames of the same
    projection cell and scale are related by a pure pixel shift (``x0`` difference), which
    is an integer for all fine-scale products; cutting and combining such products is
    slicing.

    Attributes
    ----------
    projection_cell : int
    scale : float
        Pixel scale in arcsec/px.
    crpix1, crpix2 : float
        FITS reference pixel (1-based) of the tangent point in this frame.
    nx, ny : int
        Shape along x and y.
    """

    projection_cell: int
    scale: float
    crpix1: float
    crpix2: float
    nx: int
    ny: int

    @property
    def ratio(self) -> float:
        """``0.04 / scale``: fine pixels per frame pixel, inverted."""
        return PC_SCALE / self.scale

    @property
    def shape(self) -> tuple[int, int]:
        """numpy shape ``(ny, nx)``."""
        return (self.ny, self.nx)

    @property
    def x0(self) -> float:
        """0-based position of this frame's pixel (0, 0) on the projection-cell plane at
        this frame's scale, along x."""
        pc = ProjectionCell(self.projection_cell)
        return pc.crpix[0] * self.ratio - self.crpix1

    @property
    def y0(self) -> float:
        """As :attr:`x0`, along y."""
        pc = ProjectionCell(self.projection_cell)
        return pc.crpix[1] * self.ratio - self.crpix2

    @property
    def cd(self) -> np.ndarray:
        cd_pc = np.array([[-PC_SCALE / 3600.0, 0.0], [0.0, PC_SCALE / 3600.0]], dtype=np.float64)
        if self.scale == PC_SCALE:
            return cd_pc
        return cd_pc / self.ratio

    @property
    def wcs(self) -> WCS:
        """A new astropy TAN WCS of this frame with ``pixel_shape`` set."""
        crval = ProjectionCell(self.projection_cell).crval
        return _tan_wcs(*crval, self.crpix1, self.crpix2, self.cd, self.nx, self.ny)

    def header(self):
        """The frame's WCS as a FITS header (CD matrix form) with NAXIS1/NAXIS2."""
        from astropy.io import fits

        crval = ProjectionCell(self.projection_cell).crval
        cd = self.cd
        cards = [
            ("NAXIS1", self.nx, "length of data axis 1"),
            ("NAXIS2", self.ny, "length of data axis 2"),
            ("CTYPE1", "RA---TAN", "gnomonic projection"),
            ("CTYPE2", "DEC--TAN", "gnomonic projection"),
            ("CRVAL1", crval[0], "[deg] RA of the projection-cell centre"),
            ("CRVAL2", crval[1], "[deg] Dec of the projection-cell centre"),
            ("CRPIX1", self.crpix1, "reference pixel along x (1-based)"),
            ("CRPIX2", self.crpix2, "reference pixel along y (1-based)"),
            ("CD1_1", cd[0, 0], "[deg/px] partial of RA w.r.t. x"),
            ("CD1_2", cd[0, 1], "[deg/px] partial of RA w.r.t. y"),
            ("CD2_1", cd[1, 0], "[deg/px] partial of Dec w.r.t. x"),
            ("CD2_2", cd[1, 1], "[deg/px] partial of Dec w.r.t. y"),
            ("RADESYS", "ICRS", "reference frame"),
            ("ORIENTAT", 0.0, "[deg] position angle of image y axis"),
        ]
        return fits.Header(cards)

    # -- serialisation: the one place a frame is written to and read from JSON and FITS
    # headers (docs/conventions.md, "One owner per file type"; docs/design.md, "A projection
    # cell is one pixel grid": a frame is one small value)

    def to_dict(self) -> dict:
        """The frame as a JSON-ready dict: exactly ``dataclasses.asdict(frame)``.

        Returns
        -------
        dict
            ``projection_cell``, ``scale``, ``crpix1``, ``crpix2``, ``nx``, ``ny``.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> Frame:
        """The frame of a :meth:`to_dict` mapping (``Frame(**data)``, the fields checked).

        Raises
        ------
        ValueError
            If a field is missing or unknown.
        """
        data = dict(data)
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"a frame needs exactly the fields {sorted(names)}, "
                             f"got {sorted(data)}")
        return cls(**data)

    def header_cards(self) -> list[tuple]:
        """FITS cards ``PCELL PSCALE FRCRPIX1 FRCRPIX2 FRNAXIS1 FRNAXIS2`` describing the
        frame in an intermediate file's primary header (read back by :meth:`from_header`).

        Returns
        -------
        list of (keyword, value, comment)
        """
        return [
            ("PCELL", self.projection_cell, "projection cell of the frame"),
            ("PSCALE", self.scale, "[arcsec/px] frame pixel scale"),
            ("FRCRPIX1", self.crpix1, "frame CRPIX1 (1-based)"),
            ("FRCRPIX2", self.crpix2, "frame CRPIX2 (1-based)"),
            ("FRNAXIS1", self.nx, "frame size along x"),
            ("FRNAXIS2", self.ny, "frame size along y"),
        ]

    @classmethod
    def from_header(cls, header) -> Frame:
        """The frame of a header holding :meth:`header_cards`.

        Raises
        ------
        KeyError
            If a card is missing.
        """
        return cls(int(header["PCELL"]), float(header["PSCALE"]), float(header["FRCRPIX1"]),
                   float(header["FRCRPIX2"]), int(header["FRNAXIS1"]), int(header["FRNAXIS2"]))

    def grid_frame(self) -> Frame:
        """The reference frame of this frame's pixel grid: the 1 x 1 frame of the same
        projection cell, scale and pixel phase whose pixel (0, 0) lies within half a pixel
        of the plane's origin. Every frame of one grid (sky cells, their layers and boxes,
        mosaics, tiles) has the same one (pixel maps are made on it, docs/data_path.md)."""
        ix, iy = round(self.x0), round(self.y0)
        return Frame(self.projection_cell, self.scale, self.crpix1 + ix, self.crpix2 + iy, 1, 1)

    def window(self, x0: int, y0: int, nx: int, ny: int) -> Frame:
        """A sub-frame whose pixel (0, 0) is this frame's pixel (x0, y0).

        The offsets are integers so the window stays on this frame's pixel grid.
        """
        for name, v in (("x0", x0), ("y0", y0), ("nx", nx), ("ny", ny)):
            if int(v) != v:
                raise ValueError(f"window {name} must be an integer, got {v!r}")
        if nx <= 0 or ny <= 0:
            raise ValueError(f"window shape must be positive, got ({nx}, {ny})")
        return Frame(
            self.projection_cell, self.scale,
            self.crpix1 - int(x0), self.crpix2 - int(y0), int(nx), int(ny),
        )

    def offset_of(self, other: Frame) -> tuple[float, float]:
        """Pixel position of ``other``'s pixel (0, 0) in this frame.

        Raises
        ------
        ValueError
            If the frames are on different projection cells or scales.
        """
        if other.projection_cell != self.projection_cell or other.scale != self.scale:
            raise ValueError(
                f"frames are on different planes: p{self.projection_cell}@{self.scale} "
                f"and p{other.projection_cell}@{other.scale}"
            )
        return (self.crpix1 - other.crpix1, self.crpix2 - other.crpix2)

    def integer_offset_of(self, other: Frame, tol: float = 1e-6) -> tuple[int, int]:
        """As :meth:`offset_of`, but require an integer shift (aligned pixel grids)."""
        dx, dy = self.offset_of(other)
        ix, iy = round(dx), round(dy)
        if abs(dx - ix) > tol or abs(dy - iy) > tol:
            raise ValueError(
                f"frames are not pixel-aligned: offset ({dx}, {dy}) is not an integer"
            )
        return (int(ix), int(iy))

    def bounded(self, x, y) -> Frame:
        """The reference's trimmed output frame for points ``(x, y)`` of this frame.

        ``x`` and ``y`` are 0-based pixel positions (chip-edge samples of every exposure).
        As drizzlepac's ``SkyFootprint``/``find_bounded_wcs``: positions are truncated
        toward zero to integers and clipped to the frame, then ``NAXIS = max - min`` and
        ``CRPIX -= min``.

        Raises
        ------
        ValueError
            If no point falls on the frame.
        """
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        good = np.isfinite(x) & np.isfinite(y)
        good &= (x > -1) & (y > -1) & (x < self.nx) & (y < self.ny)
        if not good.any():
            raise ValueError("no footprint point falls on the frame")
        xi = np.clip(np.trunc(x[good]).astype(np.int64), 0, self.nx - 1)
        yi = np.clip(np.trunc(y[good]).astype(np.int64), 0, self.ny - 1)
        xmin, xmax, ymin, ymax = int(xi.min()), int(xi.max()), int(yi.min()), int(yi.max())
        return Frame(
            self.projection_cell, self.scale,
            self.crpix1 - xmin, self.crpix2 - ymin,
            max(xmax - xmin, 1), max(ymax - ymin, 1),
        )


class SkyCell:
    """One sky cell of a projection cell, at a pixel scale.

    Parameters
    ----------
    projection_cell : int or ProjectionCell
    x, y : int
        1-based sky-cell indices, 1..21 (x grows toward lower RA, y toward north).
    scale : {'fine', 'coarse'} or float
        Pixel scale name or arcsec/px.

    Examples
    --------
    >>> sc = SkyCell.from_name("skycell-p0081x14y14")
    >>> sc.wcs.wcs.crpix
    array([-53602., -53602.])
    """

    def __init__(self, projection_cell: int | ProjectionCell, x: int, y: int,
                 scale: str | float = "fine"):
        if not isinstance(projection_cell, ProjectionCell):
            projection_cell = ProjectionCell(projection_cell)
        for name, v in (("x", x), ("y", y)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= SC_NXY:
                raise ValueError(f"sky-cell {name} index must be an integer 1..{SC_NXY}, got {v!r}")
        self.projection_cell = projection_cell
        self.x = int(x)
        self.y = int(y)
        self.scale = scale_value(scale)

    @classmethod
    def from_name(cls, name: str, scale: str | float = "fine") -> SkyCell:
        """Build a sky cell from its name, e.g. ``skycell-p0081x14y14``."""
        from mvmflow.names import parse_skycell

        p, x, y = parse_skycell(name)
        return cls(p, x, y, scale)

    def __repr__(self) -> str:
        return f"SkyCell({self.name!r}, scale={self.scale})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, SkyCell)
            and (other.projection_cell.index, other.x, other.y, other.scale)
            == (self.projection_cell.index, self.x, self.y, self.scale)
        )

    def __hash__(self) -> int:
        return hash((self.projection_cell.index, self.x, self.y, self.scale))

    @property
    def name(self) -> str:
        """``skycell-pPPPPxXXyYY``."""
        return f"skycell-p{self.projection_cell.index:04d}x{self.x:02d}y{self.y:02d}"

    @property
    def scellid(self) -> str:
        """The SCELLID header value, ``pPPPPxXXyYY``."""
        return self.name[len("skycell-"):]

    @property
    def ratio(self) -> float:
        return PC_SCALE / self.scale

    @cached_property
    def frame(self) -> Frame:
        """The sky cell's window on the projection-cell plane at its scale."""
        pc = self.projection_cell
        r = self.ratio
        step_x = int(pc.nx / SC_NXY + 0.5)
        step_y = int(pc.ny / SC_NXY + 0.5)
        if self.scale == PC_SCALE:
            crpix1 = pc.crpix[0] - (self.x - 1) * step_x
            crpix2 = pc.crpix[1] - (self.y - 1) * step_y
        else:
            crpix1 = (pc.crpix[0] - (self.x - 1) * step_x) * r
            crpix2 = (pc.crpix[1] - (self.y - 1) * step_y) * r
        n1 = int((step_x + SC_OLAP * 2) * r)
        n2 = int((step_y + SC_OLAP * 2) * r)
        return Frame(pc.index, self.scale, crpix1, crpix2, n1, n2)

    @property
    def wcs(self) -> WCS:
        """A new astropy WCS of the whole sky cell, ``pixel_shape`` set."""
        return self.frame.wcs

    @property
    def fine_origin(self) -> tuple[int, int]:
        """0-based fine projection-cell pixel of this sky cell's fine pixel (0, 0)."""
        return ((self.x - 1) * SC_STEP, (self.y - 1) * SC_STEP)

    @property
    def center(self) -> tuple[float, float]:
        """(RA, Dec) of the central pixel ((NAXIS-1)/2, 0-based), in degrees."""
        f = self.frame
        ra, dec = f.wcs.pixel_to_world_values((f.nx - 1) / 2.0, (f.ny - 1) / 2.0)
        return (float(ra), float(dec))

    def footprint(self) -> np.ndarray:
        """(4, 2) array of the (RA, Dec) corners, as astropy's ``calc_footprint``."""
        return self.wcs.calc_footprint()


# --------------------------------------------------------------------------------------
# Searching the grid


def _unit(ra, dec):
    ra = np.radians(np.asarray(ra, dtype=float))
    dec = np.radians(np.asarray(dec, dtype=float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


@cache
def _all_centres() -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(N_PROJECTION_CELLS)
    cen = np.array([ProjectionCell(int(i)).crval for i in idx])
    return idx, _unit(cen[:, 0], cen[:, 1])


def unit_vectors(ra, dec) -> np.ndarray:
    """Unit vectors ``(..., 3)`` of sky positions in degrees (ICRS cartesian)."""
    return _unit(ra, dec)


def nearest_projection_cell(ra: float, dec: float) -> int:
    """The projection cell whose centre (tangent point) is nearest on the sky to (ra, dec)."""
    idx, cen = _all_centres()
    return int(idx[int(np.argmax(cen @ _unit(ra, dec)))])


def projection_cells_near(ra: float, dec: float, radius: float = 0.0) -> list[int]:
    """Indices of projection cells that may contain points within ``radius`` degrees of
    (ra, dec), in ascending order (a superset: callers test pixels).
    """
    idx, cen = _all_centres()
    p = _unit(ra, dec)
    cosd = np.clip(cen @ p, -1.0, 1.0)
    sep = np.degrees(np.arccos(cosd))
    return [int(i) for i in idx[sep < _PC_RADIUS_DEG + radius]]


def _tan_pixels(pc: ProjectionCell, ra, dec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based fine pixel positions of (ra, dec) on ``pc``'s plane, and a mask of points in
    front of the tangent plane (gnomonic projection defined)."""
    ra = np.atleast_1d(np.asarray(ra, dtype=float))
    dec = np.atleast_1d(np.asarray(dec, dtype=float))
    front = (_unit(ra, dec) @ _unit(*pc.crval)) > 1e-6
    x, y = pc.wcs.world_to_pixel_values(ra, dec)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float), front


def _index_range(v: float, n: int = SC_NXY) -> range:
    """1-based sky-cell indices X with 0 <= v - (X-1)*STEP <= SIZE (inclusive, as the
    reference's pixel test)."""
    lo = math.ceil((v - SC_SIZE) / SC_STEP) + 1
    hi = math.floor(v / SC_STEP) + 1
    return range(max(lo, 1), min(hi, n) + 1)


def sky_cells_at(ra: float, dec: float) -> list[str]:
    """Names of every sky cell whose footprint contains the point (ra, dec).

    A sky cell contains the point when its 0-based fine pixel position (x, y) in the cell
    satisfies ``0 <= x <= 21954`` and ``0 <= y <= 21954`` (the reference's inclusive
    test). Every projection cell of every band is considered, so the cells the reference
    misses at the RA wrap and across bands are included.

    Returns
    -------
    list of str
        Sorted by projection cell, then x, then y (the reference's order).
    """
    ra = float(ra) % 360.0
    dec = float(dec)
    if not -90.0 <= dec <= 90.0:
        raise ValueError(f"declination {dec} is outside -90..90")
    names = []
    for p in projection_cells_near(ra, dec):
        pc = ProjectionCell(p)
        x, y, front = _tan_pixels(pc, ra, dec)
        if not front[0]:
            continue
        for sx in _index_range(float(x[0])):
            for sy in _index_range(float(y[0])):
                names.append(SkyCell(pc, sx, sy).name)
    return names


def _clip_polygon(poly: np.ndarray, xmin: float, xmax: float, ymin: float, ymax: float):
    """Sutherland-Hodgman clip of a polygon (N, 2) to an axis-aligned rectangle."""
    def clip(points, inside, intersect):
        out = []
        n = len(points)
        for i in range(n):
            cur, prev = points[i], points[i - 1]
            cin, pin = inside(cur), inside(prev)
            if cin:
                if not pin:
                    out.append(intersect(prev, cur))
                out.append(cur)
            elif pin:
                out.append(intersect(prev, cur))
        return out

    def ix(a, b, xc):
        t = (xc - a[0]) / (b[0] - a[0])
        return (xc, a[1] + t * (b[1] - a[1]))

    def iy(a, b, yc):
        t = (yc - a[1]) / (b[1] - a[1])
        return (a[0] + t * (b[0] - a[0]), yc)

    pts = [tuple(p) for p in poly]
    for inside, inter in (
        (lambda p: p[0] >= xmin, lambda a, b: ix(a, b, xmin)),
        (lambda p: p[0] <= xmax, lambda a, b: ix(a, b, xmax)),
        (lambda p: p[1] >= ymin, lambda a, b: iy(a, b, ymin)),
        (lambda p: p[1] <= ymax, lambda a, b: iy(a, b, ymax)),
    ):
        if not pts:
            break
        pts = clip(pts, inside, inter)
    return np.array(pts, dtype=float).reshape(-1, 2)


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _as_polygons(polygon) -> list[np.ndarray]:
    arr = np.asarray(polygon, dtype=object if isinstance(polygon, list) else float)
    if arr.dtype != object and arr.ndim == 2 and arr.shape[1] == 2:
        return [np.asarray(polygon, dtype=float)]
    polys = [np.asarray(p, dtype=float) for p in polygon]
    for p in polys:
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
            raise ValueError("a footprint polygon must be an (N >= 3, 2) array of (RA, Dec)")
    return polys


def sky_cells_for_footprint(polygon) -> list[str]:
    """Names of every sky cell that overlaps a footprint on the sky.

    Parameters
    ----------
    polygon : array_like, shape (N, 2), or list of such arrays
        (RA, Dec) vertices in degrees of one chip outline (or of several chips). Edges
        are great-circle arcs, i.e. straight lines on every gnomonic plane; sample a
        distorted chip edge densely enough for the accuracy you need.

    Returns
    -------
    list of str
        Sky cells whose window (0..21954 fine px, as the reference) overlaps the polygon
        with non-zero area, sorted by projection cell, x, y.
    """
    polys = _as_polygons(polygon)
    found = set()
    for poly in polys:
        if len(poly) < 3:
            raise ValueError("a footprint polygon needs at least 3 vertices")
        u = _unit(poly[:, 0], poly[:, 1])
        c = u.mean(axis=0)
        c /= np.linalg.norm(c)
        ra_c = math.degrees(math.atan2(c[1], c[0])) % 360.0
        dec_c = math.degrees(math.asin(max(-1.0, min(1.0, c[2]))))
        radius = float(np.degrees(np.arccos(np.clip(u @ c, -1, 1))).max())
        for p in projection_cells_near(ra_c, dec_c, radius):
            pc = ProjectionCell(p)
            x, y, front = _tan_pixels(pc, poly[:, 0], poly[:, 1])
            if not front.all():
                continue
            xy = np.column_stack([x, y])
            for sx in range(1, SC_NXY + 1):
                lox = (sx - 1) * SC_STEP
                if lox > x.max() or lox + SC_SIZE < x.min():
                    continue
                for sy in range(1, SC_NXY + 1):
                    loy = (sy - 1) * SC_STEP
                    if loy > y.max() or loy + SC_SIZE < y.min():
                        continue
                    clipped = _clip_polygon(xy, lox, lox + SC_SIZE, loy, loy + SC_SIZE)
                    if _area(clipped) > 0.0:
                        found.add((p, sx, sy))
    return [f"skycell-p{p:04d}x{sx:02d}y{sy:02d}" for p, sx, sy in sorted(found)]
