"""Rules layer and mosaic_layer: a layer product, reduced and written tile by tile.

A sky-cell layer is reduced here, one tile at a time, from its partials
(mvmflow.tiles.reduce_layer); a mosaic layer's tiles are reduced by mosaic_tile jobs and
only written here (docs/data_path.md).
"""

import logging
from pathlib import Path

from mvmflow.aligned import load_record
from mvmflow.grid import Frame
from mvmflow.headers import member_headers
from mvmflow.names import LayerName
from mvmflow.skygroup import read_sky_offsets
from mvmflow.tiles import reduce_layer, write_tiled_layer
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    layer, params = snakemake.params.layer, snakemake.params.drizzle
    frame = Frame.from_dict(layer["frame"])
    members = [(name, float(t)) for name, t in snakemake.params.members]
    files = [name for name, _ in members]
    offsets = {}
    if params["skysub"]:
        offsets = read_sky_offsets(snakemake.input.sky, files, frame.scale)
    sky = [offsets.get(f, 0.0) for f in files]
    for name, value in zip(files, sky, strict=True):
        log.info("sky offset %s: %.6g e-/s per pixel", name, value)
    records = [load_record(p, snakemake.input.align) for p in snakemake.input.records]
    headers = member_headers(records, snakemake.input.headers)  # read by the screen job
    name = LayerName.parse(layer["name"])
    if "tiles" in snakemake.input.keys():  # a mosaic layer: tiles made by mosaic_tile jobs
        tiles = list(zip(layer["tiles"], snakemake.input.tiles, strict=True))
        write_tiled_layer(snakemake.output[0], frame, tiles, name, records, params,
                          [t for _, t in members], sky, files, input_headers=headers)
    else:
        partials = {Path(p).name: p for p in snakemake.input.partials}  # <exposure file>
        reduce_layer(snakemake.output[0], frame, layer["tiles"], members, partials, name,
                     records, params, offsets, input_headers=headers,
                     threads=snakemake.threads)
    log.info("wrote %s (%d x %d, %d inputs, %d tiles)", layer["name"], frame.nx, frame.ny,
             len(files), len(layer["tiles"]))
