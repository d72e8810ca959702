# Helpers shared by the rules: paths, the input list, the plan, and the final outputs.
#
# The plan is read through mvmflow.runplan.RunPlan (typed, indexed): the functions below are
# one-line adapters from a job's wildcards to a plan look-up, and the paths built from it.

import functools
import glob
import inspect
import os
from pathlib import Path

from mvmflow.archive.service import file_url, mast_url
from mvmflow.archive.table import (is_product_table, mirror_path, read_record, read_table,
                                   to_fetch)
from mvmflow.groups import read_groups
from mvmflow.inputs import read_input_table
from mvmflow.layercat import LAYERCAT_VERSION
from mvmflow.plan import PLAN_VERSION
from mvmflow.runner import job_from_rule, run_script
from mvmflow.runplan import PlanEntryMissing, RunPlan, neighbour_layers

OUT = config["outdir"]
# a layer's root, not an exposure-level product's (which ends in -<ipppssoo>)
LAYER_ROOT = r"hst_[A-Za-z0-9_.\-]+(?<!-[a-z][a-z0-9]{7})"
RES = config["resources"]
# every job's log and benchmark record: under the run's output directory, so two runs with
# different outdirs never share (or overwrite) logs
LOGS = f"{OUT}/logs"


def by_attempt(mem):
    """A rule's ``mem_mb`` times the job's attempt (1, then 2, 3 with the cluster profiles'
    ``retries: 2``): a job killed for lack of memory is resubmitted with more
    (docs/cluster.md). ``mem`` is a number or a function of ``(wildcards)`` or
    ``(wildcards, input)``; a workstation run (no retries) asks for ``mem`` itself."""
    if not callable(mem):
        return lambda wildcards, attempt: mem * attempt
    takes_input = "input" in inspect.signature(mem).parameters

    def scaled(wildcards, input, attempt):
        return (mem(wildcards, input) if takes_input else mem(wildcards)) * attempt

    return scaled


def run_job(rule, script, input, output, params, wildcards, threads, resources, log,
            conda_env):
    """Run ``scripts/<script>.py`` for a job, forked from the preloaded fork server
    (mvmflow.runner; docs/speed.md, "Job start-up"); with ``--software-deployment-method
    conda``, the server is the rule's conda environment's Python."""
    job = job_from_rule(rule, input, output, params, wildcards, threads, resources, log, config)
    python = os.path.join(conda_env, "bin", "python") if conda_env else None
    # a snakemake process of its own for this one job (a cluster job, or a run without
    # force-use-threads): the script runs in it, as under script:, unless a conda env is due
    own = workflow.remote_exec or workflow.subprocess_exec
    run_script(os.path.join(workflow.basedir, "scripts", f"{script}.py"), job,
               isolate=bool(python) or not own, python=python,
               reuse_memory=config["reuse_memory"])


def demo_dir():
    """Directory of the simulated demo data set."""
    return Path(RES) / config["demo"]["preset"]


def inputs_sources(wildcards=None):
    """Files the input list is made from: the demo truth table, the list file, or (region
    inputs) the product table and the download record of every file to fetch."""
    spec = config["inputs"]
    if ARCHIVE_MODE:
        return [mast_table_path()] + mast_records()
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
    if isinstance(spec, str) and spec != "demo" and any(c in spec for c in "*?["):
        return sorted(glob.glob(spec))
    return []


# ---- region inputs from MAST (rules/archive.smk; docs/archive.md, "Region queries and the
# workflow")

# "region" ({mast: {...}}: the query checkpoint writes the product table), "table" (a product
# table given as inputs: no query), or None (files given directly)
ARCHIVE_MODE = ("region" if isinstance(config["inputs"], dict)
                else "table" if is_product_table(config["inputs"]) else None)
ARCHIVE = config.get("archive", {})
MIRROR = f"{RES}/mast"
MAST_QUERIES = f"{MIRROR}/queries"
try:
    MAST_URL = mast_url(configured=ARCHIVE.get("mast_url") or None) if ARCHIVE_MODE else ""
except ValueError as error:
    sys.exit(f"Config error: {error}")

_MAST_CACHE = {}


MAST_TABLE = f"{OUT}/mast/query.ecsv"


