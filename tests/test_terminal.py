"""The workflow's terminal output (the ``mvmflow`` Snakemake logger plugin).

The handler is fed the events Snakemake sends during a run of the demo: the first DAG with
its three checkpoints, jobs starting and finishing, and progress whose total grows after each
checkpoint (Snakemake reports the checkpoint's own completion with the old total, then adds
its jobs). The terminal must stay short, say the total is unknown while it is, and never show
a falling percentage.
"""

from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace

import pytest

plugin = pytest.importorskip("snakemake_logger_plugin_mvmflow")
from snakemake_interface_logger_plugins.common import LogEvent  # noqa: E402


def _handler(stream, **common):
    settings = SimpleNamespace(printshellcmds=False, nocolor=True, quiet=None, debug_dag=False,
                               verbose=False, show_failed_logs=True, stdout=False,
                               dryrun=False, **common)
    handler = plugin.LogHandler(settings, plugin.LogHandlerSettings())
    handler.stream, handler.tty = stream, False
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _checked_pct(line: str) -> int:
    """The percentage of a progress line, checked against its own counts."""
    m = re.search(r"(\d+) of (\d+) steps done \((\d+)%\)", line)
    done, total, pct = map(int, m.groups())
    assert pct == int(100 * done / total), line
    return pct


def _record(msg=None, level=logging.INFO, **extra):
    record = logging.LogRecord("snakemake", level, __file__, 0, msg, None, None)
    record.__dict__.update(extra)
    return record


def _demo_events():
    """The event sequence of a demo run: 6 jobs, then 23, 41 and 181 after the checkpoints."""
    yield _record("Building DAG of jobs...")
    yield _record("Using shell: /usr/bin/bash")
    yield _record("Job stats: ...", event=LogEvent.RUN_INFO,
                  stats={"simulate": 1, "inputs": 1, "screen_report": 1, "align_groups": 1,
                         "plan": 1, "all": 1, "total": 6})
    done, jobid = 0, 0
    for rule, total_before, total_after in [("simulate", 6, 6), ("inputs", 6, 23),
                                            *[("screen", 23, 23)] * 18,
                                            ("align_groups", 23, 41),
                                            *[("catalog", 41, 41)] * 17,
                                            ("plan", 41, 181),
                                            *[("drizzle", 181, 181)] * 142]:
        jobid += 1
        yield _record(f" Rule: {rule}, Jobid: {jobid}", event=LogEvent.JOB_INFO, jobid=jobid,
                      rule_name=rule, is_checkpoint=rule in ("inputs", "align_groups", "plan"),
                      shellcmd=None)
        yield _record("Shell command: None", event=LogEvent.SHELLCMD, cmd=None)
        yield _record(None, event=LogEvent.JOB_FINISHED, job_id=jobid)
        done += 1
        yield _record(None, event=LogEvent.PROGRESS, done=done, total=total_before)
        del total_after  # the DAG grows after this report: the next one carries it
    yield _record("Complete log(s): /x/.snakemake/log/a.snakemake.log")


def test_demo_run_prints_a_few_lines_and_never_goes_backwards():
    stream = io.StringIO()
    handler = _handler(stream)
    for record in _demo_events():
        handler.handle(record)
    handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) <= 20, lines
    assert not any("Shell command" in line or "Using shell" in line for line in lines)
    assert lines[0] == ("mvmflow: 6 steps to start with; more come after checkpoints "
                        "align_groups, inputs, plan")
    known = [line for line in lines if "steps done (" in line]
    unknown = [line for line in lines if "total not known yet" in line]
    assert unknown and known
    # while a checkpoint is pending, no percentage is shown
    assert all("%" not in line for line in unknown)
    assert lines.index(unknown[-1]) < lines.index(known[0])
    assert "(it is after checkpoint plan)" in unknown[-1]
    pcts = [_checked_pct(line) for line in known]
    assert pcts == sorted(pcts) and pcts[-1] == 100
    assert known[-1].endswith("181 of 181 steps done (100%)")
    totals = {int(re.search(r"of (\d+) steps", line).group(1)) for line in known}
    assert totals == {181}  # the stale totals 23 and 41 are never shown as final


