"""Parent runs declared by the workload, through ingest, on every backend: records naming a
parent declare the run's lineage through `flopwatch runs declare`'s code (collector-signed,
logged, marked the workload's); refusals (unknown parent, self, cycle, another parent) are
counted by reason and logged once, and never cost a record its compute; an unknown parent is
declared once its records arrive; the operator's declaration wins; the derived-run alert is
decided when a lineage is declared, by the workload or by the operator."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from flopwatch.collector import lineage as collector_lineage
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.alerts.scopes import ScopedPolicy, parse_rules
from flopwatch.collector.ingest.declared_parents import WorkloadParents
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.metrics import register_metrics
from flopwatch.collector.store.base import Store
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey
from flopwatch.lineage import LocalParent
from flopwatch.runs import RUN_FROM_ARRAY_JOB, WorkloadClass
from flopwatch.statements import DECLARED_BY_OPERATOR, DECLARED_BY_WORKLOAD, RunDeclaration
from tests.collector.collector_helpers import RecordingSink, runs_of, statuses
from tests.nodes import NOW, Node, expected_runs

LLAMA = ("acme", "llama")
TUNE = ("acme", "llama-ft")
FT = WorkloadClass.FINE_TUNING


class Clock:
    """Monotonic seconds for the retry period, moved by the test."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def nodes() -> tuple[Node, Node]:
    """llama (pretraining) on node-a; llama-ft (fine-tuning) on node-b, naming llama its
    parent."""
    base = Node("node-a", job="slurm:c/1", run="llama", account="acme")
    base.labels["workload_class"] = WorkloadClass.PRETRAINING
    tune = Node("node-b", job="slurm:c/2", run="llama-ft", account="acme")
    tune.labels.update(workload_class=FT, run_parent="llama")
    return base, tune


def ingestor(
    store: Store,
    key: SigningKey,
    enroll: Sequence[Node] = (),
    *,
    sinks: Sequence[Any] = (),
    clock: Clock | None = None,
    rules: str = "",
) -> Ingestor:
    for n in enroll:
        store.enroll(n.public_raw, n.node_id)
    return Ingestor(
        store,
        ThresholdPolicy(()),
        list(sinks),
        now_ns=lambda: NOW,
        scoped=ScopedPolicy(run_rules=parse_rules(rules), forecast_days=0),
        parents=WorkloadParents(store, key, now_ns=lambda: NOW, clock=clock or Clock()),
    )


def declaration(store: Store, key: SigningKey) -> RunDeclaration:
    leaf = store.declaration_leaf(TUNE)
    assert leaf is not None
    [entry] = store.log_entries(leaf, leaf + 1)
    return RunDeclaration.verified(Envelope.from_bytes(entry), key.public_key)


def test_records_naming_a_parent_declare_the_lineage_signed_logged_and_the_workloads(store):
    key = SigningKey.generate()
    base, tune = nodes()
    ingest = ingestor(store, key, (base, tune))
    assert set(statuses(ingest.ingest(base.envelopes(2)))) == {"accepted"}
    size = store.log_size()
    first = tune.envelope()
    assert statuses(ingest.ingest([first, *tune.envelopes(2)])) == ["accepted"] * 3

    assert store.lineage_parents() == {TUNE: LocalParent(LLAMA)}
    decl = declaration(store, key)  # signed by the collector key, a leaf of its log
    assert (decl.account, decl.run, decl.parent_account, decl.parent_run) == (*TUNE, *LLAMA)
    assert decl.workload_class == "fine-tuning"
    assert decl.declared_by == DECLARED_BY_WORKLOAD
    # It names the record that named the parent: the first of the batch.
    assert (decl.record_key_id, decl.record_sequence) == (tune.key_id, 1)
    by = collector_lineage.provenance(store, TUNE)  # what `flopwatch runs lineage` shows
    assert by is not None
    assert (by.declared_by, by.record_key_id, by.record_sequence) == ("workload", tune.key_id, 1)
    assert by.leaf_index == store.declaration_leaf(TUNE)
    assert store.log_size() == size + 3 + 1  # the three records and the declaration
    view = collector_lineage.lineage(store, TUNE)
    assert view.inherited == collector_lineage.own_compute(store, LLAMA)
    assert ingest.snapshot().lineage_declared == 1
    # More records naming the same parent: nothing more is declared or logged.
    size = store.log_size()
    assert statuses(ingest.ingest(tune.envelopes(2))) == ["accepted"] * 2
    assert store.log_size() == size + 2 and ingest.snapshot().lineage_declared == 1


