"""Snakemake logger plugin ``mvmflow``: a quiet terminal with progress that never goes back.

The workflow's profile (``profiles/default/config.yaml``) selects it with ``logger: [mvmflow]``.
Snakemake's own output names every job, its inputs, outputs and reason (3,000+ lines for the
demo) and its "x of y steps" percentage falls each time a checkpoint adds jobs. This handler
prints instead, on the terminal (stderr):

- a progress line: ``12 steps done; total not known yet (it is after checkpoints
  align_groups, plan)`` while checkpoints are still to run, then ``45 of 180 steps done
  (25%)``. The percentage is only shown once the total is final, so it never decreases;
  should the total still change, a line says so before percentages go on. On a terminal the
  line is rewritten in place; otherwise a line is printed at each checkpoint and at every
  10 %;
- warnings, errors and failed jobs in full (with their rule logs under ``--show-failed-logs``);
- Snakemake's informative one-liners ("Nothing to be done", the path of the complete log),
  without the scheduling chatter.

Everything is still in Snakemake's complete log (``.snakemake/log/*.snakemake.log``, written
by Snakemake itself with its full formatter) and in the per-rule logs under ``<outdir>/logs/``.
``--verbose`` and dry runs (``-n``) print Snakemake's usual full output. See
docs/terminal_output.md.

This is a separate top-level package because Snakemake finds logger plugins by module name
(``snakemake_logger_plugin_<name>``); it belongs to the workflow, not to the ``mvmflow``
library, which never imports Snakemake.
"""


import logging
import re
import sys
import time
from dataclasses import dataclass, field

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

#: Snakemake's scheduling chatter at INFO level, dropped from the terminal (still in the
#: complete log).
CHATTER = re.compile(
    r"^(Building DAG of jobs|Using shell:|Provided cores:|Provided resources:|"
    r"Rules claiming more threads|Select jobs to execute|Execute \d+ jobs?|"
    r"Assuming unrestricted shared filesystem|Using workflow specific profile|"
    r"Using profile|Conda environments: ignored|Singularity containers: ignored|"
    r"DAG of jobs will be updated|Updating (job|checkpoint)|Finished job|"
    r"Job stats:|Resources before job selection|Ready jobs|Waiting (at most|for)|"
    r"Storing output in storage|Retrieving .* from storage|host:|Complete log\(s\):|"
    r"Touching output file|Removing temporary output|Job \d+ completed successfully|"
    r"Failed to set marker file|Shell command: None|\[\w{3} \w{3}\s+\d+ )",
)

#: Progress lines printed to a non-terminal stream: at each 10 % step.
STEP = 10


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """Settings of the ``mvmflow`` logger (``--logger-mvmflow-<name>``)."""

    checkpoints: str = field(  # a real type, not a string: argparse calls it
        default="inputs,align_groups,plan",
        metadata={"help": "Comma-separated names of the workflow's checkpoint rules, known "
                          "before their jobs start, so the total number of steps is only "
                          "called final once they have all run."},
    )


