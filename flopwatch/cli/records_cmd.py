"""`flopwatch records archive|prune`: move old envelopes out of the collector's database.

The database keeps every accepted envelope (about 430 MB per node per day at one record per
second, see the operator guide, "Sizing"); after a job is over they are evidence to keep, not
data to query. `archive` writes the envelopes of jobs that ended before a date to a file (with
inclusion proofs against a signed tree head), `prune` then drops from the database the bytes
of those the archive holds, byte for byte as logged. What stays, forever: totals, per-GPU sums,
chains, measured time, alerts, and the transparency log's hashes and tree heads
(flopwatch.collector.retention). `flopwatch report JOB --archive FILE` puts them back.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from flopwatch.cli.common import EXIT_OK, read_paths
from flopwatch.errors import ConfigError
from flopwatch.files import check_output, is_stdout, open_output

HELP = "archive old records' envelopes to a file, then prune them from the database"

_EPILOG = """\
A record goes when every interval it holds ended before DATE and every job it counts for
measured nothing from DATE on (a node's unattributed bucket, which never ends, goes by time
alone); DATE must lie at least 24 hours in the past. Step by step (docs/operator-guide.md,
"Retention"):

  flopwatch records archive --db URL --before 2026-01-01 --out 2025.archive
  (copy 2025.archive to safe storage)
  flopwatch records prune   --db URL --before 2026-01-01 --archived 2025.archive

Prune drops only the envelope bytes of records the archive holds exactly as logged, and only
while they still qualify; totals, chains, the log's tree heads and proofs stay as they were.
A job report of a pruned job needs the archive: flopwatch report JOB --archive 2025.archive.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "records",
        help=HELP,
        description=HELP + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="records_command", required=True, metavar="COMMAND")
    archive = cmds.add_parser(
        "archive",
        help="write the envelopes of jobs that ended before DATE to a new archive file",
        description="Write the envelopes of jobs that ended before DATE to a file, each with "
        "its inclusion proof against a tree head signed now. The file is written whole or not "
        "at all (a temporary file beside it, then its name), in bounded memory.",
    )
    _common(archive)
    archive.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the archive to write, '-' for standard output. An archive is evidence: an "
        "existing file is never replaced without --force, nor, even with it, anything but a "
        "regular file (a symbolic link, a device, a directory), a database or a key; the "
        "directory must exist",
    )
    archive.add_argument(
        "--force",
        action="store_true",
        help="replace FILE if it is an existing regular file (keep the archive it replaces "
        "if records were pruned with it)",
    )
    archive.add_argument(
        "--key",
        type=Path,
        metavar="PATH",
        help="the collector key, which signs the archive's tree head (default: next to a "
        "SQLite database, as `flopwatch collector`)",
    )
    archive.set_defaults(run=run_archive)
    prune = cmds.add_parser(
        "prune",
        help="drop from the database the envelopes an archive holds (jobs over before DATE)",
        description="Drop from the database the bytes of the envelopes ARCHIVE holds, each "
        "checked against the log's leaf hash, of records that still qualify at DATE.",
    )
    _common(prune)
    prune.add_argument(
        "--archived",
        type=Path,
        required=True,
        metavar="ARCHIVE",
        help="the archive `records archive` wrote with the same --before",
    )
    prune.set_defaults(run=run_prune)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default="sqlite:flopwatch.db",
        metavar="URL",
        help="the collector's database: sqlite:PATH or postgresql://... (default: %(default)s)",
    )
    p.add_argument(
        "--before",
        required=True,
        metavar="DATE",
        help="records of jobs that measured nothing from this date (UTC) on, e.g. 2026-01-01 "
        "or 2026-01-01T12:00:00Z; at least 24 hours in the past",
    )


def run_archive(args: argparse.Namespace) -> int:
    from flopwatch.collector.log.key import default_key_path, load_collector_key
    from flopwatch.collector.log.translog import TransparencyLog
    from flopwatch.collector.retention import archive_records, parse_before
    from flopwatch.collector.store.factory import open_store

    before = parse_before(args.before, time.time_ns())
    key_path = args.key or default_key_path(args.db)
    protect = read_paths(args.db, key_path)
    check_output(args.out, force=args.force, protect=protect)  # before any work
    key = load_collector_key(key_path, create=False)
    store = open_store(args.db)
    try:
        # Evidence, not a secret: 0644. Streamed: an archive may be far larger than memory.
        with open_output(args.out, force=args.force, protect=protect) as f:
            result = archive_records(store, TransparencyLog(store, key), before, f)
    finally:
        store.close()
    what = (
        f"{result.entries} envelopes from {result.nodes} node key(s), proven against tree size "
        f"{result.tree_size}"
    )
    if is_stdout(args.out):
        print(f"wrote the archive to standard output: {what}", file=sys.stderr)
        return EXIT_OK
    size = Path(args.out).stat().st_size
    print(
        f"wrote {args.out} ({size} bytes): {what}\n"
        "keep it safe, then: flopwatch records prune "
        f"--db {args.db} --before {args.before} --archived {args.out}"
    )
    return EXIT_OK


def run_prune(args: argparse.Namespace) -> int:
    from flopwatch.collector.archive_file import ArchiveReader
    from flopwatch.collector.retention import parse_before, prune_records
    from flopwatch.collector.store.factory import open_store
    from flopwatch.dsse import Envelope
    from flopwatch.statements import SignedTreeHead

    before = parse_before(args.before, time.time_ns())
    store = open_store(args.db)
    try:
        latest = store.latest_tree_head()
        if latest is None:
            raise ConfigError("this database has no signed tree head: nothing was archived")
        log_id = SignedTreeHead.from_envelope(Envelope.from_bytes(latest)).head.log_id
        try:
            with args.archived.open("rb") as f:
                archive = ArchiveReader(args.archived, f, collector_key_id=log_id)
                result = prune_records(store, archive, before)
        except OSError as e:
            raise ConfigError(f"cannot read archive {args.archived}: {e.strerror}") from e
    finally:
        store.close()
    print(
        f"pruned {result.pruned} of the {result.archived} envelopes in {args.archived}"
        + (
            f"; {result.kept} kept (pruned before, or a job of theirs measured after {args.before})"
            if result.kept
            else ""
        )
    )
    return EXIT_OK
