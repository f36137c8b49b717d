"""`flopwatch jobs --collector HOST:PORT`: per-job totals held by a collector, and with --job,
which nodes and GPUs contributed to one job. Follows the collector's pages to the end."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import grpc

from flopwatch.cli.common import EXIT_OK, add_tls_arguments, check_identifier, host_port
from flopwatch.errors import ConfigError, TransportError
from flopwatch.identifiers import shown
from flopwatch.keys import short_key_id
from flopwatch.model.figures import LEGEND
from flopwatch.transport import query_stub, sync_channel
from flopwatch.v1 import collector_pb2, collector_pb2_grpc

HELP = (
    "show cumulative FLOPs per job (estimate and upper bound) held by a collector; to register "
    "a job on a node: `flopwatch job`"
)
R = TypeVar("R")

_EPILOG = """\
FLOP figures are under the FLOP model version printed below the table: the estimate (the job's
declared precision, else bf16) and the sound upper bound (fastest precision, maximum SM clock).
GPU-seconds and GPU energy (kWh, the GPUs' board energy only: not host, network or cooling) are
the job's share of each GPU interval, as its FLOPs are. "from"/"to" is the measured interval the
figures cover (UTC). A job's upper bound on a GPU it shared with other jobs is that whole GPU's,
so bounds of jobs sharing GPUs do not add up. Runs and accounts: `flopwatch runs`, `accounts`.
"""

# What each figure of `flopwatch jobs`, `runs` and `accounts` --json is.
LEGEND_WITH_ENERGY = {
    **LEGEND,
    "gpu_seconds": "GPU-seconds: each GPU interval's length times the job's share of it",
    "energy_kwh": "GPU board energy in kWh, by the same shares as FLOPs; the GPUs' own energy "
    "only, not host, network or cooling",
}


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "jobs",
        help=HELP,
        description=HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--collector",
        required=True,
        metavar="HOST:PORT",
        help="the collector to ask; with mTLS, present a reader certificate "
        "(flopwatch certs issue --client --role reader): an agent's may not list jobs",
    )
    p.add_argument("--prefix", default="", help="only jobs whose id starts with this")
    p.add_argument(
        "--job",
        metavar="ID",
        help="one job: its totals and what each node and GPU contributed to it",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print JSON for scripts: {"jobs": {"<job>": {"flops": N, "flops_upper": N}}, '
        '"details": {...}} ("jobs" as `flopwatch replay` prints it); with --job: '
        '{"job": {...}, "nodes": {"<node>": {"flops": N, "flops_upper": N, "gpus": {...}}}}',
    )
    p.add_argument(
        "--page-size",
        type=int,
        default=0,
        help="rows per request (default: the collector's; it caps this)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    add_tls_arguments(p, "reader")  # a reader certificate: certs issue --role reader
    p.set_defaults(run=run)


# -- fetching ----------------------------------------------------------------------------------
def call(collector: str, method: Callable[..., R], request: object, timeout: float) -> R:
    """One RPC; NOT_FOUND is bad input (exit 2), any other failure a TransportError."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as e:
        code = e.code()
        details = e.details()
        if code == grpc.StatusCode.NOT_FOUND:
            raise ConfigError(f"collector {collector}: {details}") from e
        raise TransportError(f"collector {collector}: {code.name}: {details}") from e


class _Paged(Protocol):
    next_page_token: str


P = TypeVar("P", bound=_Paged)


def pages(
    collector: str, method: Callable[..., P], request_for: Callable[[str], object], timeout: float
) -> Iterator[P]:
    """Every page of a paged query, in order: `request_for(token)` asks for the page after
    `token` ("" for the first); the last page has no next_page_token."""
    token = ""
    while True:
        page = call(collector, method, request_for(token), timeout)
        yield page
        token = page.next_page_token
        if not token:
            return


def fetch_jobs(
    stub: collector_pb2_grpc.QueryServiceStub,
    collector: str,
    prefix: str,
    page_size: int = 0,
    timeout: float = 10.0,
) -> collector_pb2.ListJobsResponse:
    """Every page of ListJobs, merged into one response."""
    out = collector_pb2.ListJobsResponse()
    for page in pages(
        collector,
        stub.ListJobs,
        lambda token: collector_pb2.ListJobsRequest(
            job_prefix=prefix, page_size=page_size, page_token=token
        ),
        timeout,
    ):
        out.jobs.extend(page.jobs)
        out.flop_model_version, out.alert_basis = page.flop_model_version, page.alert_basis
    return out


def fetch_job(
    stub: collector_pb2_grpc.QueryServiceStub,
    collector: str,
    job_id: str,
    page_size: int = 0,
    timeout: float = 10.0,
) -> collector_pb2.ListJobGpusResponse:
    """Every page of ListJobGpus for one job, merged into one response."""
    out = collector_pb2.ListJobGpusResponse()
    for page in pages(
        collector,
        stub.ListJobGpus,
        lambda token: collector_pb2.ListJobGpusRequest(
            job_id=job_id, page_size=page_size, page_token=token
        ),
        timeout,
    ):
        out.gpus.extend(page.gpus)
        out.job.CopyFrom(page.job)  # the last page's totals: the most recent
        out.flop_model_version, out.alert_basis = page.flop_model_version, page.alert_basis
    return out


# -- rendering -----------------------------------------------------------------------------------
def utc(ns: int) -> str:
    """A timestamp in UTC to the second; "-" for 0 (none)."""
    if not ns:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def render(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns; every cell escaped for the terminal (`shown`): ids come from
    records and a database, and must not move the cursor or start a row of their own."""
    rows = [[shown(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def seconds(value: float) -> str:
    return f"{value:.4e}"


def energy(value: float) -> str:
    return f"{value:.4g}"


def _figure_name(basis: str) -> str:
    return "upper bound" if basis == "upper" else "estimate"


def _footer(model: str, basis: str) -> str:
    return f"FLOP model v{model}; times in UTC; alerts fire on the {_figure_name(basis)}."


def table(resp: collector_pb2.ListJobsResponse) -> str:
    rows = [
        (
            "JOB",
            "FLOPs (estimate)",
            "FLOPs (upper bound)",
            "GPU-seconds",
            "GPU energy (kWh)",
            "GPU-intervals",
            "from",
            "to",
            "thresholds crossed",
        )
    ]
    for j in resp.jobs:
        crossed = ",".join(f"{int(t):.0e}" for t in j.thresholds_crossed) or "-"
        rows.append(
            (
                j.job_id,
                f"{int(j.flops_estimate):.4e}",
                f"{int(j.flops_upper):.4e}",
                seconds(j.gpu_seconds),
                energy(j.energy_kwh),
                str(j.gpu_intervals),
                utc(j.first_start_unix_ns),
                utc(j.last_end_unix_ns),
                crossed,
            )
        )
    return render(rows) + "\n" + _footer(resp.flop_model_version, resp.alert_basis)


def job_table(resp: collector_pb2.ListJobGpusResponse) -> str:
    j = resp.job
    crossed = ", ".join(f"{int(t):.0e}" for t in j.thresholds_crossed) or "none"
    head = [
        f"job {shown(j.job_id)}",
        f"  FLOPs (estimate):     {int(j.flops_estimate):.4e}  ({j.flops_estimate})",
        f"  FLOPs (upper bound):  {int(j.flops_upper):.4e}  ({j.flops_upper})",
        f"  measured:             {utc(j.first_start_unix_ns)} to {utc(j.last_end_unix_ns)} "
        f"UTC, {j.gpu_intervals} GPU-intervals",
        f"  GPU-seconds:          {seconds(j.gpu_seconds)} (the job's shares)",
        f"  GPU energy:           {energy(j.energy_kwh)} kWh (GPU boards only, the job's shares)",
        f"  thresholds crossed:   {crossed} ({_figure_name(resp.alert_basis)})",
        "",
    ]
    nodes: dict[str, list[int]] = {}
    for g in resp.gpus:
        n = nodes.setdefault(g.node_id, [0, 0, 0, 0])
        n[0] += int(g.flops_estimate)
        n[1] += int(g.flops_upper)
        n[2] += 1
        n[3] += g.gpu_intervals
    per_node = [("NODE", "GPUs", "FLOPs (estimate)", "FLOPs (upper bound)", "GPU-intervals")]
    per_node += [
        (node, str(n[2]), f"{n[0]:.4e}", f"{n[1]:.4e}", str(n[3]))
        for node, n in sorted(nodes.items())
    ]
    per_gpu = [
        ("NODE", "KEY ID", "GPU", "FLOPs (estimate)", "FLOPs (upper bound)", "GPU-intervals")
    ]
    per_gpu += [
        (
            g.node_id,
            short_key_id(g.key_id),
            g.gpu_uuid,
            f"{int(g.flops_estimate):.4e}",
            f"{int(g.flops_upper):.4e}",
            str(g.gpu_intervals),
        )
        for g in sorted(resp.gpus, key=lambda g: (g.node_id, g.gpu_uuid, g.key_id))
    ]
    return "\n".join(
        [
            *head,
            render(per_node),
            "",
            render(per_gpu),
            _footer(resp.flop_model_version, resp.alert_basis),
        ]
    )


def _figures(j: collector_pb2.JobTotal) -> dict[str, object]:
    return {"flops": int(j.flops_estimate), "flops_upper": int(j.flops_upper)}


def _details(j: collector_pb2.JobTotal) -> dict[str, object]:
    return {
        "gpu_intervals": j.gpu_intervals,
        "first_start_unix_ns": j.first_start_unix_ns,
        "last_end_unix_ns": j.last_end_unix_ns,
        "thresholds_crossed": [int(t) for t in j.thresholds_crossed],
        "gpu_seconds": j.gpu_seconds,
        "energy_kwh": j.energy_kwh,
    }


def as_json(resp: collector_pb2.ListJobsResponse) -> dict[str, object]:
    """ "jobs" has exactly the shape `flopwatch replay` prints; "details" the rest."""
    return {
        "jobs": {j.job_id: _figures(j) for j in resp.jobs},
        "details": {j.job_id: _details(j) for j in resp.jobs},
        "legend": LEGEND_WITH_ENERGY,
        "flop_model_version": resp.flop_model_version,
        "alert_basis": resp.alert_basis,
    }


def job_as_json(resp: collector_pb2.ListJobGpusResponse) -> dict[str, object]:
    nodes: dict[str, dict[str, Any]] = {}
    for g in resp.gpus:
        n = nodes.setdefault(g.node_id, {"flops": 0, "flops_upper": 0, "gpus": {}})
        n["flops"] += int(g.flops_estimate)
        n["flops_upper"] += int(g.flops_upper)
        n["gpus"][g.gpu_uuid] = {
            "key_id": g.key_id,
            "flops": int(g.flops_estimate),
            "flops_upper": int(g.flops_upper),
            "gpu_intervals": g.gpu_intervals,
            "first_start_unix_ns": g.first_start_unix_ns,
            "last_end_unix_ns": g.last_end_unix_ns,
        }
    return {
        "job": {"id": resp.job.job_id, **_figures(resp.job), **_details(resp.job)},
        "nodes": nodes,
        "legend": LEGEND_WITH_ENERGY,
        "flop_model_version": resp.flop_model_version,
        "alert_basis": resp.alert_basis,
    }


def run(args: argparse.Namespace) -> int:
    host_port(args.collector)
    if args.page_size < 0:
        raise ConfigError("--page-size must be 0 (the collector's default) or positive")
    if args.job is not None:
        check_identifier("--job", args.job)
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        stub = query_stub(channel)
        if args.job is not None:
            one = fetch_job(stub, args.collector, args.job, args.page_size, args.timeout)
            out, text = job_as_json(one), job_table(one)
        else:
            jobs = fetch_jobs(stub, args.collector, args.prefix, args.page_size, args.timeout)
            out, text = as_json(jobs), table(jobs)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)
    return EXIT_OK
