"""JOBS.json: jobs given by hand for replay and calibration.

A list of {"job": str, "pid": int, "start": unix_s, "end": unix_s, "precision": str?,
"run": str?, "account": str?, "class": str?, "parent": str?}. A job gets the GPU work of its pid
inside its window. "run" names the run the job adds to (default: the job is a run of its own),
"account" who is accountable for it (default: none), "class" what the run does (runs.py),
"parent" the run (of the same account) the run derives from, only with "run"; run, account and
parent follow the identifier rule, and a run may not take a job id's form. Entries of one
job that disagree on them are settled as flopwatch/attribution.py says. The job id is an
identifier (the rule every record's ids obey, `flopwatch.identifiers`); times are finite, from 0
to `MAX_UNIX_S`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flopwatch.attribution import JobWindow
from flopwatch.errors import ConfigError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.model import Precision
from flopwatch.reads import MAX_JOBS_FILE_BYTES, read_limited
from flopwatch.runs import RUN_FROM_JOBS_FILE, WorkloadClass, declared_run_problem, label_problem

_FIELDS = {"job", "pid", "start", "end", "precision", "run", "account", "class", "parent"}


def _labels(i: int, item: dict[str, Any]) -> tuple[str, str, WorkloadClass, str]:
    run, account, parent = item.get("run", ""), item.get("account", ""), item.get("parent", "")
    chars = DEFAULT_LIMITS.max_identifier_chars
    for name, value, check in (
        ("run", run, declared_run_problem),
        ("account", account, label_problem),
        ("parent", parent, label_problem),
    ):
        if not isinstance(value, str):
            raise ConfigError(f"jobs[{i}]: {name!r} must be a string")
        problem = check(value, chars)
        if problem is not None:
            raise ConfigError(f"jobs[{i}]: {name!r} {problem}")
    if parent and not run:
        raise ConfigError(f"jobs[{i}]: 'parent' needs a 'run' (only a declared run has a parent)")
    workload_class = item.get("class")
    if workload_class is not None and not isinstance(workload_class, str):
        raise ConfigError(f"jobs[{i}]: 'class' must be a string")
    try:
        return run, account, WorkloadClass.parse(workload_class), parent
    except ValueError as e:
        raise ConfigError(f"jobs[{i}]: {e}") from None


# The latest time a window may name: int64 nanoseconds end in April 2262.
MAX_UNIX_S = (2**63 - 1) // 10**9


def _ns(unix_s: float) -> int:
    """Unix seconds to nanoseconds: exact for whole seconds, rounded for fractions."""
    return unix_s * 10**9 if isinstance(unix_s, int) else round(unix_s * 1e9)


def _window(i: int, item: Any, source: str) -> JobWindow:
    if not isinstance(item, dict):
        raise ConfigError(f"jobs[{i}]: expected an object, got {type(item).__name__}")
    unknown = set(item) - _FIELDS
    if unknown:
        raise ConfigError(f"jobs[{i}]: unknown field(s) {sorted(unknown)}")
    try:
        job, pid, start, end = item["job"], item["pid"], item["start"], item["end"]
    except KeyError as e:
        raise ConfigError(f"jobs[{i}]: missing field {e.args[0]!r}") from None
    if not isinstance(job, str) or not job:
        raise ConfigError(f"jobs[{i}]: 'job' must be a non-empty string")
    problem = identifier_problem(job, DEFAULT_LIMITS.max_identifier_chars)
    if problem is not None:
        raise ConfigError(f"jobs[{i}]: 'job' '{shown(job[:80])}' {problem}")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
        raise ConfigError(f"jobs[{i}]: 'pid' must be a non-negative integer")
    for name, v in (("start", start), ("end", end)):
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise ConfigError(f"jobs[{i}]: {name!r} must be a number (unix seconds)")
        # NaN, infinities and times past 2262 have no int64 nanoseconds.
        if not 0 <= v < MAX_UNIX_S:
            raise ConfigError(f"jobs[{i}]: {name!r} must be unix seconds from 0 to {MAX_UNIX_S}")
    if end <= start:
        raise ConfigError(f"jobs[{i}]: 'end' must be after 'start'")
    try:
        precision = Precision.parse(item.get("precision"))
    except ValueError as e:
        raise ConfigError(f"jobs[{i}]: {e}") from None
    run, account, workload_class, parent = _labels(i, item)
    return JobWindow(
        job_id=job,
        pid=pid,
        start_ns=_ns(start),
        end_ns=_ns(end),
        precision=precision,
        source=source,
        run=run,
        account=account,
        workload_class=workload_class,
        run_source=RUN_FROM_JOBS_FILE if run else "",
        run_parent=parent,
    )


def load_jobs(path: Path, source: str = "manual") -> list[JobWindow]:
    try:
        raw = read_limited(path, MAX_JOBS_FILE_BYTES, "jobs file")
    except OSError as e:
        raise ConfigError(f"cannot read jobs file {path}: {e.strerror}") from e
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"jobs file {path} is not JSON text (byte {e.start} is not UTF-8)"
        ) from None
    except (ValueError, RecursionError) as e:  # also numbers past int's digits, deep nesting
        raise ConfigError(f"jobs file {path} is not JSON: {e}") from None
    if not isinstance(data, list):
        raise ConfigError(f"jobs file {path}: expected a JSON list of jobs")
    return [_window(i, item, source) for i, item in enumerate(data)]