def mast_table_path():
    """The product table of the run: the one given as inputs, or the query checkpoint's.

    Once the query's table exists it is a plain input (the query job, when it reruns,
    re-evaluates the jobs that read it); only before that is the checkpoint asked. A job
    whose input depends on a checkpoint has its parameters and inputs checked in a second
    pass only, after Snakemake has already taken the downstream checkpoints' outputs (the
    input list, the plan) as final: a download rerun would then not make the plan again.
    """
    if ARCHIVE_MODE == "table":
        return config["inputs"]
    if os.path.exists(MAST_TABLE):
        return MAST_TABLE
    return checkpoints.query.get().output[0]


def mast_rows():
    """{file name: row} of the files to fetch (status ``fetch``), read once per table
    version."""
    path = mast_table_path()
    key = (path, os.path.getmtime(path))
    if key not in _MAST_CACHE:
        _MAST_CACHE.clear()
        _MAST_CACHE[key] = {r["filename"]: r for r in to_fetch(read_table(path))}
    return _MAST_CACHE[key]


def mast_records(wildcards=None):
    """The download record of every file to fetch."""
    return [f"{OUT}/mast/downloads/{name}.json" for name in mast_rows()]


def mast_download(wildcards):
    """What the download job of one file needs: URL, mirror path, size, checksum."""
    row = mast_rows()[wildcards.mastfile]
    return {"filename": row["filename"], "uri": row["dataURI"],
            "url": file_url(MAST_URL, row["dataURI"]),
            "dest": str(mirror_path(MIRROR, row["filename"])), "size": row["size"],
            "checksum": row["checksum"]}


def _retry_token(record):
    """Empty while a download record says its file arrived (and the file is there), else a
    token unique to that failure."""
    try:
        data = read_record(record)
    except (OSError, ValueError):
        return ""
    if data["status"] == "arrived" and data.get("path") and Path(data["path"]).is_file():
        return ""
    return f"retry after {data.get('error') or 'a vanished file'} ({record.stat().st_mtime_ns})"


def mast_retry_token(wildcards):
    """A download job's rerun trigger (:func:`_retry_token`): a changed parameter reruns the
    job, so the next run tries again a file an earlier run could not fetch (or that left the
    mirror); a file that arrived is never asked for again."""
    return _retry_token(Path(f"{OUT}/mast/downloads/{wildcards.mastfile}.json"))


def mast_outputs():
    """The report of the files that did not arrive (region inputs only)."""
    return [f"{OUT}/mast/missing.ecsv"] if ARCHIVE_MODE else []


_INPUTS_CACHE = {}


def input_table():
    """{key: path} of every input exposure (after the inputs checkpoint), read once per
    file version (it is looked up for every job: reading it each time made building the
    job graph quadratic in the number of exposures)."""
    path = checkpoints.inputs.get().output[0]
    key = (path, os.path.getmtime(path))
    if key not in _INPUTS_CACHE:
        _INPUTS_CACHE.clear()
        _INPUTS_CACHE[key] = read_input_table(path)
    return _INPUTS_CACHE[key]


def input_path(wildcards):
    return input_table()[wildcards.exposure]


def screen_records(wildcards=None):
    return [f"{OUT}/screen/records/{key}.json" for key in input_table()]


def records_of(keys):
    return [f"{OUT}/screen/records/{key}.json" for key in keys]


def headers_of(keys):
    return [f"{OUT}/screen/headers/{key}.json" for key in keys]


# ---- intermediate files

KEEP_INTERMEDIATES = bool(config.get("keep_intermediates", True))


def intermediate(path):
    """A file only later jobs read (partial, cosmic-ray median or mask, tile): kept, or with
    keep_intermediates off, deleted once no job of the run needs it (temp)."""
    return path if KEEP_INTERMEDIATES else temp(path)


