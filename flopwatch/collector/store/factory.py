"""The collector's store, opened from a database URL: the one reading of every `--db` option.

  sqlite:PATH, sqlite:///ABSOLUTE/PATH, or a bare PATH  -> SQLiteStore (one collector, which
                                                          alone creates the file)
  postgresql://USER@HOST:PORT/DATABASE (or postgres://) -> PostgresStore (one or more collectors)

A PostgreSQL URL is handed to libpq as written, so its query parameters work (sslmode,
connect_timeout, options=-csearch_path%3DSCHEMA, ...). PostgreSQL support needs the optional
psycopg dependency: `pip install 'flopwatch[postgres]'`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from flopwatch.collector.store.base import Store
from flopwatch.errors import ConfigError

FORMS = "sqlite:PATH, sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST:PORT/DATABASE"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Database:
    """Where the store lives: a SQLite file, or a PostgreSQL connection URL."""

    kind: Literal["sqlite", "postgresql"]
    target: str  # the file path, or the URL as given

    def __str__(self) -> str:
        return f"sqlite:{self.target}" if self.kind == "sqlite" else redacted(self.target)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_db(db: str) -> Database:
    """Read a `--db` value; ConfigError names the accepted forms."""
    scheme, sep, rest = db.partition("://")
    if sep:
        if scheme in _POSTGRES_SCHEMES:
            return Database("postgresql", db)
        if scheme == "sqlite" and rest.startswith("/"):
            return Database("sqlite", rest)
        raise ConfigError(f"unsupported database {db!r}: use {FORMS}")
    path = db.removeprefix("sqlite:")
    if not path:
        raise ConfigError(f"unsupported database {db!r}: use {FORMS}")
    return Database("sqlite", path)


def sqlite_path(db: str) -> Path:
    """The file of a SQLite `--db` value (ConfigError for anything else)."""
    parsed = parse_db(db)
    if parsed.kind != "sqlite":
        raise ConfigError(f"{parsed} is not a SQLite database; use sqlite:PATH")
    return Path(parsed.target)


def open_store(
    db: str | Database,
    *,
    now_ns: Callable[[], int] = time.time_ns,
    create: bool = False,
    exclusive: bool = False,
    account_days_kept: int | None = None,
) -> Store:
    """Open (and migrate) the store `db` names. StoreError if it cannot be opened.

    Only the collector (`create`) creates the store: without it, a SQLite database must exist
    (a mistyped path in `flopwatch nodes` or `report` is "no such database", never a new empty
    one) and hold flopwatch's tables, and a PostgreSQL database (which always exists: the
    server makes no database on connect) must hold them in the schema the URL selects, or the
    command refuses and creates nothing. `exclusive` (the collector) holds a SQLite database for
    this store's lifetime so that a second collector on the same file refuses to start; other
    commands still read and write it. PostgreSQL ignores it: collectors may share a database.
    `account_days_kept`: UTC days of per-account sums kept (`AccountWindows.kept_days`; None:
    its default).
    """
    kept = {} if account_days_kept is None else {"account_days_kept": account_days_kept}
    parsed = parse_db(db) if isinstance(db, str) else db
    if parsed.kind == "sqlite":
        from flopwatch.collector.store.sqlite.store import SQLiteStore  # noqa: PLC0415

        path = Path(parsed.target)
        if not create and not path.exists():
            raise ConfigError(
                f"no such database {path}: check --db (the collector creates its database on "
                "first start; other commands never do)"
            )
        return SQLiteStore(path, now_ns=now_ns, create=create, exclusive=exclusive, **kept)
    try:
        from flopwatch.collector.store.postgres.store import PostgresStore  # noqa: PLC0415
    except ImportError as e:
        raise ConfigError(
            f"PostgreSQL support needs psycopg ({e}): pip install 'flopwatch[postgres]'"
        ) from e
    return PostgresStore(parsed.target, now_ns=now_ns, create=create, **kept)
