"""Files the workflow writes get the mode the user's umask gives (docs/conventions.md).

The shared run (tests/conftest.py) runs under umask 027, not the usual 022, so a fixed mode
(0644, or mkstemp's private 0600) would show up here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from wfrun import SHARED_UMASK

from mvmflow.workflow import atomic_path


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_atomic_path_gives_the_umask_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        with atomic_path(tmp_path / "x.fits") as tmp:
            tmp.write_bytes(b"data")
        assert stat.S_IMODE((tmp_path / "x.fits").stat().st_mode) == 0o666 & ~mask
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.part"))


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.fits") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def _modes(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    files, dirs = {}, {}
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        (dirs if path.is_dir() else files)[str(path.relative_to(root))] = mode
    return files, dirs


def test_every_output_follows_the_umask(shared_run):
    """Every file and directory of the run - layers, exposure-level and mosaic products,
    trailers, manifests, poller files, plan, screening reports, records, partials, sky
    offsets, cutouts, combined cutouts, logs and benchmark records - has the umask's mode."""
    want_file, want_dir = 0o666 & ~SHARED_UMASK, 0o777 & ~SHARED_UMASK
    files, dirs = {}, {}
    for top in ("results",):  # the job logs are under the outdir (results/logs/)
        f, d = _modes(shared_run["base"] / top)
        files.update({f"{top}/{k}": v for k, v in f.items()})
        dirs.update({f"{top}/{k}": v for k, v in d.items()})
    # every kind of output is there to be checked
    kinds = ("_drc.fits", "_drz.fits", "_trl.txt", "_manifest.txt", "_input.out", "plan.json",
             "accepted.ecsv", "rejected.ecsv", "dropped.ecsv", ".log", ".tsv")
    for kind in kinds:
        assert any(name.endswith(kind) for name in files), kind
    for part in ("results/partials/", "results/mosaic/", "results/cutouts/", "results/sky/",
                 "results/screen/records/", "results/screen/headers/"):
        assert any(name.startswith(part) for name in files), part
    wrong = {name: oct(mode) for name, mode in files.items() if mode != want_file}
    assert not wrong, wrong
    wrong = {name: oct(mode) for name, mode in dirs.items() if mode != want_dir}
    assert not wrong, wrong
