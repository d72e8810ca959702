"""Checkpoint align_groups: overlap-connected groups of the accepted exposures."""

import logging

import numpy as np

from mvmflow.aligned import input_key
from mvmflow.groups import group_name, overlap_groups, write_groups
from mvmflow.records import read_record
from mvmflow.workflow import rule_logging

with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    records = [(input_key(p), read_record(p)) for p in snakemake.input.records]
    records = [(k, r) for k, r in records if r.accepted and r.chips]
    footprints = [[np.asarray(c.footprint) for c in r.chips] for _, r in records]
    groups = {}
    for members in overlap_groups(footprints, margin_arcsec=snakemake.params.margin):
        keys = sorted(records[i][0] for i in members)
        name = group_name([records[i][1].filename or records[i][0] for i in members])
        if name in groups:  # only possible for inputs not named like exposures
            raise ValueError(f"two alignment groups would be named {name}: "
                             f"{' '.join(groups[name])} and {' '.join(keys)}")
        groups[name] = keys
        log.info("%s: %d exposures: %s", name, len(keys), " ".join(keys))
    write_groups(groups, snakemake.output[0])