def test_an_unknown_parent_is_refused_the_compute_kept_and_declared_once_it_arrives(
    store, caplog: pytest.LogCaptureFixture
):
    key = SigningKey.generate()
    base, tune = nodes()
    clock = Clock()
    ingest = ingestor(store, key, (base, tune), clock=clock)
    tuned = tune.envelopes(3)
    with caplog.at_level(logging.WARNING):
        assert statuses(ingest.ingest(tuned[:1])) == ["accepted"]
        assert statuses(ingest.ingest(tuned[1:2])) == ["accepted"]  # within the retry period
    assert store.lineage_parents() == {}
    assert runs_of(store)[TUNE] == expected_runs([tune], tuned[:2])[TUNE]  # compute counted
    assert ingest.snapshot().lineage_refused["unknown_parent"] == 1
    assert caplog.text.count("not declared (unknown_parent)") == 1
    # The parent's records arrive: the pending run is declared, though none of its own came.
    based = base.envelopes(1)
    assert statuses(ingest.ingest(based)) == ["accepted"]
    assert store.lineage_parents() == {TUNE: LocalParent(LLAMA)}
    assert ingest.snapshot().lineage_declared == 1
    assert runs_of(store) == expected_runs([base, tune], [*based, *tuned[:2]])


def test_a_pending_run_is_tried_again_on_its_own_records_after_the_retry_period(store):
    """The parent's records reach the database some other way (another collector sharing it,
    here: the store directly); the run's own records try again once the period passed."""
    key = SigningKey.generate()
    base, tune = nodes()
    clock = Clock()
    ingest = ingestor(store, key, (base, tune), clock=clock)
    tuned = tune.envelopes(3)
    assert statuses(ingest.ingest(tuned[:1])) == ["accepted"]
    other = ingestor(store, SigningKey.generate())  # another collector on the same database
    assert statuses(other.ingest(base.envelopes(1))) == ["accepted"]
    assert statuses(ingest.ingest(tuned[1:2])) == ["accepted"]
    assert store.lineage_parents() == {}  # not tried again yet
    clock.t += 60.0
    assert statuses(ingest.ingest(tuned[2:])) == ["accepted"]
    assert store.lineage_parents() == {TUNE: LocalParent(LLAMA)}


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"run_parent": "llama-ft"}, "self"),
        # A run the agent derived (an array job's) cannot be declared derived.
        ({"run": "slurm:c/9", "run_source": RUN_FROM_ARRAY_JOB}, "invalid"),
    ],
    ids=["itself", "an-array-jobs-run"],
)
def test_a_parent_refused_for_good_is_counted_logged_once_and_the_compute_kept(
    store, caplog: pytest.LogCaptureFixture, labels: dict[str, str], reason: str
):
    key = SigningKey.generate()
    base, tune = nodes()
    tune.labels.update(labels)
    run = ("acme", str(tune.labels["run"]))
    ingest = ingestor(store, key, (base, tune))
    ingest.ingest(base.envelopes(1))
    tuned = tune.envelopes(3)
    with caplog.at_level(logging.WARNING):
        for env in tuned:
            assert statuses(ingest.ingest([env])) == ["accepted"]
    assert store.lineage_parents() == {}
    assert runs_of(store)[run] == expected_runs([tune], tuned)[run]
    refused = ingest.snapshot().lineage_refused
    assert refused[reason] == 1 and sum(refused.values()) == 1
    assert caplog.text.count(f"not declared ({reason})") == 1


def test_a_cycle_is_refused_with_its_reason(store):
    key = SigningKey.generate()
    base, tune = nodes()
    tune.labels["run_parent"] = ""
    ingest = ingestor(store, key, (base, tune))
    ingest.ingest([*base.envelopes(1), *tune.envelopes(1)])
    # The operator declares llama derived from llama-ft; llama-ft's records then name llama.
    collector_lineage.declare(store, key, LLAMA, FT, NOW, parent=TUNE)
    tune.labels["run_parent"] = "llama"
    assert statuses(ingest.ingest(tune.envelopes(1))) == ["accepted"]
    assert store.lineage_parents() == {LLAMA: LocalParent(TUNE)}
    assert ingest.snapshot().lineage_refused["cycle"] == 1


