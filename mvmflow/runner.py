"""Run the workflow's rule scripts in processes forked from one preloaded server.

A rule script run by Snakemake's ``script:`` directive starts a new interpreter and imports
numpy, astropy and the library again: 0.5-1.0 s per job, where a small exposure's work takes
0.1-0.2 s. The rules therefore call :func:`run_script` from a one-line ``run:`` block
(executed in a thread of the Snakemake process, ``force-use-threads`` in the workflow
profile). It runs the script in a process forked from a *fork server* that imported the
modules of :data:`PRELOAD` once:

- each job still runs in its own process: its own memory (freed when it ends), its own
  interpreter lock (jobs run in parallel), and a crash ends that job only;
- the script sees the same ``snakemake`` object it would under ``script:`` (:class:`Job`),
  so the scripts in ``scripts/`` stay thin and unchanged;
- a failure is raised in the calling thread as :class:`JobFailed`, which Snakemake reports as
  the job's failure (the script's own log holds the traceback).

Design and measurements: docs/speed.md, "Job start-up". The library never imports
Snakemake: :func:`job_from_rule` copies what a script reads out of Snakemake's objects into
plain lists and dicts.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pickle
import resource
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Modules the fork server imports before it serves its first job: what the first jobs of a
#: run (inputs, screening) import (docs/speed.md, "Job start-up").
PRELOAD_FIRST = (
    "numpy",
    "astropy.io.fits",
    "astropy.table",
    "astropy.wcs",
    "mvmflow.workflow",
    "mvmflow.inputs",
    "mvmflow.records",
    "mvmflow.headers",
    "mvmflow.screen",
)

#: Modules the fork server imports once: :data:`PRELOAD_FIRST`, then, between jobs while no
#: job is waiting to start, the rest of what the rule scripts import and what the library
#: imports lazily inside functions (the pixel map's spline, drizzle, photutils, tweakwcs:
#: 0.1-0.5 s per job otherwise), roughly in the order a run needs them; 1-2 s once, about
#: 125 MB of shared memory. A job forked before a module is in imports it itself.
PRELOAD = PRELOAD_FIRST + (
    "astropy.io.misc.yaml",  # ECSV tables (0.1 s)
    "astropy.units",
    "astropy.coordinates",
    "mvmflow.plan",
    "mvmflow.mosaic",
    "mvmflow.params",
    "mvmflow.runplan",
    "mvmflow.grid",
    "mvmflow.names",
    "mvmflow.aligned",
    "mvmflow.solution",
    "scipy.interpolate",
    "scipy.ndimage",
    "scipy.special",
    "drizzle.resample",
    "mvmflow.exposure",
    "mvmflow.masks",
    "mvmflow.resample",
    "mvmflow.partials",
    "mvmflow.skygroup",
    "mvmflow.tiles",
    "mvmflow.products",
    "mvmflow.provenance",
    "mvmflow.crreject",
    "mvmflow.median",
    "photutils.background",
    "photutils.detection",
    "tweakwcs.correctors",
    "tweakwcs.linearfit",
    "mvmflow.fitting",
    "mvmflow.catalogs",
    "mvmflow.align",
    # the previews (rules/report.smk): matplotlib and WCSAxes take 1.3 s to import
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "astropy.visualization.wcsaxes",
    "mvmflow.preview",
)

#: The jobs' memory settings with ``reuse_memory`` (a user's own variables win): glibc's
#: allocator keeps large arrays on the heap, not returning them to the kernel, so a job
#: reuses its memory instead of having the kernel zero fresh pages for every temporary
#: array; and numpy's huge-page advice is off (docs/speed.md, "Memory allocation").
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 34),
              # one heap for all of a job's threads: memory one thread frees is reused by
              # the others (the full-frame layer job's peak in two threads: 1.36-1.49 GB
              # with a heap per thread, 1.22 GB with one; docs/speed.md, "Threads")
              "MALLOC_ARENA_MAX": "1",
              # numpy asks the kernel for huge pages for its large arrays
              # (madvise(MADV_HUGEPAGE)); where the kernel then compacts memory on the page
              # fault (transparent_hugepage/defrag "madvise", a common default) a job stalls
              # for seconds once memory is fragmented by the files a run writes: the
              # full-frame workload took 68-76 s with, 60 s without (docs/speed.md,
              # "Memory allocation")
              "NUMPY_MADVISE_HUGEPAGE": "0"}

_PR_SET_PDEATHSIG = 1


class JobFailed(RuntimeError):
    """A rule script raised or its process died; the message names the script and why."""


class Named(list):
    """A list whose entries may also have names, as Snakemake's ``input``, ``output``,
    ``log``, ``params`` and ``wildcards``: ``job.input[0]``, ``job.input.exposure``,
    ``job.input.get("crmask", [])``, ``job.input.keys()``."""

    def __init__(self, items: Iterable = (), names: Mapping[str, Any] | None = None):
        super().__init__(items)
        self._names = dict(names or {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._names.get(name, default)

    def keys(self):
        return self._names.keys()

    def items(self):
        return self._names.items()


@dataclass
class Job:
    """What a rule script reads as ``snakemake``: the job's files, parameters and settings."""

    rule: str
    input: Named = field(default_factory=Named)
    output: Named = field(default_factory=Named)
    params: Named = field(default_factory=Named)
    wildcards: Named = field(default_factory=Named)
    log: Named = field(default_factory=Named)
    threads: int = 1
    resources: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """``value`` with Snakemake's file and list types replaced by ``str`` and ``list``."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _named(obj: Any) -> Named:
    names = {name: _plain(value) for name, value in obj.items()} if hasattr(obj, "items") else {}
    return Named((_plain(v) for v in obj), names)


def job_from_rule(rule: str, input, output, params, wildcards, threads, resources, log,
                  config: Mapping) -> Job:
    """A :class:`Job` from the objects of a Snakemake ``run:`` block (any objects that
    iterate like lists and have ``items()`` for their named entries)."""
    res = {name: value for name, value in resources.items()
           if isinstance(value, (int, float, str))} if hasattr(resources, "items") else {}
    return Job(rule=rule, input=_named(input), output=_named(output), params=_named(params),
               wildcards=_named(wildcards), log=_named(log), threads=int(threads),
               resources=res, config=dict(config))


# ---- the fork server --------------------------------------------------------------------
#
# One server process per Snakemake run, started at the first job (or by start_server): it
# imports PRELOAD, then waits on a Unix socket. Per job it forks a *supervisor*, which forks
# the *job* process. The job sends its result on the connection; the supervisor waits for it
# and sends its exit status (so a job killed by a signal or by the kernel's out-of-memory
# killer is reported as such). multiprocessing's own forkserver is not used: its
# Process.start() polls the other threads' processes, which loses exit codes when several
# threads start jobs at once (measured: 1 in 20 jobs reported exit code 255).
#
# Lifetimes: the server exits when the Snakemake process's end of the "alive" pipe closes
# (however Snakemake ends); supervisors and jobs ask Linux to kill them when their parent
# ends (PR_SET_PDEATHSIG), so nothing of a killed run goes on writing.

_server_lock = threading.Lock()
_servers: dict[tuple[str, bool], _Server] = {}  # by interpreter and memory setting


def _send(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack("!Q", len(data)) + data)


def _recv(sock: socket.socket) -> Any:
    """The next object on ``sock``; EOFError when the other end closed first."""
    head = _recv_exactly(sock, 8)
    return pickle.loads(_recv_exactly(sock, struct.unpack("!Q", head)[0]))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent ends (the jobs; the worker processes
    a job forks, :func:`mvmflow.tiles.reduce_layer`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the process simply runs to its end
        pass


def fork_pool(workers: int, initializer=None, initargs=()):
    """A ``concurrent.futures`` process pool whose workers are forked where the platform
    allows (they start with what the caller has loaded), else started its default way."""
    import concurrent.futures
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs)


def _execute(script: str, job: Job) -> None:
    sys.argv = [script]
    runpy.run_path(script, init_globals={"snakemake": job}, run_name="__main__")


PROFILE_ENV = "MVMFLOW_PROFILE_DIR"
"""Set (to a directory) in the environment of ``snakemake``: every job runs under
:mod:`cProfile` and writes ``<rule>-<pid>.prof`` there (docs/speed.md)."""


def _profiler():
    if not os.environ.get(PROFILE_ENV):
        return None
    import cProfile

    os.makedirs(os.environ[PROFILE_ENV], exist_ok=True)
    profile = cProfile.Profile()
    profile.enable()
    return profile


current_job: Job | None = None
"""In a job's process: its :class:`Job` (for tools that watch jobs, e.g. the benchmarks'
peak-memory hook in ``benchmarks/measure.py``)."""


def _run_job(conn: socket.socket, script: str, job: Job, cwd: str) -> None:
    """In the job process: run the script, send the result; never returns."""
    global current_job
    current_job = job
    code = 1
    try:
        die_with_parent()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(cwd)
        profile = _profiler()
        try:
            _execute(script, job)
        except BaseException as error:  # reported to the caller, which fails the job
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            _send(conn, ("result", False, text))
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            _send(conn, ("result", True, f"peak RSS {peak:.0f} MB"))
            code = 0
        finally:
            if profile is not None:
                profile.disable()
                profile.dump_stats(os.path.join(os.environ[PROFILE_ENV],
                                                f"{job.rule}-{os.getpid()}.prof"))
    finally:
        # end as an interpreter does: exit handlers (logging's flush, ...), then the streams
        try:
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _supervise(conn: socket.socket) -> None:
    """In the supervisor: read the request, fork the job, report its exit; never returns."""
    try:
        die_with_parent()
        script, job, cwd = _recv(conn)
        pid = os.fork()
        if pid == 0:
            _run_job(conn, script, job, cwd)
        _, status = os.waitpid(pid, 0)
        _send(conn, ("status", status))
    finally:
        os._exit(0)


def _launch(argv: list[str]) -> None:
    """The launcher (``python -c``, started by :class:`_Server`): fork the server, tell the
    caller its PID on the ``done`` pipe and exit at once. The server is then nobody's child
    in the caller's process tree (docs/speed.md, "Job start-up": Snakemake's ``benchmark:``
    sampling walks that tree every half second per running job)."""
    listen_fd, alive_fd, done_fd, first = (int(v) for v in argv[:4])
    pid = os.fork()
    if pid:
        os.write(done_fd, struct.pack("!Q", pid))
        os._exit(0)
    serve(listen_fd, alive_fd, argv[4:], first, done_fd=done_fd)


def serve(listen_fd: int, alive_fd: int, preload: Iterable[str] = PRELOAD,
          first: int | None = None, done_fd: int | None = None) -> None:
    """The fork server's main loop.

    ``alive_fd``: the read end of a pipe the caller holds open while it lives; ``done_fd``
    (optional): the write end of a pipe the server holds open while it lives (its jobs do
    not), so the caller sees the server's end as end-of-file.

    The first ``first`` modules of ``preload`` (default: all) are imported before any job is
    served; the others one at a time while no job is waiting to start. The server is single
    threaded, so a job is never forked in the middle of an import.
    """
    import gc
    import importlib
    import selectors

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the jobs, not the server
    pending = list(preload)
    first = len(pending) if first is None else first
    listener = socket.socket(fileno=listen_fd)
    address = listener.getsockname()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(alive_fd, selectors.EVENT_READ)
    while True:
        if pending and (first > 0 or not selector.select(timeout=0)):
            first -= 1
            try:
                importlib.import_module(pending.pop(0))
            except Exception:  # a job that needs it will say why
                pass
            if not _closed(alive_fd):
                continue
        for key, _ in selector.select(timeout=0 if pending else 1.0):
            if key.fileobj == alive_fd:  # the Snakemake process ended
                _reap(wait=1.0)
                # its socket's private directory too: a caller killed with SIGKILL cannot
                # remove it (a normal end removes it in _Server.stop as well)
                if isinstance(address, str) and address:
                    shutil.rmtree(os.path.dirname(address), ignore_errors=True)
                os._exit(0)
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            # the preloaded objects out of the cyclic collector's sight: otherwise each full
            # collection in a job walks them all and copies their pages (copy-on-write),
            # 0.1 s or more per job (docs/speed.md, "Job start-up")
            gc.freeze()
            if os.fork() == 0:
                selector.close()
                listener.close()
                os.close(alive_fd)
                if done_fd is not None:
                    os.close(done_fd)
                _supervise(conn)
            conn.close()
        _reap()


def _closed(fd: int, wait: float = 0.0) -> bool:
    """Whether the other end of the pipe ``fd`` is closed, waiting up to ``wait`` seconds (it
    never writes after what was read: readable means end of file)."""
    import select

    return bool(select.select([fd], [], [], wait)[0])


def _reap(wait: float = 0.0) -> None:
    """Collect ended supervisors (waited for, not left to the kernel: so their peak memory,
    and their jobs', count in the run's ``RUSAGE_CHILDREN``); up to ``wait`` seconds for the
    last ones to end."""
    deadline = time.monotonic() + wait
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


_DIR_PREFIX = "mvmflow-jobs-"


def remove_stale_dirs(tmpdir: str | None = None) -> int:
    """Remove the socket directories of job servers that are gone; return how many.

    A server removes its directory when it ends, unless it was killed with its whole
    process group (``kill -9 -PGID``, a batch system's cancel): then an empty directory
    with a dead socket stays in the temporary directory. The next server to start removes
    those of this user whose socket no longer accepts a connection (or, an hour old, has
    none); a live or starting server's is left alone.
    """
    tmpdir = tmpdir or tempfile.gettempdir()
    removed = 0
    try:
        entries = [e for e in os.scandir(tmpdir) if e.name.startswith(_DIR_PREFIX)]
    except OSError:
        return 0
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False) or \
                    entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            address = os.path.join(entry.path, "socket")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                try:
                    probe.connect(address)
                    continue  # a live server
                except ConnectionRefusedError:
                    pass
                except FileNotFoundError:  # no socket yet (a server starting) or any more
                    if time.time() - entry.stat(follow_symlinks=False).st_mtime < 3600:
                        continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


class _Server:
    """The caller's handle on a running fork server.

    The server is started through a launcher that forks it and exits, so it is not a
    descendant of the caller: Snakemake's ``benchmark:`` records of ``run:`` jobs sample
    the memory of the Snakemake process and all its descendants twice a second per running
    job, and walking the jobs' large address spaces (``smaps_rollup``) took 8 s of the
    Snakemake process's CPU time in a 66 s full-frame run (docs/speed.md, "Job start-up").
    Its lifetime is tied to the caller by the "alive" pipe, as before; the caller sees the
    server's end on the "done" pipe.
    """

    def __init__(self, python: str, preload: Iterable[str], reuse_memory: bool = True,
                 first: int | None = None):
        remove_stale_dirs()
        self.dir = tempfile.mkdtemp(prefix=_DIR_PREFIX)
        self.address = os.path.join(self.dir, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)
        listener.listen(64)
        alive_r, self.alive_w = os.pipe()
        done_r, done_w = os.pipe()
        preload = list(preload)
        code = "import sys; from mvmflow.runner import _launch; _launch(sys.argv[1:])"
        try:
            launcher = subprocess.Popen(
                [python, "-c", code, str(listener.fileno()), str(alive_r), str(done_w),
                 str(len(preload) if first is None else first), *preload],
                pass_fds=(listener.fileno(), alive_r, done_w), stdin=subprocess.DEVNULL,
                env={**(MALLOC_ENV if reuse_memory else {}), **os.environ})
        finally:
            listener.close()
            os.close(alive_r)
            os.close(done_w)
        self.done = done_r
        try:  # the launcher writes the server's PID, then exits
            with os.fdopen(done_r, "rb", closefd=False) as pipe:
                head = pipe.read(8)
        finally:
            launcher.wait()
        if len(head) != 8:
            self.stop()
            raise RuntimeError(f"the job server did not start ({python} exited with "
                               f"{launcher.returncode})")
        self.pid = struct.unpack("!Q", head)[0]

    def alive(self) -> bool:
        return not _closed(self.done)

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.address)
        return sock

    def stop(self) -> None:
        try:
            os.close(self.alive_w)
        except OSError:
            pass
        done = getattr(self, "done", None)
        if done is not None:
            try:
                if not _closed(done, wait=10) and getattr(self, "pid", None):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                os.close(done)
            except OSError:
                pass
            self.done = None
        shutil.rmtree(self.dir, ignore_errors=True)


def start_server(preload: Iterable[str] = PRELOAD, python: str | None = None,
                 reuse_memory: bool = True, first: int | None = None) -> _Server:
    """Start this process's fork server for ``python`` (default: this interpreter) now; it
    imports ``preload`` while the caller goes on (the workflow starts it while Snakemake
    builds its DAG). :func:`run_script` otherwise starts it at the first job.
    ``reuse_memory``: the jobs get :data:`MALLOC_ENV`. ``first``: how many of ``preload``
    are imported before the first job is served (default: all; for :data:`PRELOAD`,
    :data:`PRELOAD_FIRST`), the rest between jobs."""
    return _get_server(python or sys.executable, reuse_memory, preload, first)


def _get_server(python: str, reuse_memory: bool = True, preload: Iterable[str] = PRELOAD,
                first: int | None = None) -> _Server:
    preload = list(preload)
    if first is None and tuple(preload) == PRELOAD:
        first = len(PRELOAD_FIRST)
    key = (python, bool(reuse_memory))
    with _server_lock:
        server = _servers.get(key)
        if server is None or not server.alive():
            if server is not None:  # died (killed?): a new one
                server.stop()
            server = _servers[key] = _Server(python, preload, reuse_memory, first)
            atexit.register(server.stop)
        return server


def cancel_timers(module_prefix: str = "snakemake.") -> int:
    """Cancel the waiting :class:`threading.Timer` threads of this process whose function
    comes from a module under ``module_prefix``; return how many.

    Snakemake's scheduler arms a 1 s timer to look again for jobs after every pass (its job
    rate limit, ``--max-jobs-per-timespan``), in a non-daemon thread, so the interpreter
    waits up to a second for the last one before it exits. The workflow cancels them once
    the run has ended (``onsuccess``/``onerror``: nothing is scheduled any more), which
    saves that second per run (docs/speed.md, "Job start-up").
    """
    n = 0
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and \
                getattr(function, "__module__", "").startswith(module_prefix):
            thread.cancel()
            n += 1
    return n


def run_script(script: str | os.PathLike, job: Job, *, isolate: bool = True,
               python: str | None = None, reuse_memory: bool = True) -> str:
    """Run the rule script ``script`` with ``snakemake`` bound to ``job``.

    Parameters
    ----------
    script : path-like
        The script file (``scripts/<name>.py``).
    job : Job
        What the script reads as ``snakemake``.
    isolate : bool
        True (the default): in a new process forked from the preloaded fork server. False: in
        this process (tests, debugging).
    python : str, optional
        The interpreter of the fork server (a conda environment's); default: this one.
    reuse_memory : bool
        The server's jobs get :data:`MALLOC_ENV` (config ``reuse_memory``).

    Returns
    -------
    str
        A short note on the finished job (its peak memory).

    Raises
    ------
    JobFailed
        The script raised (the message is its exception's last line) or its process died
        (killed, out of memory: the message gives the signal or exit code).
    """
    script = str(script)
    name = Path(script).name
    if not isolate:
        _execute(script, job)
        return "in process"
    result, status = None, None
    with _get_server(python or sys.executable, reuse_memory).connect() as sock:
        _send(sock, (script, job, os.getcwd()))
        try:
            while status is None:
                kind, *value = _recv(sock)
                if kind == "result":
                    result = value
                else:
                    status = value[0]
        except EOFError:  # the supervisor itself was killed
            pass
    if result is not None and result[0] and status is not None and os.WIFEXITED(status) \
            and os.WEXITSTATUS(status) == 0:
        return result[1]
    if result is not None and not result[0]:
        message = result[1]
    elif status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        message = (f"its process was killed by signal {signal.Signals(sig).name}{hint} "
                   "before it finished")
    elif status is not None:
        message = f"its process ended with exit code {os.WEXITSTATUS(status)}"
    else:
        message = "its process ended without a word (the job server was stopped?)"
    raise JobFailed(f"rule {job.rule} ({name}): {message}")
