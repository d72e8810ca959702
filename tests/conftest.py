"""Fixtures shared by the test modules (docs/testing.md).

``shared_run`` is one workflow run that every test which only reads products uses: the
simulated ``tiny_sparse`` set with six bad files and an FLT twin, exposure-level products, a
custom mosaic in several tiles and a cutout box at the corner of its four sky cells. It is
made once per test session and removed at its end.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from mastserver import mast_server  # noqa: F401 (the local MAST server fixture)
from wfrun import make_shared_run


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    yield make_shared_run(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def reliability_row():
    """``reliability_row(kind, expected, observed)``: a row of the reliability table
    (benchmarks/reliability.py), recorded by a scenario test once its assertions passed.
    With ``MVMFLOW_RELIABILITY_ROWS=FILE`` the session's rows are written there as JSON, for
    ``benchmarks/reliability.py --rows FILE``; otherwise they are dropped."""
    rows = []

    def record(kind: str, expected: str, observed: str, *, aborted: int = 0,
               lost: int = 0) -> None:
        rows.append({"kind": kind, "expected": expected, "observed": observed, "ok": True,
                     "aborted": aborted, "lost": lost})

    yield record
    target = os.environ.get("MVMFLOW_RELIABILITY_ROWS")
    if target and rows:
        path = os.path.abspath(target)
        old = json.loads(open(path).read()) if os.path.exists(path) else []
        with open(path, "w") as fh:
            json.dump(old + rows, fh, indent=1)
