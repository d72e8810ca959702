"""Checkpoint plan: sky cells, layers, frames, tiles, drizzle jobs and per-layer parameters,
written as the run plan (mvmflow.runplan)."""

import logging

from astropy.table import Table

from mvmflow.aligned import load_record
from mvmflow.crreject import cr_mode_applies
from mvmflow.mosaic import plan_mosaic
from mvmflow.params import layer_parameters, load_defaults, resolve_table
from mvmflow.plan import plan_skycells
from mvmflow.runplan import RunPlan
from mvmflow.switches import resolve_switches
from mvmflow.workflow import atomic_path, rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    switches = resolve_switches(snakemake.params.switches)
    table = resolve_table(load_defaults(snakemake.input.detectors), snakemake.params.detectors)
    records = [load_record(p, snakemake.input.align) for p in snakemake.input.records]
    plan = plan_skycells(
        records,
        layer_method=snakemake.params.layer_method,
        skycells=snakemake.params.skycells or None,
        exp_limit=snakemake.params.exp_limit,
        include_small=switches["include_small"],
        only_cte=switches["only_cte"],
        tile_size=snakemake.params.tile_size,
        mixed_frames=snakemake.params.mixed_frames,
    )
    params = {}
    flagged = {r.filename: r.cr_flagged for r in records}
    modes = snakemake.params.cosmic_rays
    for layer in plan.layers:
        detkey = f"{layer.instrument}_{layer.detector}"
        lp = layer_parameters(table, detkey, layer.filter, layer.coverage.meannexp)
        mode = modes.get(detkey, modes.get("default", "auto"))
        lp["cosmic_rays"] = cr_mode_applies(
            mode, [flagged.get(m.filename, False) for m in layer.members],
            layer.coverage.maxnexp)
        params[layer.name] = lp
        log.info("layer %s: %d members, n=%d (%s), cosmic-ray rejection %s (%s), %d tiles",
                 layer.name, len(layer.members), layer.coverage.n, lp["set"],
                 "on" if lp["cosmic_rays"] else "off", mode, len(layer.tiles))
    mosaic, mosaic_params = None, {}
    mopts = snakemake.params.mosaic
    if mopts.get("enabled"):
        mosaic = plan_mosaic(
            records, plan, prefix=mopts.get("prefix"),
            projection_cell=mopts.get("projection_cell", "auto"),
            scale=mopts.get("scale", "auto"), tile_size=mopts.get("tile_size", 4096),
            layer_method=snakemake.params.layer_method, exp_limit=snakemake.params.exp_limit,
            include_small=switches["include_small"], only_cte=switches["only_cte"],
            mixed_frames=snakemake.params.mixed_frames)
        for layer in mosaic.layers:
            detkey = f"{layer.instrument}_{layer.detector}"
            lp = layer_parameters(table, detkey, layer.filter, layer.coverage.meannexp)
            # cosmic rays: the masks of the sky-cell layers of the same key, where made
            lp["cosmic_rays"] = any(params[n]["cosmic_rays"] for n in layer.skycell_layers)
            mosaic_params[layer.name] = lp
            log.info("mosaic layer %s: %d members, n=%d (%s), %d tiles", layer.name,
                     len(layer.members), layer.coverage.n, lp["set"], len(layer.tiles))
        for note in mosaic.notes:
            log.warning("mosaic: %s", note)
        log.info("mosaic: prefix %s, projection cell p%04d (observations' centre %.6f %.6f)",
                 mosaic.prefix, mosaic.projection_cell, *mosaic.center)
    for note in plan.notes + [n for sc in plan.skycells for n in sc.notes]:
        log.warning(note)
    rows = []
    for sc in plan.skycells:
        for d in sc.dropped:
            rows.append((sc.name, "(every layer)", d.filename, d.reason))
        for layer in sc.layers:
            for d in layer.dropped:
                rows.append((sc.name, layer.name, d.filename, d.reason))
    for row in rows:
        log.warning("%s: %s left out of %s: %s", row[0], row[2], row[1], row[3])
    table = Table(rows=rows or None, names=("skycell", "layer", "file", "reason"),
                  dtype=(str, str, str, str))
    with atomic_path(snakemake.output.dropped) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    RunPlan(plan, params, mosaic=mosaic, mosaic_params=mosaic_params,
            switches=switches).save(snakemake.output.plan)
    log.info("%d sky cells, %d layers, %d drizzle jobs", len(plan.skycells),
             len(plan.layers), len(plan.jobs))
