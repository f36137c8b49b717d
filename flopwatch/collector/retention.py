"""Retention: archive old envelopes to a file, then drop their bytes from the database.

A record may go when it is old and its jobs are over: every interval and gap it holds ended
before the cut-off (`before_ns`), and every job it counts for measured nothing from the cut-off
on (a node's unattributed bucket excepted: it never ends). The cut-off must lie at least
`MIN_ARCHIVE_AGE_S` in the past, so no job still running loses its envelopes.

`archive_records` writes such records to an archive file (`flopwatch.collector.archive_file`)
with inclusion proofs against a freshly signed tree head. `prune_records` reads an archive back,
checks every envelope against the log's own leaf hash, and drops from the database the bytes of
those still prunable (`RetentionStore.prune_envelopes`). What is kept forever: each record's
chain row (key, sequence, digest, previous digest, leaf), the log's leaf and subtree hashes and
tree heads, the leaves' job index, job totals, per-GPU sums, gaps, measured time and alerts. So
tree heads, inclusion and consistency proofs, chains, totals, overlap checks and `flopwatch jobs`
are unchanged; a job report of a pruned job needs the archive (`report --archive`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from flopwatch.attestation import parse_payload
from flopwatch.collector.archive_file import ArchiveHeader, ArchiveReader, entry_bytes, write_frame
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.store.base import LogStore, Store
from flopwatch.collector.store.common import UNATTRIBUTED_PREFIX
from flopwatch.collector.store.records import LogEntry, PruneCandidate
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, StoreError, VerificationError
from flopwatch.keys import short_key_id
from flopwatch.merkle import leaf_hash
from flopwatch.verify.bundle_format import Entry, NodeKey

# --before must lie this far in the past at least: a job that measured nothing for a day is
# taken as over (one that resumes later loses nothing: its report then needs the archive).
MIN_ARCHIVE_AGE_S = 24 * 3600
# Records read, judged and proven (archive), or pruned in one transaction (prune), at a time.
RETENTION_PAGE = 256


def parse_before(text: str, now_ns: int) -> int:
    """'2026-01-31' or an ISO 8601 time ('2026-01-31T12:00:00Z'; no zone: UTC) -> Unix ns,
    at least MIN_ARCHIVE_AGE_S before `now_ns`."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--before {text!r}: expected a date such as 2026-01-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ns = int(when.timestamp()) * 10**9 + when.microsecond * 1000
    if ns > now_ns - MIN_ARCHIVE_AGE_S * 10**9:
        raise ConfigError(
            f"--before {text}: must lie at least {MIN_ARCHIVE_AGE_S // 3600} hours in the past, "
            "so that no job still running is archived"
        )
    return ns


@dataclass(frozen=True)
class _Record:
    jobs: frozenset[str]
    end_ns: int


def _read(envelope: bytes) -> _Record:
    try:
        att = parse_payload(Envelope.from_bytes(envelope).payload)
    except VerificationError as e:
        raise StoreError(f"a stored record cannot be read back: {e}") from e
    ends = [iv.end_unix_ns for iv in att.intervals] + [g.end_unix_ns for g in att.gaps]
    jobs = frozenset(j.job_id for iv in att.intervals for j in iv.jobs)
    return _Record(jobs, max(ends, default=0))


def _over(store: Store, entries: list[LogEntry], before_ns: int) -> list[LogEntry]:
    """The entries whose record ended before the cut-off and whose jobs are over."""
    read = {e.leaf_index: _read(e.envelope) for e in entries}
    jobs = {j for r in read.values() for j in r.jobs if not j.startswith(UNATTRIBUTED_PREFIX)}
    ends = {job: t.last_end_ns for job, t in store.totals_for(jobs).items()}
    return [
        e
        for e in entries
        if read[e.leaf_index].end_ns < before_ns
        and all(ends.get(j, before_ns) < before_ns for j in read[e.leaf_index].jobs & jobs)
    ]


@dataclass(frozen=True)
class ArchiveResult:
    entries: int
    tree_size: int
    nodes: int


def _archivable(store: Store, before_ns: int, size: int) -> Iterator[list[LogEntry]]:
    after = -1
    while page := store.archivable(before_ns, after, size, RETENTION_PAGE):
        after = page[-1].leaf_index
        yield _over(store, page, before_ns)


