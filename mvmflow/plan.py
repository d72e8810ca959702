"""The MVM plan: which sky cells, layers, frames and drizzle jobs a set of exposures makes.

A pure function of the screen stage's accepted :class:`~mvmflow.records.ExposureRecord`
objects (no FITS I/O), following drizzlepac 3.11.0's ``interpret_mvm_input`` and
``run_mvm_processing`` (``spec/grid_and_names.md`` 3-6 and 8, ``spec/processing.md``
1.2-1.5, 1.11, 2.2):

1. **Sky cells** of an exposure: :func:`~mvmflow.grid.sky_cells_for_footprint` of its chip
   footprints (:func:`assign_sky_cells`).
2. **Layers** of a sky cell (:func:`build_layers`): one per (instrument, detector, filter)
   and, for the ``hard``/``kmeans`` methods, exposure-time class and year. A layer is ``drc``
   if any member is an FLC, and then its FLT members are left out *and reported*; else
   ``drz``. WFC3/IR (and WFPC2/PC) layers come at the ``coarse`` scale first, then ``fine``;
   every other detector at ``fine`` only. ``include_small=False`` leaves out ACS/HRC and
   ACS/SBC, ``only_cte=True`` the FLT exposures of WFC3/UVIS and ACS/WFC (both reported).
   OLD members (already processed) shape the frame but are not drizzled; each layer lists
   them separately. Layers appear in the reference's order: detectors as first met in the
   drizzle order, then layers as first met.
3. **Frames** (:func:`layer_frame`): the sky cell's frame at the layer's scale, trimmed to the
   box of the footprint outline points of *all* the sky cell's accepted exposures (every
   detector and filter, OLD and left-out members included, as the reference's
   ``all_mvm_exposures``), exactly as ``SkyFootprint.build``/``find_bounded_wcs``: chips
   entirely off the sky cell are skipped, the others' points are clipped to it, truncated
   toward zero, ``NAXIS = max - min`` and ``CRPIX -= min``. So every layer of a sky cell at
   one scale shares one frame; the coarse box is computed on the coarse grid.
4. **Drizzle order** of a layer's members: EXPTIME ascending, then PHOTFLAM descending (the
   reference's ``sort_poller_table``), then file name, so the order is total.
5. **Coverage** (:func:`coverage_stats`): chips per covered pixel and exposure time per
   covered pixel, from the members' chip polygons rasterised at cell centres on a grid of the
   layer frame down-sampled so that the members' box is at most ``coverage_size`` cells on a
   side (exact, 1:1, for boxes up to that size). ``n = round(MEANNEXP)`` (Python's round,
   halves to even) picks the n1/n2 drizzle parameters.
6. **Map jobs**: one per (layer, member), with the member's integer bounding box on the
   sky cell (its chip outline, widened by ``margin`` pixels for the kernel, clipped to the
   sky cell, not to the trimmed frame, so a job does not change when other members come or
   go); members that miss the layer frame get no job.
7. **Tiles and sky groups**: each layer's frame is cut into tiles of at most ``tile_size``
   pixels a side (:func:`tile_boxes`), each reduced by a job of its own (memory:
   :func:`tile_memory_mb`); each layer names its sky group (:func:`sky_group_name`).

The custom mosaic (:mod:`mvmflow.mosaic`) is planned with the same types and helpers, and
the workflow reads both through :class:`mvmflow.runplan.RunPlan`, the one owner of the plan
file.

Differences from the reference, by design
-----------------------------------------
- FLT members dropped from ``drc`` layers, and members left out by ``include_small`` or
  ``only_cte``, are reported in the plan (the reference drops FLTs silently). ``only_cte``
  never aborts a run that still has exposures to process (the reference's duplicate-index
  bug, spec 7.9).
- ``hard`` layers carry the class and year in every name (``short-2012``,
  ``coarse-long-2013``), so names are unique (spec 7.8). As in the reference, each year also
  gets an all-exposure-times layer (``all-2012``) holding every class of that year.
- ``kmeans`` works (the reference's crashes or is overwritten): per (instrument, detector,
  filter), over the members that are layered (NEW and OLD), if max/min EXPTIME exceeds
  ``exp_limit`` the exposures are split in two classes, ``short`` and ``long``, by the exact
  1-D two-means split of log10(EXPTIME) (the split point minimising the within-class sum of
  squares; equal times always share a class; ties go to the lower split); otherwise all are
  one class, ``all``. The year is added as for ``hard``.
- ``NPIXFRAC`` is the covered fraction of the layer's trimmed frame, not of the whole sky
  cell.
- The coverage statistics come from polygons on a down-sampled grid, so ``MEANNEXP`` etc.
  differ from the reference's full-resolution PIL mask by a fraction of a cell along the
  chip edges.
- Every sky cell a footprint overlaps is planned (the reference's one-sky-cell-per-poller
  limit and its edge-pixel sky-cell test are in :mod:`mvmflow.grid`).

Footprint points are expected to sample the chip edges densely (as ``ChipRecord``
documents). The box of a piecewise-linear outline is set by its vertices, so no further
densification changes the frame; the reference samples the edges at the edge pixels'
centres, and so should the footprints for a pixel-exact match.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache

import numpy as np

from mvmflow import names
from mvmflow.grid import Frame, SkyCell, sky_cells_for_footprint
from mvmflow.poller import format_poller, row_from_record
from mvmflow.solution import DEFAULT_MIXED_FRAMES, FRAME_HEADER, mixed_frames_drops, solution_frame

__all__ = [
    "COARSE_DETECTORS",
    "CTE_DETECTORS",
    "HARD_LIMITS",
    "LAYER_METHODS",
    "MIN_TILE_SIZE",
    "PLAN_VERSION",
    "SMALL_DETECTORS",
    "Coverage",
    "Dropped",
    "LayerPlan",
    "MapJob",
    "Member",
    "MvmPlan",
    "SkyCellPlan",
    "assign_sky_cells",
    "bounded_frame",
    "boxes_overlap",
    "build_layers",
    "check_tile_size",
    "coverage_stats",
    "densify",
    "drizzle_order",
    "exposure_box",
    "exposure_classes",
    "exposure_key",
    "exposure_year",
    "footprint_pixels",
    "layer_frame",
    "layer_map_jobs",
    "plan_skycells",
    "reference_box_points",
    "shift_chips",
    "sky_group_name",
    "tile_boxes",
    "tile_memory_mb",
]

PLAN_VERSION = 2
"""Version of the plan's JSON layout."""
LAYER_METHODS = ("all", "hard", "kmeans")
"""Exposure-time layering methods."""
HARD_LIMITS = (15.0, 120.0)
"""``hard`` classes: EXPTIME < 15 s short, 15 <= t < 120 med, t >= 120 long."""
COARSE_DETECTORS = ("ir", "pc")
"""Detectors that also get a coarse (0.12"/px) layer, listed before the fine one."""
SMALL_DETECTORS = ("hrc", "sbc")
"""Detectors left out when ``include_small`` is off (``MVM_INCLUDE_SMALL``)."""
CTE_DETECTORS = ("uvis", "wfc")
"""Detectors whose FLT exposures are left out when ``only_cte`` is on (``MVM_ONLY_CTE``)."""
MIN_TILE_SIZE = 64
"""Smallest ``tile_size`` (pixels): tiles are reduced by jobs of their own."""


