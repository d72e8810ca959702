"""Downloads that never leave a bad file under its final name (docs/archive.md, "Downloads").

A file is fetched into ``.<name>.part`` beside its destination and renamed into place only
when its size, its checksum (when known) and, for FITS files, its structure (every HDU's
header and data present) check out. An interrupted transfer resumes with a ``Range``
request; timeouts, dropped connections and 5xx answers are retried with exponential
back-off; a 404 or 403 fails at once. After the last retry :class:`DownloadError` names the
file, the reason and the URL in one line. A file already present and verified is never
fetched again: a successful checksum verification is remembered in a small sidecar
(``.<name>.verified``) so a second run does not rehash large files.

Bundles (many files as one ``tar.gz``) are checked and extracted safely
(:func:`safe_extract`): no absolute paths, no ``..``, no links or devices.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import hashlib
import json
import logging
import os
import secrets
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests
from urllib3.exceptions import ReadTimeoutError

from mvmflow import __version__

try:  # advisory locks keep two processes from writing the same part file
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["DownloadError", "Transfer", "verify", "fetch", "fetch_all", "fetch_bundle",
           "safe_extract", "part_path", "sidecar_path", "fits_problem"]

log = logging.getLogger("mvmflow.archive")
_LOG = log  # fetch_all's ``log`` argument shadows the name

#: Longest wait between two attempts, in seconds.
MAX_BACKOFF = 60.0
#: Bytes read from the network at a time (what a dropped connection can lose of a part).
NET_CHUNK = 1 << 16
#: Bytes read from disk at a time.
CHUNK = 1 << 20
#: FITS block size.
FITS_BLOCK = 2880
#: Transfers at least this large get progress lines in the log.
LONG_TRANSFER = 10 << 20

_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_local = threading.local()


class DownloadError(OSError):
    """A file could not be fetched, or a bundle could not be extracted.

    The message is one line: ``"<file name>: <reason> (<url>)"``.

    Attributes
    ----------
    dest : pathlib.Path
        The file (or bundle) concerned.
    reason : str
        Why it failed.
    url : str or None
        What was asked for.
    """

    def __init__(self, dest: str | os.PathLike, reason: str, url: str | None = None):
        self.dest = Path(dest)
        self.reason = reason
        self.url = url
        message = f"{self.dest.name}: {reason}" + (f" ({url})" if url else "")
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.dest, self.reason, self.url))

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Transfer:
    """One file to fetch.

    Attributes
    ----------
    url : str
        Where it is served (``mvmflow.archive.service.file_url``).
    dest : pathlib.Path
        Its final local path.
    size : int, optional
        Its size in bytes, when the archive gives one.
    checksum : str, optional
        ``"md5:<hex>"`` or ``"sha256:<hex>"`` (any :mod:`hashlib` algorithm name works).
    """

    url: str
    dest: Path
    size: int | None = None
    checksum: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "dest", Path(self.dest))
        if self.checksum is not None:
            _split_checksum(self.checksum)  # fail early on a malformed value


class _Retry(Exception):
    """A failed attempt worth repeating (timeout, reset, 5xx, bad bytes)."""


class _Fatal(Exception):
    """A failure no retry can fix (404, 403)."""


class _Cancelled(Exception):
    """The caller asked every transfer to stop."""


# -- verification ---------------------------------------------------------------------------

def part_path(dest: str | os.PathLike) -> Path:
    """The temporary file a download of ``dest`` is written to (``.<name>.part``)."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.part"


