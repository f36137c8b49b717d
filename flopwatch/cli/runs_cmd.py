"""`flopwatch runs --collector HOST:PORT`: per-run totals held by a collector, across every job,
node and cluster. Follows the collector's pages to the end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from flopwatch.cli import runs_lineage_cmd
from flopwatch.cli.common import EXIT_OK, add_tls_arguments, host_port
from flopwatch.cli.jobs_cmd import LEGEND_WITH_ENERGY, energy, pages, render, seconds, utc
from flopwatch.collector.alerts.scopes import ScopedPolicy, parse_rules, time_to_next
from flopwatch.collector.store.records import Rule
from flopwatch.errors import ConfigError
from flopwatch.runs import NO_ACCOUNT_SHOWN, shown_account
from flopwatch.transport import query_stub, sync_channel
from flopwatch.v1 import collector_pb2, collector_pb2_grpc

HELP = (
    "show cumulative FLOPs, GPU-seconds and GPU energy per run (a training run across jobs, "
    "restarts, nodes and clusters) held by a collector"
)

_EPILOG = f"""\
A run is its account and its name together: the run a job declared (an environment variable,
a pod label, `flopwatch job start --run`), else the job itself. Every figure is a total since
the collector first held a record of the run, over the measured time from "from" to "to" (UTC):
FLOPs under the FLOP model version printed below the table, as an estimate (declared precision,
else bf16) and a sound upper bound (fastest precision, maximum SM clock); GPU-seconds and GPU
energy (kWh: the GPUs' board energy only, not host, network or cooling), both each job's share
of its GPU intervals, as its FLOPs are. CLASSES are the workload classes the run's records
declared. DERIVED FROM: the run's declared parent (@KEYID: held by another collector, per its
signed run claim); CUMULATIVE: its own FLOPs plus every ancestor's; > 1/3 OF PARENT: its own
compute is above a third of its parent's cumulative compute (EU AI Act: a modifier with more
than a third of the original's compute becomes its provider). Account {NO_ACCOUNT_SHOWN}: none
known. Per account, over rolling windows: `flopwatch accounts`.