# ------------------------------------------------------------------------------------------
# plan data


def _flat_dict(obj) -> dict:
    """A dataclass of plain values as a dict (``dataclasses.asdict`` without its deep
    copies: plans hold many members and jobs)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def exposure_key(filename: str) -> str:
    """The input key of an exposure: its file name without ``.fits`` or ``.fits.gz`` (as
    :func:`mvmflow.inputs.exposure_key`)."""
    for ext in (".fits.gz", ".fits"):
        if filename.endswith(ext):
            return filename[: -len(ext)]
    return filename


def boxes_overlap(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether two ``[x0, y0, nx, ny]`` boxes share a pixel."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def tile_boxes(nx: int, ny: int, tile_size: int) -> list[list[int]]:
    """``[x0, y0, w, h]`` tiles of at most ``tile_size`` a side covering ``(nx, ny)``, row by row."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    return [[x0, y0, min(tile_size, nx - x0), min(tile_size, ny - y0)]
            for y0 in range(0, ny, tile_size) for x0 in range(0, nx, tile_size)]


def check_tile_size(tile_size, what: str = "tile_size") -> int:
    """``tile_size`` as an int of at least :data:`MIN_TILE_SIZE` (else ValueError)."""
    tile_size = int(tile_size)
    if tile_size < MIN_TILE_SIZE:
        raise ValueError(f"{what} must be at least {MIN_TILE_SIZE} pixels, got {tile_size}")
    return tile_size


def tile_memory_mb(npix: int, members: int) -> int:
    """MB a job needs to reduce a tile of ``npix`` pixels from ``members`` drizzled inputs.

    The tile's float64 sums and float32 outputs take 40 bytes a pixel and its context
    ``4 * ceil(members / 32)`` (one 32-bit plane per 32 inputs), plus a 500 MB margin for
    the interpreter, the libraries and one input's window at a time.
    """
    planes = max(1, math.ceil(members / 32))
    return int(500 + (40 + 4 * planes) * npix / 1e6)


def sky_group_name(pc: int, key: tuple) -> str:
    """The sky group of a layer key ``(instrument, detector, filter, class, year)`` in
    projection cell ``pc``: the layers whose partials are sky-matched together (every sky
    cell of the projection cell, and the mosaic)."""
    instrument, detector, filt, cls, year = key
    label = cls + (f"-{year}" if year else "")
    return f"p{pc:04d}_{instrument}_{detector}_{filt}_{label}"


@dataclass
class Member:
    """One exposure of a sky cell, as the plan needs it.

    Attributes
    ----------
    filename : str
        The exposure's file name, e.g. ``ib2v01abq_flt.fits``.
    file : str
        Its path, as in the record.
    ipppssoo : str
    instrument, detector, filter : str
        Lower case; the filter normalised (``f606w-pol60v``).
    ptype : str
        ``flt`` or ``flc``.
    exptime, photflam : float
    year : int or None
        Year of DATE-OBS (else of EXPSTART).
    status : str
        ``NEW`` (to drizzle) or ``OLD`` (already processed: shapes the frame only).
    """

    filename: str
    file: str
    ipppssoo: str
    instrument: str
    detector: str
    filter: str
    ptype: str
    exptime: float
    photflam: float
    year: int | None
    status: str = "NEW"

    @classmethod
    def from_record(cls, record, status: str = "NEW") -> Member:
        """Build a member from an :class:`~mvmflow.records.ExposureRecord`."""
        filename = record.filename or os.path.basename(record.file)
        ptype = (record.ptype or filename.rsplit("_", 1)[-1].split(".")[0]).lower()
        if ptype not in ("flt", "flc"):
            raise ValueError(f"{filename}: exposure type {ptype!r} is not flt or flc")
        return cls(
            filename=filename,
            file=record.file,
            ipppssoo=(record.ipppssoo or names.ipppssoo_of(filename)).lower(),
            instrument=(record.instrument or names.instrument_from_rootname(filename)).lower(),
            detector=str(record.detector).strip().lower(),
            filter=names.normalize_filter(record.filter),
            ptype=ptype,
            exptime=float(record.exptime),
            photflam=float(record.photflam),
            year=exposure_year(record),
            status=status,
        )

    @property
    def is_new(self) -> bool:
        return self.status == "NEW"

    def to_dict(self) -> dict:
        return _flat_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Member:
        return cls(**dict(data))


@dataclass
class Dropped:
    """A member left out of a sky cell or layer, and why."""

    filename: str
    ipppssoo: str
    status: str
    reason: str

    @classmethod
    def of(cls, member: Member, reason: str) -> Dropped:
        return cls(member.filename, member.ipppssoo, member.status, reason)

    def to_dict(self) -> dict:
        return _flat_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Dropped:
        return cls(**dict(data))


@dataclass
class Coverage:
    """Footprint statistics of a layer (the reference's mask keywords).

    Attributes
    ----------
    n : int
        ``round(meannexp)``, half to even: 1 selects the n1 parameter set, 2+ n2.
    meannexp, mednexp : float
        Mean and median number of chips per covered pixel (MEANNEXP, MEDNEXP).
    meanexpt, medexpt : float
        Mean and median summed EXPTIME per covered pixel (MEANEXPT, MEDEXPT).
    npixfrac : float
        Covered pixels / pixels of the trimmed layer frame (NPIXFRAC; the reference divides
        by the whole sky cell).
    downsample : int
        Frame pixels per raster cell along each axis (1 = exact pixel centres).
    maxnexp : float
        Most chips covering one raster cell (2+ means exposures overlap somewhere).
    """

    n: int
    meannexp: float
    mednexp: float
    meanexpt: float
    medexpt: float
    npixfrac: float
    downsample: int
    maxnexp: float = 0.0

    def to_dict(self) -> dict:
        return _flat_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Coverage:
        return cls(**dict(data))


