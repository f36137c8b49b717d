"""Enrolling node keys: by an operator (a public key file, or approving a key that presented
itself), or by the agent with a one-time enrollment token.

Tokens: `issue_token` makes 32 random bytes (base64url, prefixed "fwe1_"), keeps only their
SHA-256 in the store with the node they are for and an expiry, and returns the token text once.
An agent sends it as gRPC metadata (`TOKEN_METADATA`) next to its public key on Submit; the
collector redeems it before reading any record (`TokenRedeemer`): if the token is known, unused
and unexpired, the key is enrolled for the token's node and the token is spent, in one store
transaction. A refused token ends the stream with PERMISSION_DENIED and a reason.

Keys awaiting approval: when a record arrives signed by a key that is not enrolled and the agent
presented that public key, the collector notes the key and the node its record claims
(`Store.note_pending_key`), so `flopwatch nodes list` shows it and `flopwatch nodes enroll
--key-id` approves it without copying key files around (`flopwatch nodes reject` forgets it).
Noting is best-effort and bounded (`PendingKeyLimits`: per node, in all, new keys per minute):
a key past a bound is not noted, and its records are answered "retry" like those of a noted key,
so a node is never lost to a flood of fake keys; refusals are counted (by the node id the record
claims, past `max_label_values` node ids as "other": flopwatch_pending_key_records_refused) and
logged at most once per `REFUSED_LOG_EVERY_S`. A key is noted again (its last-seen time
refreshed, or noted anew after an operator rejected it) at most every `NOTE_AGAIN_S`.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.labels import BoundedLabels
from flopwatch.collector.store.base import EnrollmentStore, NodeKeyStore, NodeTrustStore
from flopwatch.dsse import Envelope
from flopwatch.errors import (
    ConfigError,
    EnrollmentError,
    KeyFileError,
    StoreError,
    VerificationError,
)
from flopwatch.keys import load_public_pem, public_from_raw, public_raw, short_key_id
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited
from flopwatch.verify.record import RecordVerifier

log = logging.getLogger(__name__)

TOKEN_METADATA = "flopwatch-enroll-token"  # noqa: S105 (gRPC metadata key on Submit)
TOKEN_PREFIX = "fwe1_"  # noqa: S105 (names the token format)
DEFAULT_TOKEN_TTL_S = 86400.0
MAX_TOKEN_TTL_S = 30 * 86400.0
_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
_NOTED_MAX = 10_000  # keys remembered as noted (or refused) in this process
NOTE_AGAIN_S = 60.0  # a key presenting itself is written to the store at most this often
REFUSED_LOG_EVERY_S = 60.0  # one summary line of keys refused as pending per this many seconds


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The hex SHA-256 a store keeps for a token; EnrollmentError for a malformed token."""
    text = token.strip()
    if not _TOKEN.fullmatch(text):
        raise EnrollmentError(f"not an enrollment token (expected {TOKEN_PREFIX}... 48 chars)")
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def issue_token(store: EnrollmentStore, node_id: str, ttl_s: float, now_ns: int) -> tuple[str, int]:
    """A new one-time token for `node_id`, valid for `ttl_s`; returns (token, expires_at_ns)."""
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ConfigError(f"token lifetime must be positive and at most {MAX_TOKEN_TTL_S:.0f} s")
    if not node_id:
        raise ConfigError("a token is issued for one node: give --node")
    token = new_token()
    expires = now_ns + int(ttl_s * 1e9)
    store.add_enroll_token(token_hash(token), node_id, expires)
    return token, expires


def enroll_key_file(store: NodeKeyStore, node_id: str, path: Path) -> str:
    """Enroll the Ed25519 public key in a PEM file for `node_id`; return its key id."""
    try:
        data = read_limited(path, MAX_SMALL_FILE_BYTES, "public key")
    except OSError as e:
        raise ConfigError(f"cannot read public key {path}: {e.strerror}") from e
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{path} holds a private key; give the public key (openssl pkey -pubout)")
    return store.enroll(public_raw(load_public_pem(data)), node_id)


def approve_pending(store: NodeTrustStore, key_id: str, node_id: str | None) -> str:
    """Enroll a key that presented itself (`Store.pending_keys`); `node_id`, when given, must be
    the node its record claimed."""
    pending = {p.key_id: p for p in store.pending_keys()}.get(key_id)
    if pending is None:
        node = store.node(key_id)
        if node is not None:
            raise EnrollmentError(
                f"key {short_key_id(key_id)} is {node.status} already (node {node.node_id!r})"
            )
        raise EnrollmentError(
            f"key {short_key_id(key_id)} has not presented itself to this collector; "
            "enroll it with --public-key FILE.pem"
        )
    if node_id is not None and node_id != pending.node_id:
        raise EnrollmentError(
            f"key {short_key_id(key_id)} presented itself as node {pending.node_id!r}, not "
            f"{node_id!r}"
        )
    return store.enroll(pending.public_key, pending.node_id)


