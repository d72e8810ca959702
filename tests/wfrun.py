"""Running the workflow from tests: one helper for every workflow test module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_snakemake(workdir: Path, config: dict, *extra: str, popen: bool = False,
                  check: bool = True, umask: int | None = None, prefix: tuple[str, ...] = ()):
    """Run the workflow in ``workdir`` with ``config`` (written to a config file) on 2 cores.

    Returns the CompletedProcess (asserting success when ``check``), or the Popen with
    ``popen``. ``umask`` sets the file-mode mask of the run (default: the test's own);
    ``prefix`` is a command that runs it (e.g. ``setpriv ...`` to drop capabilities).
    """
    preexec = None if umask is None else (lambda: os.umask(umask))
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "test_config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=True))
    cmd = [*prefix, sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", "--configfile", str(configfile),
           *extra]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec)
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=preexec)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


# ---- the shared run (tests/conftest.py: shared_run) ------------------------------------------

SHARED_SEED = 11
#: Tiles of the shared run's custom mosaic: small, so its layers have several tiles.
SHARED_TILE = 256
#: The umask of the shared run: not the usual 022, so the permission test shows the files
#: follow the umask rather than a fixed mode.
SHARED_UMASK = 0o027


def sparse_preset():
    """A sparse, bright variant of ``tiny_noerr``: no pointing errors (the header WCS is the
    truth), few enough stars that many are isolated over a 6" box, no galaxies, and the ACS
    visit on the 1K subarray (51") so enough stars are covered and isolated."""
    import dataclasses

    from mvmflow.simulate import PRESETS

    base = PRESETS["tiny_noerr"]
    return dataclasses.replace(
        base, name="tiny_sparse",
        visits=tuple(
            dataclasses.replace(v, exposures=tuple(
                dataclasses.replace(e, aperture="WFC1-1K") if e.aperture == "WFC1-512" else e
                for e in v.exposures))
            for v in base.visits),
        scene=dataclasses.replace(base.scene, star_density=40.0, mag_range=(17.5, 20.5),
                                  bright_stars=0, galaxy_density=0.0),
    )


def copy_with(src: Path, dst: Path, **cards) -> None:
    """A copy of exposure ``src`` named ``dst``, with primary-header ``cards`` changed."""
    from astropy.io import fits

    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
        root = dst.name.split("_")[0]
        hdul[0].header["ROOTNAME"] = root
        hdul[0].header["FILENAME"] = dst.name
        for key, value in cards.items():
            hdul[0].header[key] = value
        hdul.writeto(dst)


def make_bad_inputs(data: Path, ir: Path, acs: Path) -> dict[str, str]:
    """Six bad files among the good ones; returns {file name: expected reason word}."""
    import numpy as np

    bad = {}
    (data / "jbad01aaq_flt.fits").write_bytes(np.random.default_rng(0).bytes(20000))
    bad["jbad01aaq_flt.fits"] = "FITS"
    raw = acs.read_bytes()
    (data / "jbad01abq_flc.fits").write_bytes(raw[: len(raw) // 2])
    bad["jbad01abq_flc.fits"] = "truncated"
    copy_with(ir, data / "ubad0101r_flt.fits", INSTRUME="WFPC2")
    bad["ubad0101r_flt.fits"] = "instrument"
    copy_with(ir, data / "obad01abq_flt.fits", INSTRUME="STIS")
    bad["obad01abq_flt.fits"] = "instrument"
    copy_with(ir, data / "ibad01acq_flt.fits", FILTER="G141")
    bad["ibad01acq_flt.fits"] = "G141"
    copy_with(ir, data / "ibad01adq_flt.fits", EXPTIME=0.0)
    bad["ibad01adq_flt.fits"] = "EXPTIME"
    return bad


def shared_config(inputs: str, outdir: str = "results", tile_size: int = SHARED_TILE) -> dict:
    """The shared run's configuration: every product kind of a sky-cell run at once."""
    from mvmflow.simulate.presets import DEMO_CENTER

    return {
        "inputs": inputs, "outdir": outdir,
        # no pointing errors: the header WCS is the truth, so drizzle it unaligned
        # (alignment is tested in test_workflow_align.py)
        "align": {"enabled": False},
        "products": {"exposure_level": True},
        "mosaic": {"enabled": True, "tile_size": tile_size},
        # a 3" box at the corner of the four sky cells
        "cutouts": [{"ra": DEMO_CENTER[0], "dec": DEMO_CENTER[1], "size": 3.0}],
    }


def make_shared_run(base: Path) -> dict:
    """Simulate the shared data set (good and bad files), run the workflow once."""
    import shutil
    import time

    from mvmflow.simulate import simulate

    data = base / "data"
    sim = simulate(sparse_preset(), data, seed=SHARED_SEED)
    good = [Path(p) for p in sim.exposures]
    ir = next(p for p in good if p.name.startswith("i"))
    acs = next(p for p in good if p.name.startswith("j"))
    bad = make_bad_inputs(data, ir, acs)
    # an FLT twin of an FLC exposure: left out of the drc layer, and reported
    twin = data / acs.name.replace("_flc", "_flt")
    shutil.copy(acs, twin)
    good.append(twin)
    t0 = time.time()
    out = run_snakemake(base, shared_config(f"{data}/*_fl?.fits"), umask=SHARED_UMASK)
    return {"base": base, "data": data, "good": good, "bad": bad, "twin": twin,
            "out": base / "results", "seconds": time.time() - t0,
            "terminal": out.stdout + out.stderr}


def complete_log(workdir: Path) -> str:
    """Snakemake's complete log of the latest run in ``workdir`` (every job, with its rule and
    wildcards: the terminal shows only progress, docs/terminal_output.md)."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1].read_text() if logs else ""
