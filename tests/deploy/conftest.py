"""Fixtures for the deploy/ tests. Each test gets its own collector, database and ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flopwatch.v1 import collector_pb2
from tests.deploy.deploy_helpers import LiveCollector, feed_every_kind_of_record, started

# Low enough that the records fed below cross it (they are about 1e15 FLOPs each).
LOW_THRESHOLD = 10**12


@pytest.fixture
def live_collector(tmp_path: Path) -> Iterator[LiveCollector]:
    """A running collector that has been fed every kind of record (see deploy_helpers)."""
    for live in started(LiveCollector(tmp_path, thresholds=(LOW_THRESHOLD,))):
        outcome = feed_every_kind_of_record(live)
        assert outcome["accepted"] == [collector_pb2.ACK_STATUS_ACCEPTED] * 3
        assert outcome["duplicate"] == [collector_pb2.ACK_STATUS_DUPLICATE]
        assert outcome["rejected"] == ["chain_fork", "unknown_key"]
        yield live
