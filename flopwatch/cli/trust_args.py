"""What a regulator brings to `flopwatch verify`, `log consistency` and `log tree-head`: the
collector key to trust (by key id or PEM public key) and tree heads kept from earlier.

This layer reads the files and names the option in its errors (ConfigError); parsing what is
read is flopwatch.verify.trust and `SignedTreeHead.from_bytes`, the same for Python callers."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from flopwatch.errors import ConfigError, VerificationError
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_at_most, read_limited
from flopwatch.statements import MAX_TREE_HEAD_BYTES, SignedTreeHead, TreeHead
from flopwatch.verify.trust import is_key_id, parse_collector_key

COLLECTOR_KEY_HELP = (
    "the collector key you trust: its key id (64 hex digits) or its PEM public key file, "
    "obtained from the operator out of band, never from the bundle itself"
)


def add_collector_key_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collector-key", metavar="KEY", help=COLLECTOR_KEY_HELP)


def collector_key_id(text: str) -> str:
    """A key id from `--collector-key`: the id itself, or the id of a PEM public key file."""
    if is_key_id(text) and not Path(text).exists():
        return parse_collector_key(text)
    path = Path(text)
    try:
        data = read_limited(path, MAX_SMALL_FILE_BYTES, "--collector-key file")
    except OSError as e:
        raise ConfigError(
            f"--collector-key {text!r} is neither a 64-hex key id nor a readable file "
            f"({e.strerror})"
        ) from e
    try:
        return parse_collector_key(data)
    except ConfigError as e:
        raise ConfigError(f"--collector-key {path}: {e}") from e


def read_tree_head(path: Path) -> SignedTreeHead:
    """A tree head file (`flopwatch log tree-head --out`), shape checked, signature not yet."""
    try:
        data = read_at_most(path, MAX_TREE_HEAD_BYTES)  # from_bytes refuses one byte more
    except OSError as e:
        raise ConfigError(f"cannot read tree head {path}: {e.strerror}") from e
    try:
        return SignedTreeHead.from_bytes(data)
    except VerificationError as e:
        raise ConfigError(f"{path} is not a signed tree head: {e.message}") from e


def describe(head: TreeHead) -> str:
    when = datetime.fromtimestamp(head.timestamp_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return (
        f"tree size {head.size}, root {head.root.hex()}, signed {when} by collector key id "
        f"{head.log_id}"
    )
