"""flopwatch/runs.py: workload classes, a job's own run, and which runs may be declared."""

import pytest

from flopwatch.runs import (
    NO_ACCOUNT_SHOWN,
    WorkloadClass,
    declared_run_problem,
    label_problem,
    run_of,
    shown_account,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, WorkloadClass.UNKNOWN),
        ("", WorkloadClass.UNKNOWN),
        ("unknown", WorkloadClass.UNKNOWN),
        ("pretraining", WorkloadClass.PRETRAINING),
        ("Fine-Tuning", WorkloadClass.FINE_TUNING),
        ("reinforcement_learning", WorkloadClass.REINFORCEMENT_LEARNING),
        (" synthetic-data ", WorkloadClass.SYNTHETIC_DATA),
        ("EVALUATION", WorkloadClass.EVALUATION),
        ("inference", WorkloadClass.INFERENCE),
    ],
)
def test_class_names_parse(text: str | None, expected: WorkloadClass) -> None:
    assert WorkloadClass.parse(text) is expected


def test_an_unknown_class_is_refused_with_the_choices_and_escaped() -> None:
    with pytest.raises(ValueError, match="one of unknown, pretraining") as e:
        WorkloadClass.parse("training\x1b[2J")
    assert "\x1b" not in str(e.value) and "\\x1b" in str(e.value)


def test_an_undeclared_run_is_the_job_itself() -> None:
    assert run_of("slurm:c/1", "") == "slurm:c/1"
    assert run_of("slurm:c/1", "llama") == "llama"


def test_no_account_is_shown_as_none() -> None:
    assert shown_account("") == NO_ACCOUNT_SHOWN == "(none)"
    assert shown_account("acme\n") == "acme\\n"


@pytest.mark.parametrize(
    ("run", "problem"),
    [
        ("", None),
        ("llama-405b pretrain v2", None),
        ("run\x00", "unprintable"),
        ("x" * 257, "longer than 256"),
        ("slurm:c/123", "form of a job id"),
        ("unattributed:c/node-1", "form of a job id"),
        ("team:llama/v2", None),  # a colon alone is not a job id's form
    ],
)
def test_which_runs_may_be_declared(run: str, problem: str | None) -> None:
    found = declared_run_problem(run, 256)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_labels_may_be_empty_but_follow_the_identifier_rule() -> None:
    assert label_problem("", 256) is None
    assert label_problem("acme corp", 256) is None
    assert "unprintable" in (label_problem("acme\u200b", 256) or "")
