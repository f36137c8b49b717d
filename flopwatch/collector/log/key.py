"""The collector key: the Ed25519 key that signs the transparency log's tree heads and job claims.

One key per log. By default it lives next to a SQLite database (`flopwatch.db` ->
`flopwatch-collector-key.pem`, mode 0600, created on the collector's first start). Collectors
sharing a PostgreSQL database share one log, so they must be given the same key with --key.
Regulators pin it by its key id, which the collector logs at start and `flopwatch report` prints.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flopwatch.collector.store.factory import parse_db
from flopwatch.errors import ConfigError, KeyFileError
from flopwatch.keys import SigningKey

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
