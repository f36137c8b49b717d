"""`flopwatch nodes list|enroll|reject|revoke|token`: which node keys a collector trusts.

The trust commands open the collector's database directly (`--db`, the same URL the collector
runs with), not an RPC: changing trust then needs what the database needs (file access for
SQLite, credentials for PostgreSQL), never just a client certificate that every agent also
holds. SQLite's WAL journal lets this second process write while the collector runs, and the
collector reads each key's status from the database for every batch, so a revocation refuses
the key's records from the collector's next batch on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flopwatch.cli.common import EXIT_OK, add_tls_arguments, check_identifier, host_port
from flopwatch.cli.jobs_cmd import pages, render, utc
from flopwatch.errors import ConfigError
from flopwatch.identifiers import shown
from flopwatch.keys import short_key_id
from flopwatch.model import MODEL_VERSION
from flopwatch.model.figures import LEGEND

if TYPE_CHECKING:
    from flopwatch.collector.query import NodeSummary
    from flopwatch.collector.store.base import Store

HELP = "list, enroll, reject and revoke the node keys a collector accepts records from"
_KEY_ID = re.compile(r"[0-9a-f]{8,64}")

_EPILOG = """\
enrolling a node, either way:

  # 1. one-time token: the agent enrolls its own key on first contact
  (umask 077; flopwatch nodes token --db sqlite:flopwatch.db --node gpu-017 > gpu-017.token)
  flopwatch agent ... --node-id gpu-017 --enroll-token-file gpu-017.token    (file mode 0600)

  # 2. operator approval: of a key that presented itself (see `nodes list`), or from its file
  flopwatch nodes enroll --db sqlite:flopwatch.db --key-id 3fa1b2c3d4e5f6a7
  flopwatch nodes enroll --db sqlite:flopwatch.db --node gpu-017 --public-key gpu-017.pub.pem
    (on the node: openssl pkey -in /var/lib/flopwatch-agent/node.key -pubout > gpu-017.pub.pem)

  # forget keys awaiting approval that are not yours (one, or all a node name claims)
  flopwatch nodes reject --db sqlite:flopwatch.db 3fa1b2c3d4e5f6a7
  flopwatch nodes reject --db sqlite:flopwatch.db --node gpu-017

  # revoking is permanent and takes effect with the collector's next batch
  flopwatch nodes revoke --db sqlite:flopwatch.db 3fa1b2c3d4e5f6a7

