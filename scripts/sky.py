"""Rule sky: relative sky offsets of a layer group, shared by all its sky cells."""

import json
import logging
from pathlib import Path

from mvmflow.resample import read_partial
from mvmflow.skygroup import group_sky
from mvmflow.workflow import atomic_path, rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    partials = [read_partial(p) for p in snakemake.input.partials]
    names = sorted({p.filename for p in partials})
    offsets = {name: 0.0 for name in names}
    if snakemake.params.sky["skysub"] and len(names) > 1:
        match = group_sky(partials, snakemake.params.sky["skystat"])
        offsets.update({k: float(v) for k, v in match.offsets.items()})
        for line in match.lines():
            log.info("sky: %s", line)
    else:
        log.info("no sky matching for this group (single exposure or n = 1 everywhere)")
    with atomic_path(snakemake.output[0]) as tmp:
        Path(tmp).write_text(json.dumps({"unit": "count rate per 0.04 arcsec pixel",
                                         "offsets": offsets}, indent=1, sort_keys=True))
