"""Rule cr_mask (map): one exposure's cosmic rays against its layer's median, as a mask file."""

import json
import logging
from pathlib import Path

from mvmflow.aligned import load_solution
from mvmflow.crreject import cr_mask_exposure
from mvmflow.resample import read_partial_header
from mvmflow.skygroup import offsets_for_scale
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    params = snakemake.params.drizzle
    name = read_partial_header(snakemake.input.partial)["FILENAME"]
    sky = 0.0
    if params["skysub"]:
        group = json.loads(Path(snakemake.input.sky).read_text())["offsets"]
        scale = float(read_partial_header(snakemake.input.partial)["PSCALE"])
        sky = offsets_for_scale({name: group.get(name, 0.0)}, scale).get(name, 0.0)
    solution = load_solution(snakemake.wildcards.exposure, snakemake.input.align)
    info = cr_mask_exposure(snakemake.input.exposure, snakemake.input.median, None, params,
                            snakemake.output[0], solution=solution, sky=sky,
                            partial=snakemake.input.partial)
    logging.getLogger("mvmflow").info("%s: %s", name, info)
