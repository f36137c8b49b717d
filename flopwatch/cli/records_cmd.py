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
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from flopwatch.cli.common import EXIT_OK
from flopwatch.errors import ConfigError

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
        description="Write the envelopes of jobs that ended before DATE to a new file (never "
        "over an existing one), each with its inclusion proof against a tree head signed now.",
    )
    _common(archive)
    archive.add_argument("--out", type=Path, required=True, metavar="FILE", help="new archive")
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


def _new_file(path: Path) -> tuple[Any, Path]:
    """A temporary file beside `path`, for `_publish` to give its name."""
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{path} exists; archives are never overwritten: choose a new name")
    if not path.parent.is_dir():
        raise ConfigError(f"{path.parent} is not a directory")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    return os.fdopen(fd, "wb"), Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished file its name, unless something took that name meanwhile."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError(f"{path} appeared while archiving; nothing was overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)


def run_archive(args: argparse.Namespace) -> int:
    from flopwatch.collector.log.key import default_key_path, load_collector_key
    from flopwatch.collector.log.translog import TransparencyLog
    from flopwatch.collector.retention import archive_records, parse_before
    from flopwatch.collector.store.factory import open_store

    before = parse_before(args.before, time.time_ns())
    key = load_collector_key(args.key or default_key_path(args.db), create=False)
    store = open_store(args.db)
    try:
        f, tmp = _new_file(args.out)
        try:
            with f:
                result = archive_records(store, TransparencyLog(store, key), before, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # evidence, not a secret
            _publish(tmp, args.out)
        except OSError as e:
            raise ConfigError(f"cannot write {args.out}: {e.strerror}") from e
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        store.close()
    print(
        f"wrote {args.out} ({args.out.stat().st_size} bytes): {result.entries} envelopes from "
        f"{result.nodes} node key(s), proven against tree size {result.tree_size}\n"
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
