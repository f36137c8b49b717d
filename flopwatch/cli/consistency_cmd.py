"""`flopwatch log consistency OLD NEW --collector HOST:PORT`: was the log rewritten?

The old top-level spelling `flopwatch verify-consistency` still works for one release, with a
warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flopwatch.cli.common import EXIT_FAILED, EXIT_OK, add_tls_arguments, host_port
from flopwatch.cli.trust_args import (
    add_collector_key_argument,
    collector_key_id,
    describe,
    read_tree_head,
)
from flopwatch.errors import ConfigError, TransportError, VerificationError
from flopwatch.statements import SignedTreeHead

NAME = "consistency"
HELP = "check that the log of a newer tree head extends an older one (nothing rewritten)"

EPILOG = """\
OLD and NEW are tree heads you kept (`flopwatch log tree-head --out`). Both signatures are
checked and must be by the same collector key (and by --collector-key, if given). The RFC 6962
consistency proof is fetched from the collector and checked here: the collector cannot make one
that passes unless the log at NEW's size starts with exactly the leaves of OLD. Exit status 0
when consistent, 1 when not. Offline, a bundle made with `flopwatch report --kept-tree-head OLD`
carries the same proof (`flopwatch verify --kept-tree-head OLD`).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "old", type=Path, metavar="OLD_TREE_HEAD_FILE", help="the older tree head you kept"
    )
    p.add_argument("new", type=Path, metavar="NEW_TREE_HEAD_FILE", help="the newer tree head")
    p.add_argument(
        "--collector", required=True, metavar="HOST:PORT", help="where to fetch the proof"
    )
    add_collector_key_argument(p)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    add_tls_arguments(p, "client")
    p.set_defaults(run=run)


def _fetch_proof(args: argparse.Namespace, old_size: int, new_size: int) -> list[bytes]:
    import grpc

    from flopwatch.transport import log_stub, sync_channel
    from flopwatch.v1 import collector_pb2

    host_port(args.collector)
    request = collector_pb2.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
    with sync_channel(
        args.collector, insecure=args.insecure, ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key
    ) as channel:
        try:
            resp = log_stub(channel).GetConsistencyProof(request, timeout=args.timeout)
        except grpc.RpcError as e:
            raise TransportError(
                f"collector {args.collector}: {e.code().name}: {e.details()}"
            ) from e
    return list(resp.hashes)


def check(old: SignedTreeHead, new: SignedTreeHead, pinned: str | None) -> None:
    """Signatures, one key, sizes in order; raise VerificationError otherwise."""
    for name, th in (("old", old), ("new", new)):
        try:
            th.verify()
        except VerificationError as e:
            raise VerificationError(e.reason, f"{name} tree head: {e.message}") from e
    if old.head.log_id != new.head.log_id:
        raise VerificationError(
            "untrusted_collector_key", "the two tree heads are signed by different collector keys"
        )
    if pinned is not None and old.head.log_id != pinned:
        raise VerificationError(
            "untrusted_collector_key", f"signed by {old.head.log_id}, not the pinned {pinned}"
        )


def run(args: argparse.Namespace) -> int:
    from flopwatch.merkle import verify_consistency

    old, new = read_tree_head(args.old), read_tree_head(args.new)
    pinned = None if args.collector_key is None else collector_key_id(args.collector_key)
    if old.head.size > new.head.size:
        raise ConfigError(f"OLD (size {old.head.size}) is larger than NEW ({new.head.size})")
    print(f"old: {describe(old.head)}\nnew: {describe(new.head)}")
    try:
        check(old, new, pinned)
        proof = (
            []
            if old.head.size == new.head.size
            else _fetch_proof(args, old.head.size, new.head.size)
        )
        verify_consistency(
            old_size=old.head.size,
            new_size=new.head.size,
            old_root=old.head.root,
            new_root=new.head.root,
            proof=proof,
        )
    except VerificationError as e:
        print(f"INCONSISTENT ({e.reason}): {e.message}\nThe log was rewritten or forked.")
        return EXIT_FAILED
    print("CONSISTENT: the log at the new size starts with exactly the leaves of the old one.")
    return EXIT_OK
