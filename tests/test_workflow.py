"""The Snakemake workflow: lint-clean, config validated, DAG builds."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run(*args, cwd=ROOT):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)


def test_lint_clean():
    out = run("--lint")
    assert out.returncode == 0, out.stdout + out.stderr


def test_dry_run_plans_the_demo(tmp_path):
    out = run("-n", "--cores", "1", "--config", f"resources={tmp_path}/res")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "simulate" in out.stdout


def test_bad_config_is_rejected_at_start(tmp_path):
    out = run("-n", "--cores", "1", "--config", "no_such_key=1")
    assert out.returncode != 0
    assert "no_such_key" in out.stdout + out.stderr
