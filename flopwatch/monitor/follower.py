"""Following one log: a poll checks its checkpoint and counts the entries it has not counted yet.

A poll, in order:

1. Fetch /checkpoint; check the log's signature and origin and the witness policy's
   cosignatures (`checkpoints.open_witnessed`). A checkpoint that fails is reported with its
   reason and not adopted; the monitor keeps counting up to the checkpoint it kept.
2. If the tree grew past the kept checkpoint: authenticate the new tree's tiles against its
   root and recompute the kept root from them (`tree_tiles`). Consistent: the new checkpoint
   is kept (committed before any entry beyond the old one is counted). Not: the log rewrote
   its history; reported, not adopted.
3. Count entries from the log's position up to the kept size, bundle by bundle, within
   `max_tiles_per_poll` requests: each bundle's entries must hash to its authenticated level-0
   tile; each entry is verified (node key signature, contents, recomputed FLOPs) and judged
   against chains and GPU time counted from every log (`ledger`). Each bundle's counts commit
   with the new position in one transaction.

An entry that fails verification or judgement is reported (reason, leaf) and not counted; the
position moves past it. Node keys come from the log's own node key statements, checked with the
log key, in log order, and from the regulator's optional pins (`flopwatch.monitor.node_keys`).
An entry signed by a node key neither enrolled earlier in the log nor pinned stops the log there
(reported once) until the key is pinned: skipping it could lose evidence. Run lineage
declarations and node key statements count no compute.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from flopwatch.dsse import Envelope
from flopwatch.errors import TransportError, VerificationError
from flopwatch.keys import short_key_id
from flopwatch.limits import DEFAULT_LIMITS
from flopwatch.monitor.checkpoints import Kept, against_kept, open_witnessed
from flopwatch.monitor.config import LogConfig, MonitorLimits
from flopwatch.monitor.events import (
    REVOKED_NODE_KEY,
    UNKNOWN_NODE_KEY,
    UNREACHABLE,
    Alert,
    Problem,
)
from flopwatch.monitor.ledger import Batch, Ledger, Outcome
from flopwatch.monitor.node_keys import LogKey, LogKeys
from flopwatch.monitor.tree_tiles import TreeTiles, tile_ref
from flopwatch.statements import (
    NODE_KEY_TYPE,
    RUN_DECLARATION_TYPE,
    NodeKeyStatement,
    RunDeclaration,
)
from flopwatch.tlog.checkpoint import parse_checkpoint
from flopwatch.tlog.tiles import TILE_WIDTH, TileRef, decode_bundle
from flopwatch.verify import RecordVerifier

log = logging.getLogger(__name__)

# Sequence numbers the state can hold (a signed 64-bit column; the collector's bound too).
MAX_SEQUENCE = 2**63 - 2
ENTRY_TOO_LARGE = "entry_too_large"
BAD_SEQUENCE = "bad_sequence"


class Fetcher(Protocol):
    def checkpoint(self) -> bytes: ...

    def fetch(self, ref: TileRef) -> bytes: ...


class StateStore(Protocol):
    def log_state(self, name: str, origin: str) -> tuple[Kept, int]: ...

    def log_keys(self, log: str) -> dict[str, LogKey]: ...

    def leaves_of(self, log: str, key_id: str) -> list[int]: ...

    def commit(
        self,
        log: str,
        origin: str,
        *,
        batch: Batch,
        position: int | None = None,
        kept: Kept | None = None,
        now_ns: int,
    ) -> tuple[list[Problem], list[Alert]]: ...


@dataclass
class LogStats:
    """What following this log did, for metrics."""

    kept_size: int = 0
    position: int = 0
    counted: int = 0
    duplicates: int = 0
    failed: int = 0
    gpu_intervals: int = 0
    requests: int = 0
    declarations: int = 0  # run lineage declarations verified and passed over (no compute)
    key_statements: int = 0  # node key statements verified and learnt from (no compute)
    problems: dict[str, int] = field(default_factory=dict)
    last_error: str = ""


# After each commit: the problems and alerts new in it, and the batch committed.
Notify = Callable[[list[Problem], list[Alert], Batch], None]


class LogFollower:
    def __init__(
        self,
        config: LogConfig,
        fetcher: Fetcher,
        *,
        state: StateStore,
        ledger: Callable[[], Ledger],
        notify: Notify,
        clock_ns: Callable[[], int],
        limits: MonitorLimits | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._fetcher = fetcher
        self._state = state
        self._ledger = ledger  # the current ledger (rebuilt by the monitor after a failure)
        self._notify = notify
        self._clock_ns = clock_ns
        self._limits = limits or MonitorLimits()
        self._keys = LogKeys(self.name, {}, config.node_keys)
        self._verifier = RecordVerifier(trusted_keys=self._keys.trusted, limits=DEFAULT_LIMITS)
        self._tiles: TreeTiles | None = None
        self.stats = LogStats()

    # -- reporting ---------------------------------------------------------------------------
    def _commit(
        self, batch: Batch, *, position: int | None = None, kept: Kept | None = None
    ) -> None:
        problems, alerts = self._state.commit(
            self.name,
            self.config.origin,
            batch=batch,
            position=position,
            kept=kept,
            now_ns=self._clock_ns(),
        )
        s = self.stats
        s.counted += batch.counted
        s.duplicates += batch.duplicates
        s.gpu_intervals += batch.gpu_intervals
        for p in problems:  # recorded for the first time (each is reported once)
            s.problems[p.reason] = s.problems.get(p.reason, 0) + 1
        if position is not None:
            s.position = position
        if kept is not None:
            s.kept_size = kept.size
        self._notify(problems, alerts, batch)

    def _problem(self, reason: str, subject: str, detail: str) -> None:
        ledger = self._ledger()
        ledger.report(Problem(self.name, reason, subject, detail))
        self._commit(ledger.take())

    # -- a poll ------------------------------------------------------------------------------
    def poll(self) -> bool:
        """One round; True if it counted entries and more remain below the kept checkpoint."""
        kept, position = self._state.log_state(self.name, self.config.origin)
        # The keys as committed with the position (a failed commit learnt nothing).
        self._keys = LogKeys(self.name, self._state.log_keys(self.name), self.config.node_keys)
        self._verifier = RecordVerifier(trusted_keys=self._keys.trusted, limits=DEFAULT_LIMITS)
        self.stats.kept_size, self.stats.position = kept.size, position
        start = position
        try:
            kept = self._checkpoint(kept)
            if position < kept.size:
                position = self._entries(kept, position, self._limits.max_tiles_per_poll)
        except TransportError as e:
            self.stats.last_error = str(e)
            self.stats.problems[UNREACHABLE] = self.stats.problems.get(UNREACHABLE, 0) + 1
            log.warning("log %s: %s", self.name, e)
            self._tiles = None
            return False
        self.stats.last_error = ""
        # Behind, and moving: a log stopped at an entry (or a bad bundle) waits for next round.
        return start < position < kept.size

    def _checkpoint(self, kept: Kept) -> Kept:
        data = self._fetcher.checkpoint()
        self.stats.requests += 1
        try:
            w = open_witnessed(data, self.config.log_key, self.config.origin, self.config.policy)
            grew = against_kept(kept, w.checkpoint)
            if not grew:
                return kept
            cp = w.checkpoint
            tiles = self._tree(cp.size, cp.root)
            tiles.check_consistent(kept.size, kept.root)
        except VerificationError as e:
            self._problem(e.reason, _subject(data), e.message)
            return kept
        new = Kept(cp.size, cp.root, data)
        self._commit(self._ledger().take(), kept=new)
        log.info("log %s: checkpoint %d kept (was %d)", self.name, new.size, kept.size)
        return new

    def _tree(self, size: int, root: bytes) -> TreeTiles:
        """The tiles of tree (size, root), authenticated; kept while that tree is current."""
        if self._tiles is None or (self._tiles.size, self._tiles.root) != (size, root):
            self._tiles = None
            self._tiles = TreeTiles(size, root, self._fetch)
        return self._tiles

    def _fetch(self, ref: TileRef) -> bytes:
        self.stats.requests += 1
        return self._fetcher.fetch(ref)

    def _entries(self, kept: Kept, position: int, budget: int) -> int:
        start = position
        start_requests = self.stats.requests
        try:
            tiles = self._tree(kept.size, kept.root)
        except VerificationError as e:
            self._problem(e.reason, f"tree {kept.size}", e.message)
            return position
        # At least one bundle per poll, whatever the budget: a poll always moves on.
        while position < kept.size and (
            position == start or self.stats.requests - start_requests < budget
        ):
            index = position // TILE_WIDTH
            ref = tile_ref(kept.size, None, index)
            try:
                entries = decode_bundle(self._fetch(ref), ref.width)
                tiles.check_bundle(index, entries)
            except VerificationError as e:
                self._problem(e.reason, f"bundle {index} of tree {kept.size}", e.message)
                self._tiles = None  # fetch the tiles afresh next time
                return position
            first = index * TILE_WIDTH
            stopped = self._count(entries, first, position)
            position = first + len(entries) if stopped is None else stopped
            if stopped is not None:
                return position
        return position

    def _count(self, entries: list[bytes], first: int, position: int) -> int | None:
        """Verify and count entries[position - first:]; commit them with the new position.
        Returns the leaf the log stops at (an unknown node key), or None."""
        ledger = self._ledger()
        stop = None
        for leaf in range(position, first + len(entries)):
            entry = entries[leaf - first]
            problem = self._verify_and_count(ledger, leaf, entry)
            if problem is None:
                continue
            if problem.reason == UNKNOWN_NODE_KEY:
                stop = leaf
                ledger.report(problem)
                break
            self.stats.failed += 1
            ledger.report(problem)
        end = first + len(entries) if stop is None else stop
        self._commit(ledger.take(), position=end)
        return stop

    def _verify_and_count(self, ledger: Ledger, leaf: int, entry: bytes) -> Problem | None:
        subject = f"leaf {leaf}"
        if len(entry) > self._limits.fetch.max_entry_bytes:
            return Problem(self.name, ENTRY_TOO_LARGE, subject, f"entry is {len(entry)} bytes")
        try:
            record = self._verifier.verify_bytes(entry)
        except VerificationError as e:
            if e.reason == "wrong_payload_type":
                kind = _payload_type(entry)
                if kind == RUN_DECLARATION_TYPE:
                    return self._declaration(leaf, entry)
                if kind == NODE_KEY_TYPE:
                    return self._key_statement(ledger, leaf, entry)
            if e.reason == "unknown_key":
                return Problem(
                    self.name,
                    UNKNOWN_NODE_KEY,
                    f"key {_signer(entry)}",
                    f"leaf {leaf} is signed by a node key the log did not enroll before it and "
                    "the regulator did not pin; the log is followed no further until the key is "
                    f"pinned (node_keys) ({e.message})",
                )
            return Problem(self.name, e.reason, subject, e.message)
        if record.sequence > MAX_SEQUENCE:
            return Problem(self.name, BAD_SEQUENCE, subject, f"sequence {record.sequence}")
        finding = self._keys.judge(leaf, record)
        if finding is not None:
            return finding
        outcome = ledger.count(self.name, leaf, record)
        if outcome is Outcome.PROBLEM:
            self.stats.failed += 1
        return None

    def _declaration(self, leaf: int, entry: bytes) -> Problem | None:
        """A run lineage declaration: signed by the log's own (collector) key, not a node's;
        it counts no compute. Its signature is checked; a bad one is a problem."""
        try:
            RunDeclaration.verified(Envelope.from_bytes(entry), self.config.log_key.public_key)
        except VerificationError as e:
            return Problem(self.name, e.reason, f"leaf {leaf}", e.message)
        self.stats.declarations += 1
        return None

    def _key_statement(self, ledger: Ledger, leaf: int, entry: bytes) -> Problem | None:
        """A node key statement: signed by the log's own (collector) key; it enrolls or revokes
        a node key from this leaf on and counts no compute."""
        try:
            envelope = Envelope.from_bytes(entry)
            statement = NodeKeyStatement.verified(envelope, self.config.log_key.public_key)
        except VerificationError as e:
            return Problem(self.name, e.reason, f"leaf {leaf}", e.message)
        key, problem = self._keys.learn(leaf, statement)
        if key is not None:
            ledger.learn(self.name, key)
            self.stats.key_statements += 1
            if key.revoked_from is not None and key.revoked_from < leaf:
                # A revocation logged after the size it names (a collector that logged it late):
                # records of the key counted between the two are reported (counted already).
                held = self._state.leaves_of(self.name, key.key_id)
                late = sorted(
                    x
                    for x in {*held, *ledger.pending_leaves(self.name, key.key_id)}
                    if x >= key.revoked_from
                )
                for x in late:
                    ledger.report(
                        Problem(
                            self.name,
                            REVOKED_NODE_KEY,
                            f"leaf {x}",
                            f"a record of key {short_key_id(key.key_id)} at or past log size "
                            f"{key.revoked_from}, where its revocation (leaf {leaf}) says none "
                            "may be; counted before the revocation was read",
                        )
                    )
        return problem


def _subject(checkpoint: bytes) -> str:
    """A checkpoint as a problem's subject: its size and a digest of the note."""
    digest = hashlib.sha256(checkpoint).hexdigest()[:16]
    try:
        size = str(parse_checkpoint(checkpoint)[0].size)
    except VerificationError:
        size = "?"
    return f"checkpoint {size} ({digest})"


def _payload_type(entry: bytes) -> str:
    try:
        return Envelope.from_bytes(entry).payload_type
    except VerificationError:
        return ""


def _signer(entry: bytes) -> str:
    try:
        return ",".join(short_key_id(k) for k, _ in Envelope.from_bytes(entry).signatures)
    except VerificationError:
        return "?"
