"""Rule layer (reduce): sky-match and sum the partials of a layer; write the product."""

import logging

from mvmflow.aligned import load_record
from mvmflow.combine import combine_partials
from mvmflow.grid import Frame
from mvmflow.headers import member_headers
from mvmflow.names import LayerName
from mvmflow.products import write_layer
from mvmflow.resample import read_partial, read_partial_header
from mvmflow.skygroup import read_sky_offsets
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    layer = snakemake.params.layer
    params = snakemake.params.drizzle
    frame = Frame(**layer["frame"])
    paths = list(snakemake.input.partials)  # drizzle order
    sky = {}
    if params["skysub"]:
        names = [read_partial_header(p)["FILENAME"] for p in paths]
        sky = read_sky_offsets(snakemake.input.sky, names, frame.scale)
        for name, value in sorted(sky.items()):
            log.info("sky offset %s: %.6g e-/s per pixel", name, value)
    # one partial in memory at a time, besides the layer's sums
    arrays = combine_partials((read_partial(p) for p in paths), frame, sky)
    records = [load_record(p, snakemake.input.align) for p in snakemake.input.records]
    headers = member_headers(records, snakemake.input.headers)  # read by the screen job
    write_layer(snakemake.output[0], arrays, frame, LayerName.parse(layer["name"]), records,
                params, input_headers=headers)
    log.info("wrote %s (%d x %d, %d inputs)", layer["name"], frame.nx, frame.ny, len(paths))
