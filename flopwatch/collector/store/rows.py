"""Rows the stores write and read back, mapped once for both stores: records in, the records
`flopwatch.collector.store.records` defines out.

FLOP figures come back as TEXT (SQLite) or NUMERIC(40, 0) (PostgreSQL, an integral Decimal);
`int()` of either is exact. The SELECTs list columns in the order these functions read them; the
write rows list columns in the order of the tables' INSERT (records, gaps, chains).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flopwatch.collector.store.records import (
    AccountTotal,
    AlertEvent,
    JobDelta,
    JobGpu,
    JobTotal,
    NodeRecord,
    Projection,
    Rule,
    RunTotal,
    ScopeAlert,
)
from flopwatch.verify.record import VerifiedRecord

# Rows for `node_record`: append the WHERE / ORDER BY clause.
SELECT_NODES = (
    "SELECT key_id, node_id, public_key, status, enrolled_at_ns, revoked_at_ns, "
    "last_record_ns, clock_ahead_ns, clock_ahead_at_ns FROM nodes"
)
# Rows for `job_gpu`: append the WHERE clause (placeholders differ between the stores).
SELECT_JOB_GPUS = (
    "SELECT job_id, key_id, node_id, gpu_uuid, flops_estimate, flops_upper, first_start_ns, "
    "last_end_ns, gpu_intervals FROM job_gpus"
)
# Rows for `alert_event`.
SELECT_ALERTS = (
    "SELECT job_id, threshold, basis, value, at_ns, next_threshold, next_seconds FROM alerts"
)


# Rows for `run_total` and `account_total`: append the WHERE / ORDER BY clause.
SELECT_RUNS = (
    "SELECT account, run, classes, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
    "gpu_intervals, gpu_time_fs, energy_nj FROM run_totals"
)
SELECT_ACCOUNTS = (
    "SELECT account, classes, flops_estimate, flops_upper, first_start_ns, last_end_ns, "
    "gpu_intervals, gpu_time_fs, energy_nj FROM account_totals"
)


def sums(r: Sequence[Any]) -> JobDelta:
    """The seven sum columns of a row, from its first: flops_estimate, flops_upper,
    first_start_ns, last_end_ns, gpu_intervals, gpu_time_fs, energy_nj."""
    return JobDelta(*(int(v) for v in r[:7]))


def job_total(r: Sequence[Any], crossed: tuple[int, ...]) -> JobTotal:
    """A job's row (job_id, `SUMS`) and the thresholds it crossed."""
    d = sums(r[1:])
    return JobTotal(
        r[0],
        d.flops_estimate,
        d.flops_upper,
        d.first_start_ns,
        d.last_end_ns,
        d.gpu_intervals,
        crossed,
        gpu_time_fs=d.gpu_time_fs,
        energy_nj=d.energy_nj,
    )


def run_total(r: Sequence[Any]) -> RunTotal:
    return RunTotal(r[0], r[1], int(r[2]), *sums(r[3:]))


def account_total(r: Sequence[Any], runs: int) -> AccountTotal:
    return AccountTotal(r[0], int(r[1]), runs, *sums(r[2:]))


def node_record(r: Sequence[Any]) -> NodeRecord:
    return NodeRecord(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])


def job_gpu(r: Sequence[Any]) -> JobGpu:
    return JobGpu(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), r[6], r[7], r[8])


def alert_event(r: Sequence[Any]) -> AlertEvent:
    return AlertEvent(
        job_id=r[0],
        threshold=int(r[1]),
        basis=r[2],
        value=int(r[3]),
        at_ns=r[4],
        projected_next=None if r[5] is None else Projection(int(r[5]), float(r[6])),
    )


def alerts_in_order(rows: Sequence[Sequence[Any]]) -> list[AlertEvent]:
    """Fired alerts, oldest first (ties by job and threshold)."""
    return sorted(map(alert_event, rows), key=lambda a: (a.at_ns, a.job_id, a.threshold))


def record_row(
    r: VerifiedRecord, received_at_ns: int
) -> tuple[str, int, bytes, bytes, str, bytes, int]:
    """(key_id, sequence, digest, previous_digest, node_id, envelope, received_at_ns)."""
    return (
        r.key_id,
        r.sequence,
        r.digest,
        r.previous_digest,
        r.node_id,
        r.envelope.to_bytes(),
        received_at_ns,
    )


def gap_rows(records: Sequence[VerifiedRecord]) -> list[tuple[str, int, str, int, int, str, str]]:
    """(key_id, sequence, gpu_uuid, start_ns, end_ns, reason, detail) of every declared gap."""
    return [
        (r.key_id, r.sequence, g.gpu_uuid, g.start_ns, g.end_ns, g.reason, g.detail)
        for r in records
        for g in r.gaps
    ]


def chain_rows(records: Sequence[VerifiedRecord]) -> list[tuple[str, int, int]]:
    """(key_id, held, highest) per key: how many of the records it signed and its highest
    sequence, to add to what the chains table holds. Sorted by key (lock order)."""
    chains: dict[str, tuple[int, int]] = {}
    for r in records:
        held, highest = chains.get(r.key_id, (0, 0))
        chains[r.key_id] = (held + 1, max(highest, r.sequence))
    return [(k, held, highest) for k, (held, highest) in sorted(chains.items())]


# Scope alerts (flopwatch.collector.alerts.scopes): the same columns in both stores.
SELECT_SCOPE_ALERTS = (
    "SELECT scope, account, run, window_days, kind, threshold, rule, meaning, source, basis, "
    "value, at_ns, rate, eta_s FROM scope_alerts "
    "ORDER BY at_ns, scope, account, run, window_days, kind, threshold"
)


def scope_alert_row(a: ScopeAlert) -> tuple[Any, ...]:
    """A scope alert's column values (FLOP figures as decimal text; a store casts them)."""
    r = a.rule
    return (
        a.scope,
        a.account,
        a.run,
        a.window_days,
        a.kind,
        str(r.threshold),
        r.name,
        r.meaning,
        r.source,
        a.basis,
        str(a.value),
        a.at_ns,
        a.rate,
        a.eta_s,
    )


def scope_alert(row: Sequence[Any]) -> ScopeAlert:
    scope, account, run, days, kind, threshold, name, meaning, source, basis, value = row[:11]
    return ScopeAlert(
        scope=scope,
        account=account,
        run=run,
        window_days=int(days),
        kind=kind,
        rule=Rule(name, int(threshold), meaning, source),
        basis=basis,
        value=int(value),
        at_ns=int(row[11]),
        rate=None if row[12] is None else float(row[12]),
        eta_s=None if row[13] is None else float(row[13]),
    )


# A scope's leaves with their stored figures (`scope_leaves` of both stores, with
# `common.scope_leaf`): the envelope is read only where there are none (rows indexed before
# they were stored), by a subquery run for those rows alone.
SCOPE_LEAF_COLUMNS = (
    "SELECT j.leaf_index, l.key_id, l.sequence, j.leaf_sums, j.flop_model_version, n.hash, "
    "CASE WHEN j.leaf_sums IS NULL OR j.flop_model_version IS NULL THEN "
    "(SELECT r.envelope FROM records r WHERE r.key_id = l.key_id AND r.sequence = l.sequence) "
    "END "
)
SCOPE_LEAF_JOINS = (
    "JOIN log_leaves l ON l.leaf_index = j.leaf_index "
    "JOIN log_nodes n ON n.level = 0 AND n.idx = j.leaf_index "
)
