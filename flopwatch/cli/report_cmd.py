"""`flopwatch report JOB --db URL --out FILE`: a self-contained evidence bundle for a regulator.

The bundle is written by `flopwatch.files` (atomic; never over a database, a key, a link or a
device; an existing file only with --force; `-` is standard output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flopwatch.cli.common import EXIT_OK, add_deprecated_option, check_identifier, read_paths
from flopwatch.cli.trust_args import read_tree_head
from flopwatch.files import check_output, is_stdout, write_output

HELP = "write a job's evidence bundle (envelopes, node keys, log proofs, signed claim)"

_EPILOG = """\
The bundle holds every signed envelope that contributed to the job, the node keys that signed
them (with enrollment and revocation), an RFC 6962 inclusion proof of each envelope against one
signed tree head of the collector's transparency log, and the collector's signed claim: the job's
totals in FLOPs (estimate and sound upper bound) under the FLOP model version the envelopes use.
A regulator checks it offline with `flopwatch verify FILE --collector-key KEY_ID`.

Reads the database directly: the collector need not be running (it may be), and the database
must exist (a mistyped --db is an error, never a new database). Needs the collector key (the
claim and any new tree head are signed with it). See docs/regulators.md.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "report",
        help=HELP,
        description=HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", metavar="JOB", help="the job id, as the collector totals it")
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="the collector's database: sqlite:PATH or postgresql://...; it must exist "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="bundle to write, '-' for standard output. Never replaces an existing file "
        "without --force, nor, even with it, anything but a regular file (a symbolic link, a "
        "device, a directory), a database or a key; the directory must exist",
    )
    p.add_argument(
        "--force", action="store_true", help="replace FILE if it is an existing regular file"
    )
    p.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the collector key (default: next to a SQLite database, as `flopwatch collector`)",
    )
    p.add_argument(
        "--kept-tree-head",
        type=Path,
        action="append",
        default=[],
        metavar="TREE_HEAD_FILE",
        help="a tree head the regulator kept (`flopwatch log tree-head --out`); the bundle then "
        "carries a proof that the log grew from it without being rewritten. Repeatable",
    )
    p.add_argument(
        "--archive",
        type=Path,
        metavar="ARCHIVE",
        help="an archive from `flopwatch records archive`: the job's envelopes pruned from the "
        "database are taken from it (each checked against the log's leaf hash)",
    )
    add_deprecated_option(
        p,
        "--consistency-from",
        new="--kept-tree-head",
        dest="kept_tree_head",
        type=Path,
        append=True,
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flopwatch.collector.archive_file import envelopes_from
    from flopwatch.collector.job_report import build_report
    from flopwatch.collector.log.key import default_key_path, load_collector_key
    from flopwatch.collector.log.translog import TransparencyLog
    from flopwatch.collector.store.factory import open_store

    check_identifier("JOB", args.job)
    kept = [read_tree_head(p) for p in args.kept_tree_head]
    key_path = args.key or default_key_path(args.db)
    protect = read_paths(args.db, key_path, *args.kept_tree_head)
    check_output(args.out, force=args.force, protect=protect)  # before any work
    key = load_collector_key(key_path, create=False)
    store = open_store(args.db)
    try:
        archived = None
        if args.archive is not None:
            path = args.archive

            def archived(leaves: list[int]) -> dict[int, bytes]:
                return envelopes_from(path, leaves, collector_key_id=key.key_id)

        bundle = build_report(
            store,
            TransparencyLog(store, key),
            args.job,
            consistency_from=kept,
            archived=archived,
        )
    finally:
        store.close()
    data = bundle.to_bytes()
    write_output(args.out, data, force=args.force, protect=protect)
    claim = bundle.unverified_claim()
    head = bundle.tree_head.head
    name = "the bundle" if is_stdout(args.out) else args.out
    print(
        f"wrote {name} ({len(data)} bytes): job {claim.job_id!r}, "
        f"{len(bundle.entries)} envelopes from {len(claim.nodes)} node key(s), "
        f"against tree size {head.size}\n"
        f"claimed: {claim.flops_estimate:.4e} FLOPs (estimate), {claim.flops_upper:.4e} FLOPs "
        f"(sound upper bound), FLOP model v{claim.flop_model_version}\n"
        f"verify with: flopwatch verify {'FILE' if is_stdout(args.out) else args.out} "
        f"--collector-key {head.log_id}",
        file=sys.stderr if is_stdout(args.out) else sys.stdout,  # stdout carries the bundle
    )
    return EXIT_OK
