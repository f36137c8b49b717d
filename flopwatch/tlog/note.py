"""C2SP signed notes (c2sp.org/signed-note): parse, serialize, sign and open with Ed25519 keys.

A note is a text ending in a newline, a blank line, then one or more signature lines
"— <key name> <base64(4-byte key id || signature)>". The text is everything before the LAST blank
line (it may hold blank lines of its own). A key is named by (key name, key id); the key id of an
Ed25519 key is SHA-256(name || 0x0A || signature type || public key)[:4], type 0x01 for a note
signature and 0x04 for a timestamped cosignature (c2sp.org/tlog-cosignature, `cosignature.py`).
A verifier key ("vkey") is "<name>+<hex key id>+<base64(type || public key)>".

Opening a note follows the spec: signatures from unknown keys are ignored; a signature whose name
and key id match a known key must verify, or the whole note is refused; at least one known
signature must verify. Every refusal is a VerificationError with a stable reason and a message.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flopwatch.errors import VerificationError
from flopwatch.keys import public_raw

# Signature type bytes (c2sp.org/signed-note "Signature types").
TYPE_ED25519 = 0x01
TYPE_COSIGNATURE_V1 = 0x04

# Bounds on a note read from outside. The spec asks verifiers to accept at least 16 signatures;
# a checkpoint with its log signature and a few dozen Ed25519 cosignatures is a few KiB.
MAX_NOTE_BYTES = 64 * 1024
MAX_NOTE_SIGNATURES = 64
# A key name (an origin or a witness name) and a note's text line, in characters.
MAX_KEY_NAME_CHARS = 256

MALFORMED = "malformed_note"
BAD_SIGNATURE = "bad_note_signature"
UNTRUSTED = "no_trusted_signature"
BAD_VKEY = "malformed_vkey"

_DASH = "\u2014 "
# ASCII control characters other than newline (the spec forbids them anywhere in a note).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, reason: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4, padded); anything else is VerificationError."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise VerificationError(reason, f"{what} is not standard base64") from e


def check_key_name(name: str, reason: str = MALFORMED) -> None:
    """A key name is non-empty, has no Unicode space, no '+' and no control character."""
    if not name:
        raise VerificationError(reason, "key name is empty")
    if len(name) > MAX_KEY_NAME_CHARS:
        raise VerificationError(reason, f"key name is over {MAX_KEY_NAME_CHARS} characters")
    if "+" in name or any(c.isspace() for c in name) or _CONTROL.search(name):
        raise VerificationError(reason, f"key name {name[:80]!r} has a space, '+' or control")


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public).digest()[:4]


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name, its 4-byte id, and the signature bytes after it."""

    name: str
    key_id: bytes
    sig: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {b64(self.key_id + self.sig)}\n"


@dataclass(frozen=True)
class Note:
    """A note's text (ending in a newline) and its signatures, as parsed or built."""

    text: str
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise VerificationError(MALFORMED, "note text does not end in a newline")
    if _CONTROL.search(text):
        raise VerificationError(MALFORMED, "note holds an ASCII control character")


def parse_signature_line(line: str) -> Signature:
    """One signature line without its newline: "— <name> <base64>"."""
    if not line.startswith(_DASH):
        raise VerificationError(MALFORMED, "a signature line does not start with an em dash")
    name, sep, encoded = line[len(_DASH) :].partition(" ")
    if not sep:
        raise VerificationError(MALFORMED, "a signature line has no signature")
    check_key_name(name)
    raw = unb64(encoded, MALFORMED, "a signature")
    if len(raw) < 5:
        raise VerificationError(MALFORMED, "a signature is shorter than a key id and one byte")
    return Signature(name, raw[:4], raw[4:])


