"""Rules layer_tile and mosaic_tile (reduce): sum the parts of a layer's partials that
reach one tile."""

import logging
from pathlib import Path

from mvmflow.grid import Frame
from mvmflow.skygroup import read_sky_offsets
from mvmflow.tiles import reduce_tile, write_tile
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    layer, box = snakemake.params.layer, snakemake.params.tile
    frame = Frame.from_dict(layer["frame"]).window(*box)
    members = [(name, float(t)) for name, t in snakemake.params.members]
    paths = {Path(p).name: p for p in snakemake.input.partials}  # <exposure file name>
    sky = {}
    if snakemake.params.drizzle["skysub"]:
        sky = read_sky_offsets(snakemake.input.sky, [m[0] for m in members], frame.scale)
    arrays = reduce_tile(frame, members, paths, sky)
    write_tile(snakemake.output[0], arrays, box)
    log.info("tile %s of %s: %d x %d at (%d, %d), %d of %d inputs reach it",
             snakemake.wildcards.tile, layer["name"], box[2], box[3], box[0], box[1],
             sum(arrays.used), len(members))
