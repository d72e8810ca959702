"""The integrity of an output directory: one run at a time, and intermediates checked.

Two guards (docs/data_path.md, "Faults: damaged intermediates, concurrent runs, full disks"):

**One run per output directory.** :func:`hold_outdir` creates the output directory (or
says in one line why it cannot) and takes an exclusive ``flock`` on ``<outdir>/.mvmflow.lock``,
held by the calling process (the main Snakemake process) until it exits, however it exits:
the kernel drops the lock of a dead process, so there is no stale lock to remove. A second
run into the same directory is refused naming the directory, the other run's PID, host and
start time, and what to do. (Snakemake's own lock is per working directory, so two runs
from different working directories into one output directory would both proceed, and its
message advises ``--unlock``, which is wrong while the other run is alive.)

**Sealed intermediates.** A file written by an owner module (:mod:`mvmflow.partials`,
:mod:`mvmflow.tiles`) carries two primary-header cards, :data:`SIZE_KEY` (the file's size in
bytes) and :data:`SUM_KEY` (the CRC-32 of the whole file with these two cards in their
placeholder form). The writer reserves them (:func:`seal_cards`) and fills them in on the
temporary file before its rename (:func:`seal`); both depend only on the content, so two
writes of one file stay the same bytes. A reader checks a file once per process before using
it (:func:`verify`: size and checksum; CRC-32 runs at several GB/s: 0.03 s for 128 MB read
from the page cache, 0.04 s to seal it), and a run's start removes every sealed
intermediate whose size differs from the one recorded (:func:`sweep`, a header read per
file), so Snakemake makes it again in the same run if a job of the run needs it. A
file whose checksum differs (same size, damaged bytes) is found by its reader, which removes
it and fails naming it; the next run makes it again. The start also removes what killed
writers left (:func:`remove_leftovers`: temporary ``.<name>.<random>.part`` files and tile
directories), which only the run holding the directory may do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "INTERMEDIATE_DIRS",
    "LOCK_NAME",
    "SIZE_KEY",
    "SUM_KEY",
    "FITS_BLOCK",
    "DamagedFile",
    "OutdirError",
    "hold_outdir",
    "remove_leftovers",
    "seal",
    "seal_cards",
    "sealed_size",
    "sweep",
    "verify",
]

SIZE_KEY = "MVMSIZE"
"""Primary-header keyword of a sealed file: its size in bytes."""

SUM_KEY = "MVMCRC"
"""Primary-header keyword of a sealed file: CRC-32 (8 hex digits) of the file with the two
seal cards in their placeholder form."""

LOCK_NAME = ".mvmflow.lock"
"""The lock file of an output directory."""

INTERMEDIATE_DIRS = ("partials", "partials_cr", "cr", "mosaic/partials", "mosaic/tiles")
"""Directories of an output directory that hold sealed intermediates (:func:`sweep`)."""

_COMMENTS = {SIZE_KEY: "file size in bytes (mvmflow.integrity)",
             SUM_KEY: "CRC-32 of the file, seal cards at 0"}
_PLACEHOLDERS = {SIZE_KEY: 0, SUM_KEY: "00000000"}
FITS_BLOCK = 2880
"""FITS block size in bytes (the one definition every reader and writer of the library uses)."""
_READ = 8 << 20
_MAX_HEADER_BLOCKS = 200  # a primary header longer than this is not one of ours


class DamagedFile(ValueError):
    """A sealed file whose size or checksum differs from the one recorded when written."""


class OutdirError(RuntimeError):
    """The output directory cannot be used: not creatable, not writable, or in use."""


# --------------------------------------------------------------------------------------
# Sealed files


def seal_cards() -> list[tuple[str, object, str]]:
    """The two seal cards in their placeholder form, for a writer's primary header."""
    return [(key, _PLACEHOLDERS[key], _COMMENTS[key]) for key in (SIZE_KEY, SUM_KEY)]


def _card(key: str, value) -> bytes:
    from astropy.io.fits import Card

    return Card(key, value, _COMMENTS[key]).image.encode("ascii")


def _header_cards(f) -> tuple[dict[str, tuple[int, bytes]], int] | None:
    """``({key: (offset, card)}, header bytes)`` of the seal cards in the primary header of
    the open file ``f``, or None when the header has none (or is not FITS)."""
    found: dict[str, tuple[int, bytes]] = {}
    f.seek(0)
    for block in range(_MAX_HEADER_BLOCKS):
        data = f.read(FITS_BLOCK)
        if len(data) < FITS_BLOCK:
            return None
        for i in range(0, FITS_BLOCK, 80):
            card = data[i:i + 80]
            key = card[:8].rstrip().decode("ascii", "replace")
            if key in _PLACEHOLDERS:
                found[key] = (block * FITS_BLOCK + i, card)
            elif key == "END":
                end = (block + 1) * FITS_BLOCK
                return (found, end) if len(found) == 2 else None
    return None


def _crc(f, cards: dict[str, tuple[int, bytes]], header_bytes: int) -> int:
    """CRC-32 of the open file with the seal cards replaced by their placeholders."""
    f.seek(0)
    head = bytearray(f.read(header_bytes))
    for key, (offset, _) in cards.items():
        head[offset:offset + 80] = _card(key, _PLACEHOLDERS[key])
    crc = zlib.crc32(head)
    while chunk := f.read(_READ):
        crc = zlib.crc32(chunk, crc)
    return crc


def _value(card: bytes) -> str:
    return card[10:].split(b"/")[0].strip().strip(b"'").strip().decode("ascii", "replace")


