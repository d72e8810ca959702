"""Running the workflow from tests: one helper for every workflow test module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_snakemake(workdir: Path, config: dict, *extra: str, popen: bool = False,
                  check: bool = True):
    """Run the workflow in ``workdir`` with ``config`` (written to a config file) on 2 cores.

    Returns the CompletedProcess (asserting success when ``check``), or the Popen with
    ``popen``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "test_config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=True))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", "--configfile", str(configfile),
           *extra]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out
