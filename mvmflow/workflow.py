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
    """Send the ``mvmflow`` logger, warnings, printed output and uncaught errors of a rule
    script to its log file.

    Exceptions are logged with their traceback and re-raised, so Snakemake marks the job
    failed and ``--show-failed-logs`` shows why. Every record starts with its wall-clock
    time; a product's trailer keeps the log without it (:func:`mvmflow.provenance.untimed`
    matches this format), so a rerun gives an identical trailer.
    """
    Path(logfile).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logfile, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("mvmflow")
    logger.addHandler(handler)
    logger.setLevel(level)
    # warnings and anything a library prints (astropy's logger writes to sys.stderr) go to the
    # job's log too, not to the run's terminal (docs/terminal_output.md)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with contextlib.redirect_stdout(handler.stream), contextlib.redirect_stderr(handler.stream):
            yield
    except BaseException:
        logger.exception("rule failed")
        raise
    finally:
        logging.captureWarnings(False)
        warnings_logger.removeHandler(handler)
        logger.removeHandler(handler)
        handler.close()
        sys.stdout.flush()


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where possible."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    A killed or failed writer leaves no half-written ``path`` behind. The file gets the
    mode the user's umask gives an ordinary new file (``mkstemp`` creates it private, 0600,
    and a writer that replaces it keeps that mode), so collaborators can read the products
    (docs/conventions.md, "Files written").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