def mean_size_mb(paths):
    """Mean size in MB of ``paths`` (0 for none)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return sum(os.path.getsize(p) for p in paths) / 1e6 / max(1, len(paths))


# ---- the plan

PLAN = f"{OUT}/plan/plan.json"
# The plan file as an input of every job built from the plan. Ancient: a rewritten plan
# reruns no job by itself (what a job reads of the plan is in its params, and the params
# trigger decides), but the job depends on the plan checkpoint, so Snakemake re-evaluates it
# when the plan is made again (else a job of the previous plan would run with stale
# inputs and params). See docs/design.md, "The run plan".
PLAN_INPUT = ancient(PLAN)

_PLAN_CACHE = {}


def run_plan():
    """The run plan (after the plan checkpoint), read once per file version. A plan file of
    another layout version reads as an empty plan, until the checkpoint makes it again
    (its ``version`` parameter changed)."""
    path = checkpoints.plan.get().output.plan
    key = (path, os.path.getmtime(path))
    if key not in _PLAN_CACHE:
        _PLAN_CACHE.clear()
        _PLAN_CACHE[key] = RunPlan.load(path, stale_ok=True)
    return _PLAN_CACHE[key]


def planned(default):
    """Decorate an input, params or resources function that looks up a job's plan entry.

    When the plan checkpoint reruns, Snakemake re-evaluates the jobs built from the previous
    plan (PLAN_INPUT) and then drops those no target needs: a layer, job or tile the new plan
    no longer has (PlanEntryMissing, and nothing else) gives such a job ``default``.
    """

    def wrap(func):
        @functools.wraps(func)  # snakemake reads the signature
        def inner(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except PlanEntryMissing:
                return default() if callable(default) else default

        return inner

    return wrap


def _layer(wildcards):
    """The sky-cell layer of a job: ``<root>_<ptype>.fits``."""
    return f"{wildcards.root}_{wildcards.ptype}.fits"


def _mlayer(wildcards):
    """The mosaic layer of a job: ``<mroot>_<ptype>.fits``."""
    return f"{wildcards.mroot}_{wildcards.ptype}.fits"


# ---- sky-cell layers: map (drizzle), cosmic rays, reduce (tiles), products


@planned(dict)
def layer_entry(wildcards):
    return run_plan().layer_entry(_layer(wildcards))


@planned(dict)
def layer_params(wildcards):
    return run_plan().layer_params(_layer(wildcards))


@planned(dict)
def map_params(wildcards):
    return run_plan().map_params(_layer(wildcards))


@planned(dict)
def map_frame(wildcards):
    return run_plan().map_frame(_layer(wildcards), wildcards.exposure)


@planned(list)
def layer_members(wildcards):
    return run_plan().members(_layer(wildcards))


@planned(list)
def separate_partials(wildcards):
    return run_plan().partials(_layer(wildcards), OUT, final=False)


@planned(list)
def layer_partials(wildcards):
    return run_plan().partials(_layer(wildcards), OUT, final=True)


@planned(list)
def layer_patch_bases(wildcards):
    """The separate partials of a layer that rejects cosmic rays: its final partials are
    patches of them, read with them (mvmflow.partials, "Patches")."""
    plan, layer = run_plan(), _layer(wildcards)
    return plan.partials(layer, OUT, final=False) if plan.rejects_cosmic_rays(layer) else []


#: Cores of a layer job of several tiles (each tile reduced in strips at once, by as many
#: worker processes; docs/speed.md, "Threads" and "Layer jobs": the job that ends a sky cell
#: often runs alone, and a second core would idle). A one-tile layer keeps one: small
#: layers run beside other jobs.
LAYER_THREADS = 2


@planned(1)
def layer_threads(wildcards):
    return LAYER_THREADS if len(run_plan().tiles(_layer(wildcards))) > 1 else 1


@planned(1000)
def layer_tile_mem(wildcards):
    return run_plan().tile_mem_mb(_layer(wildcards))


@planned(list)
def layer_records(wildcards):
    return records_of(run_plan().member_keys(_layer(wildcards)))


@planned(list)
def layer_headers(wildcards):
    return headers_of(run_plan().member_keys(_layer(wildcards)))


@planned(list)
def layer_align_dirs(wildcards):
    return align_dirs_of(run_plan().member_keys(_layer(wildcards)))


@planned(list)
def sky_file(wildcards):
    return f"{OUT}/sky/{run_plan().sky_group(_layer(wildcards))}.json"


def _exposure_job(wildcards):
    return run_plan().job_of_ipppssoo(_layer(wildcards), wildcards.ipppssoo)


@planned(list)
def exposure_partial(wildcards):
    return run_plan().partial_path(_exposure_job(wildcards), OUT)


@planned(list)
def exposure_patch_base(wildcards):
    """The separate partial an exposure's final partial is a patch of (layer_patch_bases)."""
    plan, job = run_plan(), _exposure_job(wildcards)
    if not plan.rejects_cosmic_rays(job.layer):
        return []
    return [plan.partial_path(job, OUT, final=False)]


