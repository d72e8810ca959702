"""Rule layer_catalog: the point-source catalogue of a fine layer (mvmflow.layercat)."""

from mvmflow.layercat import make_layer_catalog
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    make_layer_catalog(snakemake.input.product, snakemake.output[0])
