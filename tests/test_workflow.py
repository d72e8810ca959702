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


def test_bad_environment_switch_fails_at_start(tmp_path):
    import os

    env = dict(os.environ, MVM_ONLY_CTE="maybe")
    out = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1"], cwd=ROOT, capture_output=True,
                         text=True, env=env)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "MVM_ONLY_CTE" in text and "maybe" in text
    # one line, not a traceback
    assert "Traceback" not in text and len(text.strip().splitlines()) <= 4, text


def test_params_command_round_trips(tmp_path):
    from mvmflow.cli import main

    out = tmp_path / "resolved.yaml"
    assert main(["params", "--configfile", str(ROOT / "config" / "config.yaml"),
                 "--detectors", str(ROOT / "config" / "detectors.yaml"), "-o", str(out)]) == 0
    # the dump is a valid config: snakemake accepts it as --configfile
    res = run("-n", "--cores", "1", "--configfile", str(out),
              "--config", f"resources={tmp_path}/res")
    assert res.returncode == 0, res.stdout + res.stderr


def test_rulegraph_of_the_demo_config(tmp_path):
    """`--rulegraph` draws the demo's rules (before any checkpoint has run)."""
    out = run("--rulegraph", "--configfile", str(ROOT / "config" / "mosaic_demo.yaml"),
              "--config", f"resources={tmp_path}/res", f"outdir={tmp_path}/out")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.lstrip().startswith("digraph")
    for rule in ("simulate", "inputs", "screen_report", "align_groups", "plan", "all"):
        assert f'label = "{rule}"' in out.stdout, rule


def test_logs_live_under_the_outdir(tmp_path):
    """Two runs with different outdirs never share logs: every log and benchmark path of the
    demo's first jobs is under its outdir."""
    out = run("-n", "--cores", "1", "--printshellcmds", "--verbose", "--config",
              f"resources={tmp_path}/res", f"outdir={tmp_path}/out")
    assert out.returncode == 0, out.stdout + out.stderr
    logs = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
            if line.strip().startswith(("log:", "benchmark:"))]
    assert logs and all(path.startswith(f"{tmp_path}/out/logs/") for path in logs), logs
