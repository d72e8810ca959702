"""Rule inputs: resolve the `inputs` config value to the table of input exposures."""

import logging

from mvmflow.inputs import resolve_inputs, write_input_table
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    demo_truth = snakemake.input[0] if snakemake.params.spec == "demo" else None
    table = resolve_inputs(snakemake.params.spec, demo_truth=demo_truth)
    write_input_table(table, snakemake.output[0])
    logging.getLogger("mvmflow").info("%d input exposures", len(table))
