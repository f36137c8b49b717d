"""QueryService (ListJobs, ListJobGpus, ListNodes, ListRuns, ListAccounts): its answers as
protobuf messages, and the servicer that hands them to the store's thread.

Each answer function runs on the collector's ingest thread (it reads the store through `Query`);
`QueryServicer` only maps errors to status codes: ConfigError (a bad page token) to
INVALID_ARGUMENT, `JobNotFound` to NOT_FOUND, StoreError to UNAVAILABLE. FLOP figures travel as
exact decimal strings; GPU-seconds and kWh as doubles (from the store's exact femtoseconds and
nanojoules).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from flopwatch.collector.config import QueryLimits
from flopwatch.collector.query import AccountSummary, NodeSummary, Query, SummaryStatus
from flopwatch.collector.rpc.paging import decode_token, fill, page_size
from flopwatch.collector.rpc.store_thread import Codes, on_store_thread
from flopwatch.collector.store.records import (
    JobDelta,
    JobGpu,
    JobTotal,
    RunTotal,
    WindowTotal,
    gpu_seconds,
    kwh,
)
from flopwatch.errors import ConfigError, FlopwatchError
from flopwatch.lineage import ForeignParent, Lineage
from flopwatch.model import MODEL_VERSION
from flopwatch.runs import classes_in
from flopwatch.v1 import collector_pb2 as pb
from flopwatch.v1 import collector_pb2_grpc
from flopwatch.verify.sums import DAY_NS

T = TypeVar("T")

_STATUSES: dict[str, SummaryStatus] = {
    "enrolled": "enrolled",
    "revoked": "revoked",
    "pending": "pending",
}


class JobNotFound(FlopwatchError):
    """ListJobGpus named a job the collector holds no record of."""


def job_message(t: JobTotal) -> pb.JobTotal:
    return pb.JobTotal(
        job_id=t.job_id,
        flops_estimate=str(t.flops_estimate),
        flops_upper=str(t.flops_upper),
        first_start_unix_ns=t.first_start_ns,
        last_end_unix_ns=t.last_end_ns,
        gpu_intervals=t.gpu_intervals,
        thresholds_crossed=[str(x) for x in t.thresholds_crossed],
        gpu_seconds=gpu_seconds(t.gpu_time_fs),
        energy_kwh=kwh(t.energy_nj),
    )


def _class_names(bits: int) -> list[str]:
    return [c.value for c in classes_in(bits)]


def run_message(
    t: RunTotal, view: Lineage | None = None, recent: JobDelta | None = None
) -> pb.RunTotal:
    msg = run_total_message(t)
    if recent is not None:
        msg.recent_flops_estimate = str(recent.flops_estimate)
        msg.recent_flops_upper = str(recent.flops_upper)
        msg.recent_first_start_unix_ns = recent.first_start_ns
        msg.recent_last_end_unix_ns = recent.last_end_ns
    if view is None:
        return msg
    if view.parent is not None:
        msg.parent_account, msg.parent_run = view.parent.key
        if isinstance(view.parent, ForeignParent):
            msg.parent_collector = view.parent.collector
    msg.inherited_flops_estimate = str(view.inherited.flops_estimate)
    msg.inherited_flops_upper = str(view.inherited.flops_upper)
    msg.cumulative_flops_estimate = str(view.cumulative.flops_estimate)
    msg.cumulative_flops_upper = str(view.cumulative.flops_upper)
    msg.derived_over_third = view.derived_over_third
    return msg


def run_total_message(t: RunTotal) -> pb.RunTotal:
    return pb.RunTotal(
        account=t.account,
        run=t.run,
        classes=_class_names(t.classes),
        flops_estimate=str(t.flops_estimate),
        flops_upper=str(t.flops_upper),
        first_start_unix_ns=t.first_start_ns,
        last_end_unix_ns=t.last_end_ns,
        gpu_intervals=t.gpu_intervals,
        gpu_seconds=gpu_seconds(t.gpu_time_fs),
        energy_kwh=kwh(t.energy_nj),
    )


def window_message(w: WindowTotal, end_ns: int) -> pb.WindowTotal:
    return pb.WindowTotal(
        days=w.days,
        start_unix_ns=w.first_day * DAY_NS,
        end_unix_ns=end_ns,
        flops_estimate=str(w.flops_estimate),
        flops_upper=str(w.flops_upper),
        first_start_unix_ns=w.first_start_ns,
        last_end_unix_ns=w.last_end_ns,
        gpu_intervals=w.gpu_intervals,
        gpu_seconds=gpu_seconds(w.gpu_time_fs),
        energy_kwh=kwh(w.energy_nj),
    )


def account_message(a: AccountSummary) -> pb.AccountTotal:
    t = a.total
    return pb.AccountTotal(
        account=t.account,
        classes=_class_names(t.classes),
        runs=t.runs,
        flops_estimate=str(t.flops_estimate),
        flops_upper=str(t.flops_upper),
        first_start_unix_ns=t.first_start_ns,
        last_end_unix_ns=t.last_end_ns,
        gpu_intervals=t.gpu_intervals,
        gpu_seconds=gpu_seconds(t.gpu_time_fs),
        energy_kwh=kwh(t.energy_nj),
        windows=[window_message(w, a.windows_end_ns) for w in a.windows],
    )


def job_gpu_message(g: JobGpu) -> pb.JobGpu:
    return pb.JobGpu(
        key_id=g.key_id,
        node_id=g.node_id,
        gpu_uuid=g.gpu_uuid,
        flops_estimate=str(g.flops_estimate),
        flops_upper=str(g.flops_upper),
        first_start_unix_ns=g.first_start_ns,
        last_end_unix_ns=g.last_end_ns,
        gpu_intervals=g.gpu_intervals,
    )


def node_message(n: NodeSummary) -> pb.NodeSummary:
    return pb.NodeSummary(
        key_id=n.key_id,
        node_id=n.node_id,
        status=n.status,
        enrolled_at_unix_ns=n.enrolled_at_ns or 0,
        revoked_at_unix_ns=n.revoked_at_ns or 0,
        last_record_unix_ns=n.last_record_ns or 0,
        silent=n.silent,
        flops_estimate=str(n.flops_estimate),
        flops_upper=str(n.flops_upper),
        gpus=n.gpus,
        gpu_intervals=n.gpu_intervals,
        pending_seen_unix_ns=n.pending_seen_ns or 0,
        clock_ahead=n.clock_ahead,
        clock_ahead_seconds=n.clock_ahead_s or 0.0,
        clock_ahead_at_unix_ns=n.clock_ahead_at_ns or 0,
    )


def node_summary(m: pb.NodeSummary) -> NodeSummary:
    """The inverse of `node_message`, for clients."""
    return NodeSummary(
        key_id=m.key_id,
        node_id=m.node_id,
        status=_STATUSES.get(m.status, "enrolled"),
        enrolled_at_ns=m.enrolled_at_unix_ns or None,
        revoked_at_ns=m.revoked_at_unix_ns or None,
        last_record_ns=m.last_record_unix_ns or None,
        pending_seen_ns=m.pending_seen_unix_ns or None,
        silent=m.silent,
        flops_estimate=int(m.flops_estimate or 0),
        flops_upper=int(m.flops_upper or 0),
        gpus=m.gpus,
        gpu_intervals=m.gpu_intervals,
        clock_ahead=m.clock_ahead,
        clock_ahead_s=m.clock_ahead_seconds if m.clock_ahead_at_unix_ns else None,
        clock_ahead_at_ns=m.clock_ahead_at_unix_ns or None,
    )


def list_jobs(
    query: Query, limits: QueryLimits, request: pb.ListJobsRequest, basis: str
) -> pb.ListJobsResponse:
    size = page_size(request.page_size, limits)
    after = decode_token(request.page_token, 1)
    rows = query.job_page(request.job_prefix, after[0] if after else "", size + 1)
    jobs, token = fill(
        rows, job_message, lambda t: (t.job_id,), size=size, max_bytes=limits.max_page_bytes
    )
    return pb.ListJobsResponse(
        jobs=jobs, next_page_token=token, flop_model_version=MODEL_VERSION, alert_basis=basis
    )


def list_job_gpus(
    query: Query, limits: QueryLimits, request: pb.ListJobGpusRequest, basis: str
) -> pb.ListJobGpusResponse:
    total = query.job(request.job_id)
    if total is None:
        raise JobNotFound(f"no record of job {request.job_id!r}")
    size = page_size(request.page_size, limits)
    after = decode_token(request.page_token, 2)
    rows = query.job_gpu_page(request.job_id, (after[0], after[1]) if after else ("", ""), size + 1)
    gpus, token = fill(
        rows,
        job_gpu_message,
        lambda g: (g.key_id, g.gpu_uuid),
        size=size,
        max_bytes=limits.max_page_bytes,
    )
    return pb.ListJobGpusResponse(
        job=job_message(total),
        gpus=gpus,
        next_page_token=token,
        flop_model_version=MODEL_VERSION,
        alert_basis=basis,
    )


def list_nodes(
    query: Query, limits: QueryLimits, request: pb.ListNodesRequest
) -> pb.ListNodesResponse:
    size = page_size(request.page_size, limits)
    after = decode_token(request.page_token, 1)
    rows = query.node_page(after[0] if after else "", size + 1)
    nodes, token = fill(
        rows, node_message, lambda n: (n.key_id,), size=size, max_bytes=limits.max_page_bytes
    )
    return pb.ListNodesResponse(
        nodes=nodes,
        next_page_token=token,
        silent_after_seconds=query.silent_after_s,
        flop_model_version=MODEL_VERSION,
    )


def list_runs(
    query: Query, limits: QueryLimits, request: pb.ListRunsRequest
) -> pb.ListRunsResponse:
    size = page_size(request.page_size, limits)
    after = decode_token(request.page_token, 2)
    account = request.account if request.HasField("account") else None
    rows = query.run_page(
        account, request.run_prefix, (after[0], after[1]) if after else ("", ""), size + 1
    )
    views = query.lineages(rows)
    recent = query.run_recent(rows)
    runs, token = fill(
        rows,
        lambda t: run_message(t, views.get((t.account, t.run)), recent.get((t.account, t.run))),
        lambda t: (t.account, t.run),
        size=size,
        max_bytes=limits.max_page_bytes,
    )
    return pb.ListRunsResponse(runs=runs, next_page_token=token, flop_model_version=MODEL_VERSION)


def list_accounts(
    query: Query, limits: QueryLimits, request: pb.ListAccountsRequest
) -> pb.ListAccountsResponse:
    size = page_size(request.page_size, limits)
    after = decode_token(request.page_token, 1)
    rows = query.account_page(request.account_prefix, after[0] if after else None, size + 1)
    accounts, token = fill(
        rows,
        account_message,
        lambda a: (a.total.account,),
        size=size,
        max_bytes=limits.max_page_bytes,
    )
    return pb.ListAccountsResponse(
        accounts=accounts, next_page_token=token, flop_model_version=MODEL_VERSION
    )


_CODES: Codes = {
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    JobNotFound: grpc.StatusCode.NOT_FOUND,
}


class QueryServicer(collector_pb2_grpc.QueryServiceServicer):
    """The query RPCs, answered on the store's thread via `executor`. `basis` is the figure
    alerts compare with a threshold ("upper" or "estimate"), reported with job totals."""

    def __init__(
        self,
        query: Query,
        executor: Executor,
        *,
        basis: str,
        limits: QueryLimits | None = None,
    ) -> None:
        self._query = query
        self._executor = executor
        self._basis = basis
        self._limits = limits or QueryLimits()

    async def _answer(
        self, context: grpc.aio.ServicerContext[Any, Any], fn: Callable[..., T], *args: Any
    ) -> T:
        return await on_store_thread(
            context, self._executor, _CODES, fn, self._query, self._limits, *args
        )

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        return await self._answer(context, list_jobs, request, self._basis)

    async def ListJobGpus(
        self, request: pb.ListJobGpusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobGpusResponse:
        return await self._answer(context, list_job_gpus, request, self._basis)

    async def ListNodes(
        self, request: pb.ListNodesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListNodesResponse:
        return await self._answer(context, list_nodes, request)

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRunsResponse:
        return await self._answer(context, list_runs, request)

    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListAccountsResponse:
        return await self._answer(context, list_accounts, request)
