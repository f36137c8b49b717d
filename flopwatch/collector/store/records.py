"""What a store returns: small frozen records, so callers never see rows or driver types, and the
sums of a batch.

`aggregate` is the one place per-job sums of a batch are computed: the ingestor uses it to decide
alerts before a commit, a store to write the same sums inside it, so the two cannot disagree.
`run_sums`, `account_sums` and `account_day_sums` are the same for runs and accounts.

FLOP figures are Python ints throughout: a job's total passes 2^64 (10^26 FLOPs) and must stay
exact, so a store keeps them in a form that does not round (decimal text in SQLite, NUMERIC in
PostgreSQL). GPU time and energy are exact ints too, in the units the verifier sums them in
(`flopwatch.verify.sums`): femtoseconds and nanojoules; `gpu_seconds` and `kwh` convert them for
people.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from flopwatch.verify.record import VerifiedRecord
from flopwatch.verify.sums import DAY_NS, Sum, merge

NodeStatus = Literal["enrolled", "revoked"]
AlertBasis = Literal["upper", "estimate"]
Scope = Literal["run", "account"]
AlertKind = Literal["crossed", "forecast", "derived"]  # derived: scopes.DERIVED_RULE

FS_PER_SECOND = 10**15
NJ_PER_KWH = 36 * 10**14  # 3.6 MJ


def gpu_seconds(gpu_time_fs: int) -> float:
    """GPU-seconds from GPU time in femtoseconds."""
    return gpu_time_fs / FS_PER_SECOND


def kwh(energy_nj: int) -> float:
    """Kilowatt-hours from nanojoules."""
    return energy_nj / NJ_PER_KWH


@dataclass(frozen=True)
class JobTotal:
    """A job's totals over every record accepted so far, across all nodes."""

    job_id: str
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int  # (GPU interval, job) contributions counted
    thresholds_crossed: tuple[int, ...] = ()  # thresholds whose alert has fired, ascending
    # By the job's shares, like FLOPs; counted from schema version 4 (SQLite) / 2 (PostgreSQL)
    # on: records committed before hold them in their envelopes only.
    gpu_time_fs: int = 0  # GPU time, femtoseconds
    energy_nj: int = 0  # GPU board energy, nanojoules (not host, network or cooling)


@dataclass(frozen=True)
class RunTotal:
    """A run's totals over every record accepted so far, across all jobs, nodes and clusters.
    A run is its account and its name together (`flopwatch.runs`)."""

    account: str  # "" where no account is known
    run: str  # the declared run, else the job id
    classes: int  # the classes its records declared (`flopwatch.runs.CLASS_BIT` set)
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int
    gpu_time_fs: int
    energy_nj: int


@dataclass(frozen=True)
class AccountTotal:
    """An account's totals over every record accepted so far, all its runs together."""

    account: str
    classes: int
    runs: int  # runs held under the account
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int
    gpu_time_fs: int
    energy_nj: int


@dataclass(frozen=True)
class WindowTotal:
    """An account's sums over the trailing `days` UTC days: from the start of `first_day` on
    (days since 1970-01-01), today included. An interval counts for the UTC day it ends in
    (`flopwatch.verify.sums.utc_day`). Zeros (and 0 times) when nothing was measured."""

    days: int
    first_day: int
    flops_estimate: int = 0
    flops_upper: int = 0
    first_start_ns: int = 0
    last_end_ns: int = 0
    gpu_intervals: int = 0
    gpu_time_fs: int = 0
    energy_nj: int = 0

    @property
    def start_ns(self) -> int:
        return self.first_day * DAY_NS


