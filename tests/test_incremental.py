"""Incremental sky-cell updates: adding or removing exposures redoes only what they change.

Six exposures (the ``tiny_noerr`` visits with a third dither each; alignment off, as the
header WCS is the truth here). Run 1 processes four of them (a list file); run 2 is given
an MVM poller file with the four as OLD rows and the other two as NEW; a from-scratch run
processes all six in another directory; run 3 removes the two again. Then:

- run 2's layers equal the from-scratch run's, bit for bit (SCI, WHT, CTX);
- run 2 drizzled only the two new exposures: the partials of the first four are the same
  files, untouched, and its log lists drizzle jobs for the new exposures only;
- run 3's layers equal run 1's, bit for bit, again without re-drizzling anything;
- a dry run after each run has nothing to do.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from wfrun import complete_log, run_snakemake

from mvmflow.poller import make_poller, write_poller
from mvmflow.simulate import PRESETS, simulate

# a scenario of four runs: run in CI when time allows, not by `make test` (docs/testing.md)
pytestmark = pytest.mark.slow

BASE = PRESETS["tiny_noerr"]
SIX = dataclasses.replace(
    BASE, name="tiny_six",
    visits=tuple(dataclasses.replace(v, exposures=v.exposures + (
        dataclasses.replace(v.exposures[0], dither=(0.43, 1.21)),)) for v in BASE.visits),
)


def snakemake(workdir: Path, listfile: Path, outdir: str, *extra: str) -> str:
    """Run; return what was printed and, for a real run, Snakemake's complete log."""
    config = {"align": {"enabled": False}, "inputs": str(listfile), "outdir": outdir}
    out = run_snakemake(workdir, config, *extra)
    text = out.stdout + out.stderr
    return text if "--dry-run" in extra else text + complete_log(workdir)


def layers(out: Path) -> dict[str, dict[str, np.ndarray]]:
    result = {}
    for path in sorted((out / "skycells").glob("*/hst_*_all_dr?.fits")):
        with fits.open(path) as hdul:
            result[path.name] = {e: hdul[e].data.copy() for e in ("SCI", "WHT", "CTX")}
    return result


def partials(out: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (out / "partials").rglob("*.fits")}


def drizzled(log: str) -> set[str]:
    """Exposures of the drizzle jobs a snakemake run executed."""
    out = set()
    for block in re.split(r"\n(?=(?:local)?rule )", log):
        if block.startswith(("rule drizzle:", "localrule drizzle:")):
            m = re.search(r"exposure=([A-Za-z0-9_]+)", block)
            out.add(m.group(1))
    return out


def assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        for ext in ("SCI", "WHT", "CTX"):
            assert np.array_equal(a[name][ext], b[name][ext], equal_nan=True), (name, ext)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("incremental")
    sim = simulate(SIX, base / "data")
    files = sorted(Path(p) for p in sim.exposures)
    assert len(files) == 6
    new = [p for p in files if p.name[6:8] == files[-1].name[6:8]]  # each visit's 3rd
    old = [p for p in files if p not in new]
    first, every = base / "first.txt", base / "every.txt"
    first.write_text("".join(f"{p}\n" for p in old))
    every.write_text("".join(f"{p}\n" for p in files))
    r = {"new": {p.name[:-5] for p in new}, "old": {p.name[:-5] for p in old}}
    r["log1"] = snakemake(base, first, "results")
    r["layers1"], r["partials1"] = layers(base / "results"), partials(base / "results")
    r["dry1"] = snakemake(base, first, "results", "--dry-run")
    # an MVM poller file: the first four as OLD rows, the other two as NEW
    poller = base / "skycell-p0081x14y14_input.out"
    rows = (make_poller(old, "mvm", skycell="skycell-p0081x14y14", status="OLD")
            + make_poller(new, "mvm", skycell="skycell-p0081x14y14", status="NEW"))
    write_poller(rows, poller)
    r["log2"] = snakemake(base, poller, "results")
    r["layers2"], r["partials2"] = layers(base / "results"), partials(base / "results")
    r["dry2"] = snakemake(base, poller, "results", "--dry-run")
    snakemake(base, every, "scratch")
    r["scratch"] = layers(base / "scratch")
    # remove the two again
    first.write_text("".join(f"{p}\n" for p in old))
    r["log3"] = snakemake(base, first, "results")
    r["layers3"] = layers(base / "results")
    yield r
    shutil.rmtree(base, ignore_errors=True)


def test_added_exposures_equal_a_run_from_scratch(runs):
    assert_equal(runs["layers2"], runs["scratch"])
    for arrays in runs["layers2"].values():  # the new exposures are in
        assert arrays["CTX"].max() >= 4


def test_only_new_exposures_are_drizzled(runs):
    assert drizzled(runs["log1"]) == runs["old"]
    assert drizzled(runs["log2"]) == runs["new"]
    kept = {k: v for k, v in runs["partials1"].items()}
    assert kept and all(runs["partials2"][k] == v for k, v in kept.items())


def test_removed_exposures_restore_the_first_layers(runs):
    assert drizzled(runs["log3"]) == set()
    assert_equal(runs["layers3"], runs["layers1"])


def test_dry_run_after_a_run_has_nothing_to_do(runs):
    for log in (runs["dry1"], runs["dry2"]):
        assert "Nothing to be done" in log, log[-2000:]
