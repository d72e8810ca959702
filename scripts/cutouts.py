"""Rule cutouts: cut every layer product overlapping one configured box."""

import logging
import shutil
from pathlib import Path

from mvmflow.cutouts import make_cutouts
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    box = snakemake.params.box
    out = Path(snakemake.output[0])
    # built beside its final name and renamed whole: a killed job leaves no partial directory
    # that a resumed run would take as done (docs/conventions.md, "Files written")
    final, out = out, out.with_name(f".{out.name}.part")
    shutil.rmtree(out, ignore_errors=True)  # a killed run's leftovers
    out.mkdir(parents=True)
    written, failed = make_cutouts(snakemake.input.products, box["ra"], box["dec"],
                                   box["size"], out)
    for path in written:
        log.info("cutout %s", path.name)
    for path, reason in failed:
        log.error("could not cut %s: %s", path, reason)
    log.info("%d cutouts at RA %.6f Dec %.6f (%s arcsec) from %d products, %d failed",
             len(written), box["ra"], box["dec"], box["size"], len(snakemake.input.products),
             len(failed))
    out.rename(final)
