"""DSSE envelopes signed with Ed25519.

Small enough to review in one sitting: pre-authentication encoding (PAE), the envelope digest that
chains records, signing with a passed-in signer, and verification against a set of trusted keys.
Spec: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from flopwatch.errors import VerificationError
from flopwatch.keys import short_key_id
from flopwatch.limits import DEFAULT_LIMITS, Limits
from flopwatch.v1 import envelope_pb2

PAYLOAD_TYPE = "application/vnd.flopwatch.attestation.v1+protobuf"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that are signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def envelope_digest(payload_type: str, payload: bytes) -> bytes:
    """SHA-256 of PAE(type, payload): what the next record's `previous_digest` names."""
    return hashlib.sha256(pae(payload_type, payload)).digest()


class Signer(Protocol):
    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Envelope:
    """A parsed DSSE envelope. Construct with `from_bytes` (bounded) or `sign`."""

    payload: bytes
    payload_type: str
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, sig)

    @property
    def digest(self) -> bytes:
        return envelope_digest(self.payload_type, self.payload)

    @classmethod
    def sign(cls, payload: bytes, signer: Signer, payload_type: str = PAYLOAD_TYPE) -> Envelope:
        sig = signer.sign(pae(payload_type, payload))
        return cls(payload=payload, payload_type=payload_type, signatures=((signer.key_id, sig),))

    @classmethod
    def from_bytes(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
        if len(data) > limits.max_envelope_bytes:
            raise VerificationError(
                "oversized", f"envelope is {len(data)} bytes, limit {limits.max_envelope_bytes}"
            )
        msg = envelope_pb2.Envelope()
        try:
            msg.ParseFromString(data)
        except DecodeError as e:
            raise VerificationError("malformed", f"envelope is not valid protobuf: {e}") from e
        return cls.from_message(msg, limits)

    @classmethod
    def from_message(cls, msg: envelope_pb2.Envelope, limits: Limits = DEFAULT_LIMITS) -> Envelope:
        if msg.ByteSize() > limits.max_envelope_bytes:
            raise VerificationError(
                "oversized",
                f"envelope is {msg.ByteSize()} bytes, limit {limits.max_envelope_bytes}",
            )
        if not msg.signatures:
            raise VerificationError("unsigned", "envelope carries no signature")
        if len(msg.signatures) > limits.max_signatures_per_envelope:
            raise VerificationError("malformed", f"{len(msg.signatures)} signatures")
        return cls(
            payload=msg.payload,
            payload_type=msg.payload_type,
            signatures=tuple((s.keyid, s.sig) for s in msg.signatures),
        )

    def to_message(self) -> envelope_pb2.Envelope:
        return envelope_pb2.Envelope(
            payload=self.payload,
            payload_type=self.payload_type,
            signatures=[envelope_pb2.Signature(keyid=k, sig=s) for k, s in self.signatures],
        )

    def to_bytes(self) -> bytes:
        """The envelope's canonical encoding (deterministic protobuf): what the collector stores
        and logs. Computed once per envelope."""
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        return self.to_message().SerializeToString(deterministic=True)

    def verify(self, trusted: Mapping[str, Ed25519PublicKey]) -> str:
        """Check that a trusted key signed PAE(type, payload); return that key's id.

        Raises VerificationError("unknown_key") when no signature names a trusted key and
        ("bad_signature") when a trusted key's signature does not verify.
        """
        # 1. The payload type is the one flopwatch signs; nothing else is accepted.
        if self.payload_type != PAYLOAD_TYPE:
            raise VerificationError("wrong_payload_type", repr(self.payload_type[:80]))
        # 2. Some signature is by a key the caller trusts.
        signed = pae(self.payload_type, self.payload)
        known = [(k, s) for k, s in self.signatures if k in trusted]
        if not known:
            ids = ", ".join(repr(short_key_id(k)) for k, _ in self.signatures)  # unverified text
            raise VerificationError("unknown_key", f"no signature by a trusted key (keyids: {ids})")
        # 3. Every signature by a trusted key verifies over the exact received bytes.
        for keyid, sig in known:
            try:
                trusted[keyid].verify(sig, signed)
            except InvalidSignature as e:
                raise VerificationError(
                    "bad_signature", f"signature by {short_key_id(keyid)} does not verify"
                ) from e
        return known[0][0]
