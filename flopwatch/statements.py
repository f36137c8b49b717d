"""What the collector signs with its own key: tree heads of its log, job claims, run claims,
run lineage declarations and node key statements (enrollments, revocations).

All are DSSE envelopes (flopwatch.dsse) with payload types of their own, so a collector
signature can never be mistaken for a node's attestation or for each other. A signed tree head
carries the collector's public key; a verifier pins that key by its key id (hex SHA-256 of the
raw key, the log id). Pure: no I/O, no clock (timestamps are passed in).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError, Message

from flopwatch.dsse import Envelope, Signer, pae
from flopwatch.errors import KeyFileError, VerificationError
from flopwatch.keys import key_id_of, public_from_raw, short_key_id
from flopwatch.limits import DEFAULT_LIMITS
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


# --- Run lineage: run claims and lineage declarations ---------------------------------------
# Both are canonical JSON (sorted keys, no spaces, ASCII) in a DSSE envelope with a payload type
# of their own, signed by the collector key. A run claim says what one collector holds of one
# run: its cumulative totals (own plus ancestors'), at a signed tree head of its log. A lineage
# declaration says that a run derives from a parent run (held by the same collector, or by
# another one, then named by that collector's run claim, carried inside the declaration as
# evidence); the collector appends it to its transparency log as a leaf.

RUN_CLAIM_TYPE = "application/vnd.flopwatch.run-claim.v1+json"
RUN_DECLARATION_TYPE = "application/vnd.flopwatch.run-declaration.v1+json"
# Who a run declaration is the word of (its "declared_by"): the operator (`flopwatch runs
# declare`), or the workload (the parent run its records name, JobShare.run_parent; the
# declaration then names the first record that named it: "record_key_id", "record_sequence").
# Declarations logged before the field existed are the operator's.
DECLARED_BY_OPERATOR = "operator"
DECLARED_BY_WORKLOAD = "workload"
# A run claim is well under a kilobyte; a declaration carries at most one claim.
MAX_RUN_CLAIM_BYTES = 8192
MAX_RUN_DECLARATION_BYTES = 2 * MAX_RUN_CLAIM_BYTES

BAD_RUN_CLAIM = "bad_run_claim"
BAD_RUN_DECLARATION = "bad_run_declaration"


def canonical_json(value: Mapping[str, object]) -> bytes:
    """The one encoding of a statement's payload: sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _json_payload(envelope: Envelope, max_bytes: int, reason: str) -> dict[str, Any]:
    if len(envelope.payload) > max_bytes:
        raise VerificationError(reason, f"payload is {len(envelope.payload)} bytes")
    try:
        value = json.loads(envelope.payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise VerificationError(reason, f"payload is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise VerificationError(reason, "payload is not a JSON object")
    return value


def _field(value: Mapping[str, Any], name: str, kind: type, reason: str) -> Any:
    got = value.get(name)
    # bool is an int in Python; no field here is a bool.
    if not isinstance(got, kind) or isinstance(got, bool):
        raise VerificationError(reason, f"field {name!r} is missing or not a {kind.__name__}")
    if isinstance(got, int) and got < 0:
        raise VerificationError(reason, f"field {name!r} is negative")
    return got


@dataclass(frozen=True)
class RunClaim:
    """What a collector holds of one run: cumulative totals (its own compute and every
    ancestor's) at its log's signed tree head of `tree_size` (root `root_hex`)."""

    account: str
    run: str
    flops_estimate: int
    flops_upper: int
    gpu_time_fs: int
    energy_nj: int
    tree_size: int
    root_hex: str
    claimed_at_ns: int
    collector_key_id: str = ""  # filled from the verified signature

    def payload(self) -> bytes:
        return canonical_json(
            {
                "account": self.account,
                "run": self.run,
                "flops_estimate": str(self.flops_estimate),
                "flops_upper": str(self.flops_upper),
                "gpu_time_fs": str(self.gpu_time_fs),
                "energy_nj": str(self.energy_nj),
                "tree_size": self.tree_size,
                "root": self.root_hex,
                "claimed_at_ns": self.claimed_at_ns,
            }
        )

    def sign(self, signer: Signer) -> Envelope:
        return Envelope.sign(self.payload(), signer, RUN_CLAIM_TYPE)

    @classmethod
    def verified(cls, data: bytes, key: Ed25519PublicKey) -> RunClaim:
        """A run claim file (a serialized envelope), checked against the pinned collector key
        `key`; VerificationError(bad_run_claim) with the reason otherwise."""
        envelope = cls._envelope(data)
        check_signed(envelope, RUN_CLAIM_TYPE, key, BAD_RUN_CLAIM)
        return cls._read(envelope, key_id_of(key))

    @classmethod
    def unsigned_figures(cls, data: bytes) -> RunClaim:
        """What a run claim file states, its signature NOT checked (`collector_key_id` empty):
        for a reader without the other collector's key, who checks the claim's digest and
        figures against what a signed statement quotes of it. VerificationError as `verified`."""
        envelope = cls._envelope(data)
        if envelope.payload_type != RUN_CLAIM_TYPE:
            raise VerificationError(BAD_RUN_CLAIM, "not a run claim")
        return cls._read(envelope, "")

    @staticmethod
    def _envelope(data: bytes) -> Envelope:
        r = BAD_RUN_CLAIM
        if len(data) > MAX_RUN_CLAIM_BYTES:
            raise VerificationError(r, f"{len(data)} bytes is too large")
        try:
            return Envelope.from_bytes(data)
        except VerificationError as e:
            raise VerificationError(r, e.message) from e

    @classmethod
    def _read(cls, envelope: Envelope, key_id: str) -> RunClaim:
        r = BAD_RUN_CLAIM
        v = _json_payload(envelope, MAX_RUN_CLAIM_BYTES, r)

        def count(name: str) -> int:
            text = _field(v, name, str, r)
            if not text.isascii() or not text.isdigit() or len(text) > 40:
                raise VerificationError(r, f"field {name!r} is not a decimal count")
            return int(text)

        root = _field(v, "root", str, r)
        if len(root) != 2 * HASH_SIZE or any(c not in "0123456789abcdef" for c in root):
            raise VerificationError(r, "field 'root' is not a hex SHA-256")
        return cls(
            account=_field(v, "account", str, r),
            run=_field(v, "run", str, r),
            flops_estimate=count("flops_estimate"),
            flops_upper=count("flops_upper"),
            gpu_time_fs=count("gpu_time_fs"),
            energy_nj=count("energy_nj"),
            tree_size=_field(v, "tree_size", int, r),
            root_hex=root,
            claimed_at_ns=_field(v, "claimed_at_ns", int, r),
            collector_key_id=key_id,
        )


@dataclass(frozen=True)
class RunDeclaration:
    """Run (account, run) of class `workload_class` derives from a parent: the run
    (parent_account, parent_run) of this collector, or, with `parent_claim` (the serialized
    envelope of a foreign collector's run claim) and `parent_collector` (that collector's key
    id), a run held elsewhere. `declared_by` says whose word it is (DECLARED_BY_OPERATOR or
    DECLARED_BY_WORKLOAD, then with the node key id and sequence of the record that named the
    parent)."""

    account: str
    run: str
    workload_class: str
    parent_account: str
    parent_run: str
    declared_at_ns: int
    parent_collector: str = ""
    parent_claim: bytes = b""
    declared_by: str = DECLARED_BY_OPERATOR
    record_key_id: str = ""
    record_sequence: int = 0

    def payload(self) -> bytes:
        return canonical_json(
            {
                "account": self.account,
                "run": self.run,
                "class": self.workload_class,
                "parent_account": self.parent_account,
                "parent_run": self.parent_run,
                "parent_collector": self.parent_collector,
                "parent_claim": base64.b64encode(self.parent_claim).decode(),
                "declared_at_ns": self.declared_at_ns,
                "declared_by": self.declared_by,
                "record_key_id": self.record_key_id,
                "record_sequence": self.record_sequence,
            }
        )

    def sign(self, signer: Signer) -> Envelope:
        return Envelope.sign(self.payload(), signer, RUN_DECLARATION_TYPE)

    @classmethod
    def verified(cls, envelope: Envelope, key: Ed25519PublicKey) -> RunDeclaration:
        """A declaration as logged, checked against the collector key `key`."""
        r = BAD_RUN_DECLARATION
        check_signed(envelope, RUN_DECLARATION_TYPE, key, r)
        v = _json_payload(envelope, MAX_RUN_DECLARATION_BYTES, r)
        try:
            claim = base64.b64decode(_field(v, "parent_claim", str, r), validate=True)
        except ValueError as e:
            raise VerificationError(r, "field 'parent_claim' is not base64") from e
        # Optional: declarations logged before these fields existed are the operator's.
        by = _field(v, "declared_by", str, r) if "declared_by" in v else DECLARED_BY_OPERATOR
        if by not in (DECLARED_BY_OPERATOR, DECLARED_BY_WORKLOAD):
            raise VerificationError(r, f"field 'declared_by' is {by[:32]!r}")
        record_key_id = _field(v, "record_key_id", str, r) if "record_key_id" in v else ""
        sequence = _field(v, "record_sequence", int, r) if "record_sequence" in v else 0
        if (by == DECLARED_BY_WORKLOAD) != bool(record_key_id):
            raise VerificationError(r, "a workload's declaration names its record, only it")
        return cls(
            account=_field(v, "account", str, r),
            run=_field(v, "run", str, r),
            workload_class=_field(v, "class", str, r),
            parent_account=_field(v, "parent_account", str, r),
            parent_run=_field(v, "parent_run", str, r),
            declared_at_ns=_field(v, "declared_at_ns", int, r),
            parent_collector=_field(v, "parent_collector", str, r),
            parent_claim=claim,
            declared_by=by,
            record_key_id=record_key_id,
            record_sequence=sequence,
        )


# --- Node keys: enrollments and revocations ---------------------------------------------------
# When the collector enrolls a node key, and when it revokes one, it appends a node key
# statement to its transparency log, signed by the collector key (canonical JSON in a DSSE
# envelope of its own payload type). An enrollment is logged in the transaction that enrolls the
# key, so before any record the key signs; a revocation in the transaction that revokes it, with
# `log_size`: the log's size at the revocation (no leaf from that index on may hold a record of
# the key). A monitor learns each log's node keys from them, in log order.

NODE_KEY_TYPE = "application/vnd.flopwatch.node-key.v1+json"
MAX_NODE_KEY_BYTES = 2048
BAD_NODE_KEY_STATEMENT = "bad_node_key_statement"
ENROLLED = "enrolled"
REVOKED = "revoked"


@dataclass(frozen=True)
class NodeKeyStatement:
    """Node key `public_key` (raw Ed25519) of node `node_id` was `action` (ENROLLED or REVOKED)
    at `at_ns`; a revocation says the log's size when it took effect (`log_size`)."""

    node_id: str
    public_key: bytes
    action: str
    at_ns: int
    log_size: int = 0  # revocations: records of the key are only at leaves below this

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()

    def payload(self) -> bytes:
        value: dict[str, object] = {
            "node_id": self.node_id,
            "public_key": base64.b64encode(self.public_key).decode(),
            "key_id": self.key_id,
            "action": self.action,
            "at_ns": self.at_ns,
        }
        if self.action == REVOKED:
            value["log_size"] = self.log_size
        return canonical_json(value)

    def sign(self, signer: Signer) -> Envelope:
        return Envelope.sign(self.payload(), signer, NODE_KEY_TYPE)

    @classmethod
    def verified(cls, envelope: Envelope, key: Ed25519PublicKey) -> NodeKeyStatement:
        """A node key statement as logged, checked against the collector key `key`;
        VerificationError(bad_node_key_statement) with the reason otherwise."""
        r = BAD_NODE_KEY_STATEMENT
        check_signed(envelope, NODE_KEY_TYPE, key, r)
        v = _json_payload(envelope, MAX_NODE_KEY_BYTES, r)
        try:
            public = base64.b64decode(_field(v, "public_key", str, r), validate=True)
        except ValueError as e:
            raise VerificationError(r, "field 'public_key' is not base64") from e
        if len(public) != 32:
            raise VerificationError(r, f"public key is {len(public)} bytes, not 32")
        node_id = _field(v, "node_id", str, r)
        if not node_id or len(node_id) > DEFAULT_LIMITS.max_identifier_chars:
            raise VerificationError(r, "field 'node_id' is empty or too long")
        action = _field(v, "action", str, r)
        if action not in (ENROLLED, REVOKED):
            raise VerificationError(r, f"action {action[:40]!r} is not enrolled or revoked")
        statement = cls(
            node_id=node_id,
            public_key=public,
            action=action,
            at_ns=_field(v, "at_ns", int, r),
            log_size=_field(v, "log_size", int, r) if action == REVOKED else 0,
        )
        if _field(v, "key_id", str, r) != statement.key_id:
            raise VerificationError(r, "field 'key_id' is not the SHA-256 of the public key")
        return statement
