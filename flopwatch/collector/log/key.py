"""The collector key: the Ed25519 key that signs the transparency log's tree heads and job claims.

One key per log. By default it lives next to a SQLite database (`flopwatch.db` ->
`flopwatch-collector-key.pem`, mode 0600, created on the collector's first start). Collectors
sharing a PostgreSQL database share one log, so they must be given the same key with --key.
Regulators pin it by its key id, which the collector logs at start and `flopwatch report` prints;
`flopwatch log key --public` prints its public key for them.

The key a log was started with stays its key: `open_log_key` refuses a key file whose key is not
the one the log's tree heads are signed by, and never creates a new key for a log that has signed
tree heads already (a wrong --key path would otherwise serve, ack and sign nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flopwatch.collector.store.base import LogStore
from flopwatch.collector.store.factory import parse_db
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, KeyFileError, VerificationError
from flopwatch.keys import SigningKey
from flopwatch.statements import SignedTreeHead

log = logging.getLogger(__name__)

KEY_SUFFIX = "-collector-key.pem"


def default_key_path(db: str) -> Path:
    """Where the collector key of `db` lives unless --key says otherwise."""
    parsed = parse_db(db)
    if parsed.kind != "sqlite":
        raise ConfigError(
            "with a PostgreSQL database pass --key PATH: every collector sharing it signs the "
            "one transparency log with the same collector key"
        )
    path = Path(parsed.target)
    return path.with_name(path.stem + KEY_SUFFIX)


def load_collector_key(path: Path, *, create: bool) -> SigningKey:
    """Load the collector key; with `create`, make it (0600) if it does not exist yet."""
    if not create:
        if not path.exists():
            raise KeyFileError(
                f"no collector key at {path}: reports are signed with the key of the collector "
                "that keeps the log (--key PATH)"
            )
        return SigningKey.load(path)
    key, created = SigningKey.load_or_create(path)
    if created:
        log.warning("created collector key %s (key id %s)", path, key.key_id)
    log.info("transparency log signed by collector key id %s", key.key_id)
    return key


def log_key_id(store: LogStore) -> str | None:
    """The key id the log's latest tree head is signed by; None before its first head."""
    data = store.latest_tree_head()
    if data is None:
        return None
    try:
        return SignedTreeHead.from_envelope(Envelope.from_bytes(data)).head.log_id
    except VerificationError as e:
        raise KeyFileError(f"the log's latest tree head is unreadable: {e.message}") from e


def open_log_key(path: Path, store: LogStore) -> SigningKey:
    """The collector key of the log in `store`, from `path`.

    Before the log's first tree head, the key at `path` is loaded, or created (0600). After it,
    the file must exist and hold the key that signed the log's tree heads: KeyFileError
    otherwise, naming the key id the log expects.
    """
    expected = log_key_id(store)
    if expected is None:
        if not path.exists() and store.log_size() > 0:
            log.warning(
                "the log holds %d record(s) but no signed tree head; creating collector key %s",
                store.log_size(),
                path,
            )
        return load_collector_key(path, create=True)
    if not path.exists():
        raise KeyFileError(
            f"no collector key at {path}, and this log's tree heads are signed by collector key "
            f"id {expected}: give --key the file of that key (a new key is never created for a "
            "log that has one)"
        )
    key = load_collector_key(path, create=False)
    if key.key_id != expected:
        raise KeyFileError(
            f"collector key {path} has key id {key.key_id}, but this log's tree heads are "
            f"signed by key id {expected}: give --key the file of that key"
        )
    log.info("transparency log signed by collector key id %s", key.key_id)
    return key
