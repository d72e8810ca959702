"""The reliability corpus (issue 17, "Bad and unusual inputs"): one workflow run on every kind
of bad or unusual input file among a few good exposures (``mvmflow.simulate.corpus``).

Each kind is a test of its own, so a failure names the kind: a rejected kind is in
``screen/rejected.ecsv`` with a reason naming the problem (and the screening report's log
names the file with it); an accepted one makes its product with the flux of its clean twin.
The run itself must exit 0 and make every product the good inputs allow.

The unreadable file (mode 000) is only unreadable to a process that cannot bypass file
permissions: as root (here and in CI) the run is started through ``setpriv`` without
``CAP_DAC_OVERRIDE``/``CAP_DAC_READ_SEARCH``; not as root, a mode-000 file is unreadable
anyway. Only a root run without ``setpriv`` skips that kind.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from wfrun import run_snakemake

from mvmflow.simulate.corpus import (
    DROP_READ_CAPS,
    corpus_kinds,
    evaluate,
    expected_products,
    present_products,
    run_config,
    write_corpus,
)

KINDS = corpus_kinds()


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    corpus = write_corpus(base / "corpus")
    root = os.geteuid() == 0
    prefix = DROP_READ_CAPS if root and shutil.which(DROP_READ_CAPS[0]) else ()
    t0 = time.time()
    out = run_snakemake(base / "run", run_config(corpus.pattern), check=False,
                        prefix=prefix)
    results = base / "run" / "results"
    yield {"corpus": corpus, "out": results, "proc": out, "seconds": time.time() - t0,
           "observed": {o.kind.name: o for o in evaluate(corpus, results,
                                                         unprivileged=bool(prefix) or not root)}}
    for path in base.rglob("*"):  # the mode-000 file must not stop the clean-up
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(base, ignore_errors=True)


def test_run_completes_and_loses_no_product(corpus_run):
    proc = corpus_run["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = expected_products(corpus_run["corpus"])
    present = present_products(corpus_run["out"])
    assert expected, "no product expected: the corpus has no usable input"
    assert sorted(expected - present) == [], "products lost"
    assert sorted(present - expected) == [], "products of inputs that should not be used"


def test_corpus_has_enough_kinds():
    assert len(KINDS) >= 25
    assert len({k.name for k in KINDS}) == len(KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_kind(corpus_run, kind):
    observed = corpus_run["observed"][kind.name]
    if observed.outcome == "skipped":
        pytest.skip(f"{kind.name}: {observed.detail}")
    assert observed.ok, f"{kind.name}: expected {kind.expected!r}, observed " \
                        f"{observed.outcome}: {observed.detail} ({'; '.join(observed.problems)})"
    assert observed.outcome == kind.outcome


def test_skipped_inputs_are_named_in_the_inputs_log(corpus_run):
    """The names the glob matched but could not use are logged by the inputs job too."""
    log = (corpus_run["out"] / "logs" / "inputs.log").read_text()
    corpus = corpus_run["corpus"]
    for name in ("directory", "dangling_symlink", "same_name_two_dirs"):
        kind = next(k for k in KINDS if k.name == name)
        assert f"not processed: {corpus.path(kind.files[0])}: " in log, name


def test_unreadable_kind_really_ran_unprivileged(corpus_run):
    """As root, the corpus run must not bypass file permissions (else ``unreadable`` proves
    nothing): the file was rejected for its permissions, not screened in."""
    if os.geteuid() != 0:
        pytest.skip("not root: a mode-000 file is unreadable anyway")
    observed = corpus_run["observed"]["unreadable"]
    assert observed.outcome == "rejected" and "Permission denied" in observed.detail
