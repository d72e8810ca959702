"""Fixtures shared by the test modules (docs/testing.md).

``shared_run`` is one workflow run that every test which only reads products uses: the
simulated ``tiny_sparse`` set with six bad files and an FLT twin, exposure-level products, a
custom mosaic in several tiles and a cutout box at the corner of its four sky cells. It is
made once per test session and removed at its end.
"""

from __future__ import annotations

import shutil

import pytest
from mastserver import mast_server  # noqa: F401 (the local MAST server fixture)
from wfrun import make_shared_run


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("shared")
    yield make_shared_run(base)
    shutil.rmtree(base, ignore_errors=True)
