# mvmflow: Hubble multi-visit mosaics (MVM) on the HAP sky-cell grid.
#
#   snakemake --cores 2                      run on the configured inputs (default: the demo)
#   snakemake --cores 2 --configfile my.yaml
#   snakemake --cores 2 --config outdir=out
#
# The rules live in rules/*.smk, their scripts in scripts/, the science in the mvmflow package.

import os
import sys

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version

from mvmflow.config import ConfigError, check_config
from mvmflow.integrity import OutdirError, hold_outdir, remove_leftovers, sweep
from mvmflow.names import custom_prefix
from mvmflow.runner import cancel_timers, start_server
from mvmflow.switches import resolve_switches

min_version("9.0")


DEFAULT_CONFIG = os.path.join(workflow.basedir, "config", "config.yaml")


configfile: DEFAULT_CONFIG


# `snakemake --report report.zip`: the previews, maps and tables of rules/report.smk
report: "report/workflow.rst"


# the schema (types, defaults, switch words as booleans) and the inputs value, checked now:
# a bad key or value stops the run here with one short line per problem, naming its source
if not workflow.modifier.skip_validation:
    try:
        check_config(
            config,
            os.path.join(workflow.basedir, "config", "schema.yaml"),
            default_file=DEFAULT_CONFIG,
            configfiles=workflow.config_settings.configfiles,
            overrides=workflow.config_settings.config,
        )
    except ConfigError as error:
        sys.exit(str(error))
# MVM_INCLUDE_SMALL, MVM_ONLY_CTE and MVM_QUALITY_TESTING override the config switches; a bad
# value, or a bad mosaic prefix, stops the run here too, before any work, in one line.
try:
    config.update(resolve_switches(config))
    if config.get("mosaic", {}).get("prefix"):
        custom_prefix(config["mosaic"]["prefix"])
except ValueError as error:
    sys.exit(f"Config error: {error}")
# One run per output directory, made (or a one-line error) before any job; sealed
# intermediates damaged since written are removed, so this run makes them again
# (mvmflow.integrity; docs/data_path.md, "Faults"). A dry run only looks: it takes nothing.
if workflow.is_main_process and not workflow.output_settings.dryrun:
    try:
        if hold_outdir(config["outdir"]) is not None:
            remove_leftovers(config["outdir"])  # no other writer is alive
    except OutdirError as error:
        sys.exit(f"mvmflow: {error}")
    for damaged in sweep(config["outdir"]):
        print(f"mvmflow: {damaged} was damaged after it was written (its size differs): "
              "removed, made again in this run", file=sys.stderr)
    # the jobs' fork server imports its libraries while Snakemake builds the DAG, not at the
    # first job (mvmflow.runner; docs/speed.md, "Job start-up"); a conda run starts its own
    if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        start_server(reuse_memory=config["reuse_memory"])


include: "rules/common.smk"


# Tiny bookkeeping jobs run where snakemake runs, never as cluster jobs (seconds of queueing
# for milliseconds of work); the archive's query and downloads are local too (rules/archive.smk,
# rules/psf.smk: compute nodes often have no network).
localrules:
    all,
    inputs,
    screen_report,
    align_groups,
    align_report,
    plan,
    poller,
    trailer,
    manifest,
    mosaic_trailer,
    mosaic_manifest,


wildcard_constraints:
    exposure=r"[A-Za-z0-9_.\-]+",
    skycell=r"skycell-p\d{4}x\d{2}y\d{2}",
    root=r"hst_[A-Za-z0-9_.\-]+",
    ipppssoo=r"[a-z][a-z0-9]{7}",
    ptype=r"dr[cz]",
    preset=r"[a-z0-9_]+",
    agroup=r"align-[a-z0-9]+",
    group=r"p\d{4}_[a-z0-9]+_[a-z0-9]+_[a-z0-9\-]+_[a-z0-9\-]+",
    mroot=r"[A-Za-z0-9][A-Za-z0-9_.+\-]*",
    tile=r"t\d{4}",
    cutid=r"ra\d+d\d+-dec[ns]\d+d\d+_[0-9.]+x[0-9.]+",


include: "rules/simulate.smk"
include: "rules/archive.smk"
include: "rules/inputs.smk"
include: "rules/screen.smk"
include: "rules/align.smk"
include: "rules/plan.smk"
include: "rules/drizzle.smk"
include: "rules/sky.smk"
include: "rules/layers.smk"
include: "rules/mosaic.smk"
include: "rules/cutouts.smk"
include: "rules/psf.smk"
include: "rules/quality.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs,


onsuccess:
    import gc

    from snakemake.exceptions import IncompleteCheckpointException

    cancel_timers()  # the scheduler's last 1 s timer would hold the exit (mvmflow.runner)
    # nothing of the run's objects is collected any more: the interpreter's exit then skips
    # walking them all (0.4-0.5 s; docs/speed.md, "What the runs spent outside the jobs")
    gc.freeze()

    try:
        print(summary_message())
    except IncompleteCheckpointException:  # a run of targets that need no plan (e.g. psf)
        pass


onerror:
    import gc

    cancel_timers()
    gc.freeze()
