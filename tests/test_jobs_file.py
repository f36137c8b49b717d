"""JOBS.json (flopwatch/jobs_file.py): the optional run, account and class of each entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flopwatch.errors import ConfigError
from flopwatch.jobs_file import load_jobs
from flopwatch.runs import WorkloadClass

ENTRY = {"job": "a1", "pid": 7, "start": 10, "end": 20}


def write(tmp_path: Path, *entries: dict[str, object]) -> Path:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(list(entries)))
    return path


def test_run_account_and_class_are_optional(tmp_path: Path) -> None:
    labelled = ENTRY | {"run": "llama-7b", "account": "acme", "class": "pretraining"}
    plain, declared = load_jobs(write(tmp_path, ENTRY, labelled))
    assert (plain.run, plain.account, plain.workload_class, plain.run_source) == (
        "",
        "",
        WorkloadClass.UNKNOWN,
        "",
    )
    assert (declared.run, declared.account, declared.workload_class, declared.run_source) == (
        "llama-7b",
        "acme",
        WorkloadClass.PRETRAINING,
        "jobs-file",
    )


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"run": 5}, "'run' must be a string"),
        ({"run": "r\u202e"}, "'run' holds the unprintable"),
        ({"run": "manual:c/x"}, "'run' has the form of a job id"),
        ({"account": "a" * 257}, "'account' is longer than 256"),
        ({"class": "training"}, "unknown workload class 'training'"),
        ({"class": ["pretraining"]}, "'class' must be a string"),
        ({"team": "x"}, "unknown field"),
    ],
)
def test_bad_labels_refuse_the_file_with_the_entry_and_reason(
    tmp_path: Path, extra: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError, match=r"jobs\[1\]") as e:
        load_jobs(write(tmp_path, ENTRY, ENTRY | extra))
    assert words in str(e.value)


def test_a_jobs_parent_run_is_read_and_needs_a_run(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    item = {"job": "g1", "pid": 1, "start": 1, "end": 2, "run": "ft", "parent": "llama"}
    path.write_text(json.dumps([item]))
    [w] = load_jobs(path)
    assert (w.run, w.run_parent) == ("ft", "llama")
    path.write_text(json.dumps([{**item, "run": ""}]))
    with pytest.raises(ConfigError, match="'parent' needs a 'run'"):
        load_jobs(path)
    path.write_text(json.dumps([{**item, "parent": "l\u202ea"}]))
    with pytest.raises(ConfigError, match="'parent'"):
        load_jobs(path)
