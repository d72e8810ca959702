"""The job runner (mvmflow.runner): rule scripts run in processes forked from a preloaded
server, with what they read as ``snakemake`` and their failures reported
(docs/speed.md, "Job start-up")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mvmflow.runner import Job, JobFailed, Named, job_from_rule, run_script


@pytest.fixture
def script(tmp_path):
    def write(body: str):
        path = tmp_path / "script.py"
        path.write_text(textwrap.dedent(body))
        return path
    return write


def test_named_lists_read_like_snakemakes():
    files = Named(["a.fits", ["b", "c"]], {"exposure": "a.fits", "partials": ["b", "c"]})
    assert files[0] == "a.fits"
    assert files.exposure == "a.fits" and files.partials == ["b", "c"]
    assert files.get("crmask", []) == [] and "partials" in files.keys()
    with pytest.raises(AttributeError):
        files.missing  # noqa: B018


def test_job_from_rule_copies_into_plain_types():
    class Snakelist(list):  # stands for Snakemake's Namedlist of _IOFile (str subclasses)
        def __init__(self, items, names):
            super().__init__(items)
            self._names = names

        def items(self):
            return self._names.items()

    class IOFile(str):
        pass

    inp = Snakelist([IOFile("x.fits"), IOFile("y.fits")],
                    {"exposure": IOFile("x.fits"), "both": Snakelist([IOFile("y.fits")], {})})
    job = job_from_rule("drizzle", inp, Snakelist([], {}), Snakelist([{"a": 1}], {"p": {"a": 1}}),
                        Snakelist(["j1"], {"exposure": "j1"}), 2,
                        {"mem_mb": 1000, "_cores": 2, "tmpdir": "/tmp"}, Snakelist(["l"], {}),
                        {"outdir": "results"})
    assert type(job.input[0]) is str and type(job.input.exposure) is str
    assert type(job.input.both) is list and job.input.both == ["y.fits"]
    assert job.params.p == {"a": 1} and job.wildcards.exposure == "j1"
    assert job.threads == 2 and job.resources["mem_mb"] == 1000
    assert job.config == {"outdir": "results"}


def test_a_script_runs_in_its_own_process_in_the_callers_directory(script, tmp_path,
                                                                   monkeypatch):
    path = script("""
        import json, os
        with open(snakemake.output.result, "w") as f:
            json.dump({"pid": os.getpid(), "cwd": os.getcwd(),
                       "exposure": snakemake.input.exposure,
                       "frame": snakemake.params.frame, "cell": snakemake.wildcards.skycell,
                       "crmask": snakemake.input.get("crmask", [])}, f)
    """)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    job = Job(rule="drizzle", input=Named(["e.fits"], {"exposure": "e.fits"}),
              output=Named(["out.json"], {"result": "out.json"}),
              params=Named([{"nx": 3}], {"frame": {"nx": 3}}),
              wildcards=Named(["skycell-p0081x14y14"], {"skycell": "skycell-p0081x14y14"}))
    note = run_script(path, job)
    assert note.startswith("peak RSS")
    seen = json.loads((work / "out.json").read_text())
    assert seen["pid"] != os.getpid()
    assert seen["cwd"] == str(work)
    assert (seen["exposure"], seen["frame"], seen["cell"], seen["crmask"]) == \
        ("e.fits", {"nx": 3}, "skycell-p0081x14y14", [])


def test_a_failing_script_fails_the_job_with_its_reason(script):
    path = script("raise ValueError('j9n501abq_flc.fits: no SCI extension')\n")
    with pytest.raises(JobFailed, match=r"rule screen \(script.py\): ValueError: "
                                        r"j9n501abq_flc.fits: no SCI extension"):
        run_script(path, Job(rule="screen"))


def test_a_killed_job_is_reported_with_its_signal(script):
    path = script("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(JobFailed, match="killed by signal SIGKILL"):
        run_script(path, Job(rule="layer"))


def test_a_script_that_exits_is_a_failure(script):
    path = script("import sys\nsys.exit(3)\n")
    with pytest.raises(JobFailed, match="SystemExit: 3"):
        run_script(path, Job(rule="plan"))


def test_jobs_started_from_many_threads_all_report_success(script, tmp_path):
    """Several threads start jobs at once, as Snakemake's do (multiprocessing's forkserver
    lost exit codes here: mvmflow.runner module notes)."""
    path = script("""
        with open(snakemake.output[0], "w") as f:
            f.write(str(snakemake.params[0] * 2))
    """)
    errors, done = [], []

    def worker(k):
        for i in range(15):
            out = tmp_path / f"out_{k}_{i}.txt"
            try:
                run_script(path, Job(rule="x", output=Named([str(out)]),
                                     params=Named([k * 100 + i])))
                done.append(int(out.read_text()) == 2 * (k * 100 + i))
            except JobFailed as error:
                errors.append(str(error))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(done) == 60 and all(done)


def test_in_process_mode_runs_without_the_server(script, tmp_path):
    path = script("import os\nopen(snakemake.output[0], 'w').write(str(os.getpid()))\n")
    out = tmp_path / "pid.txt"
    assert run_script(path, Job(rule="x", output=Named([str(out)])), isolate=False) == \
        "in process"
    assert int(out.read_text()) == os.getpid()


def test_a_given_interpreter_runs_the_job(script, tmp_path):
    """``python=`` (a rule's conda environment) is the interpreter of the job's server."""
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    path = script("import sys\nopen(snakemake.output[0], 'w').write(sys.executable)\n")
    out = tmp_path / "exe.txt"
    run_script(path, Job(rule="x", output=Named([str(out)])), python=str(python))
    assert out.read_text() == str(python)


def test_profile_dir_profiles_every_job(script, tmp_path, monkeypatch):
    """MVMFLOW_PROFILE_DIR (set before the server starts): one cProfile file per job."""
    import pstats

    monkeypatch.setenv("MVMFLOW_PROFILE_DIR", str(tmp_path / "prof"))
    python = tmp_path / "py" / "python"  # another interpreter path: a server of its own
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    path = script("sum(i * i for i in range(10000))\n")
    run_script(path, Job(rule="drizzle"), python=str(python))
    files = list((tmp_path / "prof").glob("drizzle-*.prof"))
    assert len(files) == 1
    assert pstats.Stats(str(files[0])).total_calls > 0


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie (exited, not yet reaped by its parent) counts as gone
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_caller_leaves_no_server_and_no_job_behind(tmp_path):
    """Snakemake killed with SIGKILL mid-job: the server and the running job end too, so
    nothing of the killed run goes on writing."""
    job_script = tmp_path / "sleepy.py"
    job_script.write_text(textwrap.dedent(f"""
        import os, time
        open({str(tmp_path / 'job.pid')!r}, 'w').write(str(os.getpid()))
        time.sleep(60)
        open({str(tmp_path / 'late.txt')!r}, 'w').write('should never be written')
    """))
    caller = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from mvmflow import runner
        from mvmflow.runner import Job, run_script
        server = runner.start_server(("json",))
        print(server.pid, server.dir, flush=True)
        run_script({str(job_script)!r}, Job(rule="sleepy"))
    """)], stdout=subprocess.PIPE, text=True)
    server_pid, socket_dir = caller.stdout.readline().split(maxsplit=1)
    server_pid, socket_dir = int(server_pid), Path(socket_dir.strip())
    assert socket_dir.is_dir()
    pid_file = tmp_path / "job.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    job_pid = int(pid_file.read_text())
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    assert _gone(server_pid), "the fork server outlived its caller"
    assert _gone(job_pid), "the job outlived its caller"
    assert not (tmp_path / "late.txt").exists()
    assert not socket_dir.exists(), "the server's socket directory outlived its caller"


