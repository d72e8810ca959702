"""Rule combine_cutouts: combine one position's cutouts per instrument/detector/filter/scale."""

import logging
from pathlib import Path

from mvmflow.cutcombine import combine_cutouts
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    out = Path(snakemake.output[0])
    out.mkdir(parents=True, exist_ok=True)
    cutouts = sorted(Path(snakemake.input[0]).glob("hst_cutout_*.fits"))
    written, skipped = combine_cutouts(cutouts, out, method=snakemake.params.method)
    for path in written:
        log.info("combined %s", Path(path).name)
    for what, reason in skipped:
        log.warning("not combined: %s: %s", what, reason)
    log.info("%d combined cutouts from %d cutouts (%s)", len(written), len(cutouts),
             snakemake.params.method)
