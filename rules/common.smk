# Helpers shared by the rules: paths, the input list, the plan, and the final outputs.

import functools
import glob
import json
import os
from pathlib import Path

OUT = config["outdir"]
# a layer's root, not an exposure-level product's (which ends in -<ipppssoo>)
LAYER_ROOT = r"hst_[A-Za-z0-9_.\-]+(?<!-[a-z][a-z0-9]{7})"
RES = config["resources"]


def demo_dir():
    """Directory of the simulated demo data set."""
    return Path(RES) / config["demo"]["preset"]


def inputs_sources():
    """Files the input list is made from: the demo truth table or the list file."""
    spec = config["inputs"]
    if spec == "demo":
        return [str(demo_dir() / "truth" / "exposures.ecsv")]
    if not any(c in spec for c in "*?[") and Path(spec).is_file():
        return [spec]
    return []


def input_glob_files():
    """The files a glob ``inputs`` matches now (a rule parameter, so that files added to or
    removed from the pattern's directory make the input list, and what depends on it, be
    redone)."""
    spec = config["inputs"]
    if spec != "demo" and any(c in spec for c in "*?["):
        return sorted(glob.glob(spec))
    return []


def input_table():
    """{key: path} of every input exposure (after the inputs checkpoint)."""
    path = checkpoints.inputs.get().output[0]
    table = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                key, file = line.rstrip("\n").split("\t")
                table[key] = file
    return table


def input_path(wildcards):
    return input_table()[wildcards.exposure]


def screen_records(wildcards=None):
    return [f"{OUT}/screen/records/{key}.json" for key in input_table()]


_PLAN_CACHE = {}


def plan_data():
    """The plan (after the plan checkpoint), read once per file version."""
    path = checkpoints.plan.get().output.plan
    key = (path, os.path.getmtime(path))
    if key not in _PLAN_CACHE:
        with open(path) as f:
            _PLAN_CACHE.clear()
            _PLAN_CACHE[key] = json.load(f)
    return _PLAN_CACHE[key]


def _key(filename):
    """Input key of a member file name (its name without .fits)."""
    return filename[: -len(".fits")] if filename.endswith(".fits") else filename