def test_jobs_start_with_the_preloaded_objects_frozen(script, tmp_path):
    """The server freezes its objects before it forks (gc.freeze): a job's full collections
    then skip them instead of walking (and copying) the whole preloaded heap."""
    path = script(f"""
        import gc
        open({str(tmp_path / 'frozen.txt')!r}, 'w').write(str(gc.get_freeze_count()))
    """)
    run_script(path, Job(rule="screen"))
    # numpy, astropy and the library at least: hundreds of thousands of objects
    assert int((tmp_path / "frozen.txt").read_text()) > 50_000


def test_the_server_serves_before_its_later_modules_are_imported(tmp_path):
    """Only the first modules of the preload list hold the first job back; the others are
    imported one at a time between jobs (a job waits for one import at most) and are there
    for the jobs forked after."""
    slow = [f"slowmod{i}" for i in range(6)]
    for name in slow:
        (tmp_path / f"{name}.py").write_text("import time\ntime.sleep(0.5)\n")
    job_script = tmp_path / "job.py"
    job_script.write_text(textwrap.dedent(f"""
        import sys
        with open({str(tmp_path / 'seen.txt')!r}, 'a') as f:
            f.write(str(sum(m in sys.modules for m in {slow!r})) + '\\n')
    """))
    caller = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from mvmflow import runner
        from mvmflow.runner import Job, run_script
        start = time.monotonic()
        runner.start_server(("json", *{slow!r}), first=1)
        run_script({str(job_script)!r}, Job(rule="first"))
        print(time.monotonic() - start, flush=True)
        time.sleep(4)  # every slowmod is imported by now
        run_script({str(job_script)!r}, Job(rule="later"))
    """)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert caller.returncode == 0, caller.stderr
    assert float(caller.stdout.split()[0]) < 2.0  # not held back by all six (3 s)
    first, later = (int(v) for v in (tmp_path / "seen.txt").read_text().split())
    assert first < len(slow) and later == len(slow)


def test_cancel_timers_ends_snakemakes_waiting_timers_only():
    from mvmflow.runner import cancel_timers

    def rescheduled():
        pass

    def other():
        pass

    rescheduled.__module__ = "snakemake.scheduling.job_scheduler"
    theirs, ours = threading.Timer(30, rescheduled), threading.Timer(30, other)
    theirs.start()
    ours.start()
    try:
        assert cancel_timers() == 1
        theirs.join(timeout=5)
        assert not theirs.is_alive() and ours.is_alive()
    finally:
        ours.cancel()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_server_is_not_a_descendant_of_its_caller(script, tmp_path):
    """Snakemake's benchmark sampling walks its own process tree: the jobs are not in it."""
    from mvmflow import runner

    path = script(f"""
        import os
        open({str(tmp_path / 'parent.txt')!r}, 'w').write(str(os.getppid()))
    """)
    run_script(path, Job(rule="screen"))
    server = runner.start_server()
    assert server.alive()

    def parent(pid):
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])

    assert parent(server.pid) != os.getpid()
    supervisor = int((tmp_path / "parent.txt").read_text())
    assert parent(supervisor) == server.pid or not os.path.exists(f"/proc/{supervisor}")


