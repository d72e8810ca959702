"""The run plan: the plan checkpoint's one file, typed, with the look-ups the workflow needs.

The plan checkpoint (``scripts/plan.py``) builds a :class:`RunPlan` from the sky-cell plan
(:func:`mvmflow.plan.plan_skycells`), the resolved drizzle parameters of each layer and the
optional custom mosaic (:func:`mvmflow.mosaic.plan_mosaic`), and writes it with
:meth:`RunPlan.save`: one JSON file, ``<outdir>/plan/plan.json``. Everything else reads it
with :meth:`RunPlan.load`; this module is the only one that reads or writes that file.

Loading builds dict indexes once, in time linear in the number of layers and jobs; each
look-up is then a dict access, except the tile look-ups, which are linear in one layer's
jobs. A look-up of something the plan does not hold (a layer, a job, a tile, a sky cell, a
sky group) raises :class:`PlanEntryMissing` with a message naming it, and no other look-up
error is raised. The workflow catches that one exception where a job of an outdated plan can
be re-evaluated (``rules/common.smk``).

Layers are named by their file name. Sky-cell and mosaic layers are the same type
(:class:`~mvmflow.plan.LayerPlan`); a name is looked up among the sky-cell layers, or with
``mosaic=True`` among the mosaic's (a user's mosaic prefix may repeat a sky cell's).

The JSON layout (version :data:`~mvmflow.plan.PLAN_VERSION`) is the sky-cell plan's
(:meth:`mvmflow.plan.MvmPlan.to_dict`: ``version``, ``options``, ``skycells``, ``jobs``,
``exposures``, ``notes``) plus ``switches``, ``params`` (sky-cell layer name -> drizzle
parameters), ``mosaic`` (:meth:`mvmflow.mosaic.MosaicPlan.to_dict`, or null) and
``mosaic_params``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from mvmflow.mosaic import MosaicPlan
from mvmflow.plan import (
    PLAN_VERSION,
    LayerPlan,
    MapJob,
    MvmPlan,
    SkyCellPlan,
    exposure_key,
    tile_memory_mb,
)

__all__ = [
    "MAP_SKIP",
    "PlanEntryMissing",
    "PlanVersionError",
    "RunPlan",
    "exposure_key",
    "frames_overlap",
    "neighbour_layers",
    "tile_index",
    "tile_name",
]

MAP_SKIP = ("n", "cosmic_rays", "cr")
"""Layer parameters a map (drizzle) job does not depend on: the layer's coverage figure and
its cosmic-ray switches (a separate drizzle is the same with or without rejection)."""


class PlanEntryMissing(LookupError):
    """The plan holds no such entry: a layer, job, tile, sky cell or sky group."""


class PlanVersionError(ValueError):
    """The plan file has another layout version than this library writes."""


def tile_name(index: int) -> str:
    """``t0003``: the name (file stem, workflow wildcard) of tile ``index`` of a layer."""
    return f"t{index:04d}"


def tile_index(tile: int | str) -> int:
    """The index of a tile given by index or by name (``'t0003'`` -> 3)."""
    if isinstance(tile, str):
        if len(tile) < 2 or tile[0] != "t" or not tile[1:].isdigit():
            raise PlanEntryMissing(f"{tile!r} is not a tile name (t0000, t0001, ...)")
        return int(tile[1:])
    return int(tile)


class RunPlan:
    """The whole plan of a run, with indexed look-ups.

    Parameters
    ----------
    plan : MvmPlan
        The sky-cell plan.
    params : mapping, optional
        Sky-cell layer name -> resolved drizzle parameters (``mvmflow.params``, with
        ``cosmic_rays`` set by the plan).
    mosaic : MosaicPlan, optional
    mosaic_params : mapping, optional
        Mosaic layer name -> parameters, as ``params``.
    switches : mapping, optional
        The resolved ``include_small``/``only_cte``/``quality_testing`` switches.

    Raises
    ------
    ValueError
        If a job names a layer the plan does not have (a corrupt plan).
    """

    def __init__(self, plan: MvmPlan, params: Mapping[str, Mapping] | None = None, *,
                 mosaic: MosaicPlan | None = None,
                 mosaic_params: Mapping[str, Mapping] | None = None,
                 switches: Mapping | None = None):
        self.plan = plan
        self.params = {k: dict(v) for k, v in (params or {}).items()}
        self.mosaic = mosaic
        self.mosaic_params = {k: dict(v) for k, v in (mosaic_params or {}).items()}
        self.switches = dict(switches or {})
        self.outdated = False
        self._build_indexes()

    # -- construction, file ------------------------------------------------------------------

    def _build_indexes(self) -> None:
        self._skycells: dict[str, SkyCellPlan] = {sc.name: sc for sc in self.plan.skycells}
        self._skycell_layers: list[LayerPlan] = self.plan.layers
        self._layers: dict[tuple[bool, str], LayerPlan] = {}
        self._roots: dict[tuple[bool, str], LayerPlan] = {}
        self._jobs: dict[tuple[bool, str], list[MapJob]] = {}
        self._job_by_key: dict[tuple[bool, str, str], MapJob] = {}
        self._job_by_ipppssoo: dict[tuple[bool, str, str], MapJob] = {}
        self._groups: dict[str, list[LayerPlan]] = {}
        self._entries: dict[tuple[bool, str], dict] = {}
        mosaic_layers = self.mosaic.layers if self.mosaic else []
        mosaic_jobs = self.mosaic.jobs if self.mosaic else []
        for is_mosaic, layers in ((False, self._skycell_layers), (True, mosaic_layers)):
            for lay in layers:
                self._layers[(is_mosaic, lay.name)] = lay
                self._roots.setdefault((is_mosaic, lay.root), lay)
                self._jobs[(is_mosaic, lay.name)] = []
                if not is_mosaic and lay.scale == "fine":
                    self._groups.setdefault(lay.sky_group, []).append(lay)
        for is_mosaic, jobs in ((False, self.plan.jobs), (True, mosaic_jobs)):
            for job in jobs:
                try:
                    self._jobs[(is_mosaic, job.layer)].append(job)
                except KeyError:
                    raise ValueError(f"corrupt plan: job {job.name} is of layer {job.layer}, "
                                     "which the plan does not have") from None
                self._job_by_key.setdefault((is_mosaic, job.layer, job.key), job)
                self._job_by_ipppssoo.setdefault((is_mosaic, job.layer, job.ipppssoo), job)
        for jobs in self._jobs.values():
            jobs.sort(key=lambda j: j.order)

    @classmethod
    def from_dict(cls, data: Mapping, *, stale_ok: bool = False) -> RunPlan:
        """The plan of a :meth:`to_dict` mapping.

        Parameters
        ----------
        data : mapping
        stale_ok : bool
            For a plan of another layout version: if True, an empty plan whose
            :attr:`outdated` is True (every look-up raises :class:`PlanEntryMissing`): the
            workflow's view of a plan file the plan checkpoint is about to rewrite. Else
            :class:`PlanVersionError`.
        """
        version = data.get("version")
        if version != PLAN_VERSION:
            if stale_ok:
                empty = cls(MvmPlan())
                empty.outdated = True
                return empty
            raise PlanVersionError(f"the plan has layout version {version!r}, this mvmflow "
                                   f"reads version {PLAN_VERSION}: make the plan again")
        mosaic = data.get("mosaic")
        return cls(
            MvmPlan.from_dict(data), data.get("params", {}),
            mosaic=MosaicPlan.from_dict(mosaic) if mosaic else None,
            mosaic_params=data.get("mosaic_params", {}), switches=data.get("switches", {}),
        )

    def to_dict(self) -> dict:
        d = self.plan.to_dict()
        d["switches"] = dict(self.switches)
        d["params"] = {k: dict(v) for k, v in self.params.items()}
        d["mosaic"] = self.mosaic.to_dict() if self.mosaic else None
        d["mosaic_params"] = {k: dict(v) for k, v in self.mosaic_params.items()}
        return d

    @classmethod
    def load(cls, path: str | os.PathLike, *, stale_ok: bool = False) -> RunPlan:
        """Read a plan written by :meth:`save` (``stale_ok``: see :meth:`from_dict`)."""
        return cls.from_dict(json.loads(Path(path).read_text()), stale_ok=stale_ok)

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as JSON (keys sorted, so the same plan is the same bytes),
        atomically."""
        from mvmflow.workflow import atomic_path

        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")

    @property
    def version(self) -> int:
        return self.plan.version

    # -- sky cells ---------------------------------------------------------------------------

    @property
    def skycells(self) -> list[SkyCellPlan]:
        """The sky cells, sorted by name."""
        return self.plan.skycells

    def skycell(self, name: str) -> SkyCellPlan:
        try:
            return self._skycells[name]
        except KeyError:
            raise PlanEntryMissing(f"no sky cell {name} in the plan") from None

    def poller(self, skycell: str) -> str:
        """The sky cell's MVM poller text."""
        return self.skycell(skycell).poller

    def skycell_keys(self, skycell: str) -> list[str]:
        """Sorted input keys of the (NEW) members of every layer of the sky cell."""
        return sorted({exposure_key(m.filename) for lay in self.skycell(skycell).layers
                       for m in lay.members})

    # -- layers ------------------------------------------------------------------------------

    def layers(self, skycell: str | None = None) -> list[LayerPlan]:
        """The sky-cell layers in plan order (of one sky cell, if given; do not modify the
        list)."""
        if skycell is None:
            return self._skycell_layers
        return self.skycell(skycell).layers

    @property
    def mosaic_layers(self) -> list[LayerPlan]:
        """The mosaic's layers in the reference's order (none without a mosaic)."""
        return list(self.mosaic.layers) if self.mosaic else []

    def layer(self, name: str, *, mosaic: bool = False) -> LayerPlan:
        """The layer whose product is ``name`` (``mosaic``: among the mosaic's layers)."""
        try:
            return self._layers[(mosaic, name)]
        except KeyError:
            raise PlanEntryMissing(f"{name} is not a {_kind(mosaic)} of the plan") from None

    def layer_by_root(self, root: str, *, mosaic: bool = False) -> LayerPlan:
        """The layer whose name is ``<root>_<type>.fits``."""
        try:
            return self._roots[(mosaic, root)]
        except KeyError:
            raise PlanEntryMissing(f"no {_kind(mosaic)} {root}_dr?.fits in the plan") from None

    def layer_entry(self, name: str, *, mosaic: bool = False) -> dict:
        """The layer's plan entry as a dict (:meth:`LayerPlan.to_dict`: ``name``, ``frame``
        as a dict, ``members``, ``tiles``, ...), made once per plan; do not modify it."""
        key = (mosaic, name)
        if key not in self._entries:
            self._entries[key] = self.layer(name, mosaic=mosaic).to_dict()
        return self._entries[key]

    def layer_params(self, name: str, *, mosaic: bool = False) -> dict:
        """The layer's resolved drizzle parameters (with ``skysub``, ``cosmic_rays``...)."""
        try:
            return (self.mosaic_params if mosaic else self.params)[name]
        except KeyError:
            raise PlanEntryMissing(f"no parameters for {_kind(mosaic)} {name} in the plan") \
                from None

    def map_params(self, name: str, *, mosaic: bool = False) -> dict:
        """The parameters a map (drizzle) job of the layer depends on: the layer's without
        :data:`MAP_SKIP`, so a change of coverage or cosmic-ray switch keeps the partials."""
        return {k: v for k, v in self.layer_params(name, mosaic=mosaic).items()
                if k not in MAP_SKIP}

    def rejects_cosmic_rays(self, name: str, *, mosaic: bool = False) -> bool:
        """Whether the plan turned cosmic-ray rejection on for the layer."""
        return bool(self.layer_params(name, mosaic=mosaic).get("cosmic_rays"))

    # -- jobs --------------------------------------------------------------------------------

    def jobs(self, name: str, *, mosaic: bool = False) -> list[MapJob]:
        """The layer's drizzle jobs in drizzle order (do not modify the list)."""
        try:
            return self._jobs[(mosaic, name)]
        except KeyError:
            raise PlanEntryMissing(f"{name} is not a {_kind(mosaic)} of the plan") from None

    def job(self, name: str, key: str, *, mosaic: bool = False) -> MapJob:
        """The drizzle job of exposure ``key`` (file name without ``.fits``) in a layer."""
        try:
            return self._job_by_key[(mosaic, name, key)]
        except KeyError:
            raise PlanEntryMissing(f"no drizzle job of {key} in {_kind(mosaic)} {name}") \
                from None

    def job_of_ipppssoo(self, name: str, ipppssoo: str, *, mosaic: bool = False) -> MapJob:
        """The drizzle job of exposure ``ipppssoo`` in a layer."""
        try:
            return self._job_by_ipppssoo[(mosaic, name, ipppssoo)]
        except KeyError:
            raise PlanEntryMissing(f"{ipppssoo} is not drizzled into {_kind(mosaic)} "
                                   f"{name}") from None

    def map_frame(self, name: str, key: str, *, mosaic: bool = False) -> dict:
        """The output frame (as a dict) of the drizzle job of ``key`` in a layer."""
        return self.job(name, key, mosaic=mosaic).to_dict()["frame"]

    def member_keys(self, name: str, *, mosaic: bool = False) -> list[str]:
        """Input keys of the layer's drizzled members, in drizzle order."""
        return [j.key for j in self.jobs(name, mosaic=mosaic)]

    def members(self, name: str, *, mosaic: bool = False) -> list[list]:
        """``[[filename, exptime], ...]`` of the layer's drizzled members in context-bit
        (drizzle) order; the exposure time is the layer member's."""
        lay = self.layer(name, mosaic=mosaic)
        return [[j.filename, lay.members[j.order].exptime]
                for j in self.jobs(name, mosaic=mosaic)]

    def partial_path(self, job: MapJob, outdir: str, *, final: bool = True) -> str:
        """The partial file of a drizzle job under ``outdir``.

        Sky cells: ``partials/<skycell>/<layer>/<key>.fits``, or, for the ``final`` partial
        of a layer that rejects cosmic rays, its masked drizzle ``partials_cr/...``; the
        mosaic: ``mosaic/partials/<layer>/<key>.fits`` (drizzled with the masks already).
        """
        stem = job.layer[: -len(".fits")]
        if not job.skycell:
            return f"{outdir}/mosaic/partials/{stem}/{job.key}.fits"
        top = "partials_cr" if final and self.rejects_cosmic_rays(job.layer) else "partials"
        return f"{outdir}/{top}/{job.skycell}/{stem}/{job.key}.fits"

    def partials(self, name: str, outdir: str, *, mosaic: bool = False,
                 final: bool = True) -> list[str]:
        """The partial files of a layer in drizzle order (see :meth:`partial_path`)."""
        return [self.partial_path(j, outdir, final=final)
                for j in self.jobs(name, mosaic=mosaic)]

    def cr_mask_jobs(self, name: str, key: str) -> list[MapJob]:
        """The sky-cell drizzle jobs whose cosmic-ray masks of exposure ``key`` the mosaic
        layer ``name`` drizzles with: none unless the mosaic layer rejects cosmic rays, else
        the jobs of ``key`` in its ``skycell_layers`` that reject them."""
        if not self.rejects_cosmic_rays(name, mosaic=True):
            return []
        out = []
        for layer in self.layer(name, mosaic=True).skycell_layers:
            if self.rejects_cosmic_rays(layer):
                job = self._job_by_key.get((False, layer, key))
                if job is not None:
                    out.append(job)
        return out

    # -- tiles -------------------------------------------------------------------------------

    def tiles(self, name: str, *, mosaic: bool = False) -> list[list[int]]:
        """The layer's tiles ``[x0, y0, nx, ny]``, row by row."""
        return self.layer(name, mosaic=mosaic).tiles

    def tile_names(self, name: str, *, mosaic: bool = False) -> list[str]:
        """``t0000``, ``t0001``... for each of the layer's tiles, in order."""
        return [tile_name(i) for i in range(len(self.tiles(name, mosaic=mosaic)))]

    def tile(self, name: str, tile: int | str, *, mosaic: bool = False) -> list[int]:
        """The box ``[x0, y0, nx, ny]`` of a layer's tile (by index or name)."""
        tiles = self.tiles(name, mosaic=mosaic)
        i = tile_index(tile)
        if not 0 <= i < len(tiles):
            raise PlanEntryMissing(f"{_kind(mosaic)} {name} has no tile {tile} "
                                   f"(it has {len(tiles)})")
        return tiles[i]

    def tile_jobs(self, name: str, tile: int | str, *, mosaic: bool = False) -> list[MapJob]:
        """The layer's jobs whose boxes reach the tile, in drizzle order."""
        box = self.tile(name, tile, mosaic=mosaic)
        return [j for j in self.jobs(name, mosaic=mosaic) if j.reaches(box)]

    def tile_partials(self, name: str, tile: int | str, outdir: str, *,
                      mosaic: bool = False) -> list[str]:
        """The final partials of the jobs reaching the tile, in drizzle order."""
        return [self.partial_path(j, outdir) for j in self.tile_jobs(name, tile, mosaic=mosaic)]

    def tile_mem_mb(self, name: str, *, mosaic: bool = False,
                    members: int | None = None) -> int:
        """MB to reduce the layer's largest tile (:func:`mvmflow.plan.tile_memory_mb`), from
        the layer's drizzled members or ``members`` inputs."""
        tiles = self.tiles(name, mosaic=mosaic)
        npix = max((t[2] * t[3] for t in tiles), default=0)
        if members is None:
            members = len(self.jobs(name, mosaic=mosaic))
        return tile_memory_mb(npix, members)

    # -- sky groups --------------------------------------------------------------------------

    def sky_group(self, name: str, *, mosaic: bool = False) -> str:
        """The sky group whose offsets the layer uses."""
        return self.layer(name, mosaic=mosaic).sky_group

    @property
    def sky_groups(self) -> list[str]:
        """Every sky group of the sky-cell layers, in plan order."""
        return list(self._groups)

    def sky_group_layers(self, group: str) -> list[LayerPlan]:
        """The fine sky-cell layers of a sky group, over all its sky cells, in plan order:
        those whose partials the group's sky offsets are matched on."""
        try:
            return self._groups[group]
        except KeyError:
            raise PlanEntryMissing(f"no sky group {group} in the plan") from None

    def sky_params(self, group: str) -> dict:
        """``skysub`` (does any layer of the group match sky?) and the ``skystat`` of the
        first that does (else of the first layer)."""
        params = [self.layer_params(lay.name) for lay in self.sky_group_layers(group)]
        used = [p for p in params if p["skysub"]]
        return {"skysub": bool(used), "skystat": (used or params)[0]["skystat"]}