@dataclass
class LayerPlan:
    """One layer product: of a sky cell, or of the custom mosaic (:mod:`mvmflow.mosaic`).

    Attributes
    ----------
    name : str
        The product file name (:class:`~mvmflow.names.LayerName`).
    skycell : str
        The sky cell; empty for a mosaic layer (whose name carries the mosaic's prefix).
    instrument, detector, filter, scale, exptime_class : str
    year : int or None
    product_type : str
        ``drc`` or ``drz``.
    frame : Frame or None
        The trimmed output frame (shared by every layer of the sky cell, or of the mosaic,
        at this scale).
    members : list of Member
        Members to drizzle, in drizzle order (a job's ``order`` indexes this list, and its
        context bit is its position among the drizzled members).
    old : list of Member
        OLD members of this layer (not drizzled), in drizzle order (a mosaic drizzles its
        OLD members, so it lists none here).
    dropped : list of Dropped
        Members left out of this layer (FLT in a drc layer).
    coverage : Coverage or None
    tiles : list of list of int
        ``[x0, y0, nx, ny]`` of each tile of the frame, row by row (:func:`tile_boxes`): the
        layer is reduced one tile per job.
    sky_group : str
        The sky group whose offsets the layer uses (:func:`sky_group_name`), shared by the
        sky-cell and mosaic layers of one key in one projection cell.
    skycell_layers : list of str
        Mosaic layers only: the sky-cell layers of the same key and scale in the mosaic's
        projection cell, whose cosmic-ray masks of an exposure the mosaic's drizzle uses.
    """

    name: str
    skycell: str
    instrument: str
    detector: str
    filter: str
    scale: str
    exptime_class: str
    year: int | None
    product_type: str
    frame: Frame | None = None
    members: list[Member] = field(default_factory=list)
    old: list[Member] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    coverage: Coverage | None = None
    tiles: list[list[int]] = field(default_factory=list)
    sky_group: str = ""
    skycell_layers: list[str] = field(default_factory=list)

    @property
    def layer_name(self) -> names.LayerName:
        if not self.skycell:  # a mosaic layer: its name carries the custom prefix
            return names.LayerName.parse(self.name)
        return names.LayerName.for_skycell(
            self.skycell, self.instrument, self.detector, self.filter, scale=self.scale,
            exptime_class=self.exptime_class, year=self.year, product_type=self.product_type,
        )

    @property
    def key(self) -> tuple:
        """``(instrument, detector, filter, exptime_class, year)``."""
        return (self.instrument, self.detector, self.filter, self.exptime_class, self.year)

    @property
    def root(self) -> str:
        """The name without ``_<type>.fits`` (the trailer's and the wildcards' root)."""
        return self.name[: -len(".fits")].rsplit("_", 1)[0]

    @property
    def is_mosaic(self) -> bool:
        return not self.skycell

    @property
    def n(self) -> int | None:
        return None if self.coverage is None else self.coverage.n

    def exposure_name(self, member: Member) -> str:
        """The exposure-level product name of ``member`` in this layer (its partial)."""
        return self.layer_name.exposure(member.ipppssoo, self.product_type).filename

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "skycell", "instrument", "detector",
                                           "filter", "scale", "exptime_class", "year",
                                           "product_type")}
        d["frame"] = None if self.frame is None else self.frame.to_dict()
        d["members"] = [m.to_dict() for m in self.members]
        d["old"] = [m.to_dict() for m in self.old]
        d["dropped"] = [x.to_dict() for x in self.dropped]
        d["coverage"] = None if self.coverage is None else self.coverage.to_dict()
        d["tiles"] = [list(t) for t in self.tiles]
        d["sky_group"] = self.sky_group
        d["skycell_layers"] = list(self.skycell_layers)
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> LayerPlan:
        d = dict(data)
        d["frame"] = None if d.get("frame") is None else Frame.from_dict(d["frame"])
        d["members"] = [Member.from_dict(m) for m in d.get("members", [])]
        d["old"] = [Member.from_dict(m) for m in d.get("old", [])]
        d["dropped"] = [Dropped.from_dict(x) for x in d.get("dropped", [])]
        d["coverage"] = None if d.get("coverage") is None else Coverage.from_dict(d["coverage"])
        d["tiles"] = [[int(v) for v in t] for t in d.get("tiles", [])]
        d["skycell_layers"] = list(d.get("skycell_layers", []))
        return cls(**d)


@dataclass
class MapJob:
    """One drizzle "map" job: an exposure resampled onto (a box of) a layer frame.

    Attributes
    ----------
    name : str
        The exposure-level product name, e.g.
        ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits``; unique.
    skycell, layer, scale : str
        The sky cell (empty for a mosaic job), the layer's file name and its scale.
    file, filename, ipppssoo : str
        The input exposure.
    order : int
        Position of the exposure in the layer's drizzle order (0-based; an index of the
        layer's ``members``).
    box : list of int
        ``[x0, y0, nx, ny]``: the exposure's box relative to the layer frame (0-based
        offsets; it may reach past the trimmed frame's edges, never past the sky cell's, or
        for a mosaic the projection cell's plane).
    frame : Frame
        The box as a frame of the projection-cell plane: the drizzle's output frame (places
        the partial absolutely; independent of the other members).
    """

    name: str
    skycell: str
    layer: str
    scale: str
    file: str
    filename: str
    ipppssoo: str
    order: int
    box: list[int]
    frame: Frame

    @property
    def key(self) -> str:
        """The exposure's input key (its file name without ``.fits``)."""
        return exposure_key(self.filename)

    def reaches(self, box: Sequence[int]) -> bool:
        """Whether the job's box overlaps ``box`` (``[x0, y0, nx, ny]`` in the layer frame)."""
        return boxes_overlap(self.box, box)

    def to_dict(self) -> dict:
        d = _flat_dict(self)
        d["box"] = list(self.box)
        d["frame"] = self.frame.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> MapJob:
        d = dict(data)
        d["frame"] = Frame.from_dict(d["frame"])
        d["box"] = [int(v) for v in d["box"]]
        return cls(**d)


