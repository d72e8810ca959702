"""Rule layer_preview: a layer's preview and coverage map (PNG) and its statistics (JSON)."""

import json
import logging
from pathlib import Path

from mvmflow.preview import layer_previews
from mvmflow.workflow import atomic_path, rule_logging

with rule_logging(snakemake.log[0]):
    stats = layer_previews(snakemake.input.product, snakemake.output.preview,
                           snakemake.output.coverage, size=snakemake.params.size)
    with atomic_path(snakemake.output.stats) as tmp:
        Path(tmp).write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    logging.getLogger("mvmflow").info(
        "%s: %d x %d px shown in %d-px blocks, %.1f%% covered", stats["layer"], stats["nx"],
        stats["ny"], stats["factor"], 100 * stats["covered"])
