"""Thresholds by scope (pure): presets and custom lists, run and account alerts, forecasts, and
what an alert says (the log line and the webhook body are both `describe`)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from flopwatch.collector.alerts.events import describe
from flopwatch.collector.alerts.scopes import (
    DERIVED_RULE,
    EU_SOURCE,
    PRESETS,
    SB53_SOURCE,
    ScopedPolicy,
    parse_rules,
    time_to_next,
)
from flopwatch.collector.store.records import Rule, RunTotal, ScopeAlert
from flopwatch.errors import ConfigError
from flopwatch.lineage import Compute
from tests.nodes import NOW, S

HOUR = 3600 * S
DAY_S = 86400


def test_presets_name_their_source_and_what_they_count():
    derived, *eu = parse_rules("eu-ai-act")
    assert derived == DERIVED_RULE and "a third of its parent's" in derived.meaning
    assert [r.threshold for r in eu] == [10**23, 10**25]
    assert {r.name for r in eu} == {"eu-ai-act"} and {r.source for r in eu} == {EU_SOURCE}
    assert "general-purpose" in eu[0].meaning and "systemic risk" in eu[1].meaning
    assert "guidelines" in EU_SOURCE and "cumulative training compute" in EU_SOURCE
    [ca] = parse_rules("US-CA-SB53")  # any case
    assert (ca.name, ca.threshold, ca.source) == ("us-ca-sb53", 10**26, SB53_SOURCE)
    assert "fine-tuning and reinforcement learning included" in SB53_SOURCE
    assert set(PRESETS) == {"eu-ai-act", "us-ca-sb53"}


def test_custom_lists_mix_presets_and_numbers_sorted_each_threshold_once():
    rules = parse_rules(" us-ca-sb53, 5e24 ,eu-ai-act,1e23")
    assert [(r.name, r.threshold) for r in rules] == [
        ("eu-ai-act", 0),  # the derived-run rule
        ("eu-ai-act", 10**23),  # named by the preset and as a number: kept once, as named first
        ("custom", 5 * 10**24),
        ("eu-ai-act", 10**25),
        ("us-ca-sb53", 10**26),
    ]
    assert parse_rules("none") == parse_rules("") == ()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("eu-ai-acts", "neither a preset nor a number"),
        ("nan", "not a number of FLOPs"),
        ("1e40", "below 10\\^40"),
        ("-5", "positive whole number"),
        ("1.5", "positive whole number"),
        ("1e2000000", "below 10\\^40"),
        (",".join(["1"] * 65), "at most 64"),
    ],
)
def test_bad_lists_are_refused_with_the_reason(text, reason):
    with pytest.raises(ConfigError, match=reason):
        parse_rules(text)


def run(estimate: int, upper: int, span_ns: int = HOUR) -> RunTotal:
    """Run llama of account acme with these figures over `span_ns` of measurement."""
    return RunTotal("acme", "llama", 1, estimate, upper, NOW - span_ns, NOW, 1, 0, 0)


RULES = (
    Rule("custom", 1000, "a", "custom"),
    Rule("custom", 5000, "b", "custom"),
    Rule("custom", 10**6, "c", "custom"),
)


def test_a_run_crosses_the_thresholds_its_figure_reached_on_the_basis():
    upper = ScopedPolicy(RULES, forecast_days=0)
    alerts = upper.run_alerts(run(900, 5000), NOW)
    assert [(a.scope, a.kind, a.rule.threshold, a.value) for a in alerts] == [
        ("run", "crossed", 1000, 5000),
        ("run", "crossed", 5000, 5000),
    ]
    estimate = ScopedPolicy(RULES, basis="estimate", forecast_days=0)
    assert estimate.run_alerts(run(900, 5000), NOW) == []


def test_a_forecast_fires_for_thresholds_its_rate_reaches_within_the_horizon():
    # 3600 FLOPs over 1 h: 1 FLOP/s. 5000 is 1400 s away, 10^6 about 11.5 days away.
    policy = ScopedPolicy(RULES, forecast_days=14)
    alerts = policy.run_alerts(run(0, 3600), NOW)
    forecasts = [a for a in alerts if a.kind == "forecast"]
    assert [(a.rule.threshold, a.eta_s) for a in forecasts] == [(5000, 1400.0), (10**6, 996400.0)]
    assert {a.rate for a in forecasts} == {1.0}
    # A horizon of 10 days leaves out 10^6; none while the run's span is under the least.
    short = ScopedPolicy(RULES, forecast_days=10)
    assert [a.rule.threshold for a in short.run_alerts(run(0, 3600), NOW)][-1] == 5000
    young = ScopedPolicy(RULES, forecast_days=14, forecast_min_span_s=7200)
    assert all(a.kind == "crossed" for a in young.run_alerts(run(0, 3600), NOW))


def test_an_account_crosses_per_window():
    policy = ScopedPolicy(account_rules=RULES)
    alerts = policy.account_alerts("acme", [(30, 0, 900), (90, 0, 1200), (365, 0, 6000)], NOW)
    assert [(a.window_days, a.rule.threshold) for a in alerts] == [
        (90, 1000),
        (365, 1000),
        (365, 5000),
    ]
    assert {(a.scope, a.run) for a in alerts} == {("account", "")}
    assert len({a.key for a in alerts}) == 3  # each fires once, per window


def test_time_to_next_threshold():
    assert time_to_next(RULES, 2000, 2.0) == (RULES[1], 1500.0)
    assert time_to_next(RULES, 2000, None) == (RULES[1], None)
    assert time_to_next(RULES, 10**7, 1.0) is None


def test_an_alert_says_its_scope_figure_rule_and_threshold():
    [rule] = parse_rules("us-ca-sb53")
    crossed = ScopeAlert("run", "acme", "llama", 0, "crossed", rule, "upper", 10**26 + 1, NOW)
    doc = json.loads(json.dumps(describe(crossed)))
    assert doc["kind"] == "threshold_crossed"
    assert (doc["scope"], doc["account"], doc["run"], doc["window_days"]) == (
        "run",
        "acme",
        "llama",
        None,
    )
    assert (doc["figure"], doc["basis"]) == ("upper bound", "upper")
    assert (doc["rule"], doc["threshold_flops"], doc["flops"]) == (
        "us-ca-sb53",
        str(10**26),
        str(10**26 + 1),
    )
    assert doc["rule_source"] == SB53_SOURCE
    assert "run llama (account acme)" in doc["summary"] and "us-ca-sb53" in doc["summary"]

    eu = parse_rules("eu-ai-act")[2]  # 10^25 (after the derived rule and 10^23)
    window = ScopeAlert("account", "", "", 90, "crossed", eu, "estimate", 2 * 10**25, NOW)
    doc = describe(window)
    assert (doc["scope"], doc["run"], doc["window_days"], doc["figure"]) == (
        "account",
        None,
        90,
        "estimate",
    )
    assert "account (none) over the last 90 days" in str(doc["summary"])

    forecast = ScopeAlert(
        "run", "acme", "llama", 0, "forecast", eu, "upper", 10**24, NOW, 1e19, 7 * DAY_S
    )
    doc = describe(forecast)
    assert doc["kind"] == "threshold_forecast"
    assert (doc["rate_flops_per_second"], doc["expected_in_seconds"]) == (1e19, 7 * DAY_S)
    assert doc["expected_at"] == "2027-02-21T08:00:00+00:00"  # NOW + 7 days, UTC
    assert "in about 7.0 days" in str(doc["summary"])


def parent(estimate: int, upper: int) -> Callable[[str, str], Compute | None]:
    """Run llama derives from a parent of this cumulative compute; no other run has one."""
    return lambda account, r: (
        Compute(estimate, upper) if (account, r) == ("acme", "llama") else None
    )


def test_a_run_crosses_on_its_cumulative_compute_its_own_plus_its_ancestors():
    policy = ScopedPolicy(RULES, forecast_days=0)
    # Own 900 (upper), below every threshold; with its parent's 4500, 5400 crosses two.
    alerts = policy.run_alerts(run(800, 900), NOW, parent(4000, 4500))
    assert [(a.kind, a.rule.threshold, a.value) for a in alerts] == [
        ("crossed", 1000, 5400),
        ("crossed", 5000, 5400),
    ]
    assert policy.run_alerts(run(800, 900), NOW) == []  # no parent: its own figure only
    estimate = ScopedPolicy(RULES, basis="estimate", forecast_days=0)
    alerts = estimate.run_alerts(run(800, 900), NOW, parent(4000, 4500))
    assert [(a.rule.threshold, a.value) for a in alerts] == [(1000, 4800)]


def test_a_forecast_adds_the_runs_own_rate_to_its_cumulative_figure():
    # Own 3600 over 1 h: 1 FLOP/s (the parent's compute adds no speed); cumulative 4600.
    policy = ScopedPolicy(RULES, forecast_days=14)
    alerts = policy.run_alerts(run(0, 3600), NOW, parent(0, 1000))
    forecasts = [
        (a.rule.threshold, a.value, a.rate, a.eta_s) for a in alerts if a.kind == "forecast"
    ]
    assert forecasts == [(5000, 4600, 1.0, 400.0), (10**6, 4600, 1.0, 995400.0)]


def test_a_derived_run_above_a_third_of_its_parents_cumulative_compute_fires_the_eu_rule():
    policy = ScopedPolicy((DERIVED_RULE, *RULES), forecast_days=0)
    # Own 1001 (upper) against a parent of 3000: above a third.
    [derived] = [
        a for a in policy.run_alerts(run(0, 1001), NOW, parent(0, 3000)) if a.kind == "derived"
    ]
    assert (derived.scope, derived.run, derived.rule, derived.value) == (
        "run",
        "llama",
        DERIVED_RULE,
        1001,
    )
    assert derived.parent_value == 3000 and derived.key[4:] == ("derived", 0)
    # Exactly a third is not above it; no parent, no derived alert; not without the rule.
    assert all(a.kind != "derived" for a in policy.run_alerts(run(0, 1000), NOW, parent(0, 3000)))
    assert all(a.kind != "derived" for a in policy.run_alerts(run(0, 10**5), NOW))
    plain = ScopedPolicy(RULES, forecast_days=0)
    assert all(a.kind != "derived" for a in plain.run_alerts(run(0, 1001), NOW, parent(0, 3000)))
    # The rule is no FLOP threshold: it never crosses, for runs nor accounts, nor is NEXT.
    alone = ScopedPolicy((DERIVED_RULE,), account_rules=(DERIVED_RULE,), forecast_days=14)
    assert alone.run_alerts(run(0, 10**9), NOW) == []
    assert alone.account_alerts("acme", [(30, 0, 10**9)], NOW) == []
    assert time_to_next((DERIVED_RULE, *RULES), 0, 1.0) == (RULES[0], 1000.0)

    doc = describe(derived)
    assert (doc["kind"], doc["scope"], doc["run"], doc["figure"]) == (
        "derived_over_third",
        "run",
        "llama",
        "upper bound",
    )
    assert (doc["rule"], doc["rule_source"], doc["flops"]) == ("eu-ai-act", EU_SOURCE, "1001")
    assert doc["parent_cumulative_flops"] == "3000"
    assert "provider of the modified model" in str(doc["summary"])
