"""Rule inputs: resolve the `inputs` config value to the table of input exposures (for
region inputs: the files that arrived in the mirror, and the report of those that did not)."""

import logging

from mvmflow.inputs import is_archive_spec, resolve_inputs, write_input_table
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    spec = snakemake.params.spec
    skipped = []
    if is_archive_spec(spec):
        from mvmflow.archive.table import read_table, write_missing
        from mvmflow.inputs import inputs_from_records

        table, missing = inputs_from_records(snakemake.input[1:])
        products = read_table(snakemake.input[0])
        rows = [(name, "failed", reason) for name, reason in missing]
        rows += [(str(r["filename"]), "proprietary",
                  f"not public ({r['rights'] or 'release'} {r['release']})".strip())
                 for r in products if str(r["status"]) == "proprietary"]
        write_missing(rows, snakemake.output.missing)
        for name, reason in missing:
            log.warning("not processed: %s: %s", name, reason)
        if not table:
            raise ValueError(f"inputs: none of the {len(missing)} files to fetch from MAST "
                             f"arrived (see {snakemake.output.missing})")
    else:
        demo_truth = snakemake.input[0] if spec == "demo" else None
        table = resolve_inputs(spec, demo_truth=demo_truth, skipped=skipped)
    for name, reason in skipped:
        log.warning("not processed: %s: %s", name, reason)
    write_input_table(table, snakemake.output[0], skipped)
    log.info("%d input exposures", len(table))