def window_totals(
    rows: Iterable[tuple[str, int, JobDelta]], today: int, windows: Sequence[int]
) -> dict[str, tuple[WindowTotal, ...]]:
    """Each account's trailing windows (`windows`, in days, through UTC day `today`) from its
    (account, day, sums) rows; accounts without rows are left out (`empty_windows`)."""
    by_account: dict[str, dict[int, JobDelta]] = {}
    for account, day, d in rows:
        days = by_account.setdefault(account, {})
        days[day] = d if day not in days else days[day].plus(d)
    out = {}
    for account, days in by_account.items():
        totals = []
        for n in windows:
            first = today - n + 1
            inside = [d for day, d in days.items() if day >= first]
            if not inside:
                totals.append(WindowTotal(n, first))
                continue
            total = inside[0]
            for d in inside[1:]:
                total = total.plus(d)
            totals.append(WindowTotal(n, first, *total))
        out[account] = tuple(totals)
    return out


def windows_of(
    accounts: Iterable[str],
    rows: Iterable[tuple[str, int, JobDelta]],
    today: int,
    windows: Sequence[int],
) -> dict[str, tuple[WindowTotal, ...]]:
    """`window_totals` for every one of `accounts` (zeros for one without rows)."""
    found = window_totals(rows, today, windows)
    empty = tuple(WindowTotal(n, today - n + 1) for n in windows)
    return {a: found.get(a, empty) for a in accounts}


@dataclass(frozen=True)
class JobGpu:
    """What one GPU, measured under one node key, contributed to one job."""

    job_id: str
    key_id: str
    node_id: str
    gpu_uuid: str
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int


@dataclass(frozen=True)
class NodeRecord:
    """An enrolled (or revoked) node key."""

    key_id: str
    node_id: str
    public_key: bytes  # raw 32-byte Ed25519 public key
    status: NodeStatus
    enrolled_at_ns: int
    revoked_at_ns: int | None = None
    # Collector clock when a batch holding a record of this key was last committed (None: never).
    last_record_ns: int | None = None
    # The latest record of this key answered retry because its time ended this far after the
    # collector's clock (`ClockNote`), and when that was noted (None: never).
    clock_ahead_ns: int | None = None
    clock_ahead_at_ns: int | None = None

    @property
    def clock_ahead(self) -> bool:
        """Whether the node's clock runs ahead now: a record of this key was answered retry
        for its time since the collector last committed one of its records."""
        if self.clock_ahead_at_ns is None:
            return False
        return self.last_record_ns is None or self.clock_ahead_at_ns >= self.last_record_ns


@dataclass(frozen=True)
class ClockNote:
    """A record of `key_id` was answered retry because its time ends `ahead_ns` after the
    collector's clock; noted at `at_ns` (collector clock). `EnrollmentStore.note_clock_ahead`."""

    key_id: str
    ahead_ns: int
    at_ns: int


@dataclass(frozen=True)
class PendingKey:
    """A key that presented itself with a record it signed, but is not enrolled: it waits for an
    operator to approve it by key id (`flopwatch nodes enroll --key-id`)."""

    key_id: str
    node_id: str  # as the key's own signed record claims it
    public_key: bytes  # raw 32-byte Ed25519 public key
    first_seen_ns: int
    last_seen_ns: int


@dataclass(frozen=True)
class GpuTotal:
    """What one device (`gpu_key`) measured under one node key, over every interval held.

    Whole-device figures: per interval, the estimate is the sum of its jobs' estimates and the
    upper bound is the whole GPU's, so a GPU shared by several jobs counts its bound once
    (`JobGpu` sums repeat it in every job, as each job's own bound must).
    """

    key_id: str
    node_id: str
    gpu: str  # gpu_key: the GPU uuid, or uuid/MIG-instance
    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int


@dataclass(frozen=True)
class ChainState:
    """How complete one key's chain is: `missing` sequence numbers below `highest` not held."""

    key_id: str
    node_id: str
    held: int
    highest: int

    @property
    def missing(self) -> int:
        return self.highest - self.held


@dataclass(frozen=True)
class Projection:
    """When the next unfired threshold will be crossed at the job's observed average rate."""

    threshold: int
    seconds: float


@dataclass(frozen=True)
class AlertEvent:
    """A job's total crossed a threshold. Fires once per (job, threshold), ever."""

    job_id: str
    threshold: int
    basis: AlertBasis  # which figure crossed it: the sound upper bound or the estimate
    value: int  # that figure's total when the alert fired
    at_ns: int
    projected_next: Projection | None = None


