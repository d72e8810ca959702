"""Rule cr_median (reduce): the median image of a layer's separate drizzles, in strips."""

import json
import logging
from pathlib import Path

from mvmflow.crreject import exposure_readnoise
from mvmflow.grid import Frame
from mvmflow.median import median_layer
from mvmflow.skygroup import offsets_for_scale
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    layer, params = snakemake.params.layer, snakemake.params.drizzle
    frame = Frame(**layer["frame"])
    members = {m["filename"]: m["file"] for m in layer["members"]}
    sky = {}
    if params["skysub"]:  # the layer's own sky offsets, as the final sum uses them
        group = json.loads(Path(snakemake.input.sky).read_text())["offsets"]
        sky = offsets_for_scale({k: v for k, v in group.items() if k in members}, frame.scale)
    readnoise = {name: exposure_readnoise(path) for name, path in members.items()}
    info = median_layer(snakemake.input.partials, frame, params, snakemake.output[0], sky=sky,
                        readnoise=readnoise)
    logging.getLogger("mvmflow").info("%s: median of %d exposures: %s", layer["name"],
                                      len(snakemake.input.partials), info)