def parse_signature_lines(block: str) -> tuple[Signature, ...]:
    """Signature lines, each ending in a newline (a note's tail, or a witness's answer)."""
    if not block.endswith("\n"):
        raise VerificationError(MALFORMED, "signature lines do not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise VerificationError(MALFORMED, f"more than {MAX_NOTE_SIGNATURES} signatures")
    return tuple(parse_signature_line(line) for line in lines)


def decode_note_bytes(data: bytes, max_bytes: int = MAX_NOTE_BYTES) -> str:
    """Bytes from outside as note text: bounded, valid UTF-8, no control character but newline."""
    if len(data) > max_bytes:
        raise VerificationError(MALFORMED, f"note is {len(data)} bytes, limit {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerificationError(MALFORMED, "note is not valid UTF-8") from e
    if _CONTROL.search(text):
        raise VerificationError(MALFORMED, "note holds an ASCII control character")
    return text


def parse_note(data: bytes, max_bytes: int = MAX_NOTE_BYTES) -> Note:
    """Split a signed note into its text and signature lines; check the format, not signatures."""
    text = decode_note_bytes(data, max_bytes)
    split = text.rfind("\n\n")
    if split < 0:
        raise VerificationError(MALFORMED, "note has no blank line before its signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block:
        raise VerificationError(MALFORMED, "note has no signature")
    return Note(body, parse_signature_lines(block))


# --- Keys that verify and sign ---------------------------------------------------------------


class NoteVerifier(Protocol):
    """A known key: its name and id select the signature lines it checks."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, text: bytes, sig: bytes) -> bool:
        """True when `sig` is this key's valid signature of the note text."""
        ...


@dataclass(frozen=True)
class NotePublicKey:
    """An Ed25519 public key under a note key name (checked), for signature type `KEY_TYPE`:
    its key id and vkey. Subclasses say how a signature line of that type verifies."""

    KEY_TYPE: ClassVar[int]
    name: str
    public_key: Ed25519PublicKey

    def __post_init__(self) -> None:
        check_key_name(self.name, BAD_VKEY)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.KEY_TYPE, public_raw(self.public_key))

    def vkey(self) -> str:
        return format_vkey(self.name, self.KEY_TYPE, public_raw(self.public_key))


@dataclass(frozen=True)
class NotePrivateKey:
    """An Ed25519 private key under a note key name (checked); its repr shows the name only."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)  # never print key material

    def __post_init__(self) -> None:
        check_key_name(self.name, BAD_VKEY)


@dataclass(frozen=True)
class Ed25519Verifier(NotePublicKey):
    """An Ed25519 note key (type 0x01): the signature is Ed25519 over the note text."""

    KEY_TYPE = TYPE_ED25519

    def verify(self, text: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            self.public_key.verify(sig, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Ed25519NoteSigner(NotePrivateKey):
    """Signs note texts with an Ed25519 key under `name` (type 0x01)."""

    @property
    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, self.private_key.public_key())

    def sign(self, text: str) -> Signature:
        _check_text(text)
        sig = self.private_key.sign(text.encode("utf-8"))
        return Signature(self.name, self.verifier.key_id, sig)


def sign_note(text: str, signers: Iterable[Ed25519NoteSigner]) -> Note:
    sigs = tuple(s.sign(text) for s in signers)
    if not sigs:
        raise ValueError("a note needs at least one signature")
    return Note(text, sigs)


def verified_signatures(note: Note, verifiers: Sequence[NoteVerifier]) -> list[Signature]:
    """The note's signatures by known keys, each checked. Raises if a known one fails.

    Signatures whose (name, key id) match no verifier are ignored, as the spec requires.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    text = note.text.encode("utf-8")
    out = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        if not v.verify(text, sig.sig):
            raise VerificationError(
                BAD_SIGNATURE, f"signature by {sig.name[:80]!r} ({sig.key_id.hex()}) fails"
            )
        out.append(sig)
    return out


def open_note(data: bytes, verifiers: Sequence[NoteVerifier]) -> tuple[Note, list[Signature]]:
    """Parse a signed note and check it: refused unless some known key's signature verifies."""
    note = parse_note(data)
    good = verified_signatures(note, verifiers)
    if not good:
        names = ", ".join(sorted({v.name[:80] for v in verifiers}))
        raise VerificationError(UNTRUSTED, f"note carries no valid signature by {names}")
    return note, good


# --- Verifier keys (vkeys) -------------------------------------------------------------------


def format_vkey(name: str, sig_type: int, public: bytes) -> str:
    check_key_name(name, BAD_VKEY)
    return f"{name}+{key_id(name, sig_type, public).hex()}+{b64(bytes([sig_type]) + public)}"


@dataclass(frozen=True)
class VerifierKey:
    """A parsed vkey: key name, signature type and the 32-byte Ed25519 public key."""

    name: str
    sig_type: int
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)

    def __str__(self) -> str:
        return format_vkey(self.name, self.sig_type, self.public)


def parse_vkey(text: str, *, sig_types: Iterable[int] = (TYPE_ED25519,)) -> VerifierKey:
    """Parse "<name>+<hex id>+<base64(type || key)>"; the id must match the key, the type be one
    of `sig_types` (all Ed25519: 32-byte keys)."""
    parts = text.strip().split("+", 2)  # base64 may hold '+'; a name and a key id never do
    if len(parts) != 3:
        raise VerificationError(BAD_VKEY, "a vkey is <name>+<hex key id>+<base64 key>")
    name, hex_id, encoded = parts
    check_key_name(name, BAD_VKEY)
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id):
        raise VerificationError(BAD_VKEY, "a vkey's key id is 8 lowercase hex digits")
    raw = unb64(encoded, BAD_VKEY, "a vkey's key")
    allowed = set(sig_types)
    if not raw or raw[0] not in allowed:
        got = f"0x{raw[0]:02x}" if raw else "nothing"
        want = ", ".join(f"0x{t:02x}" for t in sorted(allowed))
        raise VerificationError(BAD_VKEY, f"vkey signature type is {got}, expected {want}")
    if len(raw) != 33:
        raise VerificationError(BAD_VKEY, f"an Ed25519 vkey holds 32 key bytes, not {len(raw) - 1}")
    vkey = VerifierKey(name, raw[0], raw[1:])
    if vkey.key_id.hex() != hex_id:
        raise VerificationError(BAD_VKEY, f"vkey key id {hex_id} does not match its key")
    try:
        vkey.public_key  # noqa: B018 (a point that is not on the curve fails here)
    except ValueError as e:
        raise VerificationError(BAD_VKEY, "vkey does not hold an Ed25519 public key") from e
    return vkey
