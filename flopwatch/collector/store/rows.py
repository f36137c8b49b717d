"""Rows the stores read, as the records `flopwatch.collector.store.records` defines: one mapping
for both stores.

FLOP figures come back as TEXT (SQLite) or NUMERIC(40, 0) (PostgreSQL, an integral Decimal);
`int()` of either is exact. The SELECTs list columns in the order these functions read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flopwatch.collector.store.records import AlertEvent, JobGpu, NodeRecord, Projection

# Rows for `node_record`: append the WHERE / ORDER BY clause.
SELECT_NODES = (
    "SELECT key_id, node_id, public_key, status, enrolled_at_ns, revoked_at_ns, "
    "last_record_ns FROM nodes"
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


def node_record(r: Sequence[Any]) -> NodeRecord:
    return NodeRecord(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6])


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
