"""`scontrol show job -o ID` through a fake scontrol: fields read, user text that imitates a
field, unknown jobs, and the cost bounds (cache, timeout, retry while slurmctld is down)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flopwatch.agent.attribution.scontrol import Scontrol, SlurmJob, parse_job_line
from tests.agent.attribution.fake_scontrol import FakeScontrol, job_line


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reads_account_comment_wckey_and_array_job() -> None:
    line = job_line("124", account="physics", comment="llama 7b", wckey="*proj-x", array_job="123")
    assert parse_job_line(line, "124") == SlurmJob(
        account="physics", comment="llama 7b", wckey="proj-x", array_job="123"
    )


def test_null_fields_are_empty_and_a_jobs_own_array_id_is_no_array() -> None:
    line = job_line("123", array_job="123")
    assert parse_job_line(line, "123") == SlurmJob(account="physics")


def test_only_the_asked_jobs_line_counts() -> None:
    text = job_line("5", account="a") + job_line("6", account="b")
    assert parse_job_line(text, "6") == SlurmJob(account="b")
    assert parse_job_line(text, "7") is None


def test_a_job_name_imitating_the_account_field_makes_the_account_unknown() -> None:
    """The job's name is the user's text and is printed before Account=: a name such as
    'x Account=other' must not choose the account."""
    line = job_line("9", account="physics", name="x Nice=0 Account=other QOS=normal")
    job = parse_job_line(line, "9")
    assert job is not None
    assert (job.account, job.ambiguous) == ("", ("Account",))


def test_the_same_value_printed_twice_is_not_ambiguous() -> None:
    line = job_line("9", account="physics", name="x Account=physics")
    assert parse_job_line(line, "9") == SlurmJob(account="physics")


def test_answers_are_cached_and_unknown_jobs_are_answers(tmp_path: Path) -> None:
    fake, clock = FakeScontrol(tmp_path), Clock()
    fake.add("7", account="physics")
    s = Scontrol(str(fake.path), cache_s=300, clock=clock)
    assert s.job("7") == SlurmJob(account="physics")
    assert s.job("8") is None  # slurmctld does not know it: no failure
    assert s.job("7") == SlurmJob(account="physics")
    assert fake.calls() == [["show", "job", "-o", "7"], ["show", "job", "-o", "8"]]
    assert s.failures == 0
    clock.now += 301
    s.job("7")
    assert len(fake.calls()) == 3


def test_a_hung_slurmctld_costs_one_timeout_per_retry_period(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake, clock = FakeScontrol(tmp_path), Clock()
    fake.add("7")
    s = Scontrol(str(fake.path), timeout_s=0.3, retry_s=30, clock=clock)
    assert s.job("7") == SlurmJob(account="physics")
    clock.now += 301  # the answer expires ...
    fake.hang()  # ... and slurmctld stops answering
    with caplog.at_level(logging.WARNING):
        assert s.job("7") == SlurmJob(account="physics")  # the last answer is kept
        assert s.job("8") is None  # down: not even asked
        assert s.job("9") is None
    assert s.calls == 2 and s.failures == 1
    assert "no answer within 0.3 s" in caplog.text
    clock.now += 31
    (fake.dir / "hang").unlink()
    fake.add("8", account="chem")
    assert s.job("8") == SlurmJob(account="chem")


def test_a_missing_scontrol_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    s = Scontrol(str(tmp_path / "no-such-scontrol"), clock=Clock())
    assert s.job("7") is None
    assert s.failures == 1
