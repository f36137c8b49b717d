"""The decisions both stores make the same way, written once: the SQL that fetches their inputs
stays in each backend (sqlite/, postgres/), which hands over rows it read or a small callable.

Node keys (trusted keys, status, who may enroll), enrollment tokens, a key's chain neighbours,
a job's evidence, the transparency log's nodes and the schema migration loop.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flopwatch.attestation import parse_payload
from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.store.records import (
    JobEvidence,
    JobTotal,
    LogEntry,
    NodeRecord,
    NodeStatus,
    PruneCandidate,
    RunEvidence,
    RunTotal,
    ScopeLeaf,
)
from flopwatch.dsse import Envelope
from flopwatch.errors import EnrollmentError, StoreError, VerificationError
from flopwatch.keys import key_id_of_raw, public_from_raw, short_key_id
from flopwatch.runs import run_of
from flopwatch.sumtree import FLOPS_BYTES
from flopwatch.verify.sums import RecordSums, Sum


# -- node keys ---------------------------------------------------------------------------------
def key_id_to_enroll(public_raw: bytes) -> str:
    """The key id of a raw public key about to be enrolled or noted; KeyFileError unless it is
    32 bytes."""
    public_from_raw(public_raw)
    return key_id_of_raw(public_raw)


def status_of(node: NodeRecord | None) -> NodeStatus | None:
    return None if node is None else node.status


def trusted_keys(nodes: Iterable[NodeRecord]) -> dict[str, Ed25519PublicKey]:
    """Public keys of the enrolled (not revoked) nodes, by key id."""
    return {n.key_id: public_from_raw(n.public_key) for n in nodes if n.status == "enrolled"}


def enrolled_for(
    key_id: str,
    node_id: str,
    held: Sequence[Any] | None,
    error: type[StoreError] | type[EnrollmentError],
) -> bool:
    """Whether the key may be enrolled for `node_id`, given the (node_id, status) held for it:
    True if it is enrolled for that node already, False if it is not held. Raises `error` for
    a key that is revoked (for good) or enrolled for another node."""
    if held is None:
        return False
    held_node, status = held[0], held[1]
    if status == "revoked":
        raise error(f"key {short_key_id(key_id)} was revoked; revocation is permanent")
    if held_node != node_id:
        raise error(f"key {short_key_id(key_id)} is already enrolled for node {held_node!r}")
    return True


# -- keys awaiting approval ------------------------------------------------------------------
# Counts over the keys pending now (not in the node table): (all, of one node other than the
# key itself, first seen since a time), each backend's SQL fills the placeholders.
PENDING_COUNTS = (
    "SELECT count(*), "
    "coalesce(sum(CASE WHEN node_id = {p} AND key_id <> {p} THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(CASE WHEN first_seen_ns > {p} THEN 1 ELSE 0 END), 0) "
    "FROM pending_keys WHERE key_id NOT IN (SELECT key_id FROM nodes)"
)
MINUTE_NS = 60 * 10**9


def pending_room(
    held: Sequence[Any] | None, node_id: str, counts: Sequence[Any], limits: PendingKeyLimits
) -> bool:
    """Whether a key may be noted as pending for `node_id`, given the (node_id,) row held for
    it (None: not noted yet) and the `PENDING_COUNTS` row. See `Store.note_pending_key`."""
    total, of_node, recent = (int(c) for c in counts)
    if held is None and (total >= limits.max_total or recent >= limits.max_new_per_minute):
        return False
    return (held is not None and held[0] == node_id) or of_node < limits.max_per_node


# -- enrollment tokens ---------------------------------------------------------------------------
def token_node(token: Sequence[Any] | None) -> tuple[str, int, int | None]:
    """A token's (node_id, expires_at_ns, used_at_ns); EnrollmentError if it is not held."""
    if token is None:
        raise EnrollmentError("enrollment token is not known to this collector")
    return token[0], int(token[1]), None if token[2] is None else int(token[2])


def check_unspent(used_ns: int | None, expires_ns: int, now_ns: int) -> None:
    """EnrollmentError unless a token is unused and unexpired at `now_ns`."""
    if used_ns is not None:
        raise EnrollmentError("enrollment token was already used")
    if expires_ns <= now_ns:
        raise EnrollmentError("enrollment token has expired")


# -- chains and measured time --------------------------------------------------------------------
# One device's measured time to look up: (gpu_key, start_ns, end_ns).
Span = tuple[str, int, int]
# Held records by key and sequence: {key_id: {sequence: (digest, previous_digest)}}.
ChainRows = dict[str, dict[int, tuple[bytes, bytes]]]