@pytest.mark.skipif("NUMPY_MADVISE_HUGEPAGE" in os.environ,
                    reason="the user's own setting wins")
def test_jobs_run_without_numpys_huge_page_advice(script, tmp_path):
    """With reuse_memory (the default) the jobs' numpy does not ask for huge pages, whose
    faults can stall on the kernel's memory compaction; without it, numpy's default."""
    import numpy._core.multiarray as multiarray

    path = script(f"""
        import numpy._core.multiarray as m
        open({str(tmp_path / 'advice.txt')!r}, 'a').write(str(m._get_madvise_hugepage()))
    """)
    run_script(path, Job(rule="screen"))
    run_script(path, Job(rule="screen"), reuse_memory=False)
    default = str(multiarray._get_madvise_hugepage())  # numpy's own, in this process
    assert (tmp_path / "advice.txt").read_text() == "False" + default


def test_socket_directories_of_killed_servers_are_removed(tmp_path):
    """A server killed with its process group leaves its socket directory behind; the next
    server removes it, and leaves a live server's, one still starting and other files."""
    import socket

    from mvmflow.runner import remove_stale_dirs

    def server_dir(name, listening):
        d = tmp_path / name
        d.mkdir()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(d / "socket"))
        if listening:
            s.listen(1)
            return d, s
        s.close()  # the address stays, nobody listens: a dead server
        return d, None

    dead, _ = server_dir("mvmflow-jobs-dead", listening=False)
    live, listener = server_dir("mvmflow-jobs-live", listening=True)
    starting = tmp_path / "mvmflow-jobs-starting"
    starting.mkdir()
    old_empty = tmp_path / "mvmflow-jobs-oldempty"
    old_empty.mkdir()
    long_ago = time.time() - 7200
    os.utime(old_empty, (long_ago, long_ago))
    other = tmp_path / "mvmflow-jobs-file"
    other.write_text("not a directory")
    unrelated = tmp_path / "elsewhere"
    unrelated.mkdir()
    try:
        assert remove_stale_dirs(str(tmp_path)) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "elsewhere", "mvmflow-jobs-file", "mvmflow-jobs-live", "mvmflow-jobs-starting"]
        assert (live / "socket").exists()
    finally:
        listener.close()


def test_the_workflow_main_process_imports_no_science_library():
    """What the Snakefile and the rule files import at parse time (their top-level mvmflow
    imports) pulls in no astropy, scipy, drizzle, photutils or matplotlib: Snakemake's own
    process only plans, and the fork server imports those while it builds the DAG
    (docs/speed.md, "Job start-up")."""
    root = Path(__file__).resolve().parents[1]
    lines = []
    for path in [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        text = path.read_text()
        # top-level imports only (possibly continued over lines in parentheses)
        for block in re.findall(r"^(?:from mvmflow[\w.]* import (?:\([^)]*\)|[^\n]*)"
                                r"|import mvmflow[\w.]*)", text, flags=re.M):
            lines.append(block)
    assert len(lines) > 10
    heavy = ("astropy", "scipy", "drizzle", "photutils", "matplotlib")
    code = "\n".join(lines) + textwrap.dedent(f"""
        import sys
        print(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root)
    assert out.stdout.strip() == "[]", out.stdout
