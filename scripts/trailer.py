"""Rules trailer and mosaic_trailer: a product's summary and log, as <layer>_trl.txt."""

from pathlib import Path

from astropy.io import fits

from mvmflow.products import write_trailer
from mvmflow.provenance import trailer_lines
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    product = Path(snakemake.input.product)
    layer_log = Path(snakemake.params.layer_log)
    log_text = layer_log.read_text() if layer_log.exists() else None
    write_trailer(snakemake.output[0], product.name,
                  trailer_lines(product.name, fits.getheader(product, 0), log_text))
