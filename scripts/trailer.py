"""Rule trailer: the layer's processing summary and log, as <layer>_trl.txt."""

from pathlib import Path

from astropy.io import fits

from mvmflow.products import write_trailer
from mvmflow.workflow import rule_logging

KEYS = ("NUMEXP", "NDRIZIM", "NPIXFRAC", "MEANEXPT", "MEDEXPT", "MEANNEXP", "MEDNEXP",
        "MEANWHT", "MEDWHT", "CFGDGST")

with rule_logging(snakemake.log[0]):
    product = Path(snakemake.input.product)
    header = fits.getheader(product, 0)
    lines = [f"{product.name}"] + [f"{k} = {header[k]}" for k in KEYS if k in header]
    layer_log = Path(snakemake.params.layer_log)
    if layer_log.exists():
        lines += ["", "Processing log:"] + layer_log.read_text().splitlines()
    write_trailer(snakemake.output[0], product.name, lines)
