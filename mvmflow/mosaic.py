"""Custom mosaics: one seamless product per layer over all the inputs, on one projection cell.

drizzlepac's ``make_custom_mosaic`` (spec ``processing.md`` 4) as a plan, computed next to
the sky-cell plan (:mod:`mvmflow.plan`) from the same screened records:

1. **Projection cell** (:func:`choose_projection_cell`): ``auto`` takes the projection cell
   whose centre (tangent point) is nearest, on the sky, to the centre of the observations:
   the normalised mean of the unit vectors of every accepted exposure's footprint centre.
   The reference instead averages sky-cell *index* distances to the index (11, 11), which is
   not a sky distance (spec 4.1). A number picks that projection cell.
2. **Members**: every accepted exposure planned into a sky cell of that projection cell
   (so mosaic and sky-cell layers have the same members). Exposures with no sky cell in it
   are left out, and exposures reaching past the projection cell's plane are clipped there;
   both are reported by name (notes, logged as warnings).
3. **Layers**: as the sky-cell layers (:func:`mvmflow.plan.build_layers`: one per
   instrument, detector, filter, and class/year for the ``hard``/``kmeans`` methods; FLTs
   left out of ``drc`` layers). ``scale: auto`` gives every layer at the fine scale plus a
   coarse one for WFC3/IR (as the sky cells); ``fine`` or ``coarse`` gives each layer once,
   at that scale. OLD and NEW members are both drizzled.
4. **Frame** per scale: the projection cell's whole plane at that scale (so fine mosaics
   share the sky cells' pixel grid exactly), trimmed to the footprint outline points of all
   members as the sky-cell frames are (:meth:`mvmflow.grid.Frame.bounded`). The coarse
   plane's grid is the projection cell's own (pixel 0 at the plane's corner), which is the
   grid of the coarse sky cells with ``x, y = 1, 4, 7, ...``; the reference rounds CRPIX
   instead (spec 4.3).
5. **Names**: ``<prefix>_<instr>_<det>_<filter>_<label>_dr[cz].fits``, where the prefix is
   the user's (:func:`mvmflow.names.custom_prefix`: one trailing ``_`` dropped) or
   ``hst_skycell-p<PPPP>-ra<##>d<####>-dec<n|s><##>d<####>`` from the centre of the fine
   frame; the trailers and the manifest (``<prefix>_manifest.txt``) carry it too.
6. **Tiles**: each layer frame is cut into tiles of at most ``tile_size`` pixels a side.
   Each exposure is drizzled once onto its own box of the plane (a map job that does not
   depend on the tiling, so the partials are the same for any tile size); each tile is
   reduced separately from the parts of the partials that reach it, and the product is
   written tile by tile (:mod:`mvmflow.tiles`). So a tiled mosaic is bit for bit the
   untiled one, and the memory of a job is bounded by an exposure or a tile, never by the
   mosaic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mvmflow import names
from mvmflow.grid import Frame, ProjectionCell, _all_centres, _unit
from mvmflow.plan import (
    Coverage,
    Dropped,
    FramedJob,
    Member,
    MvmPlan,
    _bounded,
    _frame_dict,
    _frame_from,
    build_layers,
    coverage_stats,
    drizzle_order,
    exposure_box,
    footprint_pixels,
)

__all__ = [
    "MOSAIC_SCALES",
    "MosaicJob",
    "MosaicLayer",
    "MosaicPlan",
    "choose_projection_cell",
    "observation_center",
    "plan_mosaic",
    "tile_boxes",
]

MOSAIC_SCALES = ("auto", "fine", "coarse")
"""``mosaic.scale`` values."""


@dataclass
class MosaicLayer:
    """One layer of the custom mosaic.

    Attributes
    ----------
    name : str
        The product file name (custom prefix).
    instrument, detector, filter, scale, exptime_class : str
    year : int or None
    product_type : str
    frame : Frame
        The trimmed mosaic frame at this layer's scale.
    members : list of Member
        Drizzled members in drizzle order (NEW and OLD).
    dropped : list of Dropped
    coverage : Coverage
    tiles : list of list of int
        ``[x0, y0, nx, ny]`` of each tile in the frame, row by row.
    sky_group : str
        The sky group whose offsets the layer uses (the sky cells' group in this projection
        cell, :func:`mvmflow.skygroup`), so mosaic and sky-cell layers agree.
    skycell_layers : list of str
        The sky-cell layers (same key and scale, this projection cell): their cosmic-ray
        masks of an exposure are combined for the mosaic's drizzle of it.
    """

    name: str
    instrument: str
    detector: str
    filter: str
    scale: str
    exptime_class: str
    year: int | None
    product_type: str
    frame: Frame
    members: list[Member] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    coverage: Coverage | None = None
    tiles: list[list[int]] = field(default_factory=list)
    sky_group: str = ""
    skycell_layers: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.instrument, self.detector, self.filter, self.exptime_class, self.year)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "instrument", "detector", "filter", "scale",
                                           "exptime_class", "year", "product_type", "tiles",
                                           "sky_group", "skycell_layers")}
        d["frame"] = _frame_dict(self.frame)
        d["members"] = [m.to_dict() for m in self.members]
        d["dropped"] = [x.to_dict() for x in self.dropped]
        d["coverage"] = None if self.coverage is None else self.coverage.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> MosaicLayer:
        d = dict(data)
        d["frame"] = _frame_from(d["frame"])
        d["members"] = [Member.from_dict(m) for m in d.get("members", [])]
        d["dropped"] = [Dropped.from_dict(x) for x in d.get("dropped", [])]
        d["coverage"] = None if d.get("coverage") is None else Coverage.from_dict(d["coverage"])
        return cls(**d)


@dataclass
class MosaicJob(FramedJob):
    """One map job of the mosaic: an exposure drizzled onto its box of the plane.

    ``box`` is ``[x0, y0, nx, ny]`` relative to the layer frame (it may reach past the
    trimmed frame, never past the projection cell's plane); ``frame`` is that box as a window
    of the plane (the drizzle's output frame).
    """

    layer: str
    file: str
    filename: str
    ipppssoo: str
    order: int
    box: list[int]
    frame: Frame


@dataclass
class MosaicPlan:
    """The custom mosaic: prefix, projection cell, layers, jobs and remarks."""

    prefix: str
    projection_cell: int
    center: tuple[float, float]
    tile_size: int
    layers: list[MosaicLayer] = field(default_factory=list)
    jobs: list[MosaicJob] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> str:
        """``<prefix>_manifest.txt``."""
        return f"{self.prefix}_manifest.txt"

    def to_dict(self) -> dict:
        return {
            "prefix": self.prefix, "projection_cell": self.projection_cell,
            "center": list(self.center), "tile_size": self.tile_size,
            "manifest": self.manifest,
            "layers": [lay.to_dict() for lay in self.layers],
            "jobs": [j.to_dict() for j in self.jobs],
            "left_out": list(self.left_out), "clipped": list(self.clipped),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> MosaicPlan:
        return cls(
            prefix=data["prefix"], projection_cell=int(data["projection_cell"]),
            center=tuple(data["center"]), tile_size=int(data["tile_size"]),
            layers=[MosaicLayer.from_dict(x) for x in data.get("layers", [])],
            jobs=[MosaicJob.from_dict(x) for x in data.get("jobs", [])],
            left_out=list(data.get("left_out", [])), clipped=list(data.get("clipped", [])),
            notes=list(data.get("notes", [])),
        )


# ------------------------------------------------------------------------------------------
# projection cell


def _footprint_points(record) -> np.ndarray:
    pts = [np.asarray(c.footprint, dtype=float).reshape(-1, 2) for c in record.chips]
    pts = [p for p in pts if len(p)]
    return np.concatenate(pts) if pts else np.empty((0, 2))


def observation_center(records: Iterable) -> tuple[float, float]:
    """(RA, Dec) in degrees of the centre of the observations.

    Each exposure's centre is the normalised mean unit vector of its chip footprint points;
    the result is the normalised mean of those, so every exposure counts once.

    Raises
    ------
    ValueError
        If no record has a footprint.
    """
    centres = []
    for rec in records:
        pts = _footprint_points(rec)
        if len(pts):
            v = _unit(pts[:, 0], pts[:, 1]).sum(axis=0)
            centres.append(v / np.linalg.norm(v))
    if not centres:
        raise ValueError("no exposure with a footprint: no mosaic centre")
    v = np.sum(centres, axis=0)
    v /= np.linalg.norm(v)
    ra = math.degrees(math.atan2(v[1], v[0])) % 360.0
    dec = math.degrees(math.asin(max(-1.0, min(1.0, float(v[2])))))
    return ra, dec


def choose_projection_cell(records: Iterable, choice="auto") -> tuple[int, tuple[float, float]]:
    """The mosaic's projection cell and the observations' centre.

    Parameters
    ----------
    records : iterable of ExposureRecord
    choice : 'auto' or int
        ``auto``: the projection cell whose centre is nearest on the sky to
        :func:`observation_center`; an index (0..2643) is taken as is.

    Returns
    -------
    (int, (float, float))
    """
    center = observation_center(records)
    if str(choice) != "auto":
        index = int(choice)
        ProjectionCell(index)  # validates the index
        return index, center
    idx, cen = _all_centres()
    cosd = cen @ _unit(*center)
    return int(idx[int(np.argmax(cosd))]), center


# ------------------------------------------------------------------------------------------
# layers, frames, tiles


def tile_boxes(nx: int, ny: int, tile_size: int) -> list[list[int]]:
    """``[x0, y0, w, h]`` tiles of at most ``tile_size`` a side covering ``(nx, ny)``, row by row."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    return [[x0, y0, min(tile_size, nx - x0), min(tile_size, ny - y0)]
            for y0 in range(0, ny, tile_size) for x0 in range(0, nx, tile_size)]


def _layer_keys(layers, scale: str) -> list[tuple]:
    """(key, scale, product type, members, dropped) per mosaic layer, in the reference's order."""
    out, seen = [], set()
    for lay in layers:
        key = (lay.instrument, lay.detector, lay.filter, lay.exptime_class, lay.year)
        s = lay.scale if scale == "auto" else scale
        if (key, s) in seen:
            continue
        seen.add((key, s))
        members = drizzle_order(list(lay.members) + list(lay.old))
        out.append((key, s, lay.product_type, members, list(lay.dropped)))
    return out


def _skycell_layers(skycell_plan: MvmPlan, pc: int, key: tuple, scale: str) -> list[str]:
    out = []
    for sc in skycell_plan.skycells:
        if names.parse_skycell(sc.name)[0] != pc:
            continue
        for lay in sc.layers:
            if ((lay.instrument, lay.detector, lay.filter, lay.exptime_class, lay.year) == key
                    and lay.scale == scale):
                out.append(lay.name)
    return out


def sky_group_name(pc: int, key: tuple) -> str:
    """The sky group of a layer key in projection cell ``pc`` (as ``rules/common.smk``)."""
    instrument, detector, filt, cls, year = key
    label = cls + (f"-{year}" if year else "")
    return f"p{pc:04d}_{instrument}_{detector}_{filt}_{label}"


def plan_mosaic(records: Iterable, skycell_plan: MvmPlan, *, prefix: str | None = None,
                projection_cell="auto", scale: str = "auto", tile_size: int = 4096,
                layer_method: str = "all", exp_limit: float = 2.0,
                include_small: bool = True, only_cte: bool = False, margin: int = 4,
                coverage_size: int = 512) -> MosaicPlan:
    """Plan the custom mosaic of the accepted ``records``.

    Parameters
    ----------
    records : iterable of ExposureRecord
        The screened (and aligned) records, as given to :func:`mvmflow.plan.plan_skycells`.
    skycell_plan : MvmPlan
        The sky-cell plan of the same records: mosaic members are the exposures it places
        in sky cells of the mosaic's projection cell.
    prefix : str, optional
        User prefix (default: the documented automatic one).
    projection_cell : 'auto' or int
    scale : {'auto', 'fine', 'coarse'}
    tile_size : int
        Largest tile side in pixels.
    layer_method, exp_limit, include_small, only_cte, margin, coverage_size
        As :func:`mvmflow.plan.plan_skycells`.

    Raises
    ------
    ValueError
        For a bad option, or when no exposure can be in the mosaic.
    """
    if scale not in MOSAIC_SCALES:
        raise ValueError(f"mosaic scale must be one of {', '.join(MOSAIC_SCALES)}, not {scale!r}")
    tile_size = int(tile_size)
    if tile_size < 64:
        raise ValueError(f"mosaic tile_size must be at least 64 pixels, got {tile_size}")
    by_name = {}
    for rec in records:
        name = rec.filename or os.path.basename(rec.file)
        if name in skycell_plan.exposures and rec.accepted:
            by_name.setdefault(name, rec)
    if not by_name:
        raise ValueError("no accepted exposure to put in a mosaic")
    pc, center = choose_projection_cell(by_name.values(), projection_cell)
    plan = MosaicPlan(prefix="", projection_cell=pc, center=center, tile_size=tile_size)

    status = {m.filename: m for sc in skycell_plan.skycells for m in sc.members}
    inside = []
    for name in sorted(by_name):
        cells = skycell_plan.exposures.get(name, [])
        if any(names.parse_skycell(s)[0] == pc for s in cells):
            inside.append(status.get(name) or Member.from_record(by_name[name]))
        else:
            plan.left_out.append(name)
            plan.notes.append(f"{name} left out of the mosaic: no sky cell of projection cell "
                              f"p{pc:04d} holds it (its sky cells: {', '.join(cells) or 'none'})")
    if not inside:
        raise ValueError(f"no exposure falls on projection cell p{pc:04d}")
    anchor = names.format_skycell(pc, 11, 11)
    layers, dropped, notes = build_layers(anchor, inside, layer_method=layer_method,
                                          exp_limit=exp_limit, include_small=include_small,
                                          only_cte=only_cte)
    plan.notes += notes + [f"{d.filename} left out of the mosaic: {d.reason}" for d in dropped]
    keys = _layer_keys(layers, scale)

    frames, pix = {}, {}
    for s in dict.fromkeys([s for _, s, *_ in keys] + ["fine"]):
        full = ProjectionCell(pc).frame(s)
        pix[s] = {m.filename: footprint_pixels(full, by_name[m.filename]) for m in inside}
        frames[s] = (full, _bounded(full, pix[s].values()))
    full, fine = frames["fine"]
    for m in inside:
        xy = np.concatenate(pix["fine"][m.filename])
        if ((xy < 0) | (xy[:, :1] >= full.nx) | (xy[:, 1:] >= full.ny)).any() \
                or not np.isfinite(xy).all():
            plan.clipped.append(m.filename)
            plan.notes.append(f"{m.filename} is clipped at the edge of projection cell p{pc:04d}")
    ra, dec = (float(v) for v in fine.wcs.pixel_to_world_values((fine.nx - 1) / 2,
                                                                (fine.ny - 1) / 2))
    plan.prefix = names.custom_prefix(prefix, projection_cell=pc, ra=ra, dec=dec)

    for key, s, ptype, members, ldropped in keys:
        full, frame = frames[s]
        dx, dy = full.integer_offset_of(frame)
        instrument, detector, filt, cls, year = key
        name = names.LayerName(plan.prefix, instrument, detector, filt, scale=s,
                               exptime_class=cls, year=year, product_type=ptype)
        chips = [(c - np.array([dx, dy], float), m.exptime)
                 for m in members for c in pix[s][m.filename]]
        coverage = coverage_stats(frame, chips, coverage_size)
        if coverage is None:
            plan.notes.append(f"{name.filename} not made: its members cover no pixel")
            continue
        lay = MosaicLayer(
            name=name.filename, instrument=instrument, detector=detector, filter=filt,
            scale=s, exptime_class=cls, year=year, product_type=ptype, frame=frame,
            members=members, dropped=ldropped, coverage=coverage,
            tiles=tile_boxes(frame.nx, frame.ny, tile_size),
            sky_group=sky_group_name(pc, key),
            skycell_layers=_skycell_layers(skycell_plan, pc, key, s),
        )
        plan.layers.append(lay)
        for order, m in enumerate(members):
            box = exposure_box(full, pix[s][m.filename], margin)
            shifted = [c - np.array([dx, dy], float) for c in pix[s][m.filename]]
            if box is None or exposure_box(frame, shifted, margin) is None:
                plan.notes.append(f"{m.filename} not drizzled into {lay.name}: "
                                  "no pixel on the frame")
                continue
            plan.jobs.append(MosaicJob(
                layer=lay.name, file=m.file, filename=m.filename, ipppssoo=m.ipppssoo,
                order=order, box=[box[0] - dx, box[1] - dy, box[2], box[3]],
                frame=full.window(*box)))
    if not plan.layers:
        raise ValueError("the mosaic has no layer to make")
    return plan


def tile_jobs(plan: MosaicPlan, layer: str, tile: list[int]) -> list[MosaicJob]:
    """The jobs of ``layer`` whose boxes reach ``tile`` (``[x0, y0, nx, ny]``), in order."""
    tx, ty, tw, th = tile
    out = []
    for j in plan.jobs:
        if j.layer != layer:
            continue
        x0, y0, w, h = j.box
        if x0 < tx + tw and tx < x0 + w and y0 < ty + th and ty < y0 + h:
            out.append(j)
    return sorted(out, key=lambda j: j.order)
