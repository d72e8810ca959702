"""Rule drizzle (map): drizzle one exposure onto a layer frame and write its partial."""

import logging

from mvmflow.grid import Frame
from mvmflow.resample import drizzle_file, write_partial
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    frame = Frame(**snakemake.params.layer["frame"])
    partial = drizzle_file(snakemake.input.exposure, frame, snakemake.params.drizzle)
    write_partial(partial, snakemake.output[0])
    logging.getLogger("mvmflow").info(
        "%s -> %s: box %s", snakemake.input.exposure, snakemake.params.layer["name"],
        partial.window if not partial.empty else "empty",
    )
