"""`flopwatch log tree-head`: fetch (or extract from a bundle) a signed tree head and keep it.

The old top-level spelling `flopwatch tree-head` still works for one release, with a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flopwatch.cli.common import EXIT_FAILED, EXIT_OK, add_tls_arguments, host_port
from flopwatch.cli.trust_args import add_collector_key_argument, collector_key_id, describe
from flopwatch.errors import ConfigError, TransportError, VerificationError
from flopwatch.reads import read_at_most
from flopwatch.statements import SignedTreeHead

NAME = "tree-head"
HELP = "fetch the collector's latest signed tree head (or a bundle's) and save it to check later"

EPILOG = """\
A regulator keeps tree heads: a later report made with `--kept-tree-head` that head (checked
by `flopwatch verify --kept-tree-head`), or `flopwatch log consistency OLD NEW --collector ...`,
then shows the log only grew since (no record was removed or changed). The signature is checked
before anything is saved.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--collector", metavar="HOST:PORT", help="ask a running collector")
    source.add_argument("--bundle", type=Path, metavar="FILE", help="take a report's tree head")
    p.add_argument(
        "--out", type=Path, metavar="TREE_HEAD_FILE", help="save the signed tree head here"
    )
    add_collector_key_argument(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    add_tls_arguments(p, "client")
    p.set_defaults(run=run)


def fetch(args: argparse.Namespace) -> SignedTreeHead:
    import grpc

    from flopwatch.dsse import Envelope
    from flopwatch.transport import log_stub, sync_channel
    from flopwatch.v1 import collector_pb2

    host_port(args.collector)
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        try:
            resp = log_stub(channel).GetTreeHead(
                collector_pb2.GetTreeHeadRequest(), timeout=args.timeout
            )
        except grpc.RpcError as e:
            raise TransportError(
                f"collector {args.collector}: {e.code().name}: {e.details()}"
            ) from e
    return SignedTreeHead.from_envelope(Envelope.from_message(resp.tree_head))


def _from_bundle(path: Path) -> SignedTreeHead:
    from flopwatch.verify.bundle_format import DEFAULT_BUNDLE_LIMITS, Bundle

    try:  # from_bytes refuses what is larger than the limit
        data = read_at_most(path, DEFAULT_BUNDLE_LIMITS.max_bundle_bytes)
        return Bundle.from_bytes(data).tree_head
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e


def run(args: argparse.Namespace) -> int:
    signed = fetch(args) if args.collector else _from_bundle(args.bundle)
    pinned = None if args.collector_key is None else collector_key_id(args.collector_key)
    try:
        signed.verify()
        if pinned is not None and signed.head.log_id != pinned:
            raise VerificationError(
                "untrusted_collector_key",
                f"signed by collector key {signed.head.log_id}, not the pinned {pinned}",
            )
    except VerificationError as e:
        print(f"NOT SAVED ({e.reason}): {e.message}", file=sys.stderr)
        return EXIT_FAILED
    print(describe(signed.head))
    if args.out is not None:
        try:
            args.out.write_bytes(signed.to_bytes())
        except OSError as e:
            raise ConfigError(f"cannot write {args.out}: {e.strerror}") from e
        print(f"saved to {args.out}")
    return EXIT_OK
