import json
from pathlib import Path

import pytest

from flopwatch.cli.main import main
from tests.paths import H100_TRACE

TRACE_DIR = H100_TRACE


def test_replay_prints_jobs_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", str(TRACE_DIR / "trace.jsonl"), "--jobs", str(TRACE_DIR / "jobs.json")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["jobs"]) >= {"a1", "a2", "a3", "a4", "t1", "unattributed"}
    for figures in out["jobs"].values():
        assert isinstance(figures["flops"], int)
        assert figures["flops"] <= figures["flops_upper"]
    assert out["flop_model_version"] == "1"
    assert out["methods"] == ["gpm"]


def test_replay_without_jobs_puts_everything_unattributed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["replay", str(TRACE_DIR / "trace.jsonl")]) == 0
    assert list(json.loads(capsys.readouterr().out)["jobs"]) == ["unattributed"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ('{"job": "a"}', "expected a JSON list"),
        ('[{"job": "a", "pid": 1, "start": 5, "end": 1}]', "'end' must be after 'start'"),
        (
            '[{"job": "a", "pid": 1, "start": 1, "end": 5, "precision": "int4"}]',
            "unknown precision",
        ),
        ('[{"job": "a", "start": 1, "end": 5}]', "missing field 'pid'"),
    ],
)
def test_bad_jobs_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(content)
    assert main(["replay", str(TRACE_DIR / "trace.jsonl"), "--jobs", str(jobs)]) == 2
    assert message in capsys.readouterr().err


def test_missing_trace_is_a_runtime_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "nope.jsonl")]) == 3
    assert "cannot read trace" in capsys.readouterr().err
