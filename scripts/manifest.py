"""Rule manifest: the sky cell's <skycell>_manifest.txt, products in production order."""

from pathlib import Path

from mvmflow.products import write_manifest
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    write_manifest(snakemake.output[0], [Path(p).name for p in snakemake.input.products])