@dataclass
class SkyCellPlan:
    """Everything planned for one sky cell.

    Attributes
    ----------
    name : str
    members : list of Member
        Every accepted exposure in the sky cell (NEW and OLD), by file name.
    poller : str
        The sky cell's 10-column MVM poller text (:mod:`mvmflow.poller`).
    frames : dict of str to Frame
        The shared trimmed frame per scale used by the layers.
    layers : list of LayerPlan
    dropped : list of Dropped
        Members left out of every layer (``include_small``, ``only_cte``).
    notes : list of str
        Human-readable remarks (layers not made and why).
    """

    name: str
    members: list[Member] = field(default_factory=list)
    poller: str = ""
    frames: dict[str, Frame] = field(default_factory=dict)
    layers: list[LayerPlan] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def poller_filename(self) -> str:
        return names.poller_filename(self.name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "poller_filename": self.poller_filename,
            "members": [m.to_dict() for m in self.members],
            "poller": self.poller,
            "frames": {k: v.to_dict() for k, v in self.frames.items()},
            "layers": [lay.to_dict() for lay in self.layers],
            "dropped": [x.to_dict() for x in self.dropped],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> SkyCellPlan:
        return cls(
            name=data["name"],
            members=[Member.from_dict(m) for m in data.get("members", [])],
            poller=data.get("poller", ""),
            frames={k: Frame.from_dict(v) for k, v in data.get("frames", {}).items()},
            layers=[LayerPlan.from_dict(x) for x in data.get("layers", [])],
            dropped=[Dropped.from_dict(x) for x in data.get("dropped", [])],
            notes=list(data.get("notes", [])),
        )


@dataclass
class MvmPlan:
    """The whole plan: options, sky cells, the flat list of map jobs, and remarks.

    ``exposures`` maps each planned exposure's file name to its sky cells.
    """

    options: dict = field(default_factory=dict)
    skycells: list[SkyCellPlan] = field(default_factory=list)
    jobs: list[MapJob] = field(default_factory=list)
    exposures: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION

    def skycell(self, name: str) -> SkyCellPlan:
        """The plan of sky cell ``name`` (KeyError if it has none)."""
        for sc in self.skycells:
            if sc.name == name:
                return sc
        raise KeyError(f"no sky cell {name!r} in the plan")

    @property
    def layers(self) -> list[LayerPlan]:
        return [lay for sc in self.skycells for lay in sc.layers]

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "options": dict(self.options),
            "skycells": [sc.to_dict() for sc in self.skycells],
            "jobs": [j.to_dict() for j in self.jobs],
            "exposures": {k: list(v) for k, v in self.exposures.items()},
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> MvmPlan:
        version = data.get("version")
        if version != PLAN_VERSION:
            raise ValueError(f"plan version {version!r} is not {PLAN_VERSION}")
        return cls(
            options=dict(data.get("options", {})),
            skycells=[SkyCellPlan.from_dict(s) for s in data.get("skycells", [])],
            jobs=[MapJob.from_dict(j) for j in data.get("jobs", [])],
            exposures={k: list(v) for k, v in data.get("exposures", {}).items()},
            notes=list(data.get("notes", [])),
            version=version,
        )


# ------------------------------------------------------------------------------------------
# exposures


def exposure_year(record) -> int | None:
    """The year of DATE-OBS (``YYYY-MM-DD``), else of EXPSTART (MJD), else None."""
    text = str(record.date_obs or "").strip()
    if len(text) >= 4 and text[:4].isdigit() and (len(text) == 4 or text[4] == "-"):
        return int(text[:4])
    if record.expstart and record.expstart > 0:
        mjd0 = datetime.datetime(1858, 11, 17)
        return (mjd0 + datetime.timedelta(days=float(record.expstart))).year
    return None


def drizzle_order(members: Iterable[Member]) -> list[Member]:
    """Members in the reference's drizzle order: EXPTIME ascending, PHOTFLAM descending,
    then file name (so the order is total)."""
    return sorted(members, key=lambda m: (m.exptime, -m.photflam, m.filename))


def assign_sky_cells(records: Iterable) -> dict[str, list[str]]:
    """The sky cells each exposure overlaps.

    Parameters
    ----------
    records : iterable of ExposureRecord
        Exposures with chip footprints.

    Returns
    -------
    dict
        File name -> sorted sky-cell names (empty for an exposure without footprints).
    """
    out = {}
    for rec in records:
        filename = rec.filename or os.path.basename(rec.file)
        polys = [np.asarray(c.footprint, dtype=float) for c in rec.chips if len(c.footprint) >= 3]
        out[filename] = sky_cells_for_footprint(polys) if polys else []
    return out


# ------------------------------------------------------------------------------------------
# layers


def _hard_class(exptime: float) -> str:
    if exptime < HARD_LIMITS[0]:
        return "short"
    if exptime < HARD_LIMITS[1]:
        return "med"
    return "long"


def _two_means_split(values: Sequence[float]) -> float | None:
    """The threshold of the exact 1-D two-means split of ``values`` (None if all equal).

    Values below the threshold form the low class. Only splits between distinct values are
    considered; the lowest split wins a tie.
    """
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    if n < 2 or v[0] == v[-1]:
        return None
    csum, csq = np.cumsum(v), np.cumsum(v * v)
    best, best_i = math.inf, None
    for i in range(1, n):  # low = v[:i], high = v[i:]
        if v[i] == v[i - 1]:
            continue
        s_lo, q_lo = csum[i - 1], csq[i - 1]
        s_hi, q_hi = csum[-1] - s_lo, csq[-1] - q_lo
        sse = (q_lo - s_lo * s_lo / i) + (q_hi - s_hi * s_hi / (n - i))
        if sse < best - 1e-12 * max(1.0, abs(best) if math.isfinite(best) else 1.0):
            best, best_i = sse, i
    return float(v[best_i])


def exposure_classes(members: Sequence[Member], method: str = "all",
                     exp_limit: float = 2.0) -> dict[str, tuple[str, int | None]]:
    """The exposure-time class and year of each member.

    Parameters
    ----------
    members : sequence of Member
    method : {'all', 'hard', 'kmeans'}
        ``all``: one class ``all``, no year (the pipeline's setting). ``hard``: ``short``
        (t < 15 s), ``med`` (15 <= t < 120 s), ``long`` (t >= 120 s), plus the year.
        ``kmeans``: per (instrument, detector, filter), two classes ``short``/``long`` split
        by the exact two-means of log10(EXPTIME) when max/min EXPTIME > ``exp_limit``, else
        one class ``all``; plus the year.
    exp_limit : float
        The max/min EXPTIME ratio above which ``kmeans`` splits.

    Returns
    -------
    dict
        File name -> (class, year); the year is None for ``all``.
    """
    if method not in LAYER_METHODS:
        raise ValueError(f"layer method must be one of {', '.join(LAYER_METHODS)}, not {method!r}")
    if method == "all":
        return {m.filename: ("all", None) for m in members}
    if method == "hard":
        return {m.filename: (_hard_class(m.exptime), m.year) for m in members}
    if not exp_limit > 0:
        raise ValueError(f"exp_limit must be positive, got {exp_limit!r}")
    groups: dict[tuple, list[Member]] = {}
    for m in members:
        groups.setdefault((m.instrument, m.detector, m.filter), []).append(m)
    out = {}
    for group in groups.values():
        times = [max(m.exptime, 1e-6) for m in group]
        split = None
        if max(times) / min(times) > exp_limit:
            split = _two_means_split(np.log10(times))
        for m, t in zip(group, times, strict=True):
            if split is None:
                cls = "all"
            else:
                cls = "short" if math.log10(t) < split else "long"
            out[m.filename] = (cls, m.year)
    return out


def _drop_reason(m: Member, include_small: bool, only_cte: bool) -> str | None:
    if not include_small and m.detector in SMALL_DETECTORS:
        return (f"{m.instrument.upper()}/{m.detector.upper()} left out: include_small is off "
                "(MVM_INCLUDE_SMALL)")
    if only_cte and m.detector in CTE_DETECTORS and m.ptype == "flt":
        return (f"{m.instrument.upper()}/{m.detector.upper()} FLT left out: only_cte is on "
                "(MVM_ONLY_CTE), only CTE-corrected FLC exposures are used")
    return None


_FLT_IN_DRC = ("FLT left out: the layer has FLC (CTE-corrected) members, so it is a drc "
               "product of the FLC members only (the reference drops these silently)")


def _layer_plans(skycell: str, key: tuple, new: list[Member],
                 old: list[Member]) -> list[LayerPlan]:
    """The layer plans (one per scale) of one (instrument, detector, filter, class, year)."""
    instrument, detector, filt, cls, year = key
    ptype = "drc" if any(m.ptype == "flc" for m in new) else "drz"
    dropped = []
    if ptype == "drc":
        dropped = [Dropped.of(m, _FLT_IN_DRC) for m in new + old if m.ptype == "flt"]
        new = [m for m in new if m.ptype == "flc"]
        old = [m for m in old if m.ptype == "flc"]
    scales = ("coarse", "fine") if detector in COARSE_DETECTORS else ("fine",)
    plans = []
    for scale in scales:
        lay = LayerPlan(
            name="", skycell=skycell, instrument=instrument, detector=detector, filter=filt,
            scale=scale, exptime_class=cls, year=year, product_type=ptype,
            members=list(new), old=list(old), dropped=list(dropped),
        )
        lay.name = lay.layer_name.filename
        plans.append(lay)
    return plans


def build_layers(skycell: str, members: Iterable[Member], *, layer_method: str = "all",
                 exp_limit: float = 2.0, include_small: bool = True,
                 only_cte: bool = False, frames: Mapping[str, str] | None = None,
                 mixed_frames: str = DEFAULT_MIXED_FRAMES,
                 ) -> tuple[list[LayerPlan], list[Dropped], list[str]]:
    """The layers of one sky cell (without frames or coverage).

    Parameters
    ----------
    skycell : str
    members : iterable of Member
        The sky cell's accepted exposures, NEW and OLD.
    layer_method, exp_limit : see :func:`exposure_classes`
    include_small, only_cte : bool
        The ``MVM_INCLUDE_SMALL`` and ``MVM_ONLY_CTE`` switches.
    frames : mapping, optional
        ``{filename: astrometric frame}`` (:func:`mvmflow.solution.solution_frame`; a member
        not in it is on its header WCS); None applies no frame rule.
    mixed_frames : {'keep', 'drop_unaligned', 'fail'}
        ``align.mixed_frames`` for layers whose NEW members are in different frames
        (:func:`mvmflow.solution.mixed_frames_drops`): members left out go to the layer's
        ``dropped``; ``fail`` raises :class:`mvmflow.solution.MixedFramesError`.

    Returns
    -------
    layers : list of LayerPlan
        In the reference's order (coarse before fine); members in drizzle order.
    dropped : list of Dropped
        NEW members left out by ``include_small``/``only_cte``.
    notes : list of str
    """
    ordered = drizzle_order(members)
    dropped, kept = [], []
    for m in ordered:
        reason = _drop_reason(m, include_small, only_cte)
        if reason is None:
            kept.append(m)
        elif m.is_new:
            dropped.append(Dropped.of(m, reason))
    classes = exposure_classes(kept, layer_method, exp_limit)

    def keys_of(m: Member) -> list[tuple]:
        cls, year = classes[m.filename]
        base = (m.instrument, m.detector, m.filter)
        # like the reference, a class layer comes with an all-exposure-times layer
        return [base + (cls, year)] + ([base + ("all", year)] if cls != "all" else [])

    detectors: list[tuple] = []
    keys: list[tuple] = []
    for m in kept:
        if m.is_new:
            if (m.instrument, m.detector) not in detectors:
                detectors.append((m.instrument, m.detector))
            keys += [k for k in keys_of(m) if k not in keys]
    keys.sort(key=lambda k: detectors.index(k[:2]))  # stable: first-seen within a detector
    layers = []
    for k in keys:
        new = [m for m in kept if m.is_new and k in keys_of(m)]
        old = [m for m in kept if not m.is_new and k in keys_of(m)]
        layers += _layer_plans(skycell, k, new, old)
    if frames is not None:
        for lay in layers:
            out = mixed_frames_drops(
                lay.name, {m.filename: frames.get(m.filename, FRAME_HEADER) for m in lay.members},
                mixed_frames)
            lay.dropped += [Dropped.of(m, out[m.filename]) for m in lay.members
                            if m.filename in out]
            lay.members = [m for m in lay.members if m.filename not in out]
    notes = []
    old_only = sorted({k for m in kept if not m.is_new for k in keys_of(m)} - set(keys),
                      key=str)
    for k in old_only:
        notes.append(f"no layer for {'/'.join(str(v) for v in k if v is not None)}: "
                     "all its members are OLD (nothing new to drizzle)")
    if not layers:
        notes.append("no layer to make: every member is OLD or left out")
    names_ = [lay.name for lay in layers]
    if len(set(names_)) != len(names_):  # pragma: no cover - guarded by the name grammar
        raise AssertionError(f"duplicate layer names in {skycell}: {names_}")
    return layers, dropped, notes


# ------------------------------------------------------------------------------------------
# geometry


@lru_cache(maxsize=64)
def _frame_wcs(frame: Frame):
    return frame.wcs


def footprint_pixels(frame: Frame, record) -> list[np.ndarray]:
    """Each chip's footprint as 0-based ``(x, y)`` pixel positions in ``frame``.

    Returns
    -------
    list of ndarray, shape (N, 2)
        One per chip with a footprint.
    """
    wcs = _frame_wcs(frame)
    out = []
    for chip in record.chips:
        fp = np.asarray(chip.footprint, dtype=float).reshape(-1, 2)
        if len(fp) == 0:
            continue
        x, y = wcs.world_to_pixel_values(fp[:, 0], fp[:, 1])
        out.append(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    return out


def densify(xy: np.ndarray, step: float = 1.0) -> np.ndarray:
    """Insert points along a closed outline so that neighbours are at most ``step`` apart.

    Parameters
    ----------
    xy : ndarray, shape (N, 2)
        Outline vertices in pixels (not closed).
    step : float
        Largest spacing, in the same pixels.

    Returns
    -------
    ndarray, shape (M, 2)
        The original vertices with evenly spaced points inserted on each edge.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    if len(xy) < 2:
        return xy
    d = np.roll(xy, -1, axis=0) - xy
    k = np.maximum(np.ceil(np.hypot(d[:, 0], d[:, 1]) / step), 1).astype(np.int64)
    e = np.repeat(np.arange(len(xy)), k)
    t = (np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)) / np.repeat(k, k)
    return xy[e] + t[:, None] * d[e]


def _corner_indices(xy: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the 4 sharpest turns of a closed outline: the chip corners."""
    if len(xy) < 4:
        return np.arange(0)
    a = xy - np.roll(xy, 1, axis=0)
    if not a.any(axis=1).all():
        raise ValueError("repeated consecutive outline points: remove them first")
    b = np.roll(xy, -1, axis=0) - xy
    turn = np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0],
                             a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]))
    return np.sort(np.argsort(-turn, kind="stable")[:4])


