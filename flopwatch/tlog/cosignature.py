"""Ed25519 checkpoint cosignatures, cosignature/v1 (c2sp.org/tlog-cosignature).

A cosignature is a note signature line on a checkpoint, by a cosigner (a witness) under its own
key name. Its key id uses signature type 0x04; its bytes are a `timestamped_signature`: a
big-endian uint64 POSIX time, then Ed25519 over

    "cosignature/v1\\n" "time <timestamp>\\n" <the checkpoint's whole note text>

It states that, at that time, this was the largest tree consistent with everything the cosigner
had seen of the log with that origin. Pure: no I/O; the time is passed in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature

from flopwatch.errors import VerificationError
from flopwatch.tlog.note import TYPE_COSIGNATURE_V1, NotePrivateKey, NotePublicKey, Signature

MAX_TIMESTAMP = (1 << 63) - 1
SIGNATURE_BYTES = 8 + 64
BAD_COSIGNATURE = "bad_cosignature"


def signed_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosigner signs for checkpoint text `body` at POSIX time `timestamp`."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise VerificationError(BAD_COSIGNATURE, f"timestamp {timestamp} is out of range")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosignature_timestamp(sig: bytes) -> int:
    """The timestamp of a cosignature's `timestamped_signature` bytes."""
    if len(sig) != SIGNATURE_BYTES:
        raise VerificationError(BAD_COSIGNATURE, f"a cosignature is 72 bytes, not {len(sig)}")
    (timestamp,) = struct.unpack(">Q", sig[:8])
    return int(timestamp)


@dataclass(frozen=True)
class CosignatureVerifier(NotePublicKey):
    """A cosigner's Ed25519 key under its name; a `NoteVerifier` for cosignature lines."""

    KEY_TYPE = TYPE_COSIGNATURE_V1

    def timestamp(self, text: bytes, sig: bytes) -> int:
        """Check a cosignature of checkpoint text `text`; return its timestamp or raise."""
        timestamp = cosignature_timestamp(sig)
        message = signed_message(text.decode("utf-8"), timestamp)
        if timestamp == 0:
            raise VerificationError(BAD_COSIGNATURE, "a checkpoint cosignature has time 0")
        try:
            self.public_key.verify(sig[8:], message)
        except InvalidSignature as e:
            raise VerificationError(
                BAD_COSIGNATURE, f"cosignature by {self.name[:80]!r} does not verify"
            ) from e
        return timestamp

    def verify(self, text: bytes, sig: bytes) -> bool:
        try:
            self.timestamp(text, sig)
        except (VerificationError, UnicodeDecodeError):
            return False
        return True


@dataclass(frozen=True)
class Cosigner(NotePrivateKey):
    """Signs cosignature/v1 lines with an Ed25519 key under `name`."""

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.private_key.public_key())

    def cosign(self, body: str, timestamp: int) -> Signature:
        sig = self.private_key.sign(signed_message(body, timestamp))
        return Signature(self.name, self.verifier.key_id, struct.pack(">Q", timestamp) + sig)
