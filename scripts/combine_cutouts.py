"""Rule combine_cutouts: combine one position's cutouts per instrument/detector/filter/scale."""

import logging
import shutil
from pathlib import Path

from mvmflow.cutcombine import combine_cutouts
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    out = Path(snakemake.output[0])
    # built beside its final name and renamed whole: a killed job leaves no partial directory
    # that a resumed run would take as done (docs/conventions.md, "Files written")
    final, out = out, out.with_name(f".{out.name}.part")
    shutil.rmtree(out, ignore_errors=True)  # a killed run's leftovers
    out.mkdir(parents=True)
    cutouts = sorted(Path(snakemake.input[0]).glob("hst_cutout_*.fits"))
    written, skipped = combine_cutouts(cutouts, out, method=snakemake.params.method)
    for path in written:
        log.info("combined %s", Path(path).name)
    for what, reason in skipped:
        log.warning("not combined: %s: %s", what, reason)
    log.info("%d combined cutouts from %d cutouts (%s)", len(written), len(cutouts),
             snakemake.params.method)
    out.rename(final)