def test_the_operators_declaration_wins_and_another_parent_is_refused(
    store, caplog: pytest.LogCaptureFixture
):
    key = SigningKey.generate()
    base, tune = nodes()
    other = Node("node-c", job="slurm:c/3", run="mistral", account="acme")
    store.enroll(other.public_raw, other.node_id)
    ingest = ingestor(store, key, (base, tune))
    ingest.ingest([*base.envelopes(1), *other.envelopes(1)])
    # The operator declares llama-ft derived from mistral, after the ingestor started.
    collector_lineage.declare(store, key, TUNE, FT, NOW, parent=("acme", "mistral"))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert statuses(ingest.ingest(tune.envelopes(1))) == ["accepted"]
    assert store.lineage_parents() == {TUNE: LocalParent(("acme", "mistral"))}
    assert declaration(store, key).declared_by == DECLARED_BY_OPERATOR
    by = collector_lineage.provenance(store, TUNE)
    assert by is not None and (by.declared_by, by.record_key_id) == ("operator", "")
    assert ingest.snapshot().lineage_refused["other_parent"] == 1
    assert caplog.text.count("not declared (other_parent)") == 1
    assert "derives from run 'mistral'" in caplog.text


def test_the_refusals_and_declarations_are_metrics_with_a_bounded_reason(store):
    key = SigningKey.generate()
    base, tune = nodes()
    ingest = ingestor(store, key, (base, tune))
    ingest.ingest(tune.envelopes(1))  # unknown parent
    ingest.ingest(base.envelopes(1))  # now declared
    registry = CollectorRegistry()
    register_metrics(registry, ingest.snapshot, ())
    assert registry.get_sample_value("flopwatch_workload_lineage_declared_total") == 1
    value = registry.get_sample_value
    assert value("flopwatch_workload_lineage_refused_total", {"reason": "unknown_parent"}) == 1
    assert value("flopwatch_workload_lineage_refused_total", {"reason": "cycle"}) == 0


def test_the_derived_alert_is_decided_when_the_workload_declares_the_lineage(store):
    key = SigningKey.generate()
    base, tune = nodes()
    sink = RecordingSink()
    ingest = ingestor(store, key, (base, tune), sinks=[sink], rules="eu-ai-act")
    based, tuned = base.envelopes(1), tune.envelopes(1)
    ingest.ingest(tuned)  # unknown parent yet: no lineage, no derived alert
    assert sink.events == []
    ingest.ingest(based)  # the parent arrives: declared now, and decided now
    [derived] = sink.events
    own = expected_runs([tune], tuned)[TUNE][1]
    parent = expected_runs([base], based)[LLAMA][1]
    assert 3 * own > parent  # the test data: above a third
    assert (derived.run, derived.kind, derived.value, derived.parent_value) == (
        "llama-ft",
        "derived",
        own,
        parent,
    )
    ingest.ingest(tune.envelopes(1))
    assert len(sink.events) == 1  # once


def test_the_derived_alert_is_decided_when_the_operator_declares_the_lineage(store):
    key = SigningKey.generate()
    base, tune = nodes()
    tune.labels["run_parent"] = ""
    sink = RecordingSink()
    ingest = ingestor(store, key, (base, tune), sinks=[sink], rules="eu-ai-act")
    ingest.ingest([*base.envelopes(1), *tune.envelopes(1)])
    ingest.check_lineage()
    assert sink.events == []
    # `flopwatch runs declare`, in another process; the collector's next look decides it.
    collector_lineage.declare(store, key, TUNE, FT, NOW, parent=LLAMA)
    ingest.check_lineage()
    assert [(e.run, e.kind) for e in sink.events] == [("llama-ft", "derived")]
    ingest.check_lineage()
    ingest.ingest(tune.envelopes(1))
    assert len(sink.events) == 1  # once


def test_past_the_pending_bound_the_longest_waiting_run_is_tried_on_its_next_records(store):
    key = SigningKey.generate()
    base, tune = nodes()
    rl = Node("node-c", job="slurm:c/3", run="llama-rl", account="acme")
    rl.labels.update(workload_class=WorkloadClass.REINFORCEMENT_LEARNING, run_parent="llama")
    for n in (base, tune, rl):
        store.enroll(n.public_raw, n.node_id)
    ingest = Ingestor(
        store,
        ThresholdPolicy(()),
        [],
        now_ns=lambda: NOW,
        parents=WorkloadParents(store, key, now_ns=lambda: NOW, max_pending=1),
    )
    ingest.ingest(tune.envelopes(1))  # pending
    ingest.ingest(rl.envelopes(1))  # pending; llama-ft let go
    ingest.ingest(base.envelopes(1))  # the parent arrives: the pending run is declared
    assert store.lineage_parents() == {("acme", "llama-rl"): LocalParent(LLAMA)}
    ingest.ingest(tune.envelopes(1))  # llama-ft's next records try again
    assert store.lineage_parents()[TUNE] == LocalParent(LLAMA)
