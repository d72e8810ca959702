"""Rule poller: write a sky cell's MVM poller file (the reference's 10-column format), whose
text the plan made (passed as a parameter, so the file is rewritten only when it changes)."""

from pathlib import Path

from mvmflow.workflow import atomic_path, rule_logging

with rule_logging(snakemake.log[0]):
    with atomic_path(snakemake.output[0]) as tmp:
        Path(tmp).write_text(snakemake.params.poller)