def stale_safe(default):
    """Decorate an input/params function so that a job of an outdated plan gets ``default``.

    When a checkpoint (the plan) is rerun because its parameters changed, snakemake first
    re-evaluates the jobs built from the previous plan, then drops those no target needs.
    A layer, tile or exposure that the new plan no longer has must not stop the run there.
    """

    def wrap(func):
        @functools.wraps(func)  # snakemake reads the signature
        def inner(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except (LookupError, ValueError):
                return default() if callable(default) else default

        return inner

    return wrap


@stale_safe(dict)
def layer_of(wildcards):
    """The plan entry of one layer product."""
    name = f"{wildcards.root}_{wildcards.ptype}.fits"
    for cell in plan_data()["skycells"]:
        for layer in cell["layers"]:
            if layer["name"] == name:
                return layer
    raise ValueError(f"{name} is not a layer of the plan")


def layer_jobs(wildcards):
    """The plan's drizzle jobs of one layer, in drizzle order."""
    name = f"{wildcards.root}_{wildcards.ptype}.fits"
    jobs = [j for j in plan_data()["jobs"] if j["layer"] == name]
    return sorted(jobs, key=lambda j: j["order"])


def partials_of(wildcards):
    """The partial files of one layer, in the layer's drizzle order."""
    return [
        f"{OUT}/partials/{wildcards.skycell}/{wildcards.root}_{wildcards.ptype}/"
        f"{_key(j['filename'])}.fits"
        for j in layer_jobs(wildcards)
    ]


def records_of(wildcards):
    """Screen records of a layer's members."""
    return [f"{OUT}/screen/records/{_key(j['filename'])}.json" for j in layer_jobs(wildcards)]


def headers_of(wildcards):
    """Headers files of a layer's members (as records_of)."""
    return [f"{OUT}/screen/headers/{_key(j['filename'])}.json" for j in layer_jobs(wildcards)]


@stale_safe(dict)
def map_job(wildcards):
    """The plan's drizzle job for one (exposure, layer)."""
    for job in layer_jobs(wildcards):
        if _key(job["filename"]) == wildcards.exposure:
            return job
    raise ValueError(f"no drizzle job for {wildcards.exposure} in {wildcards.root}")


@stale_safe(dict)
def layer_params(wildcards):
    """Resolved drizzle parameters of a layer (set by the plan)."""
    return plan_data()["params"][f"{wildcards.root}_{wildcards.ptype}.fits"]


def drizzle_params(wildcards):
    """The parameters a map job depends on (without the layer's coverage figure ``n``)."""
    skip = ("n", "cosmic_rays", "cr")  # do not change a separate drizzle
    return {k: v for k, v in layer_params(wildcards).items() if k not in skip}


def cr_applies(wildcards):
    """Whether the layer gets cosmic-ray rejection (decided by the plan)."""
    return bool(layer_params(wildcards).get("cosmic_rays"))


def final_partials_of(wildcards):
    """The partials a layer sums: the CR-masked ones when the layer rejects cosmic rays."""
    paths = partials_of(wildcards)
    if cr_applies(wildcards):
        return [p.replace(f"{OUT}/partials/", f"{OUT}/partials_cr/", 1) for p in paths]
    return paths


def final_exposure_partial(wildcards):
    path = exposure_partial(wildcards)
    if cr_applies(wildcards):
        return path.replace(f"{OUT}/partials/", f"{OUT}/partials_cr/", 1)
    return path


def separate_partial(wildcards):
    """The exposure's separate drizzle (its CR-free-or-not partial) on the layer."""
    return (f"{OUT}/partials/{wildcards.skycell}/{wildcards.root}_{wildcards.ptype}/"
            f"{wildcards.exposure}.fits")


def _layer_by_root(wildcards):
    for cell in plan_data()["skycells"]:
        for layer in cell["layers"]:
            if layer["name"].rsplit("_", 1)[0] == wildcards.root:
                return cell, layer
    raise ValueError(f"{wildcards.root} is not a layer of the plan")


@stale_safe(list)
def product_of_root(wildcards):
    """The layer product a trailer belongs to."""
    cell, layer = _layer_by_root(wildcards)
    return f"{OUT}/skycells/{cell['name']}/{layer['name']}"


@stale_safe(str)
def log_of_root(wildcards):
    """The log of the layer job a trailer belongs to."""
    cell, layer = _layer_by_root(wildcards)
    return f"logs/layer/{cell['name']}/{layer['name'][:-5]}.log"


def exposure_level():
    return bool(config.get("products", {}).get("exposure_level", False))


def exposure_products(cell, layer):
    """Exposure-level product paths of a layer (its drizzled members), in drizzle order."""
    root, ptype = layer["name"][: -len(".fits")].rsplit("_", 1)
    jobs = sorted((j for j in plan_data()["jobs"] if j["layer"] == layer["name"]),
                  key=lambda j: j["order"])
    return [f"{OUT}/skycells/{cell}/{root}-{j['ipppssoo']}_{ptype}.fits" for j in jobs]


def skycell_products(wildcards):
    """Every product of a sky cell: layers, their trailers (and exposure-level products),
    in plan order."""
    cell = next(c for c in plan_data()["skycells"] if c["name"] == wildcards.skycell)
    out = []
    for layer in cell["layers"]:
        out.append(f"{OUT}/skycells/{cell['name']}/{layer['name']}")
        out.append(f"{OUT}/skycells/{cell['name']}/{layer['name'].rsplit('_', 1)[0]}_trl.txt")
        if exposure_level():
            out += exposure_products(cell["name"], layer)
    return out


@stale_safe(dict)
def exposure_job(wildcards):
    """The drizzle job of one exposure-level product."""
    for job in layer_jobs(wildcards):
        if job["ipppssoo"] == wildcards.ipppssoo:
            return job
    raise ValueError(f"{wildcards.ipppssoo} is not drizzled into {wildcards.root}")


def exposure_partial(wildcards):
    job = exposure_job(wildcards)
    return (f"{OUT}/partials/{wildcards.skycell}/{wildcards.root}_{wildcards.ptype}/"
            f"{_key(job['filename'])}.fits")


def exposure_record(wildcards):
    return f"{OUT}/screen/records/{_key(exposure_job(wildcards)['filename'])}.json"


def exposure_headers(wildcards):
    return f"{OUT}/screen/headers/{_key(exposure_job(wildcards)['filename'])}.json"


def exposure_align_dirs(wildcards):
    return align_dirs_of([_key(exposure_job(wildcards)["filename"])])


def final_outputs(wildcards=None):
    """The final targets: every layer product, trailer and manifest of the plan."""
    targets = [f"{OUT}/screen/accepted.ecsv", f"{OUT}/screen/rejected.ecsv",
               f"{OUT}/plan/dropped.ecsv"]
    for cell in plan_data()["skycells"]:
        targets.append(f"{OUT}/skycells/{cell['name']}/{cell['name']}_manifest.txt")
        if align_enabled():
            targets.append(f"{OUT}/skycells/{cell['name']}/{cell['name']}_align.ecsv")
        targets += skycell_products(type("W", (), {"skycell": cell["name"]}))
    targets += mosaic_outputs()
    targets += cutout_outputs()
    return targets


def mem_for_frame(layer, arrays=6):
    """MB needed to hold ``arrays`` float64 frames of a layer, plus a margin."""
    if "frame" not in layer:  # a job of an outdated plan (see stale_safe)
        return 1000
    nx, ny = layer["frame"]["nx"], layer["frame"]["ny"]
    return int(500 + arrays * 8 * nx * ny / 1e6)


def summary_message():
    """The few lines printed when a run succeeds: what was made, and where."""
    cells = plan_data()["skycells"]
    nlayers = sum(len(cell["layers"]) for cell in cells)
    lines = [f"mvmflow: {nlayers} layer product{'s' if nlayers != 1 else ''} in "
             f"{len(cells)} sky cell{'s' if len(cells) != 1 else ''} under {OUT}/skycells/"]
    if mosaic_outputs():
        lines.append(f"mvmflow: custom mosaic in {OUT}/mosaic/")
    if cutout_outputs():
        lines.append(f"mvmflow: cutouts in {OUT}/cutouts/")
    lines.append(f"mvmflow: screening report (rejected inputs and why) in {OUT}/screen/, "
                 "per-job logs in logs/")
    return "\n".join(lines)


def sky_group(layer):
    """The sky group of a layer: projection cell, instrument, detector, filter, class."""
    label = layer["exptime_class"] + (f"-{layer['year']}" if layer.get("year") else "")
    return (f"p{layer['skycell'][9:13]}_{layer['instrument']}_{layer['detector']}_"
            f"{layer['filter']}_{label}")


def _group_layers(group):
    return [
        (cell["name"], layer)
        for cell in plan_data()["skycells"]
        for layer in cell["layers"]
        if sky_group(layer) == group and layer["scale"] == "fine"
    ]


def sky_partials(wildcards):
    """Every fine partial of a sky group, over all its sky cells, in plan order."""
    out = []
    for cell, layer in _group_layers(wildcards.group):
        root, ptype = layer["name"][: -len(".fits")].rsplit("_", 1)
        w = type("W", (), {"skycell": cell, "root": root, "ptype": ptype})
        out += partials_of(w)
    return out


def sky_params(wildcards):
    """Sky statistic of a group, and whether any of its layers matches sky."""
    params = [plan_data()["params"][layer["name"]] for _, layer in _group_layers(wildcards.group)]
    used = [p for p in params if p["skysub"]]
    return {"skysub": bool(used), "skystat": (used or params)[0]["skystat"]}


@stale_safe(list)
def sky_file(wildcards):
    """The sky offsets file a layer uses."""
    return f"{OUT}/sky/{sky_group(layer_of(wildcards))}.json"


# ---- alignment

ALIGN = config.get("align", {})


def align_enabled():
    return bool(ALIGN.get("enabled", True))


def align_reference():
    """The configured reference catalogue, with ``auto`` resolved."""
    ref = str(ALIGN.get("reference", "auto"))
    if ref == "auto":
        if config["inputs"] == "demo":
            return str(demo_dir() / "truth" / "refcat.ecsv")
        return "gaia"
    return ref


def align_reference_file(wildcards):
    """The reference catalogue as an input file (so a missing file stops the run early)."""
    ref = align_reference()
    return [] if ref.lower() in ("gaia", "none") else [ref]


_GROUPS_CACHE = {}


def align_groups():
    """{group: [input keys]} (after the align_groups checkpoint)."""
    path = checkpoints.align_groups.get().output[0]
    key = (path, os.path.getmtime(path))
    if key not in _GROUPS_CACHE:
        with open(path) as f:
            _GROUPS_CACHE.clear()
            _GROUPS_CACHE[key] = json.load(f)["groups"]
    return _GROUPS_CACHE[key]


def group_of(key):
    for name, members in align_groups().items():
        if key in members:
            return name
    raise ValueError(f"{key} is in no alignment group")


def group_exposures(wildcards):
    table = input_table()
    return [table[k] for k in align_groups()[wildcards.agroup]]


def group_catalogs(wildcards):
    return [f"{OUT}/catalogs/{k}.ecsv" for k in align_groups()[wildcards.agroup]]


def group_records(wildcards):
    return [f"{OUT}/screen/records/{k}.json" for k in align_groups()[wildcards.agroup]]


def align_dirs(wildcards=None):
    """Every alignment group's directory (none when alignment is off)."""
    if not align_enabled():
        return []
    return [f"{OUT}/align/{g}" for g in align_groups()]


def align_dirs_of(keys):
    """The alignment directories holding the solutions of input ``keys``."""
    if not align_enabled():
        return []
    return sorted({f"{OUT}/align/{group_of(k)}" for k in keys})


def solution_dir(wildcards):
    return align_dirs_of([wildcards.exposure])


def layer_align_dirs(wildcards):
    return align_dirs_of([_key(j["filename"]) for j in layer_jobs(wildcards)])


def skycell_keys(skycell):
    """Input keys of every exposure planned into a sky cell."""
    cell = next(c for c in plan_data()["skycells"] if c["name"] == skycell)
    return sorted({_key(m["filename"]) for layer in cell["layers"] for m in layer["members"]})


def skycell_align_dirs(wildcards):
    return align_dirs_of(skycell_keys(wildcards.skycell))


# ---- custom mosaic

MOSAIC = config.get("mosaic", {})


def mosaic_enabled():
    return bool(MOSAIC.get("enabled", False))


_MOSAIC_CACHE = {}


def mosaic_plan():
    """The mosaic plan (:class:`mvmflow.mosaic.MosaicPlan`) of the plan checkpoint."""
    from mvmflow.mosaic import MosaicPlan

    data = plan_data()
    if id(data) not in _MOSAIC_CACHE:
        _MOSAIC_CACHE.clear()
        _MOSAIC_CACHE[id(data)] = MosaicPlan.from_dict(data["mosaic"])
    return _MOSAIC_CACHE[id(data)]


def _mosaic_name(wildcards):
    return f"{wildcards.mroot}_{wildcards.ptype}.fits"


def mosaic_layer(wildcards):
    name = _mosaic_name(wildcards)
    for layer in mosaic_plan().layers:
        if layer.name == name:
            return layer
    raise ValueError(f"{name} is not a layer of the mosaic")


@stale_safe(dict)
def mosaic_layer_dict(wildcards):
    return mosaic_layer(wildcards).to_dict()


def mosaic_jobs(wildcards):
    """The drizzle jobs of a mosaic layer, in drizzle order."""
    name = _mosaic_name(wildcards)
    return sorted((j for j in mosaic_plan().jobs if j.layer == name), key=lambda j: j.order)


@stale_safe(dict)
def mosaic_job(wildcards):
    for job in mosaic_jobs(wildcards):
        if _key(job.filename) == wildcards.exposure:
            return job.to_dict()
    raise ValueError(f"no mosaic drizzle job for {wildcards.exposure} in {wildcards.mroot}")


@stale_safe(list)
def mosaic_members(wildcards):
    """(file name, exposure time) of each drizzled member, in layer (context-bit) order."""
    return [[j.filename, mosaic_layer(wildcards).members[j.order].exptime]
            for j in mosaic_jobs(wildcards)]


@stale_safe(dict)
def mosaic_params(wildcards):
    return plan_data()["mosaic_params"][_mosaic_name(wildcards)]


@stale_safe(dict)
def mosaic_drizzle_params(wildcards):
    return {k: v for k, v in mosaic_params(wildcards).items()
            if k not in ("n", "cosmic_rays", "cr")}



@stale_safe(list)
def mosaic_crmasks(wildcards):
    """The cosmic-ray masks the sky-cell layers of the same key found for this exposure."""
    if not mosaic_params(wildcards).get("cosmic_rays"):
        return []
    params = plan_data()["params"]
    out = []
    for name in mosaic_layer(wildcards).skycell_layers:
        if not params[name].get("cosmic_rays"):
            continue
        for job in plan_data()["jobs"]:
            if job["layer"] == name and _key(job["filename"]) == wildcards.exposure:
                out.append(f"{OUT}/cr/{job['skycell']}/{name[:-5]}/"
                           f"{wildcards.exposure}_crmask.fits")
    return out



def _tile_index(tile):
    return int(tile[1:])


@stale_safe(list)
def mosaic_tile_box(wildcards):
    return mosaic_layer(wildcards).tiles[_tile_index(wildcards.tile)]


@stale_safe(list)
def mosaic_tile_partials(wildcards):
    """The partials of the members whose boxes reach the tile, in drizzle order."""
    from mvmflow.mosaic import tile_jobs

    jobs = tile_jobs(mosaic_plan(), _mosaic_name(wildcards), mosaic_tile_box(wildcards))
    return [f"{OUT}/mosaic/partials/{wildcards.mroot}_{wildcards.ptype}/{_key(j.filename)}.fits"
            for j in jobs]


@stale_safe(list)
def mosaic_tile_files(wildcards):
    layer = mosaic_layer(wildcards)
    return [f"{OUT}/mosaic/tiles/{wildcards.mroot}_{wildcards.ptype}/t{i:04d}.fits"
            for i in range(len(layer.tiles))]


@stale_safe(1000)
def mosaic_tile_mem(wildcards):
    """MB for one tile's float64 sums and arrays, plus a margin."""
    _, _, nx, ny = mosaic_layer(wildcards).tiles[0]
    return int(500 + 48 * nx * ny / 1e6)


@stale_safe(list)
def mosaic_sky_file(wildcards):
    return f"{OUT}/sky/{mosaic_layer(wildcards).sky_group}.json"


def mosaic_records(wildcards):
    return [f"{OUT}/screen/records/{_key(j.filename)}.json" for j in mosaic_jobs(wildcards)]


def mosaic_headers(wildcards):
    return [f"{OUT}/screen/headers/{_key(j.filename)}.json" for j in mosaic_jobs(wildcards)]


def mosaic_align_dirs(wildcards):
    return align_dirs_of([_key(j.filename) for j in mosaic_jobs(wildcards)])


def _mosaic_layer_by_root(wildcards):
    for layer in mosaic_plan().layers:
        if layer.name.rsplit("_", 1)[0] == wildcards.mroot:
            return layer
    raise ValueError(f"{wildcards.mroot} is not a layer of the mosaic")


@stale_safe(list)
def mosaic_product_of_root(wildcards):
    return f"{OUT}/mosaic/{_mosaic_layer_by_root(wildcards).name}"


@stale_safe(str)
def mosaic_log_of_root(wildcards):
    return f"logs/mosaic_layer/{_mosaic_layer_by_root(wildcards).name[:-5]}.log"


def mosaic_products(wildcards=None):
    """Every mosaic product and trailer, in the reference's layer order."""
    out = []
    for layer in mosaic_plan().layers:
        out.append(f"{OUT}/mosaic/{layer.name}")
        out.append(f"{OUT}/mosaic/{layer.name.rsplit('_', 1)[0]}_trl.txt")
    return out


def mosaic_outputs():
    if not mosaic_enabled() or not plan_data().get("mosaic"):
        return []
    return mosaic_products() + [f"{OUT}/mosaic/{mosaic_plan().manifest}"]


# ---- cutouts


def cutout_id(box):
    """``<coords>_<w>x<h>``: the directory of one configured cutout box."""
    from mvmflow.names import coord_token, cutout_size_arcsec

    w, h = cutout_size_arcsec(box["size"])
    return f"{coord_token(box['ra'], box['dec'])}_{w:g}x{h:g}"


@stale_safe(dict)
def cutout_box_of(wildcards):
    for box in config.get("cutouts", []):
        if cutout_id(box) == wildcards.cutid:
            return box
    raise ValueError(f"{wildcards.cutid} is not a configured cutout")


def cutout_sources(wildcards):
    """Every sky-cell layer product (and exposure-level product) of the plan."""
    out = []
    for cell in plan_data()["skycells"]:
        out += [p for p in skycell_products(type("W", (), {"skycell": cell["name"]}))
                if p.endswith(".fits")]
    return out


def cutout_outputs():
    out = []
    for box in config.get("cutouts", []):
        out.append(f"{OUT}/cutouts/{cutout_id(box)}/cutouts")
        if config.get("combine", {}).get("enabled", True):
            out.append(f"{OUT}/cutouts/{cutout_id(box)}/combined")
    return out


@stale_safe(dict)
def mosaic_job_frame(wildcards):
    return mosaic_job(wildcards)["frame"]


@stale_safe(dict)
def map_job_frame(wildcards):
    return map_job(wildcards)["frame"]