@planned(list)
def exposure_record(wildcards):
    return f"{OUT}/screen/records/{_exposure_job(wildcards).key}.json"


@planned(list)
def exposure_headers(wildcards):
    return f"{OUT}/screen/headers/{_exposure_job(wildcards).key}.json"


@planned(list)
def exposure_align_dirs(wildcards):
    return align_dirs_of([_exposure_job(wildcards).key])


@planned(1000)
def exposure_mem(wildcards):
    return run_plan().tile_mem_mb(_layer(wildcards), members=1)


@planned(list)
def product_of_root(wildcards):
    """The layer product a trailer belongs to."""
    layer = run_plan().layer_by_root(wildcards.root)
    return f"{OUT}/skycells/{layer.skycell}/{layer.name}"


@planned(str)
def log_of_root(wildcards):
    """The log of the layer job a trailer belongs to."""
    layer = run_plan().layer_by_root(wildcards.root)
    return f"{LOGS}/layer/{layer.skycell}/{layer.name[:-5]}.log"


def exposure_level():
    return bool(config.get("products", {}).get("exposure_level", False))


def layer_products(layer):
    """A sky-cell layer's product, trailer, (exposure_level) its exposure-level products,
    in drizzle order, and (quality_testing) its quality files."""
    where = f"{OUT}/skycells/{layer.skycell}"
    out = [f"{where}/{layer.name}", f"{where}/{layer.root}_trl.txt"]
    if exposure_level():
        out += [f"{where}/{job.name}" for job in run_plan().jobs(layer.name)]
    out += quality_products(layer)  # rules/quality.smk: none unless quality_testing
    return out


def products_of_skycell(skycell):
    """Every product of a sky cell, in plan order."""
    return [p for layer in run_plan().layers(skycell) for p in layer_products(layer)]


@planned(list)
def skycell_products(wildcards):
    return products_of_skycell(wildcards.skycell)


@planned(str)
def poller_text(wildcards):
    return run_plan().poller(wildcards.skycell)


def final_outputs(wildcards=None):
    """The final targets: every layer product, trailer and manifest of the plan."""
    targets = [f"{OUT}/screen/accepted.ecsv", f"{OUT}/screen/rejected.ecsv",
               f"{OUT}/plan/dropped.ecsv"]
    for cell in run_plan().skycells:
        targets.append(f"{OUT}/skycells/{cell.name}/{cell.name}_manifest.txt")
        if align_enabled():
            targets.append(f"{OUT}/skycells/{cell.name}/{cell.name}_align.ecsv")
        targets += products_of_skycell(cell.name)
    targets += mosaic_outputs()
    targets += cutout_outputs()
    targets += psf_outputs()  # rules/psf.smk; none by default
    targets += preview_outputs()  # rules/report.smk
    targets += mast_outputs()
    return targets


def summary_message():
    """The few lines printed when a run succeeds: what was made, and where."""
    cells = run_plan().skycells
    nlayers = len(run_plan().layers())
    lines = [f"mvmflow: {nlayers} layer product{'s' if nlayers != 1 else ''} in "
             f"{len(cells)} sky cell{'s' if len(cells) != 1 else ''} under {OUT}/skycells/"]
    if mosaic_outputs():
        lines.append(f"mvmflow: custom mosaic in {OUT}/mosaic/")
    if cutout_outputs():
        lines.append(f"mvmflow: cutouts in {OUT}/cutouts/")
    lines.append(f"mvmflow: screening report (rejected inputs and why) in {OUT}/screen/, "
                 f"per-job logs in {LOGS}/")
    lines += mast_summary()
    if align_enabled():
        from mvmflow.aligned import alignment_warnings

        dirs = [d for d in glob.glob(f"{OUT}/align/align-*") if os.path.isdir(d)]
        lines += [f"mvmflow: {w}" for w in alignment_warnings(sorted(dirs))]
    return "\n".join(lines)


