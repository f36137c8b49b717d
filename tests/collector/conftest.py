"""Fixtures for the collector tests.

Nothing is shared between tests: each gets its own database file under tmp_path, its own
registry and its own ports (0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from collector.alerts import ThresholdPolicy
from collector.ingest import Ingestor
from collector.sqlite_store import SQLiteStore
from flopwatch.limits import DEFAULT_LIMITS, Limits
from tests.collector.collector_helpers import NOW


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "collector.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db_path, now_ns=lambda: NOW)
    yield s
    s.close()


@pytest.fixture
def make_ingestor() -> Callable[..., Ingestor]:
    def make(
        store: SQLiteStore,
        *,
        thresholds: Sequence[int] = (10**25, 10**26),
        basis: str = "upper",
        sinks: Sequence[Any] = (),
        tofu: bool = False,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Ingestor:
        return Ingestor(
            store,
            ThresholdPolicy(thresholds, basis),
            list(sinks),
            limits=limits,
            now_ns=lambda: NOW,
            enroll_on_first_use=tofu,
        )

    return make
