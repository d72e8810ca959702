"""Rule cr_mask (map): one exposure's cosmic rays against its layer's median, as a mask file."""

import logging

from mvmflow.aligned import load_solution
from mvmflow.crreject import cr_mask_exposure
from mvmflow.partials import PartialFile
from mvmflow.skygroup import read_sky_offsets
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    params = snakemake.params.drizzle
    partial = PartialFile.open(snakemake.input.partial)
    name, sky = partial.filename, 0.0
    if params["skysub"]:
        sky = read_sky_offsets(snakemake.input.sky, [name], partial.frame.scale).get(name, 0.0)
    solution = load_solution(snakemake.wildcards.exposure, snakemake.input.align)
    info = cr_mask_exposure(snakemake.input.exposure, snakemake.input.median, None, params,
                            snakemake.output[0], solution=solution, sky=sky,
                            partial=snakemake.input.partial)
    logging.getLogger("mvmflow").info("%s: %s", name, info)
