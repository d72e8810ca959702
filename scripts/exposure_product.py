"""Rule exposure_product: one exposure's partial of a layer as a product on the layer frame."""

import logging
from pathlib import Path

from mvmflow.aligned import load_record
from mvmflow.combine import combine_partials
from mvmflow.grid import Frame
from mvmflow.headers import member_headers
from mvmflow.names import LayerName
from mvmflow.products import write_layer
from mvmflow.resample import read_partial
from mvmflow.skygroup import read_sky_offsets
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    params = snakemake.params.drizzle
    frame = Frame(**snakemake.params.layer["frame"])
    partial = read_partial(snakemake.input.partial)
    sky = {}
    if params["skysub"]:  # the same offset as in the layer, so the products add up to it
        sky = read_sky_offsets(snakemake.input.sky, [partial.filename], frame.scale)
    arrays = combine_partials([partial], frame, sky)
    record = load_record(snakemake.input.record, snakemake.input.align)
    headers = member_headers([record], [snakemake.input.headers])  # read by the screen job
    write_layer(snakemake.output[0], arrays, frame, LayerName.parse(snakemake.output[0]),
                [record], params, input_headers=headers)
    logging.getLogger("mvmflow").info("wrote %s from %s", Path(snakemake.output[0]).name,
                                      partial.filename)