--db is the collector's database; run these where the collector's --db is reachable.
"""


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="the collector's database, as given to `flopwatch collector --db`; it must exist "
        "(only the collector creates it), and the collector may be running "
        "(default: %(default)s)",
    )


def _add_key(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the collector key file, to sign the statement of this change that goes into the "
        "transparency log (default: next to a SQLite database; with PostgreSQL give it)",
    )


def add_parser(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p: argparse.ArgumentParser = sub.add_parser(
        "nodes", help=HELP, description=HELP + ".", epilog=_EPILOG, formatter_class=fmt
    )
    actions = p.add_subparsers(dest="nodes_action", required=True, metavar="ACTION")

    ls = actions.add_parser(
        "list",
        help="node keys: status, health (silent, clock ahead), last record, FLOPs measured",
        description="List node keys (enrolled, revoked, and pending: presented itself, awaits "
        "approval) with their last record time, whether they are unhealthy (SILENT: no record "
        "for --silent-after; CLOCK AHEAD: its latest record's time ran ahead of the collector's "
        "clock beyond the allowed skew, so its records wait in its spool), and the FLOPs "
        "(estimate and upper bound) their GPUs measured over all jobs. Reads --db, or asks a "
        "running collector with --collector.",
    )
    _add_db(ls)
    ls.add_argument(
        "--collector",
        metavar="HOST:PORT",
        help="ask this collector instead of --db; with mTLS, present a reader certificate "
        "(flopwatch certs issue --client --role reader)",
    )
    ls.add_argument(
        "--silent-after",
        default="5m",
        metavar="DURATION",
        help="with --db: quiet for longer than this counts as silent; use the collector's "
        "--silent-after (default: %(default)s)",
    )
    ls.add_argument("--json", action="store_true", help="print JSON for scripts")
    ls.add_argument("--timeout", type=float, default=10.0, help="with --collector: seconds")
    add_tls_arguments(ls, "reader")  # a reader certificate: certs issue --role reader

    enroll = actions.add_parser(
        "enroll",
        help="trust a node key: from its public key file, or one that presented itself",
        description="Enroll a node's Ed25519 key so the collector accepts its records.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_db(enroll)
    _add_key(enroll)
    enroll.add_argument("--node", help="node id the key signs for (required with --public-key)")
    which = enroll.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--public-key", type=Path, metavar="FILE.pem", help="the node's public key (PEM)"
    )
    which.add_argument(
        "--key-id", metavar="KEY_ID", help="a pending key from `nodes list` (or a prefix)"
    )

    reject = actions.add_parser(
        "reject",
        help="forget keys awaiting approval (pending): by key id, or every one of a node",
        description="Remove keys that presented themselves and await approval from the list, "
        "so they take no room under the collector's pending-key limits. Enrolled and revoked "
        "keys are not touched. A key that presents itself again is listed again (within the "
        "limits); to refuse a node for good, revoke its enrolled key.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_db(reject)
    rejected = reject.add_mutually_exclusive_group(required=True)
    rejected.add_argument(
        "key_ids", nargs="*", default=[], metavar="KEY_ID", help="pending key ids (or prefixes)"
    )
    rejected.add_argument("--node", help="every pending key that claims this node id")

    revoke = actions.add_parser(
        "revoke",
        help="refuse a node key's records from now on (permanent)",
        description="Revoke a node key, for good: the collector refuses its records from its "
        "next batch on. A revoked key cannot be enrolled again; give the node a new key.",
    )
    _add_db(revoke)
    _add_key(revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="key id, or a unique prefix (8+ chars)")

    token = actions.add_parser(
        "token",
        help="print a one-time enrollment token for a node",
        description="Print a one-time token that lets the agent of NODE enroll its own key "
        "(agent --enroll-token-file). Only its hash is stored; it is printed once, on stdout. "
        "It is spent by the first key it enrolls and expires after --ttl.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_db(token)
    token.add_argument("--node", required=True, help="the node id the token enrolls a key for")
    token.add_argument(
        "--ttl", default="24h", metavar="DURATION", help="lifetime (default %(default)s, max 30d)"
    )
    p.set_defaults(run=run)


@contextmanager
def _store(db: str) -> Iterator[Store]:
    from flopwatch.collector.store.factory import open_store

    store = open_store(db)
    try:
        yield store
    finally:
        store.close()


def _resolve(store: Store, key_id: str, *, pending: bool = False) -> str:
    """A full key id from a unique prefix of an enrolled/revoked (or pending) key."""
    key_id = key_id.lower()
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigError(f"{key_id!r} is not a key id (8 to 64 hex characters)")
    keys = [p.key_id for p in store.pending_keys()] if pending else []
    keys += [n.key_id for n in store.nodes()]
    found = sorted({k for k in keys if k.startswith(key_id)})
    if len(found) > 1:
        raise ConfigError(f"key id prefix {key_id} matches {len(found)} keys; give more of it")
    if not found:
        raise ConfigError(f"no key {key_id} in this database")
    return found[0]


def run(args: argparse.Namespace) -> int:
    action = args.nodes_action
    if action == "list":
        return _list(args)
    from flopwatch.collector import enrollment
    from flopwatch.collector.config import parse_duration

    if getattr(args, "node", None) is not None:  # enroll, reject, token: before the database
        check_identifier("--node", args.node)
    with _store(args.db) as store:
        if action in ("enroll", "revoke"):
            _log_key_statements(store, args)
        if action == "enroll":
            if args.public_key is not None:
                if not args.node:
                    raise ConfigError("--public-key needs --node: the node id the key signs for")
                key_id = enrollment.enroll_key_file(store, args.node, args.public_key)
            else:
                key_id = enrollment.approve_pending(
                    store, _resolve(store, args.key_id, pending=True), args.node
                )
            node = store.node(key_id)
            print(f"enrolled key {key_id} for node {shown(node.node_id if node else args.node)}")
        elif action == "reject":
            _reject(store, args)
        elif action == "revoke":
            key_id = _resolve(store, args.key_id)
            store.revoke(key_id)
            node = store.node(key_id)
            print(
                f"revoked key {key_id} (node {shown(node.node_id) if node else '?'}): the "
                "collector refuses its records from its next batch on"
            )
        else:
            ttl = parse_duration(args.ttl)
            token, expires = enrollment.issue_token(store, args.node, ttl, time.time_ns())
            print(token)
            print(
                f"one-time enrollment token for node {shown(args.node)}, valid until "
                f"{utc(expires)} UTC; shown only now (the database keeps its hash). Give it to "
                "that node's agent: --enroll-token-file FILE.",
                file=sys.stderr,
            )
    return EXIT_OK


def _log_key_statements(store: Store, args: argparse.Namespace) -> None:
    """Enrollments and revocations go into the transparency log as statements signed by the
    collector key (flopwatch.collector.key_statements), in the transaction that makes them."""
    from flopwatch.collector import key_statements
    from flopwatch.collector.log.key import default_key_path, open_log_key

    key_statements.start(store, open_log_key(args.key or default_key_path(args.db), store))


def _reject(store: Store, args: argparse.Namespace) -> None:
    pending = store.pending_keys()
    if args.node is not None:
        key_ids = [p.key_id for p in pending if p.node_id == args.node]
        if not key_ids:
            raise ConfigError(f"no key awaits approval for node {args.node!r}")
    else:
        pending_ids = {p.key_id for p in pending}
        key_ids = [_resolve(store, k, pending=True) for k in args.key_ids]
        if not_pending := [k for k in key_ids if k not in pending_ids]:
            raise ConfigError(
                f"key {short_key_id(not_pending[0])} does not await approval (it is "
                "enrolled or revoked); `nodes revoke` refuses an enrolled key"
            )
    removed = store.remove_pending_keys(key_ids)
    for key_id in key_ids:
        print(f"rejected pending key {key_id}")
    print(f"{removed} key(s) no longer awaiting approval", file=sys.stderr)


# -- list ----------------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    from flopwatch.collector.config import parse_duration

    if args.collector is not None:
        summaries, silent_after_s = _from_collector(args)
    else:
        from flopwatch.collector.query import Query

        silent_after_s = parse_duration(args.silent_after)
        with _store(args.db) as store:
            query = Query(store, silent_after_s=silent_after_s)
            summaries = []
            while page := query.node_page(summaries[-1].key_id if summaries else "", 1000):
                summaries += page
    if args.json:
        json.dump(_as_json(summaries, silent_after_s), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_table(summaries, silent_after_s))
    return EXIT_OK


def _from_collector(args: argparse.Namespace) -> tuple[list[NodeSummary], float]:
    from flopwatch.collector.rpc.query import node_summary
    from flopwatch.transport import query_stub, sync_channel
    from flopwatch.v1 import collector_pb2

    host_port(args.collector)
    out: list[NodeSummary] = []
    silent_after_s = 0.0
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        stub = query_stub(channel)
        for page in pages(
            args.collector,
            stub.ListNodes,
            lambda token: collector_pb2.ListNodesRequest(page_token=token),
            args.timeout,
        ):
            out += [node_summary(m) for m in page.nodes]
            silent_after_s = page.silent_after_seconds
    return out, silent_after_s


def _status(n: NodeSummary) -> str:
    """The status, with what makes an enrolled key unhealthy in capitals."""
    marks: list[str] = [n.status]
    if n.status == "enrolled" and n.silent:
        marks.append("SILENT")
    if n.clock_ahead:
        marks.append(f"CLOCK AHEAD {n.clock_ahead_s or 0:.0f} s")
    return ", ".join(marks)


def _table(nodes: list[NodeSummary], silent_after_s: float) -> str:
    rows = [
        (
            "KEY ID",
            "NODE",
            "STATUS",
            "LAST RECORD",
            "GPUs",
            "FLOPs (estimate)",
            "FLOPs (upper bound)",
            "GPU-intervals",
        )
    ]
    for n in nodes:
        seen = n.last_record_ns if n.status != "pending" else n.pending_seen_ns
        rows.append(
            (
                short_key_id(n.key_id),
                n.node_id,
                _status(n),
                utc(seen or 0) if n.status != "pending" else f"(seen {utc(seen or 0)})",
                str(n.gpus),
                f"{n.flops_estimate:.4e}",
                f"{n.flops_upper:.4e}",
                str(n.gpu_intervals),
            )
        )
    pending = sum(n.status == "pending" for n in nodes)
    ahead = sum(n.clock_ahead for n in nodes)
    notes = [
        f"FLOPs: whole-GPU sums over every interval the key's GPUs measured, all jobs (FLOP "
        f"model v{MODEL_VERSION}); times in UTC; SILENT: no record for over {silent_after_s:g} s.",
    ]
    if ahead:
        notes.append(
            f"{ahead} key(s) with CLOCK AHEAD: their latest record ended that far after the "
            "collector's clock, beyond the allowed skew; the agent keeps such records and sends "
            "them again, and they count once their time comes. Fix the node's clock (NTP)."
        )
    if pending:
        notes.append(
            f"{pending} key(s) pending: presented itself, not trusted; approve with "
            "`flopwatch nodes enroll --key-id KEY_ID`."
        )
    return "\n".join([render(rows), *notes])


def _as_json(nodes: list[NodeSummary], silent_after_s: float) -> dict[str, object]:
    return {
        "nodes": [
            {
                "key_id": n.key_id,
                "node": n.node_id,
                "status": n.status,
                "silent": n.silent,
                "clock_ahead": n.clock_ahead,
                "clock_ahead_seconds": n.clock_ahead_s,
                "clock_ahead_at_unix_ns": n.clock_ahead_at_ns,
                "healthy": n.healthy,
                "enrolled_at_unix_ns": n.enrolled_at_ns,
                "revoked_at_unix_ns": n.revoked_at_ns,
                "last_record_unix_ns": n.last_record_ns,
                "pending_seen_unix_ns": n.pending_seen_ns,
                "gpus": n.gpus,
                "gpu_intervals": n.gpu_intervals,
                "flops": n.flops_estimate,
                "flops_upper": n.flops_upper,
            }
            for n in nodes
        ],
        "silent_after_seconds": silent_after_s,
        "legend": {
            **LEGEND,
            "scope": "whole-GPU sums over every interval the node key's GPUs measured, all jobs",
        },
        "flop_model_version": MODEL_VERSION,
    }
