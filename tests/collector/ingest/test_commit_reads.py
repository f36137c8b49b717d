"""What a commit reads back, on every backend: the run alerts are decided from the totals and
windows the metrics view reads after the commit (not read a second time), and from the lineage
the ingestor keeps (not the whole lineage table at every commit); the alerts still fire."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.alerts.scopes import ScopedPolicy, parse_rules
from flopwatch.collector.ingest.declared_parents import WorkloadParents
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.base import Store
from flopwatch.keys import SigningKey
from tests.collector.collector_helpers import RecordingSink, statuses
from tests.nodes import NOW, Node

COUNTED = ("lineage_parents", "runs_for", "account_windows", "run_page")


class Counting:
    """The store, counting the calls of `COUNTED`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name not in COUNTED:
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return found(*args, **kwargs)

        return counted


def test_a_commit_reads_its_runs_once_and_no_lineage(store: Store) -> None:
    node = Node("node-a", run="llama", account="acme")
    store.enroll(node.public_raw, node.node_id)
    counting = Counting(store)
    sink = RecordingSink()
    ingestor = Ingestor(
        counting,  # type: ignore[arg-type]
        ThresholdPolicy(()),
        [sink],
        now_ns=lambda: NOW,
        scoped=ScopedPolicy(run_rules=parse_rules("1"), account_rules=parse_rules("1")),
        account_windows=(90,),  # the records are 30 days before the clock
        parents=WorkloadParents(counting, SigningKey.generate(), now_ns=lambda: NOW),  # type: ignore[arg-type]
    )
    counting.calls.clear()  # what starting read
    batches = 3
    for _ in range(batches):
        assert statuses(ingestor.ingest([node.envelope()])) == ["accepted"]
    assert counting.calls["lineage_parents"] == 0
    assert counting.calls["runs_for"] == batches  # the metrics view's read, shared
    assert counting.calls["account_windows"] == batches
    assert counting.calls["run_page"] == 0
    kinds = sorted((a.scope, a.kind) for a in sink.events)
    assert kinds == [("account", "crossed"), ("run", "crossed")]