def _truncate_clip(xy: np.ndarray, frame: Frame) -> np.ndarray:
    t = np.trunc(xy)
    t[:, 0] = np.clip(t[:, 0], 0, frame.nx - 1)
    t[:, 1] = np.clip(t[:, 1], 0, frame.ny - 1)
    return t


def _round_up(f: np.ndarray) -> np.ndarray:
    """Pillow's ``ROUND_UP``: round half away from zero."""
    return np.sign(f) * np.floor(np.abs(f) + 0.5)


def _round_down(f: np.ndarray) -> np.ndarray:
    """Pillow's ``ROUND_DOWN``: round half toward zero."""
    return np.sign(f) * np.ceil(np.abs(f) - 0.5)


def _fill_box(edges: np.ndarray, width: int, height: int,
              twin: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """The box of the pixels Pillow's scan-line polygon filler sets in a width x height image.

    ``edges`` is an (E, 4) integer array of ``x0, y0, x1, y1`` (image pixels). As
    Pillow's ``polygon_generic``: horizontal edges are drawn as they are; every row from an
    edge's lowest to highest y (inclusive) gets its crossing, doubled on its last row; each
    row's sorted crossings are paired and filled from ``ROUND_UP(left)`` to
    ``ROUND_DOWN(right)``. Pillow's corner adjustment ("connect discontiguous corners") is
    reproduced only for edges flagged in ``twin``, the second copy of an edge listed twice:
    on its first row, a crossing more than 1 px from the next row's is moved to 1 px from
    it (this is how a doubled diagonal, almost parallel to the rows, can set a pixel far
    from the chip).

    Returns
    -------
    tuple of int or None
        ``(xmin, ymin, xmax, ymax)`` of the set pixels (inclusive), None if none.
    """
    xa, ya, xb, yb = (edges[:, i].astype(np.float64) for i in range(4))
    cols_lo, cols_hi, rows = [], [], []
    flat = (ya == yb) & (ya >= 0) & (ya < height)
    hx0 = np.maximum(np.minimum(xa, xb)[flat], 0)
    hx1 = np.minimum(np.maximum(xa, xb)[flat], width - 1)
    ok = hx0 <= hx1
    cols_lo.append(hx0[ok]), cols_hi.append(hx1[ok]), rows.append(ya[flat][ok])
    s = ya != yb
    x0, y0 = xa[s], ya[s]
    dx = (xb[s] - x0) / (yb[s] - y0)
    ymin, ymax = np.minimum(ya, yb)[s], np.maximum(ya, yb)[s]
    r0, r1 = np.maximum(ymin, 0), np.minimum(ymax, height - 1)
    cnt = np.maximum(r1 - r0 + 1, 0).astype(np.int64)
    if cnt.sum():
        e = np.repeat(np.arange(len(x0)), cnt)
        r = r0[e] + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        x = (r - y0[e]) * dx[e] + x0[e]
        if twin is not None:
            first = twin[s][e] & (r == ymin[e])
            adj = (r[first] + 1 - y0[e][first]) * dx[e][first] + x0[e][first]
            xf = x[first]
            xf = np.where(xf > adj + 1, _round_up(adj) + 1, xf)
            xf = np.where(xf < adj - 1, _round_up(adj) - 1, xf)
            x[first] = xf
        last = r == ymax[e]
        r, x = np.concatenate([r, r[last]]), np.concatenate([x, x[last]])
        order = np.lexsort((x, r))
        r, x = r[order], x[order]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        k = np.arange(len(r)) - np.repeat(starts, np.diff(np.r_[starts, len(r)]))
        right = np.flatnonzero(k % 2 == 1)
        xl = np.maximum(_round_up(x[right - 1]), 0)
        xr = np.minimum(_round_down(x[right]), width - 1)
        ok = xl <= xr
        cols_lo.append(xl[ok]), cols_hi.append(xr[ok]), rows.append(r[right][ok])
    rows = np.concatenate(rows)
    if len(rows) == 0:
        return None
    return (int(np.concatenate(cols_lo).min()), int(rows.min()),
            int(np.concatenate(cols_hi).max()), int(rows.max()))


def _side_goes_down(xy: np.ndarray, i: int, j: int) -> bool:
    """Whether an outline side leaving the upper (lower y) end of diagonal i-j heads to
    larger y."""
    p = i if xy[i, 1] <= xy[j, 1] else j
    n = len(xy)
    return bool(xy[(p + 1) % n, 1] > xy[p, 1] or xy[(p - 1) % n, 1] > xy[p, 1])


def reference_box_points(frame: Frame, chips: Iterable[np.ndarray]) -> np.ndarray:
    """Two points per chip whose box is the chip's mask box in the reference.

    Emulates drizzlepac's ``SkyFootprint.build``, which samples every edge pixel of a chip:

    - the positions are truncated toward zero; a chip whose truncated x (or y) positions are
      all <= 0 or all > N - 1 is skipped; the others are clipped to [0, N - 1];
    - the chip is filled with Pillow into the slice ``[min, max)`` of those positions, so
      the highest column and row are left out (a chip with an empty slice is skipped);
    - its edge pixels are listed edge by edge (left, right, bottom, top), so the filled
      polygon also holds the two diagonals between opposite corners, twice each. Where a
      corner was clipped onto the frame's edge, a diagonal can reach beyond the chip and
      widen the box. The corners are the outline's four sharpest turns.

    The outline is densified to 1 px (the reference's sampling for input pixels no larger
    than the frame's) and the fill is emulated row by row (:func:`_fill_box`). The box
    agrees with the reference's to about a pixel; where a chip crosses the frame's high
    edges, to about one input pixel (the reference's sampling step).

    Returns
    -------
    ndarray, shape (M, 2)
        ``(xmin, ymin)`` and ``(xmax + 1, ymax + 1)`` of each chip's filled pixels, to pass
        to :meth:`Frame.bounded` (which sets ``NAXIS = max - min``).
    """
    out = []
    for xy in chips:
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) == 0:
            continue
        t = np.trunc(densify(xy))
        if (t[:, 0].max() <= 0 or t[:, 0].min() > frame.nx - 1
                or t[:, 1].max() <= 0 or t[:, 1].min() > frame.ny - 1):
            continue  # entirely off the frame
        t = _truncate_clip(t, frame)
        (x0, y0), (x1, y1) = t.min(axis=0), t.max(axis=0)
        if x0 == x1 or y0 == y1:
            continue  # an empty slice: the reference draws nothing for this chip
        t = t[(t != np.roll(t, 1, axis=0)).any(axis=1)]
        edges = [np.column_stack([t, np.roll(t, -1, axis=0)])]
        distinct = xy[(xy != np.roll(xy, 1, axis=0)).any(axis=1)]
        idx = _corner_indices(distinct)
        corners = _truncate_clip(distinct[idx], frame)
        if len(corners) == 4:
            diagonals = np.array([np.r_[corners[0], corners[2]], np.r_[corners[1], corners[3]]])
            edges += [diagonals, diagonals]
        twin = np.zeros(sum(len(e) for e in edges), dtype=bool)
        if len(corners) == 4:
            twin[-2:] = [not _side_goes_down(distinct, idx[a], idx[b])
                         for a, b in ((0, 2), (1, 3))]
        edges = np.concatenate(edges) - np.array([x0, y0, x0, y0])
        box = _fill_box(edges, int(x1 - x0), int(y1 - y0), twin)
        if box is None:
            continue
        out += [[x0 + box[0], y0 + box[1]], [x0 + box[2] + 1, y0 + box[3] + 1]]
    return np.array(out, dtype=float).reshape(-1, 2)