@dataclass(frozen=True)
class Rule:
    """One threshold and where it comes from."""

    name: str  # "eu-ai-act", "us-ca-sb53", "custom"
    threshold: int  # FLOPs (operations)
    meaning: str  # what reaching it means under the rule
    source: str  # the text it comes from


@dataclass(frozen=True)
class ScopeAlert:
    """A run or an account window crossed, or will soon cross, a threshold."""

    scope: Scope
    account: str
    run: str  # the run (scope run); "" for an account
    window_days: int  # the account's window (scope account); 0 for a run
    kind: AlertKind
    rule: Rule
    basis: AlertBasis
    value: int  # the figure when it fired
    at_ns: int
    rate: float | None = None  # FLOP/s (forecasts)
    eta_s: float | None = None  # seconds from at_ns to the crossing (forecasts)
    # The parent's cumulative figure (kind derived; when it fired, not kept in the store).
    parent_value: int | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str, str, int, str, int]:
        """What it fires once for."""
        return (
            self.scope,
            self.account,
            self.run,
            self.window_days,
            self.kind,
            self.rule.threshold,
        )


class JobDelta(NamedTuple):
    """Sums of one batch's contributions to one job, run, account or day (a tuple: built per
    GPU-interval, hot). Tables without GPU time and energy (per GPU) leave those out."""

    flops_estimate: int
    flops_upper: int
    first_start_ns: int
    last_end_ns: int
    gpu_intervals: int
    gpu_time_fs: int = 0
    energy_nj: int = 0

    def plus(self, other: JobDelta) -> JobDelta:
        return JobDelta(
            self.flops_estimate + other.flops_estimate,
            self.flops_upper + other.flops_upper,
            min(self.first_start_ns, other.first_start_ns),
            max(self.last_end_ns, other.last_end_ns),
            self.gpu_intervals + other.gpu_intervals,
            self.gpu_time_fs + other.gpu_time_fs,
            self.energy_nj + other.energy_nj,
        )

    def add_to(self, job_id: str, total: JobTotal | None) -> JobTotal:
        """The job's total after this delta is added to `total` (None: a new job)."""
        if total is None:
            return JobTotal(
                job_id,
                self.flops_estimate,
                self.flops_upper,
                self.first_start_ns,
                self.last_end_ns,
                self.gpu_intervals,
                gpu_time_fs=self.gpu_time_fs,
                energy_nj=self.energy_nj,
            )
        return JobTotal(
            job_id=job_id,
            flops_estimate=total.flops_estimate + self.flops_estimate,
            flops_upper=total.flops_upper + self.flops_upper,
            first_start_ns=min(total.first_start_ns, self.first_start_ns),
            last_end_ns=max(total.last_end_ns, self.last_end_ns),
            gpu_intervals=total.gpu_intervals + self.gpu_intervals,
            thresholds_crossed=total.thresholds_crossed,
            gpu_time_fs=total.gpu_time_fs + self.gpu_time_fs,
            energy_nj=total.energy_nj + self.energy_nj,
        )


# Sums keyed by a tuple, each with the node id of the record that gave it.
NodeSums = dict[tuple[str, ...], tuple[str, JobDelta]]


def aggregate(records: Iterable[VerifiedRecord]) -> dict[str, JobDelta]:
    """Per-job sums of the records' contributions (exact integer arithmetic)."""
    sums = merge((job, s) for r in records for job, s in r.sums.jobs.items())
    return {job: JobDelta(*s) for job, s in sums.items()}


def run_sums(records: Iterable[VerifiedRecord]) -> dict[tuple[str, str], tuple[int, JobDelta]]:
    """Per (account, run): its classes (a `flopwatch.runs.CLASS_BIT` set) and sums."""
    listed = list(records)
    classes: dict[tuple[str, str], int] = {}
    for r in listed:
        for key, bits in r.sums.run_classes.items():
            classes[key] = classes.get(key, 0) | bits
    sums = merge((key, s) for r in listed for key, s in r.sums.runs.items())
    return {key: (classes[key], JobDelta(*s)) for key, s in sums.items()}