Lineage (against the collector's database, --db): `flopwatch runs declare RUN --derived-from
PARENT --class fine-tuning` declares that RUN derives from PARENT (or, with --parent-claim, from
a run of another collector, by its signed run claim); `flopwatch runs claim RUN --out FILE`
exports this collector's signed claim of RUN; `flopwatch runs lineage RUN` shows its ancestors
and its own, inherited and cumulative compute. See `flopwatch runs declare --help`.


NEXT is the next of --thresholds above the run's cumulative figure (--basis; own plus its
ancestors', as the collector's run thresholds count) and the time to it at the run's own
current rate: its compute over its last 7 UTC days of measurement, over the time those days'
records span (shown once that span is an hour; the collector's forecast alerts use the same
rate), or "-" when every threshold is reached. Give the same
thresholds as the collector's --run-thresholds.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "runs",
        help=HELP,
        description=HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--collector",
        metavar="HOST:PORT",
        help="the collector to ask; with mTLS, present a reader certificate "
        "(flopwatch certs issue --client --role reader)",
    )
    p.add_argument(
        "--account",
        metavar="ACCOUNT",
        help=f"only this account's runs ('{NO_ACCOUNT_SHOWN}' or '': runs of no known account)",
    )
    p.add_argument("--prefix", default="", help="only runs whose name starts with this")
    p.add_argument(
        "--thresholds",
        default="eu-ai-act,us-ca-sb53",
        metavar="RULES",
        help="thresholds for the NEXT column: presets and numbers as the collector's "
        "--run-thresholds (default: %(default)s)",
    )
    p.add_argument(
        "--basis",
        choices=["upper", "estimate"],
        default="upper",
        help="the figure NEXT compares, as the collector's --alert-basis (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print JSON for scripts: {"runs": [{"account": A, "run": R, "classes": [...], '
        '"flops": N, "flops_upper": N, "gpu_seconds": X, "energy_kwh": X, ...}], "legend": '
        "{...}}; exact integers for FLOPs",
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
    runs_lineage_cmd.add_actions(p)


def fetch_runs(
    stub: collector_pb2_grpc.QueryServiceStub,
    collector: str,
    account: str | None,
    prefix: str,
    *,
    page_size: int = 0,
    timeout: float = 10.0,
) -> collector_pb2.ListRunsResponse:
    """Every page of ListRuns, merged into one response."""
    out = collector_pb2.ListRunsResponse()
    for page in pages(
        collector,
        stub.ListRuns,
        lambda token: collector_pb2.ListRunsRequest(
            account=account, run_prefix=prefix, page_size=page_size, page_token=token
        ),
        timeout,
    ):
        out.runs.extend(page.runs)
        out.flop_model_version = page.flop_model_version
    return out


def classes(names: Any) -> str:
    return ",".join(names) or "-"


class Next:
    """The next threshold of each run and the time to it at the run's current rate (its last
    days of measurement, as the collector's forecasts)."""

    def __init__(self, rules: Sequence[Rule], basis: str) -> None:
        self._rules = tuple(rules)
        self._policy = ScopedPolicy(
            run_rules=self._rules, basis="estimate" if basis == "estimate" else "upper"
        )

    def of(self, r: collector_pb2.RunTotal) -> tuple[Rule, float | None] | None:
        upper = self._policy.basis == "upper"
        own = int(r.flops_upper if upper else r.flops_estimate)
        cumulative = int((r.cumulative_flops_upper if upper else r.cumulative_flops_estimate) or 0)
        if r.recent_last_end_unix_ns:  # its current rate: its last days of measurement
            recent = int(r.recent_flops_upper if upper else r.recent_flops_estimate)
            rate = self._policy.rate(
                recent, r.recent_first_start_unix_ns, r.recent_last_end_unix_ns
            )
        else:  # no recent day held, or a collector that does not say: its average
            rate = self._policy.rate(own, r.first_start_unix_ns, r.last_end_unix_ns)
        return time_to_next(self._rules, max(own, cumulative), rate)

    def shown(self, r: collector_pb2.RunTotal) -> str:
        found = self.of(r)
        if found is None:
            return "-"
        rule, secs = found
        when = "no rate yet" if secs is None else f"in {secs / 86400:.1f} d"
        return f"{rule.threshold:.0e} {rule.name} {when}"

    def as_json(self, r: collector_pb2.RunTotal) -> dict[str, object] | None:
        found = self.of(r)
        if found is None:
            return None
        rule, secs = found
        return {"flops": str(rule.threshold), "rule": rule.name, "seconds": secs}


def parent(r: collector_pb2.RunTotal) -> str:
    """The parent run as people read it: "-" for none, "ACCOUNT/RUN", "@KEYID" when foreign."""
    if not r.parent_run:
        return "-"
    where = f" @{r.parent_collector[:16]}" if r.parent_collector else ""
    return f"{shown_account(r.parent_account)}/{r.parent_run}{where}"


def table(resp: collector_pb2.ListRunsResponse, nxt: Next | None = None) -> str:
    rows = [
        (
            "ACCOUNT",
            "RUN",
            "CLASSES",
            "FLOPs (estimate)",
            "FLOPs (upper bound)",
            "GPU-seconds",
            "GPU energy (kWh)",
            "from",
            "to",
            "DERIVED FROM",
            "CUMULATIVE FLOPs (estimate)",
            "> 1/3 OF PARENT",
            *(("NEXT",) if nxt else ()),
        )
    ]
    rows += [
        (
            shown_account(r.account),
            r.run,
            classes(r.classes),
            f"{int(r.flops_estimate):.4e}",
            f"{int(r.flops_upper):.4e}",
            seconds(r.gpu_seconds),
            energy(r.energy_kwh),
            utc(r.first_start_unix_ns),
            utc(r.last_end_unix_ns),
            parent(r),
            f"{int(r.cumulative_flops_estimate or r.flops_estimate):.4e}",
            ("yes" if r.derived_over_third else "no") if r.parent_run else "-",
            *((nxt.shown(r),) if nxt else ()),
        )
        for r in resp.runs
    ]
    return (
        render(rows)
        + f"\nTotals since each run's first record, all jobs, nodes and clusters; FLOP model "
        f"v{resp.flop_model_version}; GPU energy: GPU boards only; times in UTC."
    )


def run_json(r: collector_pb2.RunTotal) -> dict[str, object]:
    return {
        "account": r.account,
        "run": r.run,
        "classes": list(r.classes),
        "flops": int(r.flops_estimate),
        "flops_upper": int(r.flops_upper),
        "gpu_seconds": r.gpu_seconds,
        "energy_kwh": r.energy_kwh,
        "gpu_intervals": r.gpu_intervals,
        "first_start_unix_ns": r.first_start_unix_ns,
        "last_end_unix_ns": r.last_end_unix_ns,
        "parent": {
            "account": r.parent_account,
            "run": r.parent_run,
            "collector": r.parent_collector or None,
        }
        if r.parent_run
        else None,
        "inherited_flops": int(r.inherited_flops_estimate or 0),
        "inherited_flops_upper": int(r.inherited_flops_upper or 0),
        "cumulative_flops": int(r.cumulative_flops_estimate or r.flops_estimate),
        "cumulative_flops_upper": int(r.cumulative_flops_upper or r.flops_upper),
        "derived_over_third": r.derived_over_third,
    }


def as_json(resp: collector_pb2.ListRunsResponse, nxt: Next | None = None) -> dict[str, object]:
    runs = [run_json(r) for r in resp.runs]
    if nxt is not None:
        for doc, r in zip(runs, resp.runs, strict=True):
            doc["next_threshold"] = nxt.as_json(r)
    return {
        "runs": runs,
        "scope": "since each run's first record, every job, node and cluster the collector holds",
        "legend": LEGEND_WITH_ENERGY,
        "flop_model_version": resp.flop_model_version,
    }


def run(args: argparse.Namespace) -> int:
    if args.collector is None:
        raise ConfigError("give --collector HOST:PORT (or an action: declare, claim, lineage)")
    host_port(args.collector)
    if args.page_size < 0:
        raise ConfigError("--page-size must be 0 (the collector's default) or positive")
    account = "" if args.account == NO_ACCOUNT_SHOWN else args.account
    nxt = Next(parse_rules(args.thresholds), args.basis)
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        runs = fetch_runs(
            query_stub(channel),
            args.collector,
            account,
            args.prefix,
            page_size=args.page_size,
            timeout=args.timeout,
        )
    if args.json:
        json.dump(as_json(runs, nxt), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(runs, nxt))
    return EXIT_OK