def sidecar_path(dest: str | os.PathLike) -> Path:
    """The record of ``dest``'s last successful verification (``.<name>.verified``)."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.verified"


def _is_fits(path: Path) -> bool:
    return path.name.lower().endswith(_FITS_SUFFIXES)


def _split_checksum(checksum: str) -> tuple[str, str]:
    algorithm, sep, digest = checksum.partition(":")
    algorithm = algorithm.strip().lower()
    if not sep or not digest.strip() or algorithm not in hashlib.algorithms_available:
        raise ValueError(f"checksum {checksum!r} is not '<algorithm>:<hex>' "
                         "(e.g. 'md5:...' or 'sha256:...')")
    return algorithm, digest.strip().lower()


def _hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


_SIZE_KEYS = {"BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS"}


def _card_value(card: bytes) -> str:
    return card[10:].split(b"/", 1)[0].strip().decode("ascii", "replace")


def fits_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete FITS file, or None if it is.

    Reads the headers only: each HDU's header must end (``END`` card) and its data, as sized
    by ``BITPIX``, ``NAXISn``, ``PCOUNT`` and ``GCOUNT``, must be present, padded to whole
    2880-byte blocks, up to the end of the file.
    """
    path = Path(path)
    total = path.stat().st_size
    if total == 0 or total % FITS_BLOCK:
        return f"not a complete FITS file ({total} bytes is not a multiple of {FITS_BLOCK})"
    offset, hdu = 0, 0
    with open(path, "rb") as f:
        while offset < total:
            f.seek(offset)
            first = f.read(10)
            if first[:8] != (b"SIMPLE  " if hdu == 0 else b"XTENSION"):
                return f"not a complete FITS file (no header of HDU {hdu} at byte {offset})"
            f.seek(offset)
            keys: dict[str, str] = {}
            ended = False
            while not ended:
                block = f.read(FITS_BLOCK)
                offset += len(block)
                if len(block) < FITS_BLOCK:
                    return f"not a complete FITS file (header of HDU {hdu} has no END)"
                for i in range(0, FITS_BLOCK, 80):
                    card = block[i:i + 80]
                    key = card[:8].rstrip().decode("ascii", "replace")
                    if key == "END":
                        ended = True
                        break
                    if card[8:10] == b"= " and (key in _SIZE_KEYS or key.startswith("NAXIS")):
                        keys[key] = _card_value(card)
            try:
                bits = abs(int(keys["BITPIX"]))
                naxis = int(keys["NAXIS"])
                dims = [int(keys[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
                pcount = int(keys.get("PCOUNT", "0") or 0)
                gcount = int(keys.get("GCOUNT", "1") or 1)
            except (KeyError, ValueError):
                return f"not a complete FITS file (HDU {hdu} lacks BITPIX/NAXISn)"
            if hdu == 0 and keys.get("GROUPS") == "T" and dims and dims[0] == 0:
                dims = dims[1:]  # random groups: NAXIS1 = 0 is not a dimension
            elements = (pcount + _product(dims)) * gcount if naxis else 0
            data = bits // 8 * elements
            offset += -(-data // FITS_BLOCK) * FITS_BLOCK
            if offset > total:
                return (f"not a complete FITS file (data of HDU {hdu} end at byte {offset}, "
                        f"the file has {total})")
            hdu += 1
    return None


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _problem(path: Path, size: int | None, checksum: str | None, fits: bool,
             use_sidecar_of: Path | None = None) -> str | None:
    """The verification shared by :func:`verify` (the final file) and :func:`fetch` (the
    part file, checked as if it were ``use_sidecar_of``)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    if size is not None and st.st_size != size:
        return f"size differs ({st.st_size} bytes, expected {size})"
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": checksum,
              "fits": fits}
    sidecar = sidecar_path(path) if use_sidecar_of is None else None
    if sidecar is not None and checksum is not None:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(sidecar.read_text()) == record:
                return None  # verified before, and the file has not changed since
    if fits:
        problem = fits_problem(path)
        if problem:
            return problem
    if checksum is not None:
        algorithm, expected = _split_checksum(checksum)
        actual = _hash(path, algorithm)
        if actual != expected:
            return f"checksum differs ({algorithm} {actual}, expected {expected})"
        if sidecar is not None:
            _write_sidecar(path, record)
    return None


def _write_sidecar(dest: Path, record: dict) -> None:
    sidecar = sidecar_path(dest)
    tmp = sidecar.parent / f"{sidecar.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, sidecar)
    except OSError as exc:  # a read-only mirror still verifies, only slower next time
        log.debug("%s: cannot record the verification (%s)", dest.name, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def verify(path: str | os.PathLike, size: int | None = None, checksum: str | None = None, *,
           fits: bool = True) -> str | None:
    """Check a local file.

    Parameters
    ----------
    path : path
        The file.
    size : int, optional
        Its expected size in bytes.
    checksum : str, optional
        Its expected checksum, ``"md5:<hex>"`` or ``"sha256:<hex>"``.
    fits : bool
        Also check, when the name ends with ``.fits``, that it is a complete FITS file
        (every HDU's header and data present; headers are read, not the data).

    Returns
    -------
    str or None
        None if the file is good, else the reason (``"missing"``, ``"size differs ..."``,
        ``"checksum differs ..."``, ``"not a complete FITS file ..."``).

    Notes
    -----
    A successful checksum verification is recorded in ``.<name>.verified`` (size,
    modification time, checksum); while the file keeps that size and time, it is not
    hashed again.
    """
    path = Path(path)
    return _problem(path, size, checksum, fits and _is_fits(path))


# -- one file -------------------------------------------------------------------------------

def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = (f"mvmflow/{__version__} "
                                         f"python-requests/{requests.__version__}")
        _local.session = session
    return session


@contextlib.contextmanager
def _locked_part(part: Path):
    """Open (create) ``part`` for writing and hold an exclusive lock on it.

    The lock is taken on the file the path names when the lock is held: if another
    process renamed it away meanwhile, open the new one.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(part, os.O_CREAT | os.O_RDWR, 0o666)
        if fcntl is None:
            break
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(part).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield fd
    finally:
        os.close(fd)  # also releases the lock


def _transfer_once(session: requests.Session, transfer: Transfer, fd: int, timeout: float,
                   progress: Callable[[int, int | None], None] | None,
                   cancel: threading.Event | None) -> str | None:
    """One attempt: append to the part file from where it stops (or restart from 0).

    Returns the server's ``Last-Modified`` (None when it sent none or the part was already
    complete)."""
    size = transfer.size
    offset = os.fstat(fd).st_size
    if size is not None and offset > size:
        os.ftruncate(fd, 0)
        offset = 0
    if size is not None and offset == size:
        return None  # a complete part from an earlier attempt: verify it
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session.get(transfer.url, headers=headers, stream=True, timeout=timeout) as r:
            status = r.status_code
            if status == 404:
                raise _Fatal("not found (HTTP 404)")
            if status in (401, 403):
                raise _Fatal(f"not public (HTTP {status})")
            if status == 416:  # our part is not a prefix of what the server has
                os.ftruncate(fd, 0)
                raise _Retry("range not satisfiable (HTTP 416), restarting")
            if status >= 500:
                raise _Retry(f"HTTP {status}")
            if status >= 400 or status < 200:
                raise _Fatal(f"HTTP {status}")
            if offset and status == 206:
                start = _content_range_start(r.headers.get("Content-Range"))
                if start != offset:
                    os.ftruncate(fd, 0)
                    raise _Retry(f"answer starts at byte {start}, asked {offset}; restarting")
            elif offset:  # the server ignored the range: start again from byte 0
                log.debug("%s: server ignored Range, restarting", transfer.dest.name)
                os.ftruncate(fd, 0)
                offset = 0
            length = r.headers.get("Content-Length")
            expected = offset + int(length) if length and length.isdigit() else None
            total = size if size is not None else expected
            if size is not None and expected is not None and expected != size:
                if not offset:  # the archive's file is not the one the table describes
                    raise _Fatal(f"the server has {expected} bytes, expected {size}")
                os.ftruncate(fd, 0)
                raise _Retry(f"answer ends at byte {expected}, expected {size}; restarting")
            done = offset
            os.lseek(fd, offset, os.SEEK_SET)
            if progress:
                progress(done, total)
            for chunk in r.iter_content(NET_CHUNK):
                if cancel is not None and cancel.is_set():
                    raise _Cancelled()
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                done += len(chunk)
                if progress:
                    progress(done, total)
            if expected is not None and done != expected:
                raise _Retry(f"body ended at byte {done} of {expected}")
            return r.headers.get("Last-Modified")
    except _NETWORK_ERRORS as exc:
        raise _network_retry(exc, timeout) from exc


_NETWORK_ERRORS = (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                   requests.exceptions.ChunkedEncodingError,
                   requests.exceptions.ContentDecodingError)


def _network_retry(exc: Exception, timeout: float) -> _Retry:
    """The retryable reason for a network error (a read timeout mid-body comes as a
    ``ConnectionError`` wrapping urllib3's ``ReadTimeoutError``)."""
    if isinstance(exc, requests.exceptions.Timeout) or any(
            isinstance(arg, ReadTimeoutError) for arg in exc.args):
        return _Retry(f"timed out after {timeout:g} s")
    return _Retry(f"connection broken ({_short(exc)})")


def _content_range_start(value: str | None) -> int | None:
    try:
        return int(value.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _wait(attempt: int, backoff: float, cancel: threading.Event | None) -> None:
    delay = min(backoff * 2 ** attempt, MAX_BACKOFF)
    if cancel is not None:
        if cancel.wait(delay):
            raise _Cancelled()
    elif delay > 0:
        time.sleep(delay)


def _fetch(transfer: Transfer, **kwargs) -> Path:
    """:func:`_fetch_file`, with a local error (a read-only mirror, a full disk) reported
    like a failed transfer: one line naming the file."""
    try:
        return _fetch_file(transfer, **kwargs)
    except DownloadError:
        raise
    except OSError as exc:
        reason = exc.strerror or _short(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        raise DownloadError(transfer.dest, f"cannot write: {reason}{where}") from exc


def _fetch_file(transfer: Transfer, *, retries: int, backoff: float, timeout: float,
                progress: Callable[[int, int | None], None] | None,
                session: requests.Session | None, cancel: threading.Event | None) -> Path:
    dest = transfer.dest
    fits = _is_fits(dest)
    problem = _problem(dest, transfer.size, transfer.checksum, fits)
    if problem is None:
        return dest
    if problem != "missing":  # never leave a bad file under its final name
        log.warning("%s: %s; fetching it again", dest.name, problem)
        dest.unlink(missing_ok=True)
        sidecar_path(dest).unlink(missing_ok=True)
    session = session or _session()
    part = part_path(dest)
    reason = "not attempted"
    with _locked_part(part) as fd:
        # another process may have finished it while we waited for the lock
        if _problem(dest, transfer.size, transfer.checksum, fits) is None:
            part.unlink(missing_ok=True)
            return dest
        for attempt in range(retries + 1):
            if attempt:
                _wait(attempt - 1, backoff, cancel)
            try:
                last_modified = _transfer_once(session, transfer, fd, timeout, progress,
                                               cancel)
            except _Fatal as exc:
                part.unlink(missing_ok=True)
                raise DownloadError(dest, str(exc), transfer.url) from None
            except _Cancelled:
                raise DownloadError(dest, "cancelled", transfer.url) from None
            except _Retry as exc:
                reason = str(exc)
                log.info("%s: %s (attempt %d of %d)", dest.name, reason, attempt + 1,
                         retries + 1)
                continue
            os.fsync(fd)
            problem = _problem(part, transfer.size, transfer.checksum, fits,
                               use_sidecar_of=dest)
            if problem is None:
                os.replace(part, dest)
                _keep_server_time(dest, last_modified)
                if transfer.checksum is not None:
                    st = dest.stat()
                    _write_sidecar(dest, {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                          "checksum": transfer.checksum, "fits": fits})
                return dest
            reason = problem
            log.info("%s: %s (attempt %d of %d)", dest.name, reason, attempt + 1, retries + 1)
            os.ftruncate(fd, 0)  # bad bytes: the next attempt starts from byte 0
        if os.fstat(fd).st_size == 0:
            part.unlink(missing_ok=True)
    attempts = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
    raise DownloadError(dest, f"{reason}, after {attempts}", transfer.url)


def _keep_server_time(dest: Path, last_modified: str | None) -> None:
    """Give ``dest`` the server's ``Last-Modified`` time (when it sent one): a file fetched
    again into a shared mirror then keeps the time it had, so the runs that already used it
    do not redo their jobs (Snakemake compares modification times; docs/archive.md)."""
    if not last_modified:
        return
    try:
        stamp = email.utils.parsedate_to_datetime(last_modified).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        log.debug("%s: unreadable Last-Modified %r", dest.name, last_modified)
        return
    if stamp < time.time():  # never a time in the future
        os.utime(dest, (time.time(), stamp))


def fetch(transfer: Transfer, *, retries: int = 4, backoff: float = 1.0, timeout: float = 60.0,
          progress: Callable[[int, int | None], None] | None = None,
          session: requests.Session | None = None) -> Path:
    """Fetch one file, or do nothing if it is already there and good.

    Parameters
    ----------
    transfer : Transfer
        What to fetch and where to put it.
    retries : int
        How many times a failed attempt (timeout, dropped connection, 5xx, bytes that fail
        verification) is repeated.
    backoff : float
        Seconds before the first retry; doubled at each retry, at most :data:`MAX_BACKOFF`.
    timeout : float
        Seconds to wait for the connection and for each read.
    progress : callable, optional
        ``progress(done_bytes, total_bytes_or_None)``, called as bytes arrive.
    session : requests.Session, optional
        Default: one session per thread.

    Returns
    -------
    pathlib.Path
        ``transfer.dest``, verified.

    Raises
    ------
    DownloadError
        At once for a 404 (``"not found"``) or 401/403 (``"not public"``); after the last
        retry otherwise. The message names the file, the reason and the URL.

    Notes
    -----
    The bytes go to ``.<name>.part`` beside the destination, created with the mode the
    umask gives (``0666 & ~umask``); an interrupted transfer resumes from there with a
    ``Range`` request (or restarts from 0 when the server ignores ranges). The part is
    renamed to the destination only after the size, checksum and, for ``.fits`` names,
    FITS structure check out, so no partial or corrupt file ever appears under the final
    name. A file already present under that name but failing verification is removed
    first. A part left by an interrupted run is resumed by the next one.
    """
    return _fetch(transfer, retries=retries, backoff=backoff, timeout=timeout,
                  progress=progress, session=session, cancel=None)


# -- many files -----------------------------------------------------------------------------

class _ProgressLog:
    """Log a long transfer every 10 % or 5 s."""

    def __init__(self, name: str, logger: logging.Logger, min_bytes: int = LONG_TRANSFER):
        self.name, self.logger, self.min_bytes = name, logger, min_bytes
        self.start = self.last_time = time.monotonic()
        self.next_fraction = 0.1

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if total is not None and total < self.min_bytes and now - self.start < 5:
            return
        fraction = done / total if total else None
        if (fraction is not None and fraction >= self.next_fraction) or \
                now - self.last_time >= 5:
            self.last_time = now
            if fraction is not None:
                self.next_fraction = (int(fraction * 10) + 1) / 10
                self.logger.info("%s: %d%% of %.1f MB", self.name, int(fraction * 100),
                                 total / 1e6)
            else:
                self.logger.info("%s: %.1f MB", self.name, done / 1e6)


def fetch_all(transfers: Iterable[Transfer], *, workers: int = 4, retries: int = 4,
              backoff: float = 1.0, timeout: float = 60.0,
              log: logging.Logger | None = None) -> dict[Path, DownloadError | None]:
    """Fetch many files with a bounded pool of threads.

    Parameters
    ----------
    transfers : iterable of Transfer
        The files; a destination listed twice is fetched once.
    workers : int
        How many transfers run at the same time.
    retries, backoff, timeout
        As for :func:`fetch`, for each file.
    log : logging.Logger, optional
        Where progress and failures go; default the ``mvmflow.archive`` logger.

    Returns
    -------
    dict
        For each destination: None if it is there and verified, else its
        :class:`DownloadError`. One failure does not stop the others.

    Notes
    -----
    An interrupt (Ctrl-C) stops every transfer at its next chunk; parts stay for the next
    run to resume.
    """
    logger = log if log is not None else _LOG
    unique: dict[Path, Transfer] = {}
    for t in transfers:
        unique.setdefault(Path(t.dest), t)
    outcome: dict[Path, DownloadError | None] = {}
    if not unique:
        return outcome
    cancel = threading.Event()

    def one(t: Transfer) -> Path:
        return _fetch(t, retries=retries, backoff=backoff, timeout=timeout,
                      progress=_ProgressLog(t.dest.name, logger), session=None, cancel=cancel)

    pool = ThreadPoolExecutor(max_workers=max(1, int(workers)),
                              thread_name_prefix="mvmflow-fetch")
    try:
        futures = {pool.submit(one, t): dest for dest, t in unique.items()}
        for n, future in enumerate(as_completed(futures), 1):
            dest = futures[future]
            try:
                future.result()
                outcome[dest] = None
            except DownloadError as exc:
                outcome[dest] = exc
                logger.warning("%s", exc)
            if len(unique) > 1 and (n == len(unique) or n % max(1, len(unique) // 10) == 0):
                logger.info("fetched %d of %d files", n, len(unique))
    except BaseException:
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    failed = sum(1 for e in outcome.values() if e is not None)
    if failed:
        logger.warning("%d of %d files could not be fetched", failed, len(unique))
    return {dest: outcome[dest] for dest in unique}


# -- bundles --------------------------------------------------------------------------------

_TAR_TYPES = ("application/x-tar", "application/gzip", "application/x-gzip",
              "application/x-gtar", "application/octet-stream", "application/x-compressed-tar")


def fetch_bundle(url: str, uris: Iterable[str], dest_dir: str | os.PathLike, *,
                 timeout: float = 600.0, retries: int = 4, backoff: float = 1.0,
                 session: requests.Session | None = None) -> list[Path]:
    """Fetch many files as one ``tar.gz`` bundle and extract it safely.

    Parameters
    ----------
    url : str
        The bundle service (``mvmflow.archive.service.bundle_url``); POSTed with the form
        field ``uri`` repeated.
    uris : iterable of str
        The dataURIs.
    dest_dir : path
        Where the members go (their paths inside the bundle are kept, e.g.
        ``mastDownload/HST/<obs_id>/<file>``).
    timeout, retries, backoff
        As for :func:`fetch`.

    Returns
    -------
    list of pathlib.Path
        The extracted files.

    Raises
    ------
    DownloadError
        If the answer is not a tar archive (an error page, a JSON message), cannot be read,
        or holds an unsafe member (:func:`safe_extract`); after the last retry for
        timeouts, dropped connections and 5xx.
    """
    uris = list(uris)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    session = session or _session()
    label = dest_dir / "bundle.tar.gz"
    reason = "not attempted"
    for attempt in range(retries + 1):
        if attempt:
            _wait(attempt - 1, backoff, None)
        tmp = dest_dir / f".bundle-{secrets.token_hex(6)}.tar.gz.part"
        try:
            try:
                _post_bundle(session, url, uris, tmp, timeout)
            except _Fatal as exc:
                raise DownloadError(label, str(exc), url) from None
            except _Retry as exc:
                reason = str(exc)
                log.info("bundle of %d files: %s (attempt %d of %d)", len(uris), reason,
                         attempt + 1, retries + 1)
                continue
            try:
                _check_archive(tmp)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                reason = f"not a readable tar archive ({_short(exc)})"
                continue
            return safe_extract(tmp, dest_dir, label=label.name)
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(label, f"{reason}, after {retries + 1} attempts", url)


def _check_archive(path: Path) -> None:
    """Read the whole archive once: a gzip stream's CRC is only checked at its end."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if gzipped:
        with gzip.open(path) as g:
            while g.read(CHUNK):
                pass
    with tarfile.open(path, "r:*") as tar:
        tar.getmembers()


def _post_bundle(session: requests.Session, url: str, uris: list[str], tmp: Path,
                 timeout: float) -> None:
    try:
        with session.post(url, data={"uri": uris}, stream=True, timeout=timeout,
                          headers={"Accept-Encoding": "identity"}) as r:
            if r.status_code == 404:
                raise _Fatal("bundle service not found (HTTP 404)")
            if r.status_code in (401, 403):
                raise _Fatal(f"not public (HTTP {r.status_code})")
            if r.status_code >= 500:
                raise _Retry(f"HTTP {r.status_code}")
            if r.status_code != 200:
                raise _Fatal(f"HTTP {r.status_code}")
            kind = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind and kind not in _TAR_TYPES:
                text = r.raw.read(200, decode_content=True).decode("utf-8", "replace")
                raise _Fatal(f"the answer is {kind}, not a tar archive: {' '.join(text.split())}")
            length = r.headers.get("Content-Length")
            done = 0
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            with os.fdopen(fd, "wb") as f:
                for chunk in r.iter_content(NET_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
            if length and length.isdigit() and done != int(length):
                raise _Retry(f"body ended at byte {done} of {length}")
    except _NETWORK_ERRORS as exc:
        raise _network_retry(exc, timeout) from exc


def _unsafe(member: tarfile.TarInfo) -> str | None:
    name = member.name
    pure = PurePosixPath(name)
    if not name or "\x00" in name:
        return "an empty or invalid name"
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in pure.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a '..' component"
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r})"
    if member.isdev():
        return "a device or fifo"
    if not (member.isfile() or member.isdir()):
        return "not a regular file"
    return None


def safe_extract(tar_path: str | os.PathLike, dest_dir: str | os.PathLike, *,
                 label: str | None = None) -> list[Path]:
    """Extract a tar archive, refusing anything that could write outside ``dest_dir``.

    Every member is checked before anything is written: an absolute path, a ``..``
    component, a symbolic or hard link, a device or fifo makes the whole archive refused.
    The checks of :func:`tarfile.data_filter` are applied as well where Python has them.
    Files are written to a temporary name and renamed into place, with the mode the umask
    gives; the members' own modes and owners are ignored.

    Parameters
    ----------
    tar_path : path
        The archive (any compression :mod:`tarfile` reads).
    dest_dir : path
        Where the members go.
    label : str, optional
        The name errors give for the archive; default ``tar_path``'s name.

    Returns
    -------
    list of pathlib.Path
        The extracted files, in archive order.

    Raises
    ------
    DownloadError
        Naming the archive and the refused member.
    """
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    label_path = Path(label or tar_path.name)
    root = dest_dir.resolve()
    try:
        tar = tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DownloadError(label_path, f"not a readable tar archive ({_short(exc)})") from None
    with tar:
        members = tar.getmembers()
        for member in members:
            why = _unsafe(member)
            if why is None and hasattr(tarfile, "data_filter"):
                try:
                    tarfile.data_filter(member, str(root))
                except tarfile.FilterError as exc:
                    why = _short(exc)
            if why is None:
                target = (root / member.name).resolve()
                if target != root and root not in target.parents:
                    why = "a path outside the destination"
            if why:
                raise DownloadError(label_path, f"refused member {member.name!r}: {why}")
        written: list[Path] = []
        for member in members:
            target = root / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
            source = tar.extractfile(member)
            try:
                fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                with os.fdopen(fd, "wb") as f:
                    while block := source.read(CHUNK):
                        f.write(block)
                os.replace(tmp, target)
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise DownloadError(label_path, f"cannot extract {member.name!r} "
                                                f"({_short(exc)})") from None
            finally:
                tmp.unlink(missing_ok=True)
            written.append(dest_dir / member.name)
    return written
