"""Rule catalog (map): the point sources of one exposure, as ECSV."""

import logging

from mvmflow.catalogs import make_catalog, read_catalog
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    make_catalog(snakemake.input.exposure, snakemake.output[0], snakemake.params.catalogs)
    logging.getLogger("mvmflow").info(
        "%s: %d sources", snakemake.input.exposure, len(read_catalog(snakemake.output[0])))
