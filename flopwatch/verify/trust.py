"""The trust a bundle verifier is built with, from the forms a regulator holds it in.

A `BundleVerifier` trusts only what its caller brings from outside the bundle: the collector's
key id, published by the operator out of band as 64 hex digits or as the collector's PEM public
key, and/or a signed tree head kept from an earlier check (`SignedTreeHead.from_bytes`). This
module turns text and bytes into those inputs; reading files is the caller's business
(flopwatch/cli/trust_args.py reads them for the command line). Pure.
"""

from __future__ import annotations

import re

from flopwatch.errors import ConfigError, KeyFileError
from flopwatch.keys import key_id_of, load_public_pem

KEY_ID = re.compile(r"[0-9a-fA-F]{64}")  # hex SHA-256 of a raw Ed25519 public key


def is_key_id(text: str) -> bool:
    """Whether `text` has the shape of a key id: 64 hex digits, either case."""
    return KEY_ID.fullmatch(text) is not None


def parse_collector_key(key: str | bytes) -> str:
    """The collector key id to pin, lower case.

    `key` is the key id itself (a str of 64 hex digits, either case) or the collector's PEM
    public key (bytes, as `flopwatch report` and the operator publish it). Raises ConfigError
    for anything else.
    """
    if isinstance(key, str):
        if not is_key_id(key):
            raise ConfigError(f"{key[:80]!r} is not a key id (64 hex digits)")
        return key.lower()
    if b"PRIVATE KEY" in key:
        raise ConfigError(
            "this is a private key, never a trust anchor (and it must not leave the collector); "
            "ask the operator for the public key: `flopwatch log key --public`"
        )
    try:
        return key_id_of(load_public_pem(key))
    except KeyFileError as e:
        raise ConfigError(str(e)) from e
