"""The cluster profiles (profiles/slurm, profiles/htcondor; docs/cluster.md).

The real SLURM run is ci/slurm.sh (run by .ci/run); these tests only check that Snakemake finds
and parses each profile and that the settings CI relies on are there, and dry-run the
workflow with the SLURM profile when its executor plugin is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from wfrun import ROOT, run_snakemake

PROFILES = {"slurm": "slurm", "htcondor": "htcondor"}


def profile_file(name: str) -> Path:
    """The file Snakemake itself picks in ``profiles/<name>/``."""
    from snakemake.cli import get_profile_dir

    found = get_profile_dir(str(ROOT / "profiles" / name))
    assert found is not None, f"Snakemake finds no profile file in profiles/{name}/"
    return Path(found[1])


def load(name: str) -> dict:
    return yaml.safe_load(profile_file(name).read_text())


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_file_name_read_by_every_snakemake_8_and_9(name):
    # config.v8+.yaml: read by 8.0-9.18 (config[.vN+].yaml) and 9.19+ (also profile*.yaml);
    # a second candidate would make the choice depend on the directory listing order
    path = profile_file(name)
    assert path.name == "config.v8+.yaml"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.v8+.yaml"]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_parses_with_snakemakes_own_parser(name):
    from snakemake.profiles import ProfileConfigFileParser

    with profile_file(name).open() as stream:
        args = ProfileConfigFileParser().parse(stream)
    assert args["executor"] == PROFILES[name]
    assert int(args["retries"]) >= 1
    assert args["logger"] == ["mvmflow"]
    assert "mem_mb=1000" in args["default-resources"]


def test_slurm_profile_settings():
    profile = load("slurm")
    # without slurmdbd the plugin's default status command (sacct) hangs the run forever
    assert profile["slurm-status-command"] == "squeue"
    assert profile["slurm-no-account"] is True
    assert profile["retries"] == 2
    assert int(profile["latency-wait"]) >= 5
    assert profile["jobs"] >= 2
    resources = profile["default-resources"]
    # runtime (sbatch -t, minutes) grows with each attempt
    runtime = [eval(str(resources["runtime"]), {"attempt": a}) for a in (1, 2, 3)]
    assert runtime == sorted(runtime) and runtime[0] >= 10 and runtime[2] > runtime[0]
    # the partition and account are the user's to set: not set here
    assert "slurm_partition" not in resources and "slurm_account" not in resources


def test_htcondor_profile_settings():
    profile = load("htcondor")
    resources = profile["default-resources"]
    # the plugin ignores mem_mb: request_memory (MB) is what HTCondor matches on
    memory = [eval(str(resources["request_memory"]), {"attempt": a}) for a in (1, 2, 3)]
    assert memory[0] >= 1000 and memory[1] > memory[0] and memory[2] > memory[1]
    assert profile["htcondor-jobdir"].startswith(".snakemake/")


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed (pip install -e .[cluster])")
def test_slurm_profile_dry_run(tmp_path):
    config = {"inputs": "demo", "demo": {"preset": "tiny"}, "outdir": "results",
              "resources": str(tmp_path / "res")}
    out = run_snakemake(tmp_path / "run", config, "-n", "--profile",
                        str(ROOT / "profiles" / "slurm"))
    text = out.stdout + out.stderr
    # profiles/default (the workflow profile) is read too, and wins key by key
    used = next(line for line in text.splitlines() if line.startswith("Using profile"))
    assert used.startswith(f"Using profiles {ROOT / 'profiles' / 'slurm'} and workflow "
                           "specific profile ") and "profiles/default" in used, used
    # the rules' memory and the profile's runtime, as sbatch would get them
    assert "rule simulate:" in text
    assert "mem_mb=4000" in text and "runtime=120" in text