@dataclass
class EnrollmentStats:
    token_enrolled: int = 0
    token_refused: int = 0
    pending_refused: int = 0  # records of keys not noted as pending: a PendingKeyLimits bound
    # The same, by the node id their record claims (bounded labels).
    pending_refused_by_node: dict[str, int] = field(default_factory=dict)


class Presented(enum.Enum):
    """What became of a record signed by a key that is not enrolled but was presented."""

    UNSOUND = "unsound"  # it does not verify under the presented key: refuse it
    AWAITS = "awaits"  # the key is noted as awaiting approval: send the record again later
    FULL = "full"  # sound, but the key could not be noted (a bound): send it again later


class TokenRedeemer:
    """The collector's side of enrollment: redeems tokens and notes keys awaiting approval.
    Runs on the ingest thread (it uses the store)."""

    def __init__(
        self,
        store: NodeTrustStore,
        *,
        limits: Limits = DEFAULT_LIMITS,
        pending: PendingKeyLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_label_values: int = 1000,
    ) -> None:
        self._store = store
        self._limits = limits
        self._pending = pending or PendingKeyLimits()
        self._clock = clock
        self._node_label = BoundedLabels(max_label_values)
        self._stats_lock = threading.Lock()  # stats are read by the metrics scrape
        self._noted: dict[str, tuple[float, Presented]] = {}  # key id -> (when, outcome)
        self._refused_logged_at: float | None = None
        self._refused_unlogged = 0
        self.stats = EnrollmentStats()

    def redeem(self, token: str, presented: bytes) -> str:
        """Enroll `presented` (raw public key) with `token`; return its key id. A key enrolled
        already for the token's node (the agent reconnecting) spends nothing. Raises
        EnrollmentError when refused."""
        key_id = hashlib.sha256(presented).hexdigest()
        known = self._store.node(key_id) is not None
        try:
            self._store.redeem_enroll_token(token_hash(token), presented)
        except EnrollmentError as e:
            with self._stats_lock:
                self.stats.token_refused += 1
            log.warning("enrollment token refused for key %s: %s", short_key_id(key_id), e)
            raise
        if not known:
            with self._stats_lock:
                self.stats.token_enrolled += 1
            log.warning("enrolled key %s with a one-time enrollment token", key_id)
        return key_id

    def note_unknown(self, envelope: Envelope, presented: bytes) -> Presented:
        """Note a key awaiting approval if `envelope` verifies under the presented key, within
        the `PendingKeyLimits`; say what became of it."""
        key_id = hashlib.sha256(presented).hexdigest()
        try:
            verifier = RecordVerifier(
                trusted_keys={key_id: public_from_raw(presented)}, limits=self._limits
            )
            record = verifier.verify(envelope)
        except (VerificationError, KeyFileError) as e:
            # Debug: the record is rejected, and rejections are logged once per peer per period
            # (flopwatch.collector.ingest.rejections); a line here would double each of them.
            log.debug("key %s not noted as awaiting approval: %s", short_key_id(key_id), e)
            return Presented.UNSOUND
        now = self._clock()
        seen = self._noted.get(key_id)
        if seen is not None and now - seen[0] < NOTE_AGAIN_S:
            return self._outcome(seen[1], record.node_id)
        try:
            noted = self._store.note_pending_key(presented, record.node_id, self._pending)
        except StoreError as e:
            log.info("key %s not noted as awaiting approval: %s", short_key_id(key_id), e)
            return Presented.AWAITS
        outcome = Presented.AWAITS if noted else Presented.FULL
        if len(self._noted) >= _NOTED_MAX:
            self._noted.clear()
        self._noted[key_id] = (now, outcome)
        if noted and seen is None:
            log.warning(
                "key %s of node %s is not enrolled; approve it with "
                "`flopwatch nodes enroll --key-id %s` or give the agent an enrollment token",
                key_id,
                record.node_id,
                key_id,
            )
        return self._outcome(outcome, record.node_id)

    def counts(self) -> EnrollmentStats:
        """A copy of the counters, safe to read from any thread (the metrics scrape)."""
        with self._stats_lock:
            return replace(
                self.stats, pending_refused_by_node=dict(self.stats.pending_refused_by_node)
            )

    def _outcome(self, outcome: Presented, node_id: str) -> Presented:
        """Count a refusal, and log a summary of them at most every REFUSED_LOG_EVERY_S."""
        if outcome is Presented.FULL:
            with self._stats_lock:
                self.stats.pending_refused += 1
                by_node = self.stats.pending_refused_by_node
                label = self._node_label(node_id)
                by_node[label] = by_node.get(label, 0) + 1
            self._refused_unlogged += 1
            now = self._clock()
            last = self._refused_logged_at
            if last is None or now - last >= REFUSED_LOG_EVERY_S:
                log.warning(
                    "%d record(s) of keys not noted as awaiting approval: keys pending are at a "
                    "limit (%d per node, %d in all, %d new per minute); approve or reject them "
                    "(flopwatch nodes enroll / reject) or enroll nodes with a token",
                    self._refused_unlogged,
                    self._pending.max_per_node,
                    self._pending.max_total,
                    self._pending.max_new_per_minute,
                )
                self._refused_logged_at, self._refused_unlogged = now, 0
        return outcome
