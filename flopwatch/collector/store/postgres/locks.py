"""The advisory locks collectors sharing one PostgreSQL database take, and their order.

All are transaction-scoped (released at COMMIT or ROLLBACK) and named within the store's schema,
so two deployments in two schemas of one database never wait for each other. A writer takes

  1. the locks of the node keys and devices (`gpu_key`) it writes, all at once, sorted by id;
  2. row locks, through its upserts, in sorted key order (job totals, per-GPU sums, alerts);
  3. last, the transparency log's lock (`lock_log`), which is global to the schema.

Noting a key awaiting approval takes one lock of its own (`lock_pending`) in a transaction that
takes no other.

Every writer takes them in this order and none waits for a lower one while holding a higher one,
so no two writers deadlock; two writers of one key, device or job take turns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from psycopg import Cursor

Cur = Cursor[Any]


def lock_id(scope: str, kind: str, name: str) -> int:
    """A signed 64-bit advisory lock id for one named thing within one schema.

    Two names may share an id (a hash collision): that only makes their writers take turns,
    never lets two writers of one name in at once.
    """
    digest = hashlib.sha256(f"flopwatch\0{scope}\0{kind}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_keys_and_devices(
    cur: Cur, scope: str, key_ids: Iterable[str], devices: Iterable[str]
) -> None:
    """Step 1: every node key's and device's lock, in one statement, in sorted id order."""
    ids = {lock_id(scope, "key", k) for k in key_ids} | {lock_id(scope, "gpu", d) for d in devices}
    # unnest yields the sorted array in order, and each row takes its lock before the next.
    cur.execute(
        "SELECT count(pg_advisory_xact_lock(id)) FROM unnest(%s::bigint[]) AS id", (sorted(ids),)
    )


def lock_log(cur: Cur, scope: str) -> None:
    """Step 3: the transparency log's lock (appends must be serialized: indices are dense)."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(scope, "log", ""),))


def lock_pending(cur: Cur, scope: str) -> None:
    """The keys-awaiting-approval lock: collectors noting keys take turns, so the bounds they
    count (`PendingKeyLimits`) hold for all of them together."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(scope, "pending", ""),))
