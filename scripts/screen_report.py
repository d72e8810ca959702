"""Rule screen_report: collect the records into accepted.ecsv and rejected.ecsv."""

import logging

from mvmflow.inputs import read_skipped
from mvmflow.screen import collect_records
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    accepted, rejected = collect_records(
        list(snakemake.input.records), snakemake.output.accepted, snakemake.output.rejected,
        skipped=read_skipped(snakemake.input.inputs),
    )
    log = logging.getLogger("mvmflow")
    log.info("%d exposures accepted, %d rejected", len(accepted), len(rejected))
    for row in rejected:
        log.warning("rejected %s: %s", row["file"], row["reason"])
