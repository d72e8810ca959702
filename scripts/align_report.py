"""Rule align_report: every exposure's alignment fit of one sky cell."""

from mvmflow.aligned import SOLUTION_SUFFIX, find_file
from mvmflow.solution import write_report
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    paths = [find_file(snakemake.input.align, key, SOLUTION_SUFFIX)
             for key in snakemake.params.members]
    missing = [k for k, p in zip(snakemake.params.members, paths, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(f"no alignment solution for {', '.join(missing)}")
    write_report(paths, snakemake.output[0], meta={"skycell": snakemake.wildcards.skycell})
