"""Rule qa_crossmatch: <layer>_mvm_overlap_crossmatch.json, the layer's catalogue matched with
the overlapping layers of neighbouring sky cells (mvmflow.quality)."""

import logging

from mvmflow.quality import crossmatch_report, write_diagnostic
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    neighbours = list(zip(snakemake.input.neighbours, snakemake.input.neighbour_catalogs,
                          strict=True))
    diag = crossmatch_report(snakemake.input.product, snakemake.input.catalog, neighbours,
                             visits=snakemake.params.visits)
    write_diagnostic(diag, snakemake.output[0])
    log = logging.getLogger("mvmflow")
    for row in diag["data"]["summary"]["data"]["regions"]:
        log.info("%s vs %s: %d matched, median dRA %s mas, dDec %s mas, dmag %s",
                 snakemake.output[0], row["comparison layer"], row["matched"],
                 row["median dRA cos(dec) [mas]"], row["median dDec [mas]"], row["median dmag"])
    if not neighbours:
        log.info("%s: %s", snakemake.output[0], diag["data"]["summary"]["data"]["note"])
