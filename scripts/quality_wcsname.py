"""Rule qa_wcsname: <layer>_mvm_wcsname.json, the inputs' WCS names and astrometric frames
(mvmflow.quality)."""

import logging

from mvmflow.aligned import load_record
from mvmflow.quality import wcsname_report, write_diagnostic
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    records = [load_record(p, snakemake.input.align) for p in snakemake.input.records]
    diag = wcsname_report(snakemake.input.product, records,
                          mixed_frames=snakemake.params.mixed_frames,
                          dropped=snakemake.params.dropped)
    write_diagnostic(diag, snakemake.output[0])
    frames = diag["data"]["astrometric frames"]["data"]
    logging.getLogger("mvmflow").info(
        "%s: %d inputs, frame(s) %s%s", snakemake.output[0], len(records),
        ", ".join(frames["distinct frames"]), " (MIXED)" if frames["mixed"] else "")
