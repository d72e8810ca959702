"""Rule sky: relative sky offsets of a layer group, shared by all its sky cells."""

import json
import logging
from pathlib import Path

from mvmflow.partials import PartialFile
from mvmflow.skygroup import group_sky_files
from mvmflow.workflow import atomic_path, rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    paths = list(snakemake.input.partials)
    names = sorted({PartialFile.open(p).filename for p in paths})
    offsets = {name: 0.0 for name in names}
    if snakemake.params.sky["skysub"] and len(names) > 1:
        # reads each overlap from the files when it is measured: memory is bounded by one
        # pair of exposures, not by the group
        match = group_sky_files(paths, snakemake.params.sky["skystat"])
        offsets.update({k: float(v) for k, v in match.offsets.items()})
        for line in match.lines():
            log.info("sky: %s", line)
    else:
        log.info("no sky matching for this group (single exposure or n = 1 everywhere)")
    with atomic_path(snakemake.output[0]) as tmp:
        Path(tmp).write_text(json.dumps({"unit": "count rate per 0.04 arcsec pixel",
                                         "offsets": offsets}, indent=1, sort_keys=True))
