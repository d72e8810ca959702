"""Rule simulate: write a simulated data set (exposures + truth) for a preset."""

import logging

from mvmflow.simulate import simulate
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    result = simulate(
        snakemake.wildcards.preset, snakemake.params.outdir, seed=snakemake.params.seed
    )
    logging.getLogger("mvmflow").info(
        "wrote %d exposures to %s", len(result.exposures), snakemake.params.outdir
    )