def mast_summary():
    """The summary's lines about files of a region run that did not arrive."""
    from mvmflow.archive.table import read_missing

    path = f"{OUT}/mast/missing.ecsv"
    if not ARCHIVE_MODE or not os.path.exists(path):
        return []
    missing = read_missing(path)
    if not missing:
        return []
    names = ", ".join(name for name, _ in missing[:5]) + (", ..." if len(missing) > 5 else "")
    return [f"mvmflow: {len(missing)} file{'s' if len(missing) != 1 else ''} from MAST not "
            f"processed ({names}): see {path}"]


# ---- sky groups


@planned(list)
def sky_partials(wildcards):
    """Every fine partial of a sky group, over all its sky cells, in plan order."""
    plan = run_plan()
    return [p for layer in plan.sky_group_layers(wildcards.group)
            for p in plan.partials(layer.name, OUT, final=False)]


@planned(dict)
def sky_params(wildcards):
    return run_plan().sky_params(wildcards.group)


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


def _align_groups_file():
    """({group: [input keys]}, {input key: group}) (after the align_groups checkpoint)."""
    path = checkpoints.align_groups.get().output[0]
    key = (path, os.path.getmtime(path))
    if key not in _GROUPS_CACHE:
        groups = read_groups(path)
        _GROUPS_CACHE.clear()
        _GROUPS_CACHE[key] = (groups, {k: g for g, keys in groups.items() for k in keys})
    return _GROUPS_CACHE[key]


def align_groups():
    """{group: [input keys]} (after the align_groups checkpoint)."""
    return _align_groups_file()[0]


def group_of(key):
    try:
        return _align_groups_file()[1][key]
    except KeyError:
        raise ValueError(f"{key} is in no alignment group") from None


def group_exposures(wildcards):
    table = input_table()
    return [table[k] for k in align_groups()[wildcards.agroup]]


def group_catalogs(wildcards):
    return [f"{OUT}/catalogs/{k}.ecsv" for k in align_groups()[wildcards.agroup]]


def group_records(wildcards):
    return records_of(align_groups()[wildcards.agroup])


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


@planned(list)
def skycell_keys(wildcards):
    """Input keys of every exposure planned into a sky cell."""
    return run_plan().skycell_keys(wildcards.skycell)


@planned(list)
def skycell_align_dirs(wildcards):
    return align_dirs_of(run_plan().skycell_keys(wildcards.skycell))


# ---- custom mosaic

MOSAIC = config.get("mosaic", {})


def mosaic_enabled():
    return bool(MOSAIC.get("enabled", False))


@planned(dict)
def mosaic_layer_entry(wildcards):
    return run_plan().layer_entry(_mlayer(wildcards), mosaic=True)


@planned(dict)
def mosaic_params(wildcards):
    return run_plan().layer_params(_mlayer(wildcards), mosaic=True)


@planned(dict)
def mosaic_map_params(wildcards):
    return run_plan().map_params(_mlayer(wildcards), mosaic=True)


@planned(dict)
def mosaic_map_frame(wildcards):
    return run_plan().map_frame(_mlayer(wildcards), wildcards.exposure, mosaic=True)


@planned(list)
def mosaic_members(wildcards):
    return run_plan().members(_mlayer(wildcards), mosaic=True)


@planned(list)
def mosaic_crmasks(wildcards):
    """The cosmic-ray masks the sky-cell layers of the same key found for this exposure."""
    return [f"{OUT}/cr/{job.skycell}/{job.layer[:-5]}/{wildcards.exposure}_crmask.fits"
            for job in run_plan().cr_mask_jobs(_mlayer(wildcards), wildcards.exposure)]


@planned(list)
def mosaic_tile_box(wildcards):
    return run_plan().tile(_mlayer(wildcards), wildcards.tile, mosaic=True)


@planned(list)
def mosaic_tile_partials(wildcards):
    return run_plan().tile_partials(_mlayer(wildcards), wildcards.tile, OUT, mosaic=True)


@planned(list)
def mosaic_tiles(wildcards):
    return [f"{OUT}/mosaic/tiles/{wildcards.mroot}_{wildcards.ptype}/{t}.fits"
            for t in run_plan().tile_names(_mlayer(wildcards), mosaic=True)]


@planned(1000)
def mosaic_tile_mem(wildcards):
    return run_plan().tile_mem_mb(_mlayer(wildcards), mosaic=True)


@planned(list)
def mosaic_sky_file(wildcards):
    return f"{OUT}/sky/{run_plan().sky_group(_mlayer(wildcards), mosaic=True)}.json"


