"""The statement states the run, account and class the job's records were signed with, and
refuses a job whose records name more than one (the predicate states one)."""

from __future__ import annotations

import json

import pytest

from flopwatch.collector.job_statement import build_statement
from flopwatch.errors import ConfigError
from flopwatch.intoto.dsse_json import envelope_from_json
from flopwatch.runs import RUN_FROM_MANUAL, WorkloadClass
from tests.intoto.statements import COLLECTOR, ORIGIN
from tests.nodes import NOW, Node
from tests.verify.bundle_builder import BundleBuilder

LABELS = {
    "run": "llm-7b",
    "account": "acme",
    "workload_class": WorkloadClass.FINE_TUNING,
    "run_source": RUN_FROM_MANUAL,
}


def _statement(*label_sets: dict[str, object]) -> bytes:
    builder = BundleBuilder(COLLECTOR, now_ns=NOW)
    node = Node("a")
    builder.enroll(node.node_id, node.public_raw)
    builder.append([node.envelope(labels=labels) for labels in label_sets])
    bundle = builder.bundle(node.job)
    return build_statement(bundle, bundle.to_bytes(), COLLECTOR, origin=ORIGIN, bundle_name="a")


def test_the_predicate_states_the_signed_run_account_and_class() -> None:
    statement = _statement(LABELS, LABELS)
    predicate = json.loads(envelope_from_json(statement, 1 << 20).payload)["predicate"]
    assert (predicate["run"], predicate["account"], predicate["workloadClass"]) == (
        "llm-7b",
        "acme",
        "fine-tuning",
    )


def test_a_job_whose_records_name_two_runs_gets_no_statement() -> None:
    with pytest.raises(ConfigError, match="2 runs, accounts or classes"):
        _statement(LABELS, {**LABELS, "run": "llm-7b-restart"})
