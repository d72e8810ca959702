"""Rule cr_median (reduce): the median image of a layer's separate drizzles, in strips."""

import logging

from mvmflow.crreject import exposure_readnoise
from mvmflow.grid import Frame
from mvmflow.median import median_layer
from mvmflow.skygroup import read_sky_offsets
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    layer, params = snakemake.params.layer, snakemake.params.drizzle
    frame = Frame(**layer["frame"])
    members = {m["filename"]: m["file"] for m in layer["members"]}
    sky = {}
    if params["skysub"]:  # the layer's own sky offsets, as the final sum uses them
        sky = read_sky_offsets(snakemake.input.sky, members, frame.scale)
    readnoise = {name: exposure_readnoise(path) for name, path in members.items()}
    info = median_layer(snakemake.input.partials, frame, params, snakemake.output[0], sky=sky,
                        readnoise=readnoise, threads=snakemake.threads)
    logging.getLogger("mvmflow").info("%s: median of %d exposures: %s", layer["name"],
                                      len(snakemake.input.partials), info)
