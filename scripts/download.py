"""Rule download: one file of the product table into the mirror, verified; a file that
cannot be fetched is recorded as failed (the run goes on without it)."""

import logging

from mvmflow.archive.download import DownloadError, Transfer, fetch
from mvmflow.archive.table import write_record
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    p = snakemake.params
    f = p.file
    transfer = Transfer(f["url"], f["dest"], f["size"], f["checksum"])
    try:
        fetch(transfer, retries=p.retries, backoff=p.backoff, timeout=p.timeout)
    except DownloadError as error:
        log.warning("%s", error)
        write_record(snakemake.output[0], f["filename"], None, error=str(error))
    else:
        log.info("%s: in the mirror at %s", f["filename"], f["dest"])
        write_record(snakemake.output[0], f["filename"], f["dest"])