@planned(list)
def mosaic_records(wildcards):
    return records_of(run_plan().member_keys(_mlayer(wildcards), mosaic=True))


@planned(list)
def mosaic_headers(wildcards):
    return headers_of(run_plan().member_keys(_mlayer(wildcards), mosaic=True))


@planned(list)
def mosaic_align_dirs(wildcards):
    return align_dirs_of(run_plan().member_keys(_mlayer(wildcards), mosaic=True))


@planned(list)
def mosaic_product_of_root(wildcards):
    return f"{OUT}/mosaic/{run_plan().layer_by_root(wildcards.mroot, mosaic=True).name}"


@planned(str)
def mosaic_log_of_root(wildcards):
    layer = run_plan().layer_by_root(wildcards.mroot, mosaic=True)
    return f"{LOGS}/mosaic_layer/{layer.name[:-5]}.log"


def mosaic_products(wildcards=None):
    """Every mosaic product and trailer, in the reference's layer order."""
    out = []
    for layer in run_plan().mosaic_layers:
        out.append(f"{OUT}/mosaic/{layer.name}")
        out.append(f"{OUT}/mosaic/{layer.root}_trl.txt")
    return out


def mosaic_outputs():
    mosaic = run_plan().mosaic
    if not mosaic_enabled() or mosaic is None:
        return []
    return mosaic_products() + [f"{OUT}/mosaic/{mosaic.manifest}"]


# ---- cutouts


def cutout_id(box):
    """``<coords>_<w>x<h>``: the directory of one configured cutout box."""
    from mvmflow.names import coord_token, cutout_size_arcsec

    w, h = cutout_size_arcsec(box["size"])
    return f"{coord_token(box['ra'], box['dec'])}_{w:g}x{h:g}"


def cutout_box_of(wildcards):
    for box in config.get("cutouts", []):
        if cutout_id(box) == wildcards.cutid:
            return box
    raise ValueError(f"{wildcards.cutid} is not a configured cutout")


def cutout_sources(wildcards):
    """The products a cutout box cuts: its own ``products`` (a glob or a list of files, e.g.
    the archive's MVM products), else every sky-cell layer product (and exposure-level
    product) of the plan."""
    box = cutout_box_of(wildcards)
    if box.get("products"):
        return given_products(box["products"])
    return [p for cell in run_plan().skycells for p in products_of_skycell(cell.name)
            if p.endswith(".fits")]


def cutout_plan(wildcards):
    """The plan, for a box that cuts the run's own products (none for given products)."""
    return [] if cutout_box_of(wildcards).get("products") else PLAN_INPUT


def given_products(spec):
    """The files of a ``cutouts[].products`` value (a glob pattern or a list of files)."""
    files = sorted(glob.glob(spec, recursive=True)) if isinstance(spec, str) else list(spec)
    if not files:
        sys.exit(f"Config error: cutouts.products: {spec!r} matches no file")
    return [str(Path(f)) for f in files]


def cutout_outputs():
    out = []
    for box in config.get("cutouts", []):
        out.append(f"{OUT}/cutouts/{cutout_id(box)}/cutouts")
        if config.get("combine", {}).get("enabled", True):
            out.append(f"{OUT}/cutouts/{cutout_id(box)}/combined")
    return out


# PSF databases (rules/psf.smk)


def psf_entries():
    """{name: entry} of the configured PSF-database queries (name default <detector>-<n>)."""
    out = {}
    for n, entry in enumerate(config.get("psf") or [], 1):
        name = entry.get("name") or f"{str(entry['detector']).lower()}-{n}"
        if name in out:
            sys.exit(f"Config error: psf: two entries named {name!r}")
        out[name] = entry
    return out


def psf_outputs():
    """The query table and the cutout directory of every entry ([] by default)."""
    return [f"{OUT}/psf/{name}/{what}" for name in psf_entries()
            for what in ("sources.ecsv", "cutouts")]


def psf_entry_of(wildcards):
    return psf_entries()[wildcards.psfid]


# ---- quality files (rules/quality.smk; quality_testing)


def quality_enabled():
    return bool(config.get("quality_testing", False))


