"""Faults during a run: kills, a full disk, damaged intermediates, a second run, read-only
inputs and an output directory that cannot be made (issue 17, "Faults").

Outcomes (each row is a test below; "products" are compared byte for byte, headers
included, with a run that met no fault):

=====================================  ==================================================
fault                                  outcome
=====================================  ==================================================
kill -9 at 10 seeded points (slow:     no half-written file under a final name after any
drizzle, sky, CR median and drizzle,   kill; ``--unlock`` + ``--rerun-incomplete``: every
layer, cutouts, exposure product,      product bit-identical
mosaic drizzle, tile and layer)
disk full while a product is written   the job fails: "No space left on device writing
                                       <file>"; nothing under a final name; space freed:
                                       the rerun completes, products identical
partial and mosaic tile truncated      removed at the run's start (size recorded when
                                       written), made again in the same run; identical
partial damaged, same size             its reader refuses it (checksum recorded when
                                       written), removes it and fails naming it; never
                                       summed; the next run remakes it; identical
second run on the same outdir          refused at start, naming the directory, the other
                                       run's PID and host, and what to do (no --unlock)
inputs on a read-only directory        the run completes
outdir that cannot be created          one line at start naming it and why; no job runs
=====================================  ==================================================

The default tests share one small run (two WFC3/UVIS exposures of the ``cr`` preset, one sky
cell, cosmic-ray rejection, a custom mosaic in tiles), about 8 s a run. Mounts (tmpfs, a
read-only bind) need root; those tests skip without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from wfrun import complete_log, run_snakemake

from mvmflow.integrity import LOCK_NAME, SIZE_KEY, SUM_KEY, DamagedFile, verify
from mvmflow.simulate import PRESETS, simulate

SKYCELL = "skycell-p0081x14y14"


def _can_mount() -> bool:
    """Whether this process may mount (root, and a kernel that lets it): tried once."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True)
    return ok


ROOT = _can_mount()
needs_root = pytest.mark.skipif(not ROOT, reason="mounts a tmpfs or a read-only bind: needs "
                                "root and a kernel that lets it mount")


def small_config(inputs: str, outdir: str) -> dict:
    """Every kind of intermediate at the least cost: CR rejection (partials, partials_cr,
    median, masks), a custom mosaic in tiles of 256 px, one sky cell."""
    return {"inputs": inputs, "outdir": outdir, "align": {"enabled": False},
            "skycells": [SKYCELL], "products": {"previews": False},
            "mosaic": {"enabled": True, "tile_size": 256}}


def demo_config(inputs: str, outdir: str) -> dict:
    """Every rule kind of a sky-cell run without alignment: four sky cells, CR rejection,
    exposure-level products, previews, a custom mosaic in tiles, a cutout box."""
    from mvmflow.simulate.presets import DEMO_CENTER

    return {"inputs": inputs, "outdir": outdir, "align": {"enabled": False},
            "products": {"exposure_level": True, "previews": True},
            "mosaic": {"enabled": True, "tile_size": 512},
            "cutouts": [{"ra": DEMO_CENTER[0], "dec": DEMO_CENTER[1], "size": 3.0}]}