def _kind(mosaic: bool) -> str:
    return "mosaic layer" if mosaic else "sky-cell layer"


# --------------------------------------------------------------------------------------
# Neighbouring layers (the quality cross-match's; here, not in mvmflow.quality, because the
# workflow's main process reads this module at parse time and mvmflow.quality imports
# astropy: docs/speed.md, "Job start-up")


def _frame_outline(frame) -> np.ndarray:
    """Sky positions of a frame's edge (corners and edge midpoints)."""
    nx, ny = frame.nx, frame.ny
    xs = np.array([-0.5, nx / 2, nx - 0.5, nx - 0.5, nx - 0.5, nx / 2, -0.5, -0.5])
    ys = np.array([-0.5, -0.5, -0.5, ny / 2, ny - 0.5, ny - 0.5, ny - 0.5, ny / 2])
    ra, dec = frame.wcs.pixel_to_world_values(xs, ys)
    return np.column_stack([ra, dec])


def frames_overlap(a, b) -> bool:
    """True when frames ``a`` and ``b`` (:class:`mvmflow.grid.Frame`) share sky."""
    sky = _frame_outline(b)
    x, y = a.wcs.world_to_pixel_values(sky[:, 0], sky[:, 1])
    return bool(np.max(x) > -0.5 and np.min(x) < a.nx - 0.5 and np.max(y) > -0.5
                and np.min(y) < a.ny - 0.5)


def neighbour_layers(layers: Iterable, layer) -> list:
    """The layers of other sky cells with ``layer``'s instrument, detector, filter, scale
    and exposure class whose frames overlap its frame, in the given order.

    Parameters
    ----------
    layers : iterable of LayerPlan
        The run's sky-cell layers (:meth:`mvmflow.runplan.RunPlan.layers`).
    layer : LayerPlan
    """
    key = (layer.instrument, layer.detector, layer.filter, layer.scale, layer.exptime_class,
           layer.year)
    out = []
    for other in layers:
        if other.skycell == layer.skycell or other.frame is None or layer.frame is None:
            continue
        if (other.instrument, other.detector, other.filter, other.scale,
                other.exptime_class, other.year) != key:
            continue
        if frames_overlap(layer.frame, other.frame):
            out.append(other)
    return out
