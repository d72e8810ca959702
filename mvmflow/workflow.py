"""Small helpers for the workflow's rule scripts (logging, atomic writes)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def rule_logging(logfile: str | os.PathLike, level: int = logging.INFO) -> Iterator[None]:
    """Send the ``mvmflow`` logger (and uncaught errors) of a rule script to its log file.

    Exceptions are logged with their traceback and re-raised, so Snakemake marks the job
    failed and ``--show-failed-logs`` shows why.
    """
    Path(logfile).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logfile, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("mvmflow")
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    except BaseException:
        logger.exception("rule failed")
        raise
    finally:
        logger.removeHandler(handler)
        handler.close()
        sys.stdout.flush()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    A killed or failed writer leaves no half-written ``path`` behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