def test_errors_and_warnings_are_shown_in_full():
    stream = io.StringIO()
    handler = _handler(stream)
    handler.handle(_record("Select jobs to execute..."))
    handler.handle(_record("MissingInputException: no such file x.fits", level=logging.ERROR))
    handler.handle(_record("something odd", level=logging.WARNING))
    handler.handle(_record("Nothing to be done (all requested files are present and up to "
                           "date)."))
    out = stream.getvalue()
    assert "Select jobs" not in out
    assert "MissingInputException: no such file x.fits" in out
    assert "something odd" in out and "Nothing to be done" in out


def test_unnamed_checkpoints_and_a_changing_total_are_said():
    """A checkpoint rule the settings do not name, with two jobs, keeps the total unknown
    until both have run; a total that still changes afterwards is said, not shown as a
    falling percentage."""
    stream = io.StringIO()
    handler = _handler(stream)
    handler.handle(_record("stats", event=LogEvent.RUN_INFO, stats={"other": 2, "total": 4}))
    events = []
    for jobid in (1, 2):
        events.append(_record("", event=LogEvent.JOB_INFO, jobid=jobid, rule_name="query",
                              is_checkpoint=True))
    events += [_record(None, event=LogEvent.JOB_FINISHED, job_id=1),
               _record(None, event=LogEvent.PROGRESS, done=1, total=4),
               _record(None, event=LogEvent.JOB_FINISHED, job_id=2),
               _record(None, event=LogEvent.PROGRESS, done=2, total=4),
               _record(None, event=LogEvent.PROGRESS, done=3, total=10),
               _record(None, event=LogEvent.PROGRESS, done=8, total=10),
               _record(None, event=LogEvent.PROGRESS, done=9, total=20),
               _record(None, event=LogEvent.PROGRESS, done=20, total=20)]
    for record in events:
        handler.handle(record)
    lines = stream.getvalue().splitlines()
    assert "total not known yet (it is after checkpoint query)" in lines[1]
    assert "total not known yet (it is after checkpoint query)" in lines[2]  # job 2 pending
    assert lines[3].endswith("3 of 10 steps done (30%)")
    assert lines[4].endswith("8 of 10 steps done (80%)")
    assert lines[5].endswith("9 steps done; the total changed from 10 to 20")
    assert lines[6].endswith("20 of 20 steps done (100%)")
    for line in lines:
        if "steps done (" in line:
            _checked_pct(line)


@pytest.mark.parametrize("flag", ["verbose", "dryrun"])
def test_verbose_and_dry_runs_print_everything(flag):
    stream = io.StringIO()
    handler = _handler(stream)
    setattr(handler, flag, True)
    handler.handle(_record("Select jobs to execute..."))
    handler.handle(_record(" Rule: screen, Jobid: 3", event=LogEvent.JOB_INFO, jobid=3,
                           rule_name="screen", is_checkpoint=False))
    assert "Select jobs to execute" in stream.getvalue()
    assert "Rule: screen" in stream.getvalue()


def test_a_whole_run_prints_a_few_lines(shared_run):
    """The shared workflow run (hundreds of jobs, three checkpoints, six bad inputs) prints a
    short report on the terminal; its percentages never fall."""
    lines = shared_run["terminal"].splitlines()
    assert len(lines) < 30, "\n".join(lines)
    text = "\n".join(lines)
    assert "Shell command" not in text and "rule " not in text and "Select jobs" not in text
    pcts = [_checked_pct(line) for line in lines if "steps done (" in line]
    assert pcts and pcts == sorted(pcts) and pcts[-1] == 100
    assert "total not known yet" in text
    assert re.search(r"mvmflow: \d+ layer products in 4 sky cells", text)
