"""Small helpers for the workflow's rule scripts (logging, atomic writes)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import sys
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
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    # warnings and anything a library prints (astropy's logger writes to sys.stderr) go to the
    # job's log too, not to the run's terminal (docs/terminal_output.md)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    capturing = logging._warnings_showwarning is not None  # a caller's own capture stays
    logging.captureWarnings(True)
    try:
        with contextlib.redirect_stdout(handler.stream), contextlib.redirect_stderr(handler.stream):
            yield
    except BaseException:
        logger.exception("rule failed")
        raise
    finally:
        logging.captureWarnings(capturing)
        warnings_logger.removeHandler(handler)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
        sys.stdout.flush()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    A killed or failed writer leaves no half-written ``path`` behind. The temporary file is
    created with mode 0666, so the kernel gives it the mode the user's umask gives an
    ordinary new file (``mkstemp`` would make it private, 0600, and a writer that replaces it
    keeps that mode); collaborators can read the products (docs/conventions.md, "Files
    written").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:  # another writer's name: draw again
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if _disk_full(exc, tmp.parent):
            raise OSError(errno.ENOSPC, f"No space left on device writing {path} (nothing "
                          "was left under that name: free space and run again)") from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _disk_full(exc: BaseException, directory: Path) -> bool:
    """Whether a write failed for lack of space: ENOSPC or EDQUOT anywhere in the exception's
    chain, or a short write (astropy and numpy report one without its errno) on a file
    system with no space left."""
    seen = exc
    while seen is not None:
        if getattr(seen, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)