def quality_products(layer):
    """The quality files of a sky-cell layer: its catalogue and the two JSON files (fine
    layers only, as the reference's; none with quality_testing off)."""
    if not quality_enabled() or layer.scale != "fine" or not layer.skycell:
        return []
    where = f"{OUT}/skycells/{layer.skycell}"
    name = layer.layer_name
    return [f"{where}/{name.point_catalog}", f"{where}/{name.qa_wcsname}",
            f"{where}/{name.qa_crossmatch}"]


def _qa_layer(wildcards):
    return run_plan().layer_by_root(wildcards.root)


@planned(list)
def qa_product(wildcards):
    layer = _qa_layer(wildcards)
    return f"{OUT}/skycells/{layer.skycell}/{layer.name}"


@planned(list)
def qa_records(wildcards):
    return records_of(run_plan().member_keys(_qa_layer(wildcards).name))


@planned(list)
def qa_align_dirs(wildcards):
    return align_dirs_of(run_plan().member_keys(_qa_layer(wildcards).name))


@planned(list)
def qa_member_keys(wildcards):
    return list(run_plan().member_keys(_qa_layer(wildcards).name))


@planned(list)
def qa_member_exposures(wildcards):
    table = input_table()
    return [table[k] for k in qa_member_keys(wildcards)]


@planned(list)
def qa_member_catalogs(wildcards):
    return [f"{OUT}/catalogs/{k}.ecsv" for k in qa_member_keys(wildcards)]


@planned(list)
def qa_dropped(wildcards):
    return [d.to_dict() for d in _qa_layer(wildcards).dropped]


@planned(list)
def qa_visits(wildcards):
    return sorted({name[:6] for name, _ in run_plan().members(_qa_layer(wildcards).name)})


def _qa_neighbours(wildcards):
    plan = run_plan()
    return neighbour_layers(plan.layers(), _qa_layer(wildcards))


@planned(list)
def qa_neighbour_products(wildcards):
    return [f"{OUT}/skycells/{n.skycell}/{n.name}" for n in _qa_neighbours(wildcards)]


@planned(list)
def qa_neighbour_catalogs(wildcards):
    return [f"{OUT}/skycells/{n.skycell}/{n.layer_name.point_catalog}"
            for n in _qa_neighbours(wildcards)]


# Previews and the report (rules/report.smk)

PREVIEWS = f"{OUT}/previews"
# a layer's key in its name, hst_<skycell>_<key>_<ptype>.fits: not an exposure-level
# product's (which ends in -<ipppssoo>)
LAYER_KEY = r"[A-Za-z0-9_.\-]+(?<!-[a-z][a-z0-9]{7})"


def previews_enabled():
    return bool(config.get("products", {}).get("previews", True))


def _preview_stem(cell, layer):
    """``<outdir>/previews/<skycell>/<layer name without .fits>``."""
    return f"{PREVIEWS}/{cell}/{layer.name[:-5]}"


@planned(list)
def preview_stats(wildcards):
    """The statistics of every previewed layer: sky cells, then the custom mosaic."""
    out = [f"{_preview_stem(cell.name, layer)}_stats.json" for cell in run_plan().skycells
           for layer in run_plan().layers(cell.name)]
    if mosaic_outputs():
        out += [f"{_preview_stem('mosaic', layer)}_stats.json"
                for layer in run_plan().mosaic_layers]
    return out


@planned(dict)
def skycell_frames(wildcards):
    return {scale: f.to_dict() for scale, f in run_plan().skycell(wildcards.skycell).frames.items()}


@planned(list)
def skycell_records(wildcards):
    return records_of(run_plan().skycell_keys(wildcards.skycell))


def preview_outputs():
    """The report's files of the run ([] with products.previews off)."""
    if not previews_enabled():
        return []
    out = [f"{PREVIEWS}/screening.html", f"{PREVIEWS}/layers.html"]
    for cell in run_plan().skycells:
        out.append(f"{PREVIEWS}/{cell.name}/{cell.name}_footprints.png")
        if align_enabled():
            out.append(f"{PREVIEWS}/{cell.name}/{cell.name}_align.html")
        for layer in run_plan().layers(cell.name):
            out += [f"{_preview_stem(cell.name, layer)}_{kind}.png"
                    for kind in ("preview", "coverage")]
    if mosaic_outputs():
        out += [f"{_preview_stem('mosaic', layer)}_{kind}.png"
                for layer in run_plan().mosaic_layers for kind in ("preview", "coverage")]
    return out
