"""Ed25519 node and collector keys on disk.

A private key file is created with mode 0600 by `flopwatch.files` (atomically, never over an
existing file, never in a directory that does not exist yet) and refused on load when group or
others can read it. Key material is never logged; a key is named by its key id, the hex
SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from flopwatch.errors import ConfigError, KeyFileError
from flopwatch.files import write_file
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_at_most

# Hex digits of a key id shown to people (logs, errors, tables): 64 bits, enough to tell keys
# apart by eye; machine-readable output always carries the whole id.
SHORT_KEY_ID_CHARS = 16


def key_id_of(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_raw(public_key)).hexdigest()


def key_id_of_raw(public_raw: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key: hex SHA-256 of its bytes."""
    return hashlib.sha256(public_raw).hexdigest()


def short_key_id(key_id: str) -> str:
    """A key id as people see it: its first `SHORT_KEY_ID_CHARS` hex digits."""
    return key_id[:SHORT_KEY_ID_CHARS]


def public_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_pem(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise KeyFileError(f"not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("public key is not Ed25519")
    return key


def load_owner_only_pem_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key; refuse a file that group or others can read."""
    try:
        st = path.stat()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            "it must be readable by its owner only (chmod 600)"
        )
    try:
        data = read_at_most(path, MAX_SMALL_FILE_BYTES)  # more than the limit: not a PEM key
        return serialization.load_pem_private_key(data, password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyFileError(f"cannot load key file {path}: {e}") from e


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key that signs; satisfies `flopwatch.dsse.Signer`."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(key_id={short_key_id(self.key_id)}...)"

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        key = load_owner_only_pem_key(path)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"key file {path} does not hold an Ed25519 private key")
        return cls(key)

    def save(self, path: Path) -> None:
        """Write the key to a new file with mode 0600 (`flopwatch.files`); never overwrite one,
        and never create its directory."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            write_file(path, pem, mode=0o600, force_hint="a key file is never overwritten")
        except ConfigError as e:
            raise KeyFileError(str(e)) from e

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[SigningKey, bool]:
        """Load the key at `path`, creating it (0600) on first start. Returns (key, created)."""
        if path.exists():
            return cls.load(path), False
        key = cls.generate()
        key.save(path)
        return key, True
