"""`flopwatch jobs --collector HOST:PORT`: per-job totals held by a collector."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from flopwatch.cli.common import EXIT_OK, add_tls_arguments, host_port
from flopwatch.errors import TransportError
from flopwatch.model.figures import LEGEND
from flopwatch.transport import collector_stub, sync_channel
from flopwatch.v1 import collector_pb2

HELP = "show cumulative FLOPs per job (estimate and upper bound) from a collector"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("jobs", help=HELP, description=HELP + ".")
    p.add_argument("--collector", required=True, metavar="HOST:PORT")
    p.add_argument("--prefix", default="", help="only jobs whose id starts with this")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"jobs": {"<job>": {"flops": N, "flops_upper": N}}} like `flopwatch replay`',
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    add_tls_arguments(p, "client")
    p.set_defaults(run=run)


def fetch(args: argparse.Namespace) -> collector_pb2.ListJobsResponse:
    host_port(args.collector)
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        stub = collector_stub(channel)
        try:
            resp: collector_pb2.ListJobsResponse = stub.ListJobs(
                collector_pb2.ListJobsRequest(job_prefix=args.prefix), timeout=args.timeout
            )
        except grpc.RpcError as e:
            raise TransportError(
                f"collector {args.collector}: {e.code().name}: {e.details()}"
            ) from e
    return resp


def as_json(resp: collector_pb2.ListJobsResponse) -> dict[str, object]:
    return {
        "jobs": {
            j.job_id: {"flops": int(j.flops_estimate), "flops_upper": int(j.flops_upper)}
            for j in resp.jobs
        },
        "legend": LEGEND,
        "flop_model_version": resp.flop_model_version,
        "alert_basis": resp.alert_basis,
    }


def table(resp: collector_pb2.ListJobsResponse) -> str:
    rows = [("JOB", "FLOPs (estimate)", "FLOPs (upper bound)", "GPU-intervals", "thresholds")]
    for j in resp.jobs:
        crossed = ",".join(f"{int(t):.0e}" for t in j.thresholds_crossed) or "-"
        rows.append(
            (
                j.job_id,
                f"{int(j.flops_estimate):.4e}",
                f"{int(j.flops_upper):.4e}",
                str(j.gpu_intervals),
                crossed,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(
        f"FLOP model v{resp.flop_model_version}; alerts fire on the "
        f"{'upper bound' if resp.alert_basis == 'upper' else 'estimate'}."
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    resp = fetch(args)
    if args.json:
        json.dump(as_json(resp), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(resp))
    return EXIT_OK