class LogHandler(LogHandlerBase):
    """Quiet terminal output for the mvmflow workflow (see the module docstring)."""

    def __post_init__(self) -> None:
        self.stream = sys.stdout if getattr(self.common_settings, "stdout", False) \
            else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        names = getattr(self.settings, "checkpoints", "") or ""
        self.checkpoint_rules = {n.strip() for n in names.split(",") if n.strip()}
        self.pending: dict[str, int] = {}  # checkpoint rule -> jobs still to finish
        self.rule_of: dict[int, str] = {}
        self.done = 0
        self.total = 0
        self.last_pct = -1
        self.last_line = ""
        self.open_line = False  # a progress line is on screen without its newline
        self.finishing: set[str] = set()  # checkpoints whose last job just finished
        self.counted: set[str] = set()  # checkpoint rules counted from the first DAG's stats
        self.known_total = 0  # the total once no checkpoint is pending
        self.verbose = bool(getattr(self.common_settings, "verbose", False))
        self.dryrun = bool(getattr(self.common_settings, "dryrun", False))

    # -- what Snakemake asks of a handler --------------------------------------------------
    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return False  # Snakemake's filter applies --quiet, --verbose and --printshellcmds

    @property
    def has_formatter(self) -> bool:
        return False  # Snakemake's formatter renders errors and failed logs

    @property
    def needs_rulegraph(self) -> bool:
        return False

    # -- handling ----------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # a logger must never stop the run
            self.handleError(record)

    def _emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if self.verbose or self.dryrun:
            if event not in (LogEvent.PROGRESS, LogEvent.JOB_STARTED, LogEvent.JOB_FINISHED):
                self._print(self.format(record))
            return
        if event == LogEvent.RUN_INFO:
            self._run_info(getattr(record, "stats", {}) or {})
        elif event == LogEvent.JOB_INFO:
            rule = getattr(record, "rule_name", "")
            self.rule_of[getattr(record, "jobid", -1)] = rule
            if getattr(record, "is_checkpoint", False) and rule not in self.counted:
                # a checkpoint job the first DAG did not hold (or not named in the
                # settings): count each of its jobs as it starts
                self.pending[rule] = self.pending.get(rule, 0) + 1
        elif event == LogEvent.JOB_FINISHED:
            rule = self.rule_of.pop(getattr(record, "job_id", -1), None)
            if rule in self.pending:
                self.pending[rule] -= 1
                if self.pending[rule] <= 0:
                    # Snakemake reports the progress of this job with the old total and
                    # only then adds the checkpoint's jobs: drop it after that report
                    self.finishing.add(rule)
        elif event == LogEvent.PROGRESS:
            self._progress(int(getattr(record, "done", 0)), int(getattr(record, "total", 0)))
        elif event in (LogEvent.JOB_ERROR, LogEvent.GROUP_ERROR, LogEvent.ERROR):
            self._print(self.format(record))
        elif event is None:
            if record.levelno >= logging.WARNING:
                self._print(self.format(record))
            else:
                text = self.format(record).strip()
                if text and not CHATTER.match(text):
                    self._print(text)
        # JOB_STARTED, SHELLCMD, GROUP_INFO, RESOURCES_INFO, DEBUG_DAG, RULEGRAPH,
        # WORKFLOW_STARTED: complete log only

    def _run_info(self, stats: dict) -> None:
        """The job counts of the DAG as first built: which checkpoints are still to run."""
        if self.total:
            return  # a later table (after a checkpoint) changes nothing here
        self.total = int(stats.get("total", 0))
        for rule, count in stats.items():
            if rule in self.checkpoint_rules:
                self.pending[rule] = int(count)
                self.counted.add(rule)
        more = f"; more come after {self._pending_text()}" if self.pending else ""
        self._print(f"mvmflow: {self._steps(self.total)} to start with{more}")

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        stamp = time.strftime("%H:%M:%S")
        if self.pending:
            line = (f"[{stamp}] {self._steps(done)} done; total not known yet (it is after "
                    f"{self._pending_text()})")
            show = self.tty or bool(self.finishing) or done == 1
        elif self.known_total and total != self.known_total:
            # the total changed after the last checkpoint: it was not known after all, so
            # say so rather than show a percentage that falls
            line = (f"[{stamp}] {self._steps(done)} done; the total changed from "
                    f"{self.known_total} to {total}")
            show, self.known_total, self.last_pct = True, total, -1
        else:
            self.known_total = total
            pct = int(100 * done / total) if total else 100
            show = self.tty or pct // STEP > self.last_pct // STEP or done == total
            self.last_pct = pct
            line = f"[{stamp}] {done} of {total} steps done ({pct}%)"
        for rule in self.finishing:
            self.pending.pop(rule, None)
        self.finishing.clear()
        if show:
            self._print(line, progress=True)

    def _pending_text(self) -> str:
        names = sorted(self.pending)
        return f"checkpoint{'s' if len(names) != 1 else ''} {', '.join(names)}"

    @staticmethod
    def _steps(n: int) -> str:
        return f"{n} step{'s' if n != 1 else ''}"

    def _print(self, text: str, progress: bool = False) -> None:
        if not text:
            return
        if self.tty and progress:
            pad = max(0, len(self.last_line) - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.open_line, self.last_line = True, text
        else:
            if self.open_line:
                self.stream.write("\n")
                self.open_line = False
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
        super().close()
