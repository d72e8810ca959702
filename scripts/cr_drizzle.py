"""Rule cr_drizzle (map): one exposure's cosmic rays against its layer's median (mask file),
then its final drizzle without them (partial)."""

import logging

from mvmflow.aligned import load_solution
from mvmflow.crreject import cr_mask_and_drizzle
from mvmflow.grid import Frame
from mvmflow.partials import PartialFile, write_partial
from mvmflow.skygroup import read_sky_offsets
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    params = snakemake.params.layer
    partial = PartialFile.open(snakemake.input.partial)
    name, sky = partial.filename, 0.0
    if params["skysub"]:
        sky = read_sky_offsets(snakemake.input.sky, [name], partial.frame.scale).get(name, 0.0)
    solution = load_solution(snakemake.wildcards.exposure, snakemake.input.align)
    info, final = cr_mask_and_drizzle(
        snakemake.input.exposure, snakemake.input.median, Frame(**snakemake.params.frame),
        params, snakemake.params.drizzle, snakemake.output.mask, solution=solution, sky=sky,
        partial=partial)
    write_partial(final, snakemake.output.partial)
    logging.getLogger("mvmflow").info("%s: %s -> %s", name, info, snakemake.output.partial)
