"""Rule query: the product table of the configured region (the answer kept in the mirror
for the same region and URL, or a new query)."""

import logging

from mvmflow.archive.query import cached_query, parse_region
from mvmflow.archive.table import write_table
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    p = snakemake.params
    region = parse_region(p.region)
    table, kept = cached_query(region, p.url, p.cache, requery=p.requery)
    write_table(table, snakemake.output[0])
    statuses = [str(s).split(":")[0] for s in table["status"]]
    log.info("%s: %d files (%d to fetch, %d proprietary, %d skipped), %s", region.describe(),
             len(table), statuses.count("fetch"), statuses.count("proprietary"),
             statuses.count("skipped"),
             f"the answer kept from {table.meta.get('queried')}" if kept
             else f"asked {p.url}")