def bounded_frame(frame: Frame, chips_per_exposure: Iterable[list[np.ndarray]]) -> Frame:
    """``frame`` trimmed to the reference's box (:func:`reference_box_points`) of every
    exposure's chips (pixel positions in ``frame``; see :func:`layer_frame`).

    Raises
    ------
    ValueError
        If no chip falls on ``frame``.
    """
    pts = [reference_box_points(frame, chips) for chips in chips_per_exposure]
    pts = np.concatenate(pts) if pts else np.empty((0, 2))
    return frame.bounded(pts[:, 0], pts[:, 1])


def layer_frame(skycell: str, scale: str, records: Iterable) -> Frame:
    """The trimmed output frame of every layer of ``skycell`` at ``scale``.

    Parameters
    ----------
    skycell : str
    scale : {'fine', 'coarse'}
    records : iterable of ExposureRecord
        *All* the sky cell's accepted exposures (every detector and filter, OLD included).

    Returns
    -------
    Frame
        The sky cell's frame at ``scale`` with ``CRPIX -= (xmin, ymin)`` and
        ``NAXIS = (xmax - xmin, ymax - ymin)`` of the truncated outline points.

    Raises
    ------
    ValueError
        If no chip falls on the sky cell.
    """
    frame = SkyCell.from_name(skycell, scale).frame
    return bounded_frame(frame, [footprint_pixels(frame, r) for r in records])


