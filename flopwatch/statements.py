"""What the collector signs with its own key: tree heads of its log, and job claims.

Both are DSSE envelopes (flopwatch.dsse) with payload types of their own, so a collector
signature can never be mistaken for a node's attestation or for each other. A signed tree head
carries the collector's public key; a verifier pins that key by its key id (hex SHA-256 of the
raw key, the log id). Pure: no I/O, no clock (timestamps are passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError, Message

from flopwatch.dsse import Envelope, Signer, pae
from flopwatch.errors import KeyFileError, VerificationError
from flopwatch.keys import key_id_of, public_from_raw, short_key_id
from flopwatch.merkle import HASH_SIZE
from flopwatch.v1 import bundle_pb2

TREE_HEAD_TYPE = "application/vnd.flopwatch.tree-head.v1+protobuf"
JOB_CLAIM_TYPE = "application/vnd.flopwatch.job-claim.v1+protobuf"
# A signed tree head is a few hundred bytes; anything far larger is not one.
MAX_TREE_HEAD_BYTES = 4096

BAD_TREE_HEAD = "bad_tree_head_signature"

M = TypeVar("M", bound=Message)


def check_signed(envelope: Envelope, payload_type: str, key: Ed25519PublicKey, reason: str) -> None:
    """Check that `key` signed PAE(payload_type, payload); raise VerificationError(reason)."""
    # 1. The envelope says what it is; a statement of another type is never accepted.
    if envelope.payload_type != payload_type:
        raise VerificationError(reason, f"payload type is {envelope.payload_type[:80]!r}")
    # 2. A signature names the key, and every signature naming it verifies.
    key_id = key_id_of(key)
    sigs = [sig for keyid, sig in envelope.signatures if keyid == key_id]
    if not sigs:
        raise VerificationError(reason, f"no signature by collector key {short_key_id(key_id)}")
    signed = pae(envelope.payload_type, envelope.payload)
    for sig in sigs:
        try:
            key.verify(sig, signed)
        except InvalidSignature as e:
            raise VerificationError(
                reason, f"signature by collector key {short_key_id(key_id)} does not verify"
            ) from e


def parse_message(msg: M, data: bytes, reason: str, what: str) -> M:
    """Parse protobuf bytes into `msg`; a decode error is VerificationError(reason)."""
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        raise VerificationError(reason, f"{what} is not valid protobuf: {e}") from e
    return msg


@dataclass(frozen=True)
class TreeHead:
    """The log at one size: RFC 6962 root of its first `size` leaves, signed at `timestamp_ns`."""

    size: int
    root: bytes
    timestamp_ns: int
    public_key: bytes  # the collector's raw Ed25519 public key

    @property
    def log_id(self) -> str:
        """Key id of the collector key: hex SHA-256 of `public_key`."""
        return key_id_of(public_from_raw(self.public_key))

    def to_message(self) -> bundle_pb2.TreeHead:
        return bundle_pb2.TreeHead(
            tree_size=self.size,
            root_hash=self.root,
            timestamp_unix_ns=self.timestamp_ns,
            collector_public_key=self.public_key,
        )

    def sign(self, signer: Signer) -> SignedTreeHead:
        """Sign with the collector key; it must be the key this head names."""
        if signer.key_id != self.log_id:
            raise KeyFileError("the signing key is not the collector key the tree head names")
        payload = self.to_message().SerializeToString(deterministic=True)
        return SignedTreeHead(self, Envelope.sign(payload, signer, TREE_HEAD_TYPE))


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree head and the DSSE envelope it came in. `from_envelope` does not check the
    signature; `verify` does. Construct unverified heads only to verify them."""

    head: TreeHead
    envelope: Envelope

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> SignedTreeHead:
        """Read a tree head (shape only); raises VerificationError(bad_tree_head_signature)."""
        r = BAD_TREE_HEAD
        if envelope.payload_type != TREE_HEAD_TYPE:
            raise VerificationError(r, f"payload type is {envelope.payload_type[:80]!r}")
        msg = parse_message(bundle_pb2.TreeHead(), envelope.payload, r, "tree head")
        if len(msg.root_hash) != HASH_SIZE:
            raise VerificationError(r, f"root hash is {len(msg.root_hash)} bytes")
        if len(msg.collector_public_key) != 32:
            raise VerificationError(r, "collector public key is not 32 bytes")
        head = TreeHead(
            size=msg.tree_size,
            root=msg.root_hash,
            timestamp_ns=msg.timestamp_unix_ns,
            public_key=msg.collector_public_key,
        )
        return cls(head, envelope)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedTreeHead:
        """A tree head file as `flopwatch log tree-head --out` writes it (a serialized Envelope)."""
        if len(data) > MAX_TREE_HEAD_BYTES:
            raise VerificationError(BAD_TREE_HEAD, f"{len(data)} bytes is too large")
        try:
            envelope = Envelope.from_bytes(data)
        except VerificationError as e:
            raise VerificationError(BAD_TREE_HEAD, e.message) from e
        return cls.from_envelope(envelope)

    def to_bytes(self) -> bytes:
        return self.envelope.to_bytes()

    def verify(self) -> None:
        """Check the collector key the head names signed it. Whether that key is the one a
        verifier trusts is the caller's check (compare `head.log_id` with the pinned id)."""
        check_signed(
            self.envelope, TREE_HEAD_TYPE, public_from_raw(self.head.public_key), BAD_TREE_HEAD
        )
