"""Rule mosaic_layer: write a mosaic layer product from its tiles, one tile at a time."""

import logging

from mvmflow.aligned import load_record
from mvmflow.grid import Frame
from mvmflow.headers import member_headers
from mvmflow.names import LayerName
from mvmflow.skygroup import read_sky_offsets
from mvmflow.tiles import write_tiled_layer
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    layer, params = snakemake.params.layer, snakemake.params.drizzle
    frame = Frame(**layer["frame"])
    files = [name for name, _ in snakemake.params.members]
    exptimes = [float(t) for _, t in snakemake.params.members]
    offsets = {}
    if params["skysub"]:
        offsets = read_sky_offsets(snakemake.input.sky, files, frame.scale)
    sky = [offsets.get(f, 0.0) for f in files]
    for name, value in zip(files, sky, strict=True):
        log.info("sky offset %s: %.6g e-/s per pixel", name, value)
    records = [load_record(p, snakemake.input.align) for p in snakemake.input.records]
    headers = member_headers(records, snakemake.input.headers)  # read by the screen job
    tiles = list(zip(layer["tiles"], snakemake.input.tiles, strict=True))
    write_tiled_layer(snakemake.output[0], frame, tiles, LayerName.parse(layer["name"]),
                      records, params, exptimes, sky, files, input_headers=headers)
    log.info("wrote %s (%d x %d, %d inputs, %d tiles)", layer["name"], frame.nx, frame.ny,
             len(files), len(tiles))
