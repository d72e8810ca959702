"""Rule align: relative and absolute WCS solutions of one alignment group."""

import logging
import shutil
from pathlib import Path

from mvmflow.align import align_exposures
from mvmflow.aligned import (
    RECORD_SUFFIX,
    REPORT_NAME,
    SOLUTION_SUFFIX,
    aligned_record,
    alignment_warnings,
    input_key,
)
from mvmflow.records import read_record, write_record
from mvmflow.solution import write_report, write_solution
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    out = Path(snakemake.output[0])
    group = snakemake.wildcards.agroup  # named by mvmflow.groups.group_name (groups.json)
    tmp = out.with_name(f".{out.name}.part")  # the directory appears whole or not at all
    shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftovers (maybe other members)
    tmp.mkdir(parents=True)
    kwargs = {"gaia_url": snakemake.params.gaia_url} if snakemake.params.gaia_url else {}
    log.info("%s: %d exposures", group, len(snakemake.input.exposures))
    solutions = align_exposures(snakemake.input.exposures, snakemake.input.catalogs,
                                snakemake.params.reference, snakemake.params.align,
                                group=group, **kwargs)
    for path, solution in zip(snakemake.input.records, solutions, strict=True):
        key = input_key(path)
        write_solution(solution, tmp / f"{key}{SOLUTION_SUFFIX}")
        write_record(aligned_record(read_record(path), solution), tmp / f"{key}{RECORD_SUFFIX}")
        log.info("%s: %s, %s, %s matches, RMS %.2f/%.2f mas%s", key, solution["status"],
                 solution["wcsname"], solution.get("nmatches"),
                 solution.get("rms_ra") or float("nan"), solution.get("rms_dec") or float("nan"),
                 " (flagged)" if solution.get("flagged") else "")
        for note in solution.get("notes", []):
            log.warning("%s: %s", key, note)
    for line in alignment_warnings(solutions):
        log.warning("%s: %s", group, line)
    write_report(solutions, tmp / REPORT_NAME, meta={"group": group})
    tmp.rename(out)
