"""Rule footprint_map: the chip outlines of a sky cell's exposures on the sky-cell grid."""

from mvmflow.aligned import load_record
from mvmflow.grid import Frame
from mvmflow.preview import footprint_map
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    # the aligned record of an exposure where there is one: its outlines through the
    # aligned WCS
    records = [load_record(r, snakemake.input.align) for r in snakemake.input.records]
    frames = {scale: Frame.from_dict(f) for scale, f in snakemake.params.frames.items()}
    footprint_map(snakemake.wildcards.skycell, records, snakemake.output[0], frames)