def archive_records(
    store: Store, log: TransparencyLog, before_ns: int, out: BinaryIO
) -> ArchiveResult:
    """Write every archivable record (see the module docstring) to `out`, with its inclusion
    proof against a tree head signed now. Reads the store twice (count, then write): records
    committed meanwhile sit beyond that tree head and are left for the next archive."""
    head = log.sign()
    size = head.head.size
    count = 0
    keys: set[str] = set()
    for page in _archivable(store, before_ns, size):
        count += len(page)
        keys.update(e.key_id for e in page)
    nodes = []
    for key_id in sorted(keys):
        n = store.node(key_id)
        if n is None:
            raise StoreError(f"records of key {short_key_id(key_id)} are held but the key is not")
        # The keys, to check the envelopes' signatures with; revocation positions are a job
        # report's to carry (it is rebuilt from the store, which keeps them).
        nodes.append(
            NodeKey(
                n.key_id,
                n.node_id,
                n.public_key,
                n.status,
                n.enrolled_at_ns,
                revoked_at_ns=n.revoked_at_ns or 0,
            )
        )
    header = ArchiveHeader(head, tuple(nodes), before_ns, count)
    write_frame(out, header.to_bytes())
    written = 0
    for page in _archivable(store, before_ns, size):
        proofs = log.inclusion_proofs([e.leaf_index for e in page], size)
        for e in page:
            write_frame(out, entry_bytes(Entry(e.leaf_index, e.envelope, proofs[e.leaf_index])))
        written += len(page)
    if written != count:
        raise StoreError(
            f"{count} records were archivable, then {written}: another prune or archive ran at "
            "the same time; run one at a time"
        )
    return ArchiveResult(count, size, len(nodes))


@dataclass(frozen=True)
class PruneResult:
    archived: int  # entries in the archive
    pruned: int  # envelopes dropped from the database now
    kept: int  # archived, but kept: a job of theirs measured after the cut-off, or not held


def prune_records(store: Store, archive: ArchiveReader, before_ns: int) -> PruneResult:
    """Drop the database's bytes of every envelope `archive` holds that is still prunable at
    `before_ns` (see the module docstring) and that the log holds byte for byte as archived
    (its leaf hash). `archive` was opened with this collector's key id; an archive made with a
    later cut-off is refused (its records were judged for another one)."""
    if archive.header.before_ns < before_ns:
        raise ConfigError(
            "the archive was made for records before an earlier date than --before: archive "
            "again with this --before first"
        )
    pruned = total = 0
    page: list[Entry] = []

    def flush() -> int:
        candidates = []
        for e in page:
            record = _read(e.envelope)
            if record.end_ns < before_ns:
                candidates.append(PruneCandidate(e.leaf_index, leaf_hash(e.envelope), record.jobs))
        page.clear()
        return len(store.prune_envelopes(candidates, before_ns))

    for entry in archive.entries():
        total += 1
        page.append(entry)
        if len(page) == RETENTION_PAGE:
            pruned += flush()
    pruned += flush()
    return PruneResult(total, pruned, total - pruned)


def fill_archived(
    store: LogStore,
    entries: tuple[LogEntry, ...],
    envelopes: Callable[[list[int]], dict[int, bytes]],
) -> tuple[LogEntry, ...]:
    """`entries` with the bytes of archived ones put back from an archive (`envelopes(leaves)`
    returns those it holds), each checked against the log's leaf hash. ConfigError naming the
    leaves an archive does not hold."""
    wanted = [e.leaf_index for e in entries if e.archived]
    if not wanted:
        return entries
    found = envelopes(wanted)
    logged = store.log_nodes({(0, leaf) for leaf in found})
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ConfigError(
            f"the archive does not hold {len(missing)} of the {len(wanted)} archived envelopes "
            f"(leaves {', '.join(map(str, missing[:8]))}): give the archive that does"
        )
    for leaf, data in found.items():
        if leaf_hash(data) != logged[(0, leaf)]:
            raise ConfigError(f"the archive's envelope at leaf {leaf} is not the logged one")
    return tuple(
        LogEntry(e.leaf_index, found[e.leaf_index], e.key_id, e.sequence) if e.archived else e
        for e in entries
    )
