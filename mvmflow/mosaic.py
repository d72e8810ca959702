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

Layers and jobs are the sky cells' types (:class:`mvmflow.plan.LayerPlan` with an empty
``skycell``, :class:`mvmflow.plan.MapJob`), made by the same functions of :mod:`mvmflow.plan`
(frames, coverage, map jobs, tiles, sky groups); the workflow reads them through
:class:`mvmflow.runplan.RunPlan`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from mvmflow import names
from mvmflow.grid import ProjectionCell, nearest_projection_cell, unit_vectors
from mvmflow.plan import (
    LayerPlan,
    MapJob,
    Member,
    MvmPlan,
    bounded_frame,
    build_layers,
    check_tile_size,
    coverage_stats,
    drizzle_order,
    footprint_pixels,
    layer_map_jobs,
    shift_chips,
    sky_group_name,
    tile_boxes,
)
from mvmflow.solution import DEFAULT_MIXED_FRAMES, solution_frame

__all__ = [
    "MOSAIC_SCALES",
    "MosaicPlan",
    "choose_projection_cell",
    "observation_center",
    "plan_mosaic",
    "sky_group_name",
    "tile_boxes",
]

MOSAIC_SCALES = ("auto", "fine", "coarse")
"""``mosaic.scale`` values."""


@dataclass
class MosaicPlan:
    """The custom mosaic: prefix, projection cell, layers, jobs and remarks.

    ``layers`` and ``jobs`` are the sky cells' types (:class:`~mvmflow.plan.LayerPlan` with
    an empty ``skycell`` and its ``tiles``, ``sky_group`` and ``skycell_layers`` set;
    :class:`~mvmflow.plan.MapJob` with an empty ``skycell``); every member of a mosaic layer
    is drizzled, OLD ones included.
    """

    prefix: str
    projection_cell: int
    center: tuple[float, float]
    tile_size: int
    layers: list[LayerPlan] = field(default_factory=list)
    jobs: list[MapJob] = field(default_factory=list)
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
            layers=[LayerPlan.from_dict(x) for x in data.get("layers", [])],
            jobs=[MapJob.from_dict(x) for x in data.get("jobs", [])],
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
            v = unit_vectors(pts[:, 0], pts[:, 1]).sum(axis=0)
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
    return nearest_projection_cell(*center), center


# ------------------------------------------------------------------------------------------
# layers, frames, tiles


def _layer_keys(layers, scale: str) -> list[tuple]:
    """(key, scale, product type, members, dropped) per mosaic layer, in the reference's order."""
    out, seen = [], set()
    for lay in layers:
        key = lay.key
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
            if lay.key == key and lay.scale == scale:
                out.append(lay.name)
    return out


def plan_mosaic(records: Iterable, skycell_plan: MvmPlan, *, prefix: str | None = None,
                projection_cell="auto", scale: str = "auto", tile_size: int = 4096,
                layer_method: str = "all", exp_limit: float = 2.0,
                include_small: bool = True, only_cte: bool = False, margin: int = 4,
                coverage_size: int = 512, mixed_frames: str = DEFAULT_MIXED_FRAMES,
                ) -> MosaicPlan:
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
    layer_method, exp_limit, include_small, only_cte, margin, coverage_size, mixed_frames
        As :func:`mvmflow.plan.plan_skycells`.

    Raises
    ------
    ValueError
        For a bad option, or when no exposure can be in the mosaic.
    """
    if scale not in MOSAIC_SCALES:
        raise ValueError(f"mosaic scale must be one of {', '.join(MOSAIC_SCALES)}, not {scale!r}")
    tile_size = check_tile_size(tile_size, "mosaic tile_size")
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
                                          only_cte=only_cte, mixed_frames=mixed_frames,
                                          frames={m.filename: solution_frame(
                                              by_name[m.filename].alignment) for m in inside})
    plan.notes += notes + [f"{d.filename} left out of the mosaic: {d.reason}" for d in dropped]
    keys = _layer_keys(layers, scale)

    frames, pix = {}, {}
    for s in dict.fromkeys([s for _, s, *_ in keys] + ["fine"]):
        full = ProjectionCell(pc).frame(s)
        pix[s] = {m.filename: footprint_pixels(full, by_name[m.filename]) for m in inside}
        frames[s] = (full, bounded_frame(full, pix[s].values()))
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
        chips = [(c, m.exptime) for m in members
                 for c in shift_chips(pix[s][m.filename], dx, dy)]
        coverage = coverage_stats(frame, chips, coverage_size)
        if coverage is None:
            plan.notes.append(f"{name.filename} not made: its members cover no pixel")
            continue
        lay = LayerPlan(
            name=name.filename, skycell="", instrument=instrument, detector=detector,
            filter=filt, scale=s, exptime_class=cls, year=year, product_type=ptype,
            frame=frame, members=members, dropped=ldropped, coverage=coverage,
            tiles=tile_boxes(frame.nx, frame.ny, tile_size),
            sky_group=sky_group_name(pc, key),
            skycell_layers=_skycell_layers(skycell_plan, pc, key, s),
        )
        plan.layers.append(lay)
        plan.jobs += layer_map_jobs(lay, full, pix[s], dx, dy, margin, plan.notes)
    if not plan.layers:
        raise ValueError("the mosaic has no layer to make")
    return plan
