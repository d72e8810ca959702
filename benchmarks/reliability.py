#!/usr/bin/env python
"""Reliability table: every kind of bad or unusual input, what must happen, what happened.

Builds the corpus of ``mvmflow.simulate.corpus`` (three good subarray exposures and one file,
directory, link or pair per kind) in a temporary directory, runs the workflow on it once
(2 cores; as root through ``setpriv`` without the capabilities that bypass file permissions,
so the mode-000 file is really unreadable), and prints ONE markdown table:

    | kind | expected | observed |

then the counts: kinds tried, runs aborted (must be 0), products lost (must be 0; the
products the usable inputs allow, computed from their own headers, that the run did not
write). Other scenarios (faults, configuration) add rows with ``--rows FILE.json``: a list of
``{"kind", "expected", "observed", "ok", "aborted", "lost"}`` objects (``aborted`` runs and
``lost`` products of that scenario, default 0), appended to the table and counted.

    .venv/bin/python benchmarks/reliability.py                # about 40 s on 2 cores
    .venv/bin/python benchmarks/reliability.py --keep /tmp/corpus --rows faults.json

Exit status 0 only if every row is as expected, no run aborted and no product was lost.
``tests/test_corpus.py`` asserts the same kinds one by one (docs/testing.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_workflow(workdir: Path, config: dict, prefix: tuple[str, ...]) -> subprocess.CompletedProcess:
    """One workflow run in ``workdir`` on 2 cores (as ``tests/wfrun.py`` runs it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=True))
    return subprocess.run(
        [*prefix, sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
         "--directory", str(workdir), "--cores", "2", "--configfile", str(configfile)],
        capture_output=True, text=True)


def corpus_rows(base: Path) -> tuple[list[dict], int, int, float]:
    """Build the corpus under ``base``, run it; return rows, runs aborted, products lost and
    the run's seconds."""
    from mvmflow.simulate.corpus import (
        DROP_READ_CAPS,
        evaluate,
        expected_products,
        present_products,
        run_config,
        write_corpus,
    )

    corpus = write_corpus(base / "corpus")
    root = os.geteuid() == 0
    prefix = DROP_READ_CAPS if root and shutil.which(DROP_READ_CAPS[0]) else ()
    t0 = time.perf_counter()
    proc = run_workflow(base / "run", run_config(corpus.pattern), prefix)
    seconds = time.perf_counter() - t0
    out = base / "run" / "results"
    aborted = int(proc.returncode != 0)
    if aborted:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    lost = sorted(expected_products(corpus) - present_products(out))
    for name in lost:
        sys.stderr.write(f"lost: {name}\n")
    rows = []
    for o in evaluate(corpus, out, unprivileged=bool(prefix) or not root):
        observed = f"{o.outcome}: {o.detail}" if o.detail else o.outcome
        if o.problems:
            observed += f" -- {'; '.join(o.problems)}"
        rows.append({"kind": o.kind.name, "expected": o.kind.expected, "observed": observed,
                     "ok": o.ok})
    return rows, aborted, len(lost), seconds


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(rows: list[dict], aborted: int, lost: int) -> str:
    """The table and the counts."""
    lines = ["| kind | expected | observed | |", "|---|---|---|---|"]
    for r in rows:
        mark = "ok" if r.get("ok", True) else "**FAIL**"
        lines.append(f"| {_cell(r['kind'])} | {_cell(r['expected'])} | "
                     f"{_cell(r['observed'])} | {mark} |")
    failed = sum(not r.get("ok", True) for r in rows)
    lines += ["", f"kinds tried: {len(rows)}; not as expected: {failed}; "
                  f"runs aborted: {aborted}; products lost: {lost}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build and run here and keep it (default: a "
                        "temporary directory, removed)")
    parser.add_argument("--rows", type=Path, action="append", default=[],
                        help="JSON rows of other scenarios to append (repeatable)")
    args = parser.parse_args(argv)
    base = args.keep or Path(tempfile.mkdtemp(prefix="mvm_reliability_"))
    try:
        rows, aborted, lost, seconds = corpus_rows(base)
    finally:
        if args.keep is None:
            for path in base.rglob("*"):  # the mode-000 file
                if not path.is_symlink():
                    path.chmod(0o755 if path.is_dir() else 0o644)
            shutil.rmtree(base, ignore_errors=True)
    for extra in args.rows:
        for r in json.loads(extra.read_text()):
            rows.append(r)
            aborted += int(r.get("aborted", 0))
            lost += int(r.get("lost", 0))
    print(markdown(rows, aborted, lost))
    print(f"\n(corpus run: {seconds:.0f} s on 2 cores)")
    return 0 if all(r.get("ok", True) for r in rows) and not aborted and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
