"""Rules report_screening, report_align and report_layers: the report's HTML tables."""

import json
from pathlib import Path

from mvmflow.preview import align_table, layers_table, screening_table
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    kind = snakemake.params.kind
    if kind == "screening":
        screening_table(snakemake.input.accepted, snakemake.input.rejected, snakemake.output[0])
    elif kind == "align":
        align_table(snakemake.input[0], snakemake.output[0], snakemake.wildcards.skycell)
    else:
        stats = [json.loads(Path(p).read_text()) for p in snakemake.input.stats]
        layers_table(stats, snakemake.output[0], title="Layers of the run")