def digests(out: Path) -> dict[str, str]:
    """sha256 of every file a rerun must reproduce (as test_workflow_run.py's
    test_rerun_is_bit_identical: products with headers, trailers, manifests, poller files,
    mosaic, cutouts, screening and plan reports, and previews; not intermediates or logs)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for top in ("skycells", "mosaic", "cutouts", "screen", "plan", "previews")
            for p in sorted((out / top).rglob("*"))
            if p.is_file() and not {"partials", "tiles"} & set(p.parts)}


def assert_no_half_written(out: Path) -> int:
    """Every FITS file under a final name opens, verifies and reads whole (sealed ones
    match their recorded size and checksum); returns how many."""
    n = 0
    for path in sorted(out.rglob("*.fits")):
        if path.name.startswith(".") or any(p.startswith(".") for p in
                                            path.relative_to(out).parts[:-1]):
            continue  # a writer's temporary name
        with fits.open(path) as hdul:
            hdul.verify("exception")
            for h in hdul:
                _ = h.data
        verify(path, remove=False)
        n += 1
    return n


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ---- the shared small run --------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    simulate(PRESETS["cr"], base / "all")
    small = base / "small"
    small.mkdir()
    for p in sorted((base / "all").glob("*_flc.fits"))[:2]:
        shutil.copy2(p, small / p.name)
    yield base
    for mounted in base.glob("mnt-*"):
        _umount(mounted)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(sim):
    """The small run, reading its inputs through a read-only bind mount when root can make
    one (the read-only-inputs case), else from the plain directory."""
    data = sim / "small"
    if ROOT:
        ro = sim / "mnt-ro"
        ro.mkdir()
        _mount("--bind", str(data), str(ro))
        _mount("-o", "remount,ro,bind", str(ro))
        data = ro
    work = sim / "ref"
    out = run_snakemake(work, small_config(f"{data}/*_fl?.fits", "results"))
    return {"work": work, "out": work / "results", "inputs": f"{data}/*_fl?.fits",
            "digests": digests(work / "results"), "terminal": out.stdout + out.stderr}


@needs_root
def test_inputs_on_a_read_only_directory(reference, reliability_row):
    data = Path(reference["inputs"]).parent
    with pytest.raises(OSError, match="Read-only file system"):
        (data / "probe").write_text("x")
    names = reference["digests"]
    assert any(n.startswith(f"skycells/{SKYCELL}/") and n.endswith("_drc.fits") for n in names)
    assert any(n.startswith("mosaic/") and n.endswith("_drc.fits") for n in names)
    reliability_row("fault: inputs on a read-only directory (read-only bind mount)",
                    "the run completes", f"completed: {len(names)} files written")


# ---- a full disk ------------------------------------------------------------------------


@needs_root
def test_disk_full_fails_clearly_and_the_rerun_matches(sim, reference, reliability_row):
    """The products' directory on a 1 MB file system (a tmpfs over ``skycells/`` of a copy
    of the small run, so only the sky cell's product jobs run again): the layer job fails
    naming the file and the reason; nothing is left under a final name; with space again
    the rerun completes and the products are the bytes of the normal run."""
    work = sim / "full"
    shutil.copytree(reference["work"], work, symlinks=True)  # with times, and .snakemake
    skycells = work / "results" / "skycells"
    _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(skycells))
    try:
        config = small_config(reference["inputs"], "results")
        out = run_snakemake(work, config, check=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0
        line = next((ln for ln in text.splitlines() if "rule layer" in ln and "Errno" in ln),
                    "")
        assert re.search(r"No space left on device writing results/skycells/"
                         rf"{SKYCELL}/\S+\.fits", line), text[-3000:]
        assert "Traceback" not in line
        # nothing under a final name but complete files; no temporary left behind
        left = sorted(p.name for p in skycells.rglob("*") if p.is_file())
        assert not [n for n in left if n.endswith(".fits") or n.endswith(".part")], left
        assert not [p for p in skycells.rglob(".*")], "a temporary file or directory is left"
        assert_no_half_written(work / "results")
        _mount("-o", "remount,size=64m", str(skycells))
        run_snakemake(work, config)
        assert digests(work / "results") == reference["digests"]
        reliability_row("fault: disk full while a product is written (1 MB tmpfs)",
                        "the job fails naming the file; nothing half-written; the rerun "
                        "after freeing space gives the same products",
                        f"{line.split('Errno 28] ')[-1][:60]}...; no partial file left; "
                        "rerun identical")
    finally:
        _umount(skycells)


# ---- damaged intermediates ----------------------------------------------------------------


def _flip_four_bytes(path: Path, extname: str) -> None:
    """Damage a file in place, its size unchanged: four bytes in the middle of an HDU's data."""
    with fits.open(path) as hdul:
        info = hdul[extname].fileinfo()
    at = info["datLoc"] + info["datSpan"] // 2
    data = bytearray(path.read_bytes())
    data[at:at + 4] = bytes(255 - b for b in data[at:at + 4])
    path.write_bytes(bytes(data))


def _one(out: Path, pattern: str, index: int = 0) -> Path:
    found = sorted(out.glob(pattern))
    assert len(found) > index, pattern
    return found[index]