def account_sums(
    runs: Mapping[tuple[str, str], tuple[int, JobDelta]],
) -> dict[str, tuple[int, JobDelta]]:
    """Per account: the classes and sums of its runs (`run_sums`)."""
    out: dict[str, tuple[int, JobDelta]] = {}
    for (account, _), (bits, d) in runs.items():
        held = out.get(account)
        out[account] = (bits, d) if held is None else (held[0] | bits, held[1].plus(d))
    return out


# A run's current rate (forecasts): its compute over its last RUN_RATE_DAYS UTC days of
# measurement, divided by the time those days' records span. Per-run days are kept that long,
# counted back from each run's own last day (not the collector's clock: a backlog sent late
# still measures its run's rate).
RUN_RATE_DAYS = 7


class DaysKept(NamedTuple):
    """Which UTC days of per-account sums a commit keeps: `first_day` on (no window reaches
    further back); with `prune`, it deletes the older ones held (once per day is enough)."""

    first_day: int
    prune: bool


def days_kept(now_ns: int, kept: int, pruned_before: int | None) -> DaysKept:
    """The days a commit at `now_ns` keeps: the last `kept` UTC days, today included; prune
    unless this store pruned before that first day already (`pruned_before`)."""
    first = now_ns // DAY_NS - kept + 1
    return DaysKept(first, pruned_before != first)


def run_day_sums(records: Iterable[VerifiedRecord]) -> dict[tuple[str, str, int], JobDelta]:
    """Per (account, run, UTC day): what a run's current rate is measured from (days before a
    run's last `RUN_RATE_DAYS` are deleted once added: `first_rate_day`)."""
    sums = merge((key, s) for r in records for key, s in r.sums.run_days.items())
    return {key: JobDelta(*s) for key, s in sums.items()}


def first_rate_day(last_end_ns: int) -> int:
    """The first UTC day of the rate window of a run whose measurement ends at `last_end_ns`."""
    return (last_end_ns - 1) // DAY_NS - RUN_RATE_DAYS + 1


RunKey = tuple[str, str]  # (account, run)
ZERO_DELTA = JobDelta(0, 0, 0, 0, 0)  # no compute (a run with no day in its rate window)


def recent_of(
    rows: Iterable[tuple[RunKey, int, JobDelta]], last_ends: Mapping[RunKey, int]
) -> dict[RunKey, JobDelta]:
    """Each run's sums over its last `RUN_RATE_DAYS` UTC days of measurement, from its
    (key, day, sums) rows and its last end (`last_ends`, ns); zeros (first start and last end
    0) for a run with no rows in that window."""
    first = {key: first_rate_day(end) for key, end in last_ends.items()}
    out = {key: ZERO_DELTA for key in last_ends}
    for key, day, d in rows:
        if key in first and day >= first[key]:
            held = out[key]
            out[key] = d if held is ZERO_DELTA else held.plus(d)
    return out


def account_day_sums(
    records: Iterable[VerifiedRecord], first_day: int
) -> dict[tuple[str, int], JobDelta]:
    """Per (account, UTC day) from `first_day` on (`flopwatch.verify.sums.utc_day`): what the
    rolling windows add up. Older days are left out: no window reaches them."""
    sums = merge(
        (key, s) for r in records for key, s in r.sums.account_days.items() if key[1] >= first_day
    )
    return {key: JobDelta(*s) for key, s in sums.items()}


def _node_sums(rows: Iterable[tuple[tuple[str, ...], str, Sum]]) -> NodeSums:
    """Sum (key, node id, sum) rows per key; a key's rows all name one node (keys hold the
    node key)."""
    listed = list(rows)
    nodes = {key: node_id for key, node_id, _ in listed}
    merged = merge((key, s) for key, _, s in listed)
    return {key: (nodes[key], JobDelta(*s)) for key, s in merged.items()}


