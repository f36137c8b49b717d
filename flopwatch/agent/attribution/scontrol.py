"""What slurmctld says about a job: `scontrol show job -o ID`, asked rarely and never for long.

The Slurm source takes a job's account from here, not from the process environment: the
scheduler's word, which the workload cannot change (SLURM_JOB_ACCOUNT in the environment is
whatever the process was started with). The job's comment and WCKey serve as its run where the
site says so, and ArrayJobId names an array task's array job.

`scontrol -o` prints one line of KEY=VALUE fields separated by spaces, and some values are the
user's own text, spaces included (JobName, Comment, WorkDir, Command). A job name such as
"x Account=other" thus prints a second "Account=" field. Such a line cannot be read safely, so a
field printed with two different values is taken as unknown (`SlurmJob.ambiguous`; the Slurm
source refuses such an account with a warning and a metric): the job's account is then unknown
and its work goes to the node's default account, never to an account the workload named.
(`scontrol --json`, Slurm 23.02 and later, would be unambiguous; a later version may use it
where available.)

Bounded: each call ends after `timeout_s`; an answer is kept for `cache_s` (accounts do not
change while a job runs), a failure for `retry_s`, and after a call that timed out or could not
start no call is made for `retry_s`, so a slurmctld that is down costs one timeout per
`retry_s`, not one per job per round. At most MAX_CACHED_JOBS answers are kept. The calls run on
the sampling thread: a new job delays its first round by at most `timeout_s`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from flopwatch.identifiers import shown

log = logging.getLogger(__name__)

MAX_CACHED_JOBS = 4096  # jobs whose scontrol answer is kept
MAX_SCONTROL_OUTPUT_BYTES = 256 * 1024  # one job's line; longer is refused as unreadable
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_CACHE_S = 300.0
DEFAULT_RETRY_S = 30.0
_FIELD = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/]*)=")
_NUMBER = re.compile(r"\d{1,20}")
_EMPTY = {"", "(null)"}


@dataclass(frozen=True)
class SlurmJob:
    """The fields of one job the agent uses; empty where Slurm has none or they are unknown."""

    account: str = ""
    comment: str = ""
    wckey: str = ""
    array_job: str = ""  # the array job's id for an array task, else empty
    ambiguous: tuple[str, ...] = ()  # fields printed with different values, left empty


def parse_job_line(text: str, job: str) -> SlurmJob | None:
    """The fields of job `job` from `scontrol show job -o` output, or None where no line is
    about it. A field printed twice with different values is unknown (empty)."""
    for line in text.splitlines():
        fields = _fields(line)
        if fields.get("JobId") != [job]:
            continue
        values: dict[str, str] = {}
        ambiguous: list[str] = []
        for key in ("Account", "Comment", "WCKey", "ArrayJobId"):
            distinct = {v for v in fields.get(key, []) if v not in _EMPTY}
            if len(distinct) > 1:
                ambiguous.append(key)
            values[key] = next(iter(distinct)) if len(distinct) == 1 else ""
        array = values["ArrayJobId"]
        return SlurmJob(
            account=values["Account"],
            comment=values["Comment"],
            wckey=values["WCKey"].removeprefix("*"),  # '*': the user's default WCKey
            array_job=array if _NUMBER.fullmatch(array) and array != job else "",
            ambiguous=tuple(ambiguous),
        )
    return None


def _fields(line: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    marks = list(_FIELD.finditer(line))
    for m, after in zip(marks, [*marks[1:], None], strict=True):
        end = after.start() if after is not None else len(line)
        out.setdefault(m.group(1), []).append(line[m.end() : end].strip())
    return out


@dataclass
class _Entry:
    job: SlurmJob | None
    until: float


class Scontrol:
    """Cached, time-bounded `scontrol show job -o ID`."""

    def __init__(
        self,
        path: str = "scontrol",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cache_s: float = DEFAULT_CACHE_S,
        retry_s: float = DEFAULT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._retry_s = retry_s
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._down_until = float("-inf")
        self.calls = 0  # scontrol runs, since start
        self.failures = 0  # runs that gave no answer (timeout, error, unreadable)

    def job(self, job: str) -> SlurmJob | None:
        """What slurmctld says about `job` (a number), or None when it cannot say."""
        now = self._clock()
        entry = self._cache.get(job)
        if entry is not None and now < entry.until:
            return entry.job
        if now < self._down_until:
            return entry.job if entry is not None else None
        found, failed = self._ask(job)
        if failed and entry is not None:
            found = entry.job  # keep the last answer while slurmctld does not answer
        if len(self._cache) >= MAX_CACHED_JOBS and job not in self._cache:
            oldest = min(self._cache, key=lambda k: self._cache[k].until)
            del self._cache[oldest]
        self._cache[job] = _Entry(found, now + (self._retry_s if failed else self._cache_s))
        return found

    def _ask(self, job: str) -> tuple[SlurmJob | None, bool]:
        """(answer, failed). A job slurmctld does not know is an answer (None), not a failure."""
        self.calls += 1
        try:
            done = subprocess.run(
                [self.path, "show", "job", "-o", job],
                capture_output=True,
                timeout=self._timeout_s,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
        except subprocess.TimeoutExpired:
            return self._down(job, f"no answer within {self._timeout_s:g} s")
        except OSError as e:
            return self._down(job, f"cannot run {self.path}: {e.strerror or e}")
        if len(done.stdout) > MAX_SCONTROL_OUTPUT_BYTES:
            return self._failed(job, f"answered more than {MAX_SCONTROL_OUTPUT_BYTES} bytes")
        text = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()[:200]
            if "Invalid job id" in error:
                return None, False
            return self._failed(job, f"exit status {done.returncode}: {shown(error)}")
        return parse_job_line(text, job), False

    def _failed(self, job: str, why: str) -> tuple[None, bool]:
        self.failures += 1
        log.warning(
            "Slurm job %s: `scontrol show job` failed (%s); its account is unknown until it "
            "answers (retry in %g s)",
            job,
            why,
            self._retry_s,
        )
        return None, True

    def _down(self, job: str, why: str) -> tuple[None, bool]:
        self._down_until = self._clock() + self._retry_s
        return self._failed(job, why)
