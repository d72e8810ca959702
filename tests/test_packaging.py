"""Packaging checks: the conda environment matches pyproject.toml; the CLI is installed."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI distribution names
CONDA_NAMES = {"snakemake": "snakemake-minimal"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_env_names_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r): r for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "envs" / "mvmflow.yaml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            conda[_name(dep)] = dep
    missing = [n for n in runtime if CONDA_NAMES.get(n, n) not in conda]
    assert not missing, f"envs/mvmflow.yaml lacks runtime dependencies {missing}"
    # and the version ranges agree
    for name, req in runtime.items():
        spec = req[len(name):].replace(" ", "")
        conda_spec = conda[CONDA_NAMES.get(name, name)][len(CONDA_NAMES.get(name, name)):]
        assert spec == conda_spec.replace(" ", ""), (name, spec, conda_spec)


def test_reference_is_not_a_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "drizzlepac" not in {_name(r) for r in project["dependencies"]}
    for path in (ROOT / "mvmflow").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+drizzlepac", text, re.M), path


def test_console_script_installed():
    exe = shutil.which("mvmflow") or str(Path(__import__("sys").executable).parent / "mvmflow")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mvmflow ")
