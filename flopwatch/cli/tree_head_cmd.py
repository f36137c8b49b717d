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
from flopwatch.files import check_output, is_stdout, write_output
from flopwatch.reads import read_at_most
from flopwatch.statements import SignedTreeHead

NAME = "tree-head"
HELP = "fetch the collector's latest signed tree head (or a bundle's) and save it to check later"

EPILOG = """\
A regulator keeps tree heads: a later report made with `--kept-tree-head` that head (checked
by `flopwatch verify --kept-tree-head`), or `flopwatch log consistency OLD NEW --collector ...`,
then shows the log only grew since (no record was removed or changed). The signature is checked
before anything is saved, and --out writes like every flopwatch command that writes a file
(atomically; an existing file only with --force; never over a link, a device, a database or a
key; `-` for standard output).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--collector", metavar="HOST:PORT", help="ask a running collector")
    source.add_argument("--bundle", type=Path, metavar="FILE", help="take a report's tree head")
    p.add_argument(
        "--out",
        metavar="TREE_HEAD_FILE",
        help="save the signed tree head here, '-' for standard output. Never replaces an "
        "existing file without --force, nor, even with it, anything but a regular file (a "
        "symbolic link, a device, a directory), a database or a key; the directory must exist",
    )
    p.add_argument(
        "--force", action="store_true", help="replace TREE_HEAD_FILE if it is a regular file"
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
    protect = [] if args.bundle is None else [args.bundle]
    if args.out is not None:
        check_output(args.out, force=args.force, protect=protect)  # before asking anyone
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
    to_stdout = args.out is not None and is_stdout(args.out)
    text = sys.stderr if to_stdout else sys.stdout  # stdout carries the tree head
    print(describe(signed.head), file=text)
    if args.out is not None:
        write_output(args.out, signed.to_bytes(), force=args.force, protect=protect)
        print(f"saved to {'standard output' if to_stdout else args.out}", file=text)
    return EXIT_OK
