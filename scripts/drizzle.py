"""Rules drizzle and mosaic_drizzle (map): drizzle one exposure onto a layer frame and write its
partial."""

import logging

from mvmflow.aligned import load_solution
from mvmflow.grid import Frame
from mvmflow.partials import write_partial
from mvmflow.resample import drizzle_exposure, load_chips
from mvmflow.solution import apply_solution
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    frame = Frame(**snakemake.params.frame)  # the exposure's box on the sky cell
    solution = load_solution(snakemake.wildcards.exposure, snakemake.input.align)
    chips = apply_solution(load_chips(snakemake.input.exposure), solution)
    # a mosaic layer that rejects cosmic rays: the masks its sky-cell layers found (rule
    # cr_drizzle)
    crmasks = snakemake.input.get("crmask", [])
    masks = None
    if crmasks:  # imported only here: 0.3 s of every other drizzle job's start (docs/speed.md)
        from mvmflow.crreject import union_cr_masks

        masks = union_cr_masks([crmasks] if isinstance(crmasks, str) else crmasks, chips)
    if masks is not None:
        log.info("cosmic rays masked: %d pixels", sum(int(m.sum()) for m in masks
                                                      if m is not None))
    partial = drizzle_exposure(chips, frame, snakemake.params.drizzle, cr_masks=masks)
    write_partial(partial, snakemake.output[0])
    log.info(
        "%s -> %s (%s): box %s", snakemake.input.exposure, snakemake.output[0],
        solution["wcsname"] if solution else "header WCS",
        partial.window if not partial.empty else "empty",
    )
