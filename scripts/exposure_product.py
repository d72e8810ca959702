"""Rule exposure_product: one exposure's partial of a layer as a product on the layer frame,
reduced and written tile by tile in this job (mvmflow.tiles.reduce_layer)."""

import logging
from pathlib import Path

from mvmflow.aligned import load_record
from mvmflow.grid import Frame
from mvmflow.headers import member_headers
from mvmflow.names import LayerName
from mvmflow.partials import PartialFile
from mvmflow.skygroup import read_sky_offsets
from mvmflow.tiles import reduce_layer
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    params, layer = snakemake.params.drizzle, snakemake.params.layer
    frame = Frame.from_dict(layer["frame"])
    partial = PartialFile.open(snakemake.input.partial)
    sky = {}
    if params["skysub"]:  # the same offset as in the layer, so the products add up to it
        sky = read_sky_offsets(snakemake.input.sky, [partial.filename], frame.scale)
    record = load_record(snakemake.input.record, snakemake.input.align)
    headers = member_headers([record], [snakemake.input.headers])  # read by the screen job
    reduce_layer(snakemake.output[0], frame, layer["tiles"],
                 [(partial.filename, partial.exptime)], {partial.filename: partial.path},
                 LayerName.parse(Path(snakemake.output[0]).name), [record], params, sky,
                 input_headers=headers)
    logging.getLogger("mvmflow").info("wrote %s from %s", Path(snakemake.output[0]).name,
                                      partial.filename)
