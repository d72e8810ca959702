"""Rules psf_query and psf_cutouts: one entry of the config's psf list (rules/psf.smk).

psf_query writes the entry's source table; psf_cutouts downloads its cutouts into the mirror
(<resources>/mast/psf/<WFC3PSF|WFPC2PSF>/, never fetched twice) and links them into the
entry's cutout directory.
"""

import logging
import os
import shutil
from pathlib import Path

from mvmflow.archive import psf
from mvmflow.workflow import rule_logging


def _sizes(value):
    return tuple(value) if isinstance(value, (list, tuple)) else int(value)


def _suffixes(value):
    return [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)


def _link(source: Path, target: Path) -> None:
    """``target`` is ``source``'s bytes: a hard link, or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        tmp = target.parent / f".{target.name}.part"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


with rule_logging(snakemake.log[0]):
    log = logging.getLogger("mvmflow")
    entry = snakemake.params.entry
    url = snakemake.params.url
    detector = psf.detector_name(entry["detector"])
    if snakemake.rule == "psf_query":
        table = psf.query(detector, entry.get("filters") or {}, entry.get("columns", "*"),
                          url=url)
        psf.write_table(table, snakemake.output[0])
        log.info("%d sources (%d on subarrays, not requested) in %s", len(table),
                 psf.subarray_count(table), snakemake.output[0])
    else:
        table = psf.read_table(snakemake.input[0])
        instrument = "WFPC2PSF" if detector == "WFPC2" else "WFC3PSF"
        mirror = Path(snakemake.params.mirror) / instrument
        paths = psf.download(table, _suffixes(entry["suffix"]),
                             _sizes(entry.get("size", psf.DEFAULT_SIZES)), mirror,
                             method=entry.get("method", "pool"),
                             workers=int(entry.get("workers", 4)), url=url, detector=detector,
                             retries=snakemake.params.retries, timeout=snakemake.params.timeout)
        out = Path(snakemake.output[0])
        part = out.parent / f".{out.name}.part"  # built whole, then renamed
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        for path in paths:
            _link(path, part / path.name)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(part, out)
        log.info("%d cutouts in %s (from the mirror %s)", len(paths), out, mirror)
