"""Refused runs, accounts and classes are counted once per value and logged rate-limited; the
operator's account map is checked before the agent starts."""

from __future__ import annotations

import logging

import pytest

from flopwatch.agent.attribution.labels import (
    WARN_PERIOD_S,
    AccountMap,
    Refusals,
    parse_account_map,
    run_refusal,
)
from flopwatch.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_value_is_counted_once_and_warnings_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = Refusals(clock)
    with caplog.at_level(logging.WARNING):
        for i in range(50):  # a hostile workload: a new bad run in every process
            refusals.refuse("run", f"bad\x1b{i}", "is bad", "slurm:c/1", "the job's own run")
            refusals.refuse("run", f"bad\x1b{i}", "is bad", "slurm:c/1", "the job's own run")
        refusals.refuse("account", "a\n", "is bad", "slurm:c/1", "no account")
        clock.now += WARN_PERIOD_S
        refusals.refuse("run", "again\x1b", "is bad", "slurm:c/1", "the job's own run")
    assert refusals.snapshot() == {"run": 51, "account": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3  # run, account, and run once the period passed
    assert "49 more refused since the last warning" in warnings[2]
    assert all("\x1b" not in w and "\n" not in w for w in warnings)


def test_the_account_map_maps_and_leaves_others_as_they_are() -> None:
    accounts = AccountMap({"physics": "acme", "chem": "acme"}, default="lab")
    assert accounts.of("physics") == "acme"
    assert accounts.of("bio") == "bio"
    assert accounts.of("") == ""  # the default is the attributor's to apply


@pytest.mark.parametrize(
    ("mapping", "default", "words"),
    [
        ({"physics": ""}, "", "--account-map account '' is empty"),
        ({"": "acme"}, "", "--account-map name '' is empty"),
        ({"physics": "ac\tme"}, "", "unprintable"),
        ({}, "lab\x00", "--default-account"),
    ],
)
def test_a_bad_account_map_stops_the_agent_with_the_reason(
    mapping: dict[str, str], default: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        AccountMap(mapping, default)


def test_account_map_text() -> None:
    assert parse_account_map("physics=acme, chem = acme,") == {"physics": "acme", "chem": "acme"}
    with pytest.raises(ConfigError, match="must be NAME=ACCOUNT"):
        parse_account_map("physics")
    with pytest.raises(ConfigError, match="maps 'a' twice"):
        parse_account_map("a=x,a=y")


def test_only_runs_the_agent_derived_may_take_a_job_ids_form() -> None:
    derived = "k8s:c1/ml/JobSet/llama"
    assert run_refusal(derived, "controller") is None
    assert run_refusal("slurm:c1/77", "array-job") is None
    for source in ("pod-label", "pod-annotation", "environment", "manual"):
        assert "job id" in (run_refusal(derived, source) or "")
    assert "longer than" in (run_refusal("k8s:c1/ml/JobSet/" + "x" * 300, "controller") or "")
