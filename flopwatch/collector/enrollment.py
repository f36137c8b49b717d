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
--key-id` approves it without copying key files around. Noting is best-effort.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

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
from flopwatch.verify.record import RecordVerifier

log = logging.getLogger(__name__)

TOKEN_METADATA = "flopwatch-enroll-token"  # noqa: S105 (gRPC metadata key on Submit)
TOKEN_PREFIX = "fwe1_"  # noqa: S105 (names the token format)
DEFAULT_TOKEN_TTL_S = 86400.0
MAX_TOKEN_TTL_S = 30 * 86400.0
_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")
_NOTED_MAX = 10_000  # keys noted as pending in this process, to write each only once


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
        data = path.read_bytes()
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


class TokenRedeemer:
    """The collector's side of enrollment: redeems tokens and notes keys awaiting approval.
    Runs on the ingest thread (it uses the store)."""

    def __init__(self, store: NodeTrustStore, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._store = store
        self._limits = limits
        self._noted: set[str] = set()
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
            self.stats.token_refused += 1
            log.warning("enrollment token refused for key %s: %s", short_key_id(key_id), e)
            raise
        if not known:
            self.stats.token_enrolled += 1
            log.warning("enrolled key %s with a one-time enrollment token", key_id)
        return key_id

    def note_unknown(self, envelope: Envelope, presented: bytes) -> bool:
        """Note a key awaiting approval if `envelope` verifies under the presented key; say
        whether it does (then the record is sound but for its key's approval)."""
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
            return False
        if key_id in self._noted:
            return True
        try:
            self._store.note_pending_key(presented, record.node_id)
        except StoreError as e:
            log.info("key %s not noted as awaiting approval: %s", short_key_id(key_id), e)
            return True
        if len(self._noted) >= _NOTED_MAX:
            self._noted.clear()
        self._noted.add(key_id)
        log.warning(
            "key %s of node %s is not enrolled; approve it with "
            "`flopwatch nodes enroll --key-id %s` or give the agent an enrollment token",
            key_id,
            record.node_id,
            key_id,
        )
        return True