def around(wanted: Collection[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """The (key_id, first, last) sequence ranges that hold n-1, n and n+1 of each wanted
    (key_id, n), consecutive wanted sequences of a key joined into one range."""
    ranges: list[tuple[str, int, int]] = []
    for key_id, n in sorted(set(wanted)):
        if ranges and ranges[-1][0] == key_id and n - 1 <= ranges[-1][2]:
            ranges[-1] = (key_id, ranges[-1][1], n + 1)
        else:
            ranges.append((key_id, n - 1, n + 1))
    return ranges


def chain_rows(rows: Iterable[Sequence[Any]]) -> ChainRows:
    """`ChainRows` from held (key_id, sequence, digest, previous_digest) rows."""
    out: ChainRows = {}
    for key_id, sequence, digest, previous in rows:
        out.setdefault(key_id, {})[int(sequence)] = (bytes(digest), bytes(previous))
    return out


def coverage_rows(
    spans: Sequence[Span], rows: Iterable[Sequence[Any]]
) -> dict[Span, list[tuple[int, int]]]:
    """Each span's held runs from (index into `spans`, start_ns, end_ns) rows, ascending."""
    out: dict[Span, list[tuple[int, int]]] = {span: [] for span in spans}
    for i, start, end in rows:
        out[spans[int(i)]].append((int(start), int(end)))
    for runs in out.values():
        runs.sort()
    return out


# -- transparency log ----------------------------------------------------------------------------
def all_log_nodes(
    wanted: Collection[tuple[int, int]], found: dict[tuple[int, int], bytes]
) -> dict[tuple[int, int], bytes]:
    """`found`, if it holds every node `wanted`; StoreError (the log is damaged) if not."""
    if len(found) != len(wanted):
        missing = sorted(set(wanted) - set(found))[:3]
        raise StoreError(f"transparency log nodes {missing} are missing: the log is damaged")
    return found


def dense_entries(start: int, end: int, rows: Sequence[tuple[int, bytes]]) -> list[bytes]:
    """The data of leaves [start, end) from (index, data) rows in order; StoreError if one of
    them is missing (the log is damaged)."""
    if [i for i, _ in rows] != list(range(start, end)):
        raise StoreError(f"transparency log leaves of [{start}, {end}) are missing")
    return [data for _, data in rows]


def job_evidence(
    total: JobTotal,
    entries: Iterable[Sequence[Any]],
    node: Callable[[str], NodeRecord | None],
    revocations: Callable[[list[str]], Iterable[Sequence[Any]]],
    log_size: Callable[[], int],
) -> JobEvidence:
    """A job's evidence from its (leaf_index, envelope, key_id, sequence) rows, by leaf index,
    the store's node keys, the (key_id, log_size) rows of their revocations and the log's size,
    all read in one snapshot. StoreError if a key whose records are held is not."""
    logged, nodes, revoked = _evidence(entries, node, revocations)
    return JobEvidence(total, logged, nodes, revoked, log_size())


def run_evidence(
    total: RunTotal,
    entries: Iterable[Sequence[Any]],
    node: Callable[[str], NodeRecord | None],
    revocations: Callable[[list[str]], Iterable[Sequence[Any]]],
    log_size: Callable[[], int],
) -> RunEvidence:
    """A run's evidence, as `job_evidence` reads a job's."""
    logged, nodes, revoked = _evidence(entries, node, revocations)
    return RunEvidence(total, logged, nodes, revoked, log_size())


# The most leaves one page of `LogStore.scope_leaves` returns, whatever the caller asks: a page
# holds their envelopes (a few KiB each), so its memory stays bounded.
MAX_LEAF_PAGE = 10_000


def leaf_page(limit: int) -> int:
    """`limit` as a page size: 1..MAX_LEAF_PAGE."""
    return max(1, min(limit, MAX_LEAF_PAGE))


# -- sum-tree leaf figures (log_jobs, log_runs) ------------------------------------------------
# What a log index row holds for a sampled report's sum-tree leaf: the scope's figures in the
# record (`flopwatch.sumtree.Sums.to_bytes`: estimate, upper bound, intervals, GPU-ns) and the
# record's FLOP model version; both NULL where they are not known (rows written before they
# were stored, records whose sums were made without them): the leaf is then read from the
# envelope.
LeafFigures = tuple[bytes | None, str | None]
NO_FIGURES: LeafFigures = (None, None)
_INTERVALS_NS = struct.Struct(">QQ")


def _figures(s: Sum, ns: int, version: str) -> LeafFigures:
    """`Sums(estimate, upper, intervals, ns).to_bytes()` without building a Sums (the commit
    path); NO_FIGURES where a figure is outside its field (the envelope's leaf says so)."""
    try:
        return (
            s[0].to_bytes(FLOPS_BYTES, "big")
            + s[1].to_bytes(FLOPS_BYTES, "big")
            + _INTERVALS_NS.pack(s[4], ns),
            version,
        )
    except (OverflowError, struct.error):
        return NO_FIGURES


def job_figures(sums: RecordSums | None, job_id: str) -> LeafFigures:
    """The log_jobs row's leaf figures of `job_id` in a record being committed."""
    if sums is None or not sums.flop_model_version:
        return NO_FIGURES
    ns = sums.job_ns.get(job_id)
    s = sums.jobs.get(job_id)
    if ns is None or s is None:
        return NO_FIGURES
    return _figures(s, ns, sums.flop_model_version)


def run_figures(sums: RecordSums | None, run: tuple[str, str]) -> LeafFigures:
    """The log_runs row's leaf figures of (account, run) in a record being committed."""
    if sums is None or not sums.flop_model_version:
        return NO_FIGURES
    ns = sums.run_ns.get(run)
    s = sums.runs.get(run)
    if ns is None or s is None:
        return NO_FIGURES
    return _figures(s, ns, sums.flop_model_version)


def scope_leaf(row: Sequence[Any]) -> ScopeLeaf:
    """A `scope_leaves` row: leaf index, key id, sequence, leaf sums, FLOP model version, log
    leaf hash, envelope (read only where the figures are NULL; NULL: no record row)."""
    index, key_id, sequence, sums, version, hash_, envelope = row
    if sums is not None and version is not None:
        return ScopeLeaf(int(index), key_id, int(sequence), b"", bytes(hash_), bytes(sums), version)
    return ScopeLeaf(
        int(index), key_id, int(sequence), b"" if envelope is None else bytes(envelope)
    )


def _evidence(
    entries: Iterable[Sequence[Any]],
    node: Callable[[str], NodeRecord | None],
    revocations: Callable[[list[str]], Iterable[Sequence[Any]]],
) -> tuple[tuple[LogEntry, ...], tuple[NodeRecord, ...], dict[str, int]]:
    logged = tuple(LogEntry(int(r[0]), bytes(r[1]), r[2], int(r[3])) for r in entries)
    nodes = []
    for key_id in sorted({e.key_id for e in logged}):
        n = node(key_id)
        if n is None:
            raise StoreError(f"records of key {short_key_id(key_id)} are held but the key is not")
        nodes.append(n)
    revoked = {r[0]: int(r[1]) for r in revocations([n.key_id for n in nodes])}
    return logged, tuple(nodes), revoked


def record_runs(envelope: bytes) -> frozenset[tuple[str, str]]:
    """The (account, run) of every share of a stored record (`flopwatch.runs.run_of`): what
    `log_runs` indexes it under. b"" (an archived, pruned record): none can be read."""
    if not envelope:
        return frozenset()
    try:
        att = parse_payload(Envelope.from_bytes(envelope).payload)
    except VerificationError as e:
        raise StoreError(f"a stored record cannot be read back: {e}") from e
    return frozenset((j.account, run_of(j.job_id, j.run)) for iv in att.intervals for j in iv.jobs)


# -- retention -----------------------------------------------------------------------------------
# A node's bucket for work no job claims (`flopwatch.job_ids.unattributed_job_id`) never ends
# while the node runs; its records go by their own time only (the caller checks that).
UNATTRIBUTED_PREFIX = "unattributed:"


def prunable(
    candidates: Iterable[PruneCandidate],
    held: Mapping[int, bytes],
    job_ends: Mapping[str, int],
    before_ns: int,
) -> list[int]:
    """The candidates' leaves whose envelope may be dropped: `held` maps each leaf whose
    envelope the store still holds to its stored leaf hash, `job_ends` each job to the end of
    its last measured interval. A leaf goes only if the archived copy hashes to the logged leaf
    and none of its jobs (but a node's unattributed bucket) measured anything at or after
    `before_ns`."""
    out = []
    for c in candidates:
        if held.get(c.leaf_index) != c.leaf_hash:
            continue  # not held, pruned already, or the archive's bytes are not the logged ones
        jobs = [j for j in c.jobs if not j.startswith(UNATTRIBUTED_PREFIX)]
        if any(job_ends.get(job, before_ns) >= before_ns for job in jobs):
            continue  # a job of it is still measuring (or unknown): keep
        out.append(c.leaf_index)
    return sorted(out)


# -- schema --------------------------------------------------------------------------------------
def migrate(
    migrations: Sequence[Sequence[str]],
    found: int,
    execute: Callable[[str], object],
    reached: Callable[[int], object],
) -> None:
    """Run the migrations after version `found`, in order: each one's statements (`execute`),
    then `reached(version)` to record it. StoreError if the database is newer than this
    collector understands. Call inside the transaction that holds the whole migration."""
    if found > len(migrations):
        raise StoreError(
            f"database schema version {found} is newer than this collector understands "
            f"({len(migrations)}); upgrade the collector"
        )
    for version in range(found + 1, len(migrations) + 1):
        for statement in migrations[version - 1]:
            execute(statement)
        reached(version)
