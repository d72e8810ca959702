"""Rule qa_crossmatch: <layer>_mvm_overlap_crossmatch.json, the layer's catalogue matched with
the overlapping layers of neighbouring sky cells (mvmflow.quality)."""

import logging

from mvmflow.aligned import load_solution
from mvmflow.quality import crossmatch_report, write_diagnostic
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    neighbours = list(zip(snakemake.input.neighbours, snakemake.input.neighbour_catalogs,
                          strict=True))
    members = [(key, exposure, catalog, load_solution(key, snakemake.input.align))
               for key, exposure, catalog in zip(snakemake.params.members,
                                                 snakemake.input.exposures,
                                                 snakemake.input.catalogs, strict=True)]
    refcat = snakemake.input.refcat[0] if snakemake.input.refcat else None
    diag = crossmatch_report(snakemake.input.product, snakemake.input.catalog, neighbours,
                             visits=snakemake.params.visits, members=members, refcat=refcat)
    write_diagnostic(diag, snakemake.output[0])
    log = logging.getLogger("mvmflow")
    for row in diag["data"]["summary"]["data"]["visit pairs"]:
        log.info("%s: visits %s x %s (%.1f yr): %d matched, %d with reference motion, "
                 "median dRA %s mas, dDec %s mas (raw %s, %s)", snakemake.output[0],
                 *row["visits"], row["baseline [yr]"], row["matched"],
                 row["matched with reference motion"], row["median dRA cos(dec) [mas]"],
                 row["median dDec [mas]"], row["raw median dRA cos(dec) [mas]"],
                 row["raw median dDec [mas]"])
    if not diag["data"]["summary"]["data"]["visit pairs"]:
        log.info("%s: %s", snakemake.output[0], diag["data"]["summary"]["data"]["visit note"])
    for row in diag["data"]["summary"]["data"]["regions"]:
        log.info("%s vs %s: %d matched, median dRA %s mas, dDec %s mas, dmag %s",
                 snakemake.output[0], row["comparison layer"], row["matched"],
                 row["median dRA cos(dec) [mas]"], row["median dDec [mas]"], row["median dmag"])
    if not neighbours:
        log.info("%s: %s", snakemake.output[0], diag["data"]["summary"]["data"]["note"])
