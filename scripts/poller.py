"""Rule poller: write a sky cell's MVM poller file (the reference's 10-column format)."""

import json
from pathlib import Path

from mvmflow.workflow import atomic_path, rule_logging

with rule_logging(snakemake.log[0]):
    plan = json.loads(Path(snakemake.input.plan).read_text())
    cell = next(c for c in plan["skycells"] if c["name"] == snakemake.wildcards.skycell)
    with atomic_path(snakemake.output[0]) as tmp:
        Path(tmp).write_text(cell["poller"])
