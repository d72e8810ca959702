"""Packaging checks: the conda environment matches pyproject.toml; the CLI is installed."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI distribution names
CONDA_NAMES = {"snakemake": "snakemake-minimal", "matplotlib": "matplotlib-base"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower()


def test_conda_env_pins_every_runtime_dependency_within_its_range():
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r): r for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "envs" / "mvmflow.yaml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            conda[_name(dep)] = dep
    missing = [n for n in runtime if CONDA_NAMES.get(n, n) not in conda]
    assert not missing, f"envs/mvmflow.yaml lacks runtime dependencies {missing}"
    for name, req in runtime.items():
        conda_name = CONDA_NAMES.get(name, name)
        pin = conda[conda_name][len(conda_name):].strip()
        # a conda pin is `=X.Y.Z` (exactly that release), never a range
        assert re.fullmatch(r"=\d+(\.\d+)*", pin), (conda_name, pin)
        version = pin[1:]
        assert version in SpecifierSet(req[len(name):].strip()), (name, version, req)


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