def seal(path: str | os.PathLike) -> None:
    """Fill in the seal cards of a file just written (its temporary name, before the rename).

    Raises
    ------
    ValueError
        If the file's primary header has no seal cards (:func:`seal_cards`).
    """
    with open(path, "r+b") as f:
        found = _header_cards(f)
        if found is None:
            raise ValueError(f"{Path(path).name}: no {SIZE_KEY}/{SUM_KEY} cards to fill in")
        cards, header_bytes = found
        crc = _crc(f, cards, header_bytes)
        size = f.seek(0, os.SEEK_END)
        for key, value in ((SIZE_KEY, size), (SUM_KEY, f"{crc:08x}")):
            f.seek(cards[key][0])
            f.write(_card(key, value))


def sealed_size(path: str | os.PathLike) -> int | None:
    """The size recorded in a sealed file's header (a header read), or None if unsealed."""
    try:
        with open(path, "rb") as f:
            found = _header_cards(f)
    except OSError:
        return None
    if found is None:
        return None
    try:
        return int(_value(found[0][SIZE_KEY][1]))
    except ValueError:
        return -1  # a damaged card: never the file's size


_VERIFIED: set[tuple[int, int, int, int]] = set()


def verify(path: str | os.PathLike, remove: bool = True) -> bool:
    """Check a sealed file's size and checksum against the ones recorded when it was written.

    A file is read whole once per process and version (device, inode, size, modification
    time); later calls return at once.

    Parameters
    ----------
    path : path-like
    remove : bool
        Remove a damaged file (an intermediate: the next run makes it again).

    Returns
    -------
    bool
        True if sealed and intact, False if the file carries no seal (written by an older
        mvmflow: nothing to check).

    Raises
    ------
    DamagedFile
        Naming the file, the size or checksum found and the one recorded.
    """
    path = Path(path)
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return True
    with open(path, "rb") as f:
        found = _header_cards(f)
        if found is None:
            return False
        cards, header_bytes = found
        size = os.fstat(f.fileno()).st_size
        recorded = _value(cards[SIZE_KEY][1])
        if recorded != str(size):
            why = f"{size} bytes, written as {recorded}"
        else:
            crc = f"{_crc(f, cards, header_bytes):08x}"
            recorded_crc = _value(cards[SUM_KEY][1])
            why = None if crc == recorded_crc else (f"checksum {crc}, written as "
                                                    f"{recorded_crc}")
    if why is None:
        _VERIFIED.add(key)
        return True
    if remove:
        path.unlink(missing_ok=True)
    raise DamagedFile(f"{path}: damaged after it was written ({why})"
                      + ("; removed: run again to make it anew" if remove else ""))


def sweep(outdir: str | os.PathLike, dirs: Iterable[str] = INTERMEDIATE_DIRS) -> list[Path]:
    """Remove the sealed intermediates of ``outdir`` whose size differs from the one recorded
    (truncated or extended since written), so the run makes them again; returns them.

    A header read per ``.fits`` file under ``dirs`` (hidden names, a writer's temporary
    files, are skipped). Run it only while holding the directory (:func:`hold_outdir`).
    """
    removed = []
    for path in _fits_files(Path(outdir), dirs):
        recorded = sealed_size(path)
        try:
            if recorded is not None and recorded != path.stat().st_size:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


_LEFTOVER_FILE = re.compile(r"^\..+\.[0-9a-f]{12}\.part$")  # mvmflow.workflow.atomic_path
_LEFTOVER_DIR = re.compile(r"^\..+\.tiles-[A-Za-z0-9_]{8}$")  # mvmflow.tiles.reduce_layer


def remove_leftovers(outdir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and tile directories that killed writers left in
    ``outdir`` (never a final name); returns them. Run it only while holding the directory
    (:func:`hold_outdir`): then no writer of this directory is alive."""
    removed = []
    for root, subdirs, files in os.walk(outdir):
        if Path(root) == Path(outdir) and "logs" in subdirs:
            subdirs.remove("logs")
        for name in [d for d in subdirs if _LEFTOVER_DIR.match(d)]:
            subdirs.remove(name)
            shutil.rmtree(Path(root) / name, ignore_errors=True)
            removed.append(Path(root) / name)
        for name in files:
            if _LEFTOVER_FILE.match(name):
                (Path(root) / name).unlink(missing_ok=True)
                removed.append(Path(root) / name)
    return removed


def _fits_files(outdir: Path, dirs: Iterable[str]) -> Iterator[Path]:
    for d in dirs:
        for root, subdirs, files in os.walk(outdir / d):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
            for name in sorted(files):
                if name.endswith(".fits") and not name.startswith("."):
                    yield Path(root) / name


# --------------------------------------------------------------------------------------
# One run per output directory

_HELD: dict[str, int] = {}


def hold_outdir(outdir: str | os.PathLike) -> Path | None:
    """Create ``outdir`` if needed and lock it for this process's lifetime.

    Returns
    -------
    Path or None
        The lock file, or None if the file system does not support locks (the run goes on
        unguarded).

    Raises
    ------
    OutdirError
        One line naming the directory and the reason: it cannot be created, it is not
        writable, or another run holds it (its PID, host and start time, and what to do).
    """
    path = Path(outdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutdirError(f"the output directory {outdir} cannot be created: "
                          f"{exc.strerror or exc}") from None
    if not path.is_dir():
        raise OutdirError(f"the output directory {outdir} is not a directory")
    lock = path / LOCK_NAME
    key = os.path.realpath(lock)
    if key in _HELD:
        return lock
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise OutdirError(f"the output directory {outdir} is not writable: "
                          f"{exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise OutdirError(
            f"the output directory {path.resolve()} is in use by another mvmflow run "
            f"({holder}): wait for it to end (or stop it), then run again; do not use "
            "--unlock while it runs") from None
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return None
        raise
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} on host {socket.gethostname()}, started {started}\n"
              .encode(), 0)
    _HELD[key] = fd
    return lock