def exposure_box(frame: Frame, chips: Iterable[np.ndarray],
                 margin: int = 4) -> tuple[int, int, int, int] | None:
    """The integer box ``(x0, y0, nx, ny)`` of an exposure in ``frame``.

    The pixels holding the chip outline points (``round`` to the nearest pixel centre),
    widened by ``margin`` pixels on every side for the drizzle kernel and clipped to the
    frame; None if empty.
    """
    xy = [c[np.isfinite(c).all(axis=1)] for c in chips]
    xy = [c for c in xy if len(c)]
    if not xy:
        return None
    xy = np.concatenate(xy)
    lo = np.floor(xy.min(axis=0) + 0.5).astype(np.int64) - margin
    hi = np.floor(xy.max(axis=0) + 0.5).astype(np.int64) + margin
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), frame.nx - 1), min(int(hi[1]), frame.ny - 1)
    if x1 < x0 or y1 < y0:
        return None
    return (x0, y0, x1 - x0 + 1, y1 - y0 + 1)


def _fill_polygon(shape: tuple[int, int], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of the cells of ``shape`` whose centres (integer ``(u, v)``) lie inside
    the polygon ``(u, v)`` (even-odd rule, scanline)."""
    ny, nx = shape
    u1, v1 = u, v
    u2, v2 = np.roll(u, -1), np.roll(v, -1)
    r0 = np.clip(np.ceil(np.minimum(v1, v2)), 0, ny).astype(np.int64)
    r1 = np.clip(np.ceil(np.maximum(v1, v2)), 0, ny).astype(np.int64)
    cnt = np.maximum(r1 - r0, 0)
    total = int(cnt.sum())
    mask = np.zeros(shape, dtype=bool)
    if total == 0:
        return mask
    e = np.repeat(np.arange(len(u)), cnt)
    rows = np.repeat(r0, cnt) + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    x = u1[e] + (rows - v1[e]) * (u2[e] - u1[e]) / (v2[e] - v1[e])
    cols = np.clip(np.ceil(x), 0, nx).astype(np.int64)
    toggles = np.zeros((ny, nx + 1), dtype=np.int64)
    np.add.at(toggles, (rows, cols), 1)
    return (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    if np.all(weights == weights[0]):
        return float(np.median(values))
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def coverage_stats(frame: Frame, chips: Iterable[tuple[np.ndarray, float]],
                   max_size: int = 512) -> Coverage | None:
    """Chips and exposure time per covered pixel of a layer.

    Parameters
    ----------
    frame : Frame
        The layer frame.
    chips : iterable of (ndarray (N, 2), float)
        Each drizzled chip's outline in ``frame`` pixels and its exposure's EXPTIME.
    max_size : int
        The members' box is rasterised on cells of ``f x f`` frame pixels with
        ``f = ceil(longest side / max_size)`` (1 for boxes up to ``max_size``); a cell counts
        when its centre is inside a chip, weighted by the frame pixels it holds.

    Returns
    -------
    Coverage or None
        None if no cell is covered (the reference then skips the layer).
    """
    chips = [(c[np.isfinite(c).all(axis=1)], float(t)) for c, t in chips]
    chips = [(c, t) for c, t in chips if len(c) >= 3]
    box = exposure_box(frame, [c for c, _ in chips], margin=1)
    if box is None:
        return None
    bx0, by0, bw, bh = box
    f = max(1, math.ceil(max(bw, bh) / max_size))
    shape = (math.ceil(bh / f), math.ceil(bw / f))
    count = np.zeros(shape, dtype=np.int32)
    expt = np.zeros(shape, dtype=np.float64)
    for c, t in chips:
        u = (c[:, 0] - bx0 - (f - 1) / 2.0) / f
        v = (c[:, 1] - by0 - (f - 1) / 2.0) / f
        inside = _fill_polygon(shape, u, v)
        count += inside
        expt += inside * t
    wx = np.minimum(f, bw - f * np.arange(shape[1]))
    wy = np.minimum(f, bh - f * np.arange(shape[0]))
    weight = np.outer(wy, wx).astype(np.float64)
    good = count > 0
    if not good.any():
        return None
    w, nexp, texp = weight[good], count[good].astype(np.float64), expt[good]
    meannexp = float(np.sum(w * nexp) / np.sum(w))
    return Coverage(
        n=int(round(meannexp)),
        meannexp=meannexp,
        mednexp=_weighted_median(nexp, w),
        meanexpt=float(np.sum(w * texp) / np.sum(w)),
        medexpt=_weighted_median(texp, w),
        npixfrac=float(np.sum(w) / (frame.nx * frame.ny)),
        downsample=int(f),
        maxnexp=float(nexp.max()),
    )


# ------------------------------------------------------------------------------------------
# the plan


def _old_matcher(old: Iterable[str | os.PathLike]):
    files, roots = set(), set()
    for item in old:
        name = os.path.basename(os.fspath(item)).strip()
        if name.endswith(".fits"):
            files.add(name)
        elif name:
            roots.add(name.lower()[:8])

    def is_old(member: Member) -> bool:
        return member.filename in files or member.ipppssoo in roots

    return is_old


def shift_chips(chips: list[np.ndarray], dx: int, dy: int) -> list[np.ndarray]:
    """Chip positions moved by ``(-dx, -dy)``: from a whole frame into its window at
    ``(dx, dy)``."""
    return [c - np.array([dx, dy], dtype=float) for c in chips]


def _plan_skycell(name: str, members: list[Member], records: Mapping, opts: dict,
                  ) -> tuple[SkyCellPlan, list[MapJob]]:
    """Plan one sky cell: layers, shared frames, coverage and map jobs."""
    members = sorted(members, key=lambda m: m.filename)
    rows = [row_from_record(records[m.filename], skycell=name, status=m.status) for m in members]
    plan = SkyCellPlan(name=name, members=members, poller=format_poller(rows, "mvm"))
    layers, plan.dropped, plan.notes = build_layers(
        name, members, layer_method=opts["layer_method"], exp_limit=opts["exp_limit"],
        include_small=opts["include_small"], only_cte=opts["only_cte"],
        frames={m.filename: solution_frame(records[m.filename].alignment) for m in members},
        mixed_frames=opts["mixed_frames"])
    jobs: list[MapJob] = []
    pc = names.parse_skycell(name)[0]
    for scale in dict.fromkeys(lay.scale for lay in layers):
        full = SkyCell.from_name(name, scale).frame
        pix = {m.filename: footprint_pixels(full, records[m.filename]) for m in members}
        try:
            frame = bounded_frame(full, pix.values())
        except ValueError:
            plan.notes.append(f"no {scale} layer: no chip falls on the sky cell")
            continue
        plan.frames[scale] = frame
        dx, dy = full.integer_offset_of(frame)
        for lay in (x for x in layers if x.scale == scale):
            lay.frame = frame
            lay.tiles = tile_boxes(frame.nx, frame.ny, opts["tile_size"])
            lay.sky_group = sky_group_name(pc, lay.key)
            chips = [(c, m.exptime) for m in lay.members
                     for c in shift_chips(pix[m.filename], dx, dy)]
            lay.coverage = coverage_stats(frame, chips, opts["coverage_size"])
            if lay.coverage is None:
                plan.notes.append(f"{lay.name} not made: its members cover no pixel")
                continue
            plan.layers.append(lay)
            jobs += layer_map_jobs(lay, full, pix, dx, dy, opts["margin"], plan.notes)
    order = {lay.name: i for i, lay in enumerate(layers)}
    plan.layers.sort(key=lambda lay: order[lay.name])
    jobs.sort(key=lambda j: (order[j.layer], j.order))
    return plan, jobs


def layer_map_jobs(lay: LayerPlan, full: Frame, pix: Mapping, dx: int, dy: int, margin: int,
                   notes: list[str]) -> list[MapJob]:
    """Map jobs of a layer, one per member reaching its frame, in drizzle order.

    A job's frame is its exposure's box in the *whole* sky cell, or the mosaic's whole
    projection-cell plane (``full``, of which the layer frame is the window at ``(dx, dy)``),
    not in the trimmed layer frame, so it does not depend on the other members: adding or
    removing exposures leaves the partials of the others valid. ``pix`` holds each member's
    chip positions in ``full``; a member off the frame gets a note instead of a job.
    """
    jobs = []
    lname = lay.layer_name
    for i, m in enumerate(lay.members):
        box = exposure_box(full, pix[m.filename], margin)
        inside = exposure_box(lay.frame, shift_chips(pix[m.filename], dx, dy), margin)
        if box is None or inside is None:
            notes.append(f"{m.filename} not drizzled into {lay.name}: no pixel on the frame")
            continue
        jobs.append(MapJob(
            name=lname.exposure(m.ipppssoo, lay.product_type).filename, skycell=lay.skycell,
            layer=lay.name, scale=lay.scale,
            file=m.file, filename=m.filename, ipppssoo=m.ipppssoo, order=i,
            box=[box[0] - dx, box[1] - dy, box[2], box[3]], frame=full.window(*box),
        ))
    return jobs


def plan_skycells(records: Iterable, *, old: Iterable[str | os.PathLike] = (),
                  skycells: Iterable[str] | None = None, layer_method: str = "all",
                  exp_limit: float = 2.0, include_small: bool = True, only_cte: bool = False,
                  margin: int = 4, coverage_size: int = 512,
                  tile_size: int = 4096, mixed_frames: str = DEFAULT_MIXED_FRAMES) -> MvmPlan:
    """Turn the screen stage's records into the MVM plan.

    Parameters
    ----------
    records : iterable of ExposureRecord
        Rejected records (``accepted`` False), records without chip footprints and repeated
        file names are left out with a note.
    old : iterable of str
        Exposures already processed (file names, paths or rootnames): OLD members.
    skycells : iterable of str, optional
        Plan only these sky cells (e.g. a poller's); default: every sky cell touched.
    layer_method : {'all', 'hard', 'kmeans'}
    exp_limit : float
        ``kmeans`` split threshold on max/min EXPTIME.
    include_small, only_cte : bool
        ``MVM_INCLUDE_SMALL`` / ``MVM_ONLY_CTE``.
    margin : int
        Pixels added around each exposure's box for the drizzle kernel.
    coverage_size : int
        Largest side, in cells, of the coverage raster (see :func:`coverage_stats`).
    tile_size : int
        Largest side in pixels of the tiles each layer is reduced in (its ``tiles``; at
        least :data:`MIN_TILE_SIZE`). The products do not depend on it.
    mixed_frames : {'keep', 'drop_unaligned', 'fail'}
        ``align.mixed_frames``: layers whose members' WCSs are in different astrometric
        frames (the records' ``alignment``; see :func:`build_layers`).

    Returns
    -------
    MvmPlan
        Sky cells sorted by name; jobs grouped by sky cell and layer, in drizzle order.
    """
    if layer_method not in LAYER_METHODS:
        raise ValueError(f"layer method must be one of {', '.join(LAYER_METHODS)}, "
                         f"not {layer_method!r}")
    only = None if skycells is None else {s for s in skycells if names.parse_skycell(s)}
    opts = dict(layer_method=layer_method, exp_limit=float(exp_limit),
                include_small=bool(include_small), only_cte=bool(only_cte),
                margin=int(margin), coverage_size=int(coverage_size),
                tile_size=check_tile_size(tile_size), mixed_frames=str(mixed_frames),
                skycells=None if only is None else sorted(only))
    plan = MvmPlan(options=opts)
    is_old = _old_matcher(old)
    by_name, members = {}, {}
    for rec in records:
        filename = rec.filename or os.path.basename(rec.file)
        if not rec.accepted:
            plan.notes.append(f"{filename}: rejected by screening ({rec.reason}); not planned")
        elif not any(len(c.footprint) >= 3 for c in rec.chips):
            plan.notes.append(f"{filename}: no chip footprint; not planned")
        elif filename in by_name:
            plan.notes.append(f"{filename}: listed twice ({rec.file}); the first is used")
        else:
            m = Member.from_record(rec)
            m.status = "OLD" if is_old(m) else "NEW"
            by_name[filename], members[filename] = rec, m
    cells: dict[str, list[Member]] = {}
    for filename, found in assign_sky_cells(by_name.values()).items():
        found = [s for s in found if only is None or s in only]
        plan.exposures[filename] = found
        if not found:
            plan.notes.append(f"{filename}: overlaps no sky cell being planned")
        for sc in found:
            cells.setdefault(sc, []).append(members[filename])
    for name in sorted(cells):
        sc_plan, jobs = _plan_skycell(name, cells[name], by_name, opts)
        plan.skycells.append(sc_plan)
        plan.jobs += jobs
    return plan
