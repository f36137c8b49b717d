"""Runs, accounts and classes on the agent: the account mapping, and refusing bad values.

What a window says about its job's run, account and class (flopwatch/runs.py) comes from
outside: a workload's environment, a scheduler's answer, a registration. Before a window is
signed into a record, `LabelCheck` holds each value to the rule a verifier applies (the
identifier rule; a declared run may not take a job id's form). A value that fails is refused:
the reason goes to the log (each distinct value once, and at most one warning per field per
WARN_PERIOD_S) and to the flopwatch_agent_labels_refused metric, and the work stays measured:
it goes to the job's own run, or to no account (then the node's default account). Nothing
measured is dropped, and a record is never refused by the collector for a label.

A parent run (the run a run derives from, a run name of the same account) is the workload's
word too, checked the same way; a parent declared without a run (or with a run refused) is
refused, counted under the field "parent", and the work keeps its run without a parent.

Accounts are the operator's: `AccountMap` turns a scheduler's account (a Slurm account, a
Kubernetes namespace or its admin's account label) into the accountable party the operator
names (`--account-map`), and gives work no source finds an account for to the node's default
account (`--default-account`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flopwatch.errors import ConfigError
from flopwatch.identifiers import identifier_problem, shown
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.runs import DERIVED_RUN_SOURCES, declared_run_problem, label_problem

log = logging.getLogger(__name__)

WARN_PERIOD_S = 60.0  # at most one warning per field per this many seconds
MAX_REMEMBERED_REFUSALS = 1024  # distinct refused values remembered (counted and logged once)
MAX_ACCOUNT_MAP_ENTRIES = 10_000  # entries of --account-map
_CHARS = DEFAULT_LIMITS.max_identifier_chars
FIELDS = ("run", "account", "class", "parent")


class Refusals:
    """Counts refused run, account and class values, and logs them, rate-limited. Thread-safe:
    sources resolve on the sampling thread, registrations arrive on the control server's."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()  # field -> distinct values refused
        self._seen: set[tuple[str, str]] = set()
        self._last_warning: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()  # refusals not logged since the last warning

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def refuse(self, field: str, value: str, why: str, job_id: str, then: str) -> None:
        """Count and log that `field` `value` of `job_id` failed (`why`); `then`: what the
        work gets instead."""
        with self._lock:
            if (field, value) in self._seen:
                return
            if len(self._seen) >= MAX_REMEMBERED_REFUSALS:
                self._seen.clear()
            self._seen.add((field, value))
            self.counts[field] += 1
            now = self._clock()
            last = self._last_warning.get(field)
            if last is not None and now - last < WARN_PERIOD_S:
                self._quiet[field] += 1
                return
            self._last_warning[field] = now
            quiet = self._quiet.pop(field, 0)
        more = f" ({quiet} more refused since the last warning)" if quiet else ""
        log.warning(
            "job %s: %s %r refused: it %s; its work goes to %s%s",
            shown(job_id),
            field,
            shown(value[:_CHARS]),
            why,
            then,
            more,
        )


@dataclass(frozen=True)
class AccountMap:
    """The operator's accounts: a scheduler's account -> accountable party, and a default."""

    mapping: Mapping[str, str]
    default: str = ""

    def __post_init__(self) -> None:
        if len(self.mapping) > MAX_ACCOUNT_MAP_ENTRIES:
            raise ConfigError(f"--account-map has more than {MAX_ACCOUNT_MAP_ENTRIES} entries")
        for name, account in self.mapping.items():
            for what, value in (("name", name), ("account", account)):
                problem = identifier_problem(value, _CHARS)
                if problem is not None:
                    raise ConfigError(f"--account-map {what} {shown(value)!r} {problem}")
        problem = label_problem(self.default, _CHARS)
        if problem is not None:
            raise ConfigError(f"--default-account {shown(self.default)!r} {problem}")

    def of(self, scheduler_account: str) -> str:
        """The accountable party for a scheduler's account (itself where unmapped); empty for
        none (the default is applied to every window later, by the attributor)."""
        if not scheduler_account:
            return ""
        return self.mapping.get(scheduler_account, scheduler_account)


def parse_account_map(text: str) -> dict[str, str]:
    """`--account-map` text: comma-separated SCHEDULER_ACCOUNT=ACCOUNT pairs."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, account = item.partition("=")
        if not sep:
            raise ConfigError(f"--account-map entry {shown(item)!r} must be NAME=ACCOUNT")
        name, account = name.strip(), account.strip()
        if name in out and out[name] != account:
            raise ConfigError(f"--account-map maps {shown(name)!r} twice")
        out[name] = account
    return out


def run_refusal(run: str, run_source: str) -> str | None:
    """Why a run is refused, or None. Only a run the agent derived from the scheduler's objects
    (a Slurm array task's array job, a pod's top controller) may take a job id's form."""
    if run_source in DERIVED_RUN_SOURCES:
        return label_problem(run, _CHARS)
    return declared_run_problem(run, _CHARS)


def parent_refusal(parent: str, run: str) -> str | None:
    """Why a parent run is refused, or None: the identifier rule, and only a declared run has a
    parent (a job that is its own run, or whose run was refused, declares none)."""
    if not run:
        return "is declared without a run (only a declared run has a parent)"
    return label_problem(parent, _CHARS)


def account_refusal(account: str) -> str | None:
    """Why an account is refused, or None."""
    return label_problem(account, _CHARS)
