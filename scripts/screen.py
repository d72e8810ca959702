"""Rule screen: one record per exposure (accepted, or rejected with the reason), and its
headers file (the one read of the exposure's headers the products use)."""

import logging

from mvmflow.headers import write_exposure_headers
from mvmflow.records import write_record
from mvmflow.screen import screen_exposure
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    record = screen_exposure(snakemake.input.exposure)
    log = logging.getLogger("mvmflow")
    if record.accepted:
        log.info("%s accepted (%s %s %s)", record.filename, record.detkey, record.filter,
                 record.ptype)
    else:
        log.warning("%s rejected: %s", snakemake.input.exposure, record.reason)
    for warning in record.warnings:
        log.warning("%s: %s", snakemake.input.exposure, warning)
    # a rejected file whose headers cannot be read gets a file without headers
    write_exposure_headers(snakemake.input.exposure, snakemake.output.headers,
                           required=record.accepted)
    write_record(record, snakemake.output[0])