def test_damaged_intermediates_are_never_used_and_are_made_again(reference,
                                                                 reliability_row):
    """Three intermediates damaged after they were written, and the products made from them
    wanted again (removed):

    - a final (CR-masked) partial (a patch of the separate partial, mvmflow.partials) and a
      mosaic tile cut short: the run's start finds their size differs from the one recorded
      and removes them, so Snakemake makes them again in that same run, before the products
      that read them (an intermediate no job of the run reads is left for the run that
      needs it);
    - the other final partial with four bytes changed, same size: the layer job's reader
      finds its checksum differs, removes it and fails naming it (``keep-going``: the other
      jobs finish); no product is made from it; the next run makes it again.

    Every product is then the bytes of the normal run."""
    out, work = reference["out"], reference["work"]
    flipped = _one(out, f"partials_cr/{SKYCELL}/*/*.fits", 0)
    truncated = [_one(out, f"partials_cr/{SKYCELL}/*/*.fits", 1),
                 _one(out, "mosaic/tiles/*/*.fits")]
    for path in truncated:
        assert fits.getheader(path)[SIZE_KEY] == path.stat().st_size
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    _flip_four_bytes(flipped, "PFLUX")  # in the patch's flux values
    product = _one(out, f"skycells/{SKYCELL}/hst_*_all_drc.fits")
    mosaic = _one(out, "mosaic/hst_*_all_drc.fits")
    product.unlink()
    mosaic.unlink()

    config = small_config(reference["inputs"], "results")
    result = run_snakemake(work, config, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    for path in truncated:
        assert f"{path.relative_to(work)} was damaged after it was written" in text, text[-2000:]
        verify(path, remove=False)  # made again, whole, in this run
    log = complete_log(work)
    for rule, path in zip(("cr_drizzle", "mosaic_tile"), truncated, strict=True):
        assert re.search(rf"rule {rule}:\n(    .*\n)*?    output: [^\n]*"
                         + re.escape(str(path.relative_to(work))), log), rule
    name = re.escape(flipped.name)
    assert re.search(rf"rule layer \(layer\.py\): ValueError: {name}: corrupt partial file: "
                     rf"\S*{name}: damaged after it was written \(checksum [0-9a-f]{{8}}, "
                     r"written as [0-9a-f]{8}\); removed", text), text[-3000:]
    assert not flipped.exists() and not product.exists()  # never summed
    assert mosaic.exists()

    run_snakemake(work, config)
    verify(flipped, remove=False)
    assert digests(out) == reference["digests"]
    reliability_row("fault: partial and mosaic tile truncated after they were written",
                    "detected before use, made again, never summed",
                    "removed at the run's start (recorded size), remade in the same run; "
                    "products identical")
    reliability_row("fault: partial damaged, same size (4 bytes changed)",
                    "detected before use, made again, never summed",
                    "refused by its reader (recorded checksum), removed, no product made "
                    "from it; the next run remakes it; products identical")


def test_a_damaged_base_partial_is_never_used_through_its_patch(reference,
                                                                reliability_row):
    """A separate partial damaged (same size) after the final partial was made as a patch of
    it (mvmflow.partials, "Patches"), and the layer product wanted again: the first job to
    read the base (the sky step, or the layer through the patch) finds its checksum
    differs, removes it and fails naming it; the next run makes the base again, then the
    cosmic-ray jobs and the layer. Every product is then the bytes of the normal run."""
    out, work = reference["out"], reference["work"]
    patch = _one(out, f"partials_cr/{SKYCELL}/*/*.fits", 0)
    base = out / "partials" / patch.relative_to(out / "partials_cr")
    _flip_four_bytes(base, "WEIGHT")
    product = _one(out, f"skycells/{SKYCELL}/hst_*_all_drc.fits")
    product.unlink()

    config = small_config(reference["inputs"], "results")
    result = run_snakemake(work, config, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    # its first reader refuses it: the sky job (made again with the layer), or the layer
    # job's reader of the patch (tests/test_partials.py tests that one alone)
    assert re.search(rf"rule (sky \(sky|layer \(layer)\.py\): ValueError: "
                     rf"({re.escape(patch.name)}: its base partial: )?{re.escape(base.name)}: "
                     rf"corrupt partial file: \S*{re.escape(base.name)}: damaged after it was "
                     rf"written \(checksum", text), text[-3000:]
    assert not base.exists() and not product.exists()  # never summed

    run_snakemake(work, config)
    verify(base, remove=False)
    assert digests(out) == reference["digests"]
    reliability_row("fault: separate partial damaged under its patch (4 bytes changed)",
                    "detected before use, made again, never summed",
                    "refused by its first reader (recorded checksum), removed; the next run "
                    "remakes it and its patches; products identical")


def test_seal_records_size_and_checksum_deterministically(tmp_path):
    """The seal of a partial: two writes, the same bytes; a change of any one bit, in a
    header or in the data, is refused by the reader and the file removed."""
    import dataclasses

    from test_partials import synthetic

    from mvmflow.partials import PartialFile, write_partial

    p = synthetic()
    a = write_partial(p, tmp_path / "a.fits")
    b = write_partial(dataclasses.replace(p), tmp_path / "b.fits")
    assert a.read_bytes() == b.read_bytes()
    header = fits.getheader(a)
    assert header[SIZE_KEY] == a.stat().st_size
    assert re.fullmatch(r"[0-9a-f]{8}", header[SUM_KEY])
    raw = a.read_bytes()
    for at in (2880 + 100, len(raw) // 2, len(raw) - 2880 - 1):
        bad = tmp_path / f"bad{at}.fits"
        changed = bytearray(raw)
        changed[at] ^= 0x01
        bad.write_bytes(bytes(changed))
        with pytest.raises(ValueError, match=rf"bad{at}\.fits.*: damaged after it was "
                                             r"written \(checksum [0-9a-f]{8}, written as "):
            PartialFile.open(bad)
        assert not bad.exists()  # removed, to be made again
    with pytest.raises(DamagedFile, match="bytes, written as"):
        (tmp_path / "short.fits").write_bytes(raw[:-2880])
        verify(tmp_path / "short.fits", remove=False)


# ---- a second run ---------------------------------------------------------------------------


def test_second_run_on_the_same_outdir_is_refused(sim, reference, reliability_row):
    """Two working directories, one output directory: Snakemake's own lock (per working
    directory) would let both run; ours refuses the second, naming the first; once the first
    is gone (killed) the directory is free again, with nothing to unlock."""
    outdir = sim / "shared_out"
    config = small_config(reference["inputs"], str(outdir))
    first = run_snakemake(sim / "w1", config, popen=True)
    try:
        lock = outdir / LOCK_NAME
        deadline = time.time() + 60
        while time.time() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.1)
        for work in (sim / "w2", sim / "w1"):  # another working directory, and the same one
            second = run_snakemake(work, config, check=False)
            text = second.stdout + second.stderr
            assert second.returncode != 0
            line = next(ln for ln in text.splitlines() if "in use by another" in ln)
            assert str(outdir) in line and f"PID {first.pid} on host " in line, line
            assert "wait for it to end" in line and "do not use --unlock" in line
            assert "Traceback" not in text and "LockException" not in text
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # nothing to unlock: the next run may take the directory at once
    free = subprocess.run([sys.executable, "-c", "import sys; from mvmflow.integrity import "
                           "hold_outdir; print(hold_outdir(sys.argv[1]))", str(outdir)],
                          capture_output=True, text=True)
    assert free.returncode == 0 and LOCK_NAME in free.stdout, free.stderr
    reliability_row("fault: a second run on the same output directory",
                    "refused by the lock, saying what to do",
                    "refused at start naming the directory and the other run's PID and host, "
                    "'wait for it to end ... do not use --unlock'; free once the first dies")


# ---- an output directory that cannot be made ----------------------------------------------


@pytest.mark.parametrize("case", ["under_a_file", "read_only"])
def test_outdir_that_cannot_be_created_stops_at_start(sim, reference, case,
                                                      reliability_row):
    if case == "read_only":
        if not ROOT:
            pytest.skip("a read-only mount needs root and a kernel that lets it mount")
        parent = Path(reference["inputs"]).parent  # the read-only bind mount
        outdir, reason = parent / "results", "Read-only file system"
    else:
        (sim / "a_file").write_text("x")
        outdir, reason = sim / "a_file" / "results", "Not a directory"
    work = sim / f"bad_out_{case}"
    result = run_snakemake(work, small_config(reference["inputs"], str(outdir)), check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    lines = [ln for ln in text.splitlines() if "output directory" in ln]
    assert lines == [f"mvmflow: the output directory {outdir} cannot be created: {reason}"], text
    assert "Traceback" not in text
    assert "jobid" not in complete_log(work)  # no job started
    reliability_row(f"fault: output directory cannot be created ({case.replace('_', ' ')})",
                    "a clear error at start",
                    f"one line at start, no job: '... cannot be created: {reason}'")


# ---- kill -9 at seeded points (slow) ---------------------------------------------------------

KILL_SEED = 17
#: Two chains of kills (each from an empty output directory), one rule kind per kill, in the
#: order the run reaches them: every kind of file the run writes is being written at a kill.
#: (A killed job is redone first by the resumed run, so a chain's next target is still to
#: come when it is at or after the one killed in the run's order.)
KILL_CHAINS = (("drizzle", "sky", "cr_median", "cr_drizzle", "layer", "cutouts"),
               ("exposure_product", "mosaic_drizzle", "mosaic_tile", "mosaic_layer"))
_START = r"^(?:local)?(?:rule|checkpoint) {rule}:$"


def _starts(log: str, rule: str) -> int:
    return len(re.findall(_START.format(rule=rule), log, flags=re.M))


def _running(log: str) -> list[str]:
    """Rules of the jobs started and not finished in a Snakemake complete log."""
    started = {jobid: rule for rule, jobid in re.findall(
        r"^(?:local)?(?:rule|checkpoint) (\w+):\n(?:    .*\n)*?    jobid: (\d+)", log,
        flags=re.M)}
    done = set(re.findall(r"Finished jobid: (\d+)", log))
    return sorted(rule for jobid, rule in started.items() if jobid not in done)


@pytest.mark.slow
def test_killed_ten_times_resumes_bit_identical(sim, reliability_row):
    """The demo-sized run (four exposures, four sky cells, CR rejection, exposure-level
    products, previews, a custom mosaic in tiles, a cutout box: every rule kind) killed
    with SIGKILL (its whole process group) ten times, in two chains (six and four kills)
    from an empty output directory. Each kill targets one rule kind: it lands a seeded delay (0-0.6 s)
    after the seeded n-th job of that rule (first or second) started, so inside its work or
    its write. After each kill every FITS file under a final name is whole; then
    ``--unlock`` and ``--rerun-incomplete``, itself killed at the chain's next point. Each
    chain's final run gives every product with the bytes of an uninterrupted run."""
    inputs = f"{sim / 'all'}/*_fl?.fits"
    config = demo_config(inputs, "results")
    ref = sim / "demo_ref"
    run_snakemake(ref, config)
    expected = digests(ref / "results")
    ref_log = complete_log(ref)
    rng = np.random.default_rng(KILL_SEED)
    record = []
    for c, chain in enumerate(KILL_CHAINS):
        work = sim / f"demo_killed{c}"
        for rule in chain:
            jobs = _starts(ref_log, rule)
            assert jobs, f"the demo run has no {rule} job"
            nth = 1 + int(rng.integers(min(jobs, 2)))
            delay = float(rng.uniform(0.0, 0.6))
            logs = set((work / ".snakemake" / "log").glob("*.log"))
            proc = run_snakemake(work, config, "--rerun-incomplete", popen=True)
            log = ""
            while proc.poll() is None:
                new = set((work / ".snakemake" / "log").glob("*.log")) - logs
                log = next(iter(new)).read_text() if new else ""
                if _starts(log, rule) >= nth:
                    break
                time.sleep(0.02)
            time.sleep(delay)
            if proc.poll() is not None:
                record.append((rule, nth, round(delay, 2), "ended before the kill", 0))
                continue
            log = next(iter(set((work / ".snakemake" / "log").glob("*.log")) - logs))
            running = _running(log.read_text())
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            checked = assert_no_half_written(work / "results")
            record.append((rule, nth, round(delay, 2), ",".join(running), checked))
            run_snakemake(work, config, "--unlock")
        final = run_snakemake(work, config, "--rerun-incomplete")
        got = digests(work / "results")
        assert got.keys() == expected.keys(), (sorted(set(got) ^ set(expected)), record,
                                               final.stdout[-3000:])
        assert [n for n in expected if expected[n] != got[n]] == [], c
    print("\nkills (target rule, n-th job, delay s, rules running, FITS files checked):")
    for row in record:
        print("  ", *row)
    killed = [r for r in record if r[3] != "ended before the kill"]
    assert len(killed) >= 9, record
    reliability_row(f"fault: kill -9 at {len(record)} seeded points "
                    f"({', '.join(r[0] for r in record)})",
                    "every product bit-identical after --rerun-incomplete; nothing "
                    "half-written under a final name",
                    f"{len(killed)} kills landed, {sum(r[4] for r in record)} FITS files "
                    "checked whole after the kills; every product bit-identical")
