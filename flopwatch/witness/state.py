"""What a witness keeps, durably: per log origin, the size and root it last cosigned, and that
checkpoint with its cosignature (served to monitors).

SQLite, synchronous=FULL, one row per origin; an update is one transaction, committed before
the witness answers. Sizes are stored as decimal text (a tree size is a uint64, beyond SQLite's
signed integers). Not thread-safe: the witness serialises calls.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flopwatch.errors import ConfigError, StoreError
from flopwatch.merkle import HASH_SIZE
from flopwatch.tlog.witness import TreeState


class WitnessState:
    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS logs (origin TEXT PRIMARY KEY, size TEXT NOT NULL, "
                "root BLOB NOT NULL, checkpoint BLOB NOT NULL)"
            )
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open the witness state {path}: {e}") from e

    def get(self, origin: str) -> TreeState | None:
        try:
            row = self._db.execute(
                "SELECT size, root FROM logs WHERE origin = ?", (origin,)
            ).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the witness state: {e}") from e
        if row is None:
            return None
        root = bytes(row[1])
        if not str(row[0]).isdigit() or len(root) != HASH_SIZE:
            raise StoreError(f"the witness state of {origin!r} is damaged")
        return TreeState(int(row[0]), root)

    def checkpoint(self, origin: str) -> bytes | None:
        """The last cosigned checkpoint of `origin`, with the log's and this witness's lines."""
        try:
            row = self._db.execute(
                "SELECT checkpoint FROM logs WHERE origin = ?", (origin,)
            ).fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the witness state: {e}") from e
        return None if row is None else bytes(row[0])

    def origins(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT origin FROM logs ORDER BY origin")]

    def put(self, origin: str, state: TreeState, checkpoint: bytes) -> None:
        """Record a cosigned checkpoint; durable when this returns."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO logs (origin, size, root, checkpoint) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
                    "root = excluded.root, checkpoint = excluded.checkpoint",
                    (origin, str(state.size), state.root, checkpoint),
                )
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the witness state: {e}") from e

    def close(self) -> None:
        self._db.close()
