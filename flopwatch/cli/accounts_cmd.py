"""`flopwatch accounts --collector HOST:PORT`: per-account totals held by a collector, since the
first record and over trailing windows of UTC days. Follows the collector's pages to the end."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from flopwatch.cli.common import EXIT_OK, add_tls_arguments, host_port
from flopwatch.cli.jobs_cmd import LEGEND_WITH_ENERGY, energy, pages, render, seconds, utc
from flopwatch.cli.runs_cmd import classes
from flopwatch.errors import ConfigError
from flopwatch.runs import NO_ACCOUNT_SHOWN, shown_account
from flopwatch.transport import query_stub, sync_channel
from flopwatch.v1 import collector_pb2, collector_pb2_grpc

HELP = (
    "show cumulative FLOPs, GPU-seconds and GPU energy per account held by a collector, all "
    "time and over trailing windows of days (which catch a run split into many names)"
)

_EPILOG = f"""\
An account is who is accountable for the work, set by the operator (the Slurm account, a
Kubernetes namespace, the agent's account map), never by the workload: a workload may split its
run into many names, but not its work out of its account. Each account has one row per scope:
"all time" (since the collector first held a record of it) and each trailing window the
collector is configured with (--account-windows on the collector; default 30, 90 and 365 days):
the UTC days from the window's first day through today (UTC), an interval counting for the UTC
day in which it ended. FLOPs are under the FLOP model version printed below the table, as an
estimate and a sound upper bound; GPU-seconds and GPU energy (kWh: the GPUs' board energy only,
not host, network or cooling) are each job's share of its GPU intervals. "from"/"to" is the
measured time inside the scope (UTC). Account {NO_ACCOUNT_SHOWN}: none known.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "accounts",
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
        "(flopwatch certs issue --client --role reader)",
    )
    p.add_argument("--prefix", default="", help="only accounts whose name starts with this")
    p.add_argument(
        "--json",
        action="store_true",
        help='print JSON for scripts: {"accounts": [{"account": A, "runs": N, "classes": '
        '[...], "all_time": {"flops": N, "flops_upper": N, "gpu_seconds": X, "energy_kwh": X, '
        '...}, "windows": [{"days": D, "start_unix_ns": T, "end_unix_ns": T, "flops": N, ...}]}]'
        ', "legend": {...}}; exact integers for FLOPs',
    )
    p.add_argument(
        "--page-size",
        type=int,
        default=0,
        help="rows per request (default: the collector's; it caps this)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer")
    add_tls_arguments(p, "reader")
    p.set_defaults(run=run)


def fetch_accounts(
    stub: collector_pb2_grpc.QueryServiceStub,
    collector: str,
    prefix: str,
    page_size: int = 0,
    timeout: float = 10.0,
) -> collector_pb2.ListAccountsResponse:
    """Every page of ListAccounts, merged into one response."""
    out = collector_pb2.ListAccountsResponse()
    for page in pages(
        collector,
        stub.ListAccounts,
        lambda token: collector_pb2.ListAccountsRequest(
            account_prefix=prefix, page_size=page_size, page_token=token
        ),
        timeout,
    ):
        out.accounts.extend(page.accounts)
        out.flop_model_version = page.flop_model_version
    return out


def _day(ns: int) -> str:
    """The UTC day of a time in ns. Whole seconds, in integers: as a float, the last
    nanosecond of a day rounds up to the next midnight."""
    return dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).strftime("%Y-%m-%d")


def _scope(w: collector_pb2.WindowTotal) -> str:
    """'last 30 days (2026-06-02..2026-07-01)': the window's first and last UTC day."""
    return f"last {w.days} days ({_day(w.start_unix_ns)}..{_day(w.end_unix_ns - 1)})"


def table(resp: collector_pb2.ListAccountsResponse) -> str:
    rows = [
        (
            "ACCOUNT",
            "RUNS",
            "CLASSES",
            "SCOPE",
            "FLOPs (estimate)",
            "FLOPs (upper bound)",
            "GPU-seconds",
            "GPU energy (kWh)",
            "from",
            "to",
        )
    ]
    for a in resp.accounts:
        rows.append(
            (
                shown_account(a.account),
                str(a.runs),
                classes(a.classes),
                "all time",
                f"{int(a.flops_estimate):.4e}",
                f"{int(a.flops_upper):.4e}",
                seconds(a.gpu_seconds),
                energy(a.energy_kwh),
                utc(a.first_start_unix_ns),
                utc(a.last_end_unix_ns),
            )
        )
        rows += [
            (
                "",
                "",
                "",
                _scope(w),
                f"{int(w.flops_estimate or 0):.4e}",
                f"{int(w.flops_upper or 0):.4e}",
                seconds(w.gpu_seconds),
                energy(w.energy_kwh),
                utc(w.first_start_unix_ns),
                utc(w.last_end_unix_ns),
            )
            for w in a.windows
        ]
    return (
        render(rows) + f"\nWindows: trailing UTC days through today (UTC), by the day each "
        f"interval ended; FLOP model v{resp.flop_model_version}; GPU energy: GPU boards only; "
        "times in UTC."
    )


def _figures(m: Any) -> dict[str, object]:
    return {
        "flops": int(m.flops_estimate or 0),
        "flops_upper": int(m.flops_upper or 0),
        "gpu_seconds": m.gpu_seconds,
        "energy_kwh": m.energy_kwh,
        "gpu_intervals": m.gpu_intervals,
        "first_start_unix_ns": m.first_start_unix_ns,
        "last_end_unix_ns": m.last_end_unix_ns,
    }


def account_json(a: collector_pb2.AccountTotal) -> dict[str, object]:
    return {
        "account": a.account,
        "runs": a.runs,
        "classes": list(a.classes),
        "all_time": _figures(a),
        "windows": [
            {
                "days": w.days,
                "start_unix_ns": w.start_unix_ns,
                "end_unix_ns": w.end_unix_ns,
                **_figures(w),
            }
            for w in a.windows
        ],
    }


def as_json(resp: collector_pb2.ListAccountsResponse) -> dict[str, object]:
    return {
        "accounts": [account_json(a) for a in resp.accounts],
        "legend": {
            **LEGEND_WITH_ENERGY,
            "all_time": "since the collector first held a record of the account",
            "windows": "the trailing `days` UTC days [start_unix_ns, end_unix_ns), an interval "
            "counting for the UTC day in which it ended",
        },
        "flop_model_version": resp.flop_model_version,
    }


def run(args: argparse.Namespace) -> int:
    host_port(args.collector)
    if args.page_size < 0:
        raise ConfigError("--page-size must be 0 (the collector's default) or positive")
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        accounts = fetch_accounts(
            query_stub(channel), args.collector, args.prefix, args.page_size, args.timeout
        )
    if args.json:
        json.dump(as_json(accounts), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(accounts))
    return EXIT_OK