def job_gpu_sums(records: Iterable[VerifiedRecord]) -> NodeSums:
    """Per (job, node key, GPU) sums of the records' contributions: the rows of job_gpus."""
    return _node_sums(
        ((job, r.key_id, gpu), r.node_id, s)
        for r in records
        for (job, gpu), s in r.sums.job_gpus.items()
    )


def device_sums(records: Iterable[VerifiedRecord]) -> NodeSums:
    """Per (node key, `gpu_key`) whole-device sums of the records' intervals: the rows of
    gpu_totals (the upper bound counted once per interval, however many jobs shared it)."""
    return _node_sums(
        ((r.key_id, device), r.node_id, s) for r in records for device, s in r.sums.devices.items()
    )


def spans_by_device(records: Iterable[VerifiedRecord]) -> dict[str, list[tuple[int, int]]]:
    """Every interval the records measured, [start, end) per device (`gpu_key`)."""
    by_device: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        for device, spans in r.sums.spans.items():
            by_device.setdefault(device, []).extend(spans)
    return by_device


@dataclass(frozen=True)
class LogEntry:
    """One leaf of the transparency log: an accepted record's envelope, as stored."""

    leaf_index: int
    # The leaf data: the exact envelope bytes the store holds; b"" once they were archived
    # and pruned (`RetentionStore`): the leaf hash stays in the log, the bytes are in the archive.
    envelope: bytes
    key_id: str
    sequence: int

    @property
    def archived(self) -> bool:
        return not self.envelope


@dataclass(frozen=True)
class ScopeLeaf:
    """One logged record of a job or run (`LeafScope`), as a sampled report's sum tree reads
    it: the figures its leaf states for the scope, stored when the record was committed, or
    (a record indexed before they were stored) its envelope to read them from.

    With figures: `leaf_hash` (its RFC 6962 log leaf hash), `leaf_sums` (the scope's figures
    in it, `flopwatch.sumtree.Sums.to_bytes`) and `flop_model_version` are set and `envelope`
    is b"" (not read). Without: those are None and `envelope` holds the stored bytes, b"" once
    archived and pruned."""

    leaf_index: int
    key_id: str
    sequence: int
    envelope: bytes
    leaf_hash: bytes | None = None
    leaf_sums: bytes | None = None
    flop_model_version: str | None = None

    @property
    def has_figures(self) -> bool:
        return self.leaf_sums is not None

    @property
    def archived(self) -> bool:
        """No figures and no envelope: nothing to make its leaf from."""
        return not self.has_figures and not self.envelope


@dataclass(frozen=True)
class PruneCandidate:
    """A logged record whose envelope an archive holds: its leaf, the leaf hash of the archived
    bytes, and the jobs the record counts for (from its payload)."""

    leaf_index: int
    leaf_hash: bytes
    jobs: frozenset[str]


@dataclass(frozen=True)
class JobEvidence:
    """What the store holds for one job, from one snapshot: what `flopwatch report` bundles."""

    total: JobTotal
    entries: tuple[LogEntry, ...]  # every record that contributed to the job, by leaf index
    nodes: tuple[NodeRecord, ...]  # the keys that signed them, by key id
    revoked_at_log_size: Mapping[str, int]  # log size when each revoked key among them was revoked
    log_size: int  # leaves in the log at the snapshot


@dataclass(frozen=True)
class RunEvidence:
    """What the store holds for one run (account, run), from one snapshot: what
    `flopwatch report --run` samples. Entries are the records any of whose shares count for
    the run (`log_runs`), by leaf index."""

    total: RunTotal
    entries: tuple[LogEntry, ...]
    nodes: tuple[NodeRecord, ...]
    revoked_at_log_size: Mapping[str, int]
    log_size: int


@dataclass(frozen=True)
class LeafScope:
    """Whose logged records `LogStore.scope_leaves` pages through: a job (`job_id`), or with
    `job_id` empty, a run (`account`, `run`)."""

    job_id: str = ""
    account: str = ""
    run: str = ""

    @property
    def is_run(self) -> bool:
        return not self.job_id
