"""Thresholds by scope, presets that name their source, and forecast alerts. Pure.

Scopes (what a threshold's figure is summed over):

  job       one scheduler job (`flopwatch.collector.alerts.events.ThresholdPolicy`, the
            `thresholds` option; unchanged)
  run       a run's cumulative compute, every job, node and cluster of it (`run_thresholds`;
            the scope the rules count in, and the default)
  account   an account over each trailing window of UTC days (`account_thresholds`, each of
            `account_windows`), so a run split into many names is still seen

A threshold list is a comma-separated mix of presets and numbers: "eu-ai-act,us-ca-sb53,5e24".
A preset's rules name their source and what they count (`PRESETS`); a bare number is rule
"custom". Figures as of 2026, not legal advice (docs/operator-guide.md, "Thresholds by scope").

`ScopeAlert` fires once per (scope, account, run or window, kind, threshold), ever: the policy
here proposes every alert whose condition holds, and the store records each key once and hands
back only the new ones (`Store.record_scope_alerts`), so restarts and several collectors on one
database never fire one twice.

Forecast (kind "forecast", run scope): the run's current rate is its compute over its last
`RUN_RATE_DAYS` (7) UTC days of measurement, divided by the time those days' records span
(first start to last end within them: idle hours inside count, so a run that paused runs
slower), once that span is at least `forecast_min_span_s` (a run's first minutes say little).
The store keeps per-run sums per UTC day for those days only (`Store.run_recent`). At that
rate, a threshold not yet reached and reached within `forecast_days` of now fires a forecast
alert, once per (run, threshold). A run that speeds up is forecast from its recent days, not
from its whole life; one that stopped keeps the rate of its last days until they age out of
the store (a run with nothing in its last `RUN_RATE_DAYS` days kept has no rate).

Cumulative (run scope): the rules count a model's training compute cumulatively, so a run's
thresholds compare its own compute plus its ancestors' (flopwatch.lineage: a derived run
inherits its parent's cumulative compute). `ParentCompute` answers, per run, its parent's
cumulative compute (None: a run with no parent; flopwatch.collector.lineage.parent_compute).
A forecast adds the run's own current rate to that cumulative figure: ancestors add compute,
not speed.

Derived runs (kind "derived", `DERIVED_RULE`, a member of the `eu-ai-act` preset): a run
declared derived from a parent whose own compute is above a third of the parent's cumulative
compute (EU AI Act guidelines: the modifier becomes the provider of the modified model) fires
once per run. The rule has no FLOP figure of its own (threshold 0 marks it; `flop_rules` leaves
it out wherever thresholds are compared with FLOPs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from flopwatch.collector.store.records import AlertBasis, JobDelta, Rule, RunTotal, ScopeAlert
from flopwatch.errors import ConfigError
from flopwatch.lineage import Compute

Basis = AlertBasis

# The largest FLOP threshold (every scope, jobs too: flopwatch.collector.config uses it):
# PostgreSQL keeps thresholds as NUMERIC(40, 0), and a threshold written as 1e2000000 would
# otherwise cost minutes to turn into an integer.
MAX_THRESHOLD_FLOPS = 10**40 - 1
DEFAULT_FORECAST_DAYS = 14.0  # EU: notify within two weeks of knowing a threshold will be met
DEFAULT_FORECAST_MIN_SPAN_S = 3600.0  # a run's rate is trusted after an hour of measurement
MAX_RULES = 64  # thresholds in one scope's list


EU_SOURCE = (
    "EU AI Act (Regulation (EU) 2024/1689) Art. 51 and the Commission's guidelines for "
    "general-purpose AI providers (July 2025, updated November 2025); cumulative training compute"
)
SB53_SOURCE = (
    "California SB 53 (2025), Transparency in Frontier Artificial Intelligence Act; "
    "cumulative operations, fine-tuning and reinforcement learning included"
)

# The EU rule for derived runs: threshold 0, a third of the parent's cumulative compute.
DERIVED_RULE = Rule(
    "eu-ai-act",
    0,
    "a derived run's own compute is above a third of its parent's cumulative compute: the "
    "modifier becomes the provider of the modified model",
    EU_SOURCE,
)

PRESETS: dict[str, tuple[Rule, ...]] = {
    "eu-ai-act": (
        DERIVED_RULE,
        Rule("eu-ai-act", 10**23, "indicates a general-purpose AI model", EU_SOURCE),
        Rule("eu-ai-act", 10**25, "presumes systemic risk (notify within two weeks)", EU_SOURCE),
    ),
    "us-ca-sb53": (Rule("us-ca-sb53", 10**26, "frontier model (10^26 operations)", SB53_SOURCE),),
}
DEFAULT_RULES = "eu-ai-act,us-ca-sb53"


def _number(text: str) -> int:
    shown = text[:40]
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"threshold {shown!r} is neither a preset nor a number") from None
    if not value.is_finite():
        raise ConfigError(f"threshold {shown!r} is not a number of FLOPs")
    if value.adjusted() >= len(str(MAX_THRESHOLD_FLOPS)) or value > MAX_THRESHOLD_FLOPS:
        raise ConfigError(f"threshold {shown!r} must be below 10^40 FLOPs")
    if value <= 0 or value != value.to_integral_value():
        raise ConfigError(f"threshold {shown!r} must be a positive whole number of FLOPs")
    return int(value)


def parse_rules(text: str) -> tuple[Rule, ...]:
    """'eu-ai-act,us-ca-sb53,5e24' -> rules sorted by threshold; '' or 'none': no rules.

    One threshold named by two rules is kept once, under the first named."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts == ["none"]:
        return ()
    if len(parts) > MAX_RULES:
        raise ConfigError(f"at most {MAX_RULES} thresholds per scope, got {len(parts)}")
    rules: dict[int, Rule] = {}
    for part in parts:
        preset = PRESETS.get(part.lower())
        found = preset or (Rule("custom", _number(part), "operator's threshold", "custom"),)
        for r in found:
            rules.setdefault(r.threshold, r)
    return tuple(sorted(rules.values(), key=lambda r: r.threshold))


def rules_text(rules: Sequence[Rule | int]) -> str:
    """Rules (or bare numbers) as a `parse_rules` text (the derived-run rule as its preset)."""
    return ",".join(
        "eu-ai-act" if r == DERIVED_RULE else str(r.threshold if isinstance(r, Rule) else r)
        for r in rules
    )


def flop_rules(rules: Sequence[Rule]) -> tuple[Rule, ...]:
    """The rules that are FLOP thresholds (all but `DERIVED_RULE`)."""
    return tuple(r for r in rules if r.threshold > 0)


# A run's parent's cumulative compute (flopwatch.lineage), or None where it has no parent.
ParentCompute = Callable[[str, str], Compute | None]


def _no_parent(account: str, run: str) -> Compute | None:
    return None


@dataclass(frozen=True)
class ScopedPolicy:
    """Thresholds per run and per account window, and the forecast horizon."""

    run_rules: tuple[Rule, ...] = ()
    account_rules: tuple[Rule, ...] = ()
    basis: Basis = "upper"
    forecast_days: float = DEFAULT_FORECAST_DAYS  # 0: no forecasts
    forecast_min_span_s: float = DEFAULT_FORECAST_MIN_SPAN_S

    def __post_init__(self) -> None:
        if not (0 <= self.forecast_days <= 3660 and math.isfinite(self.forecast_days)):
            raise ConfigError(f"forecast days must be 0 to 3660, got {self.forecast_days}")
        if not (0 <= self.forecast_min_span_s <= 365 * 86400):
            raise ConfigError("the forecast's least span must be 0 to 365 days")

    @property
    def active(self) -> bool:
        return bool(self.run_rules or flop_rules(self.account_rules))

    def figure(self, c: RunTotal | Compute | JobDelta) -> int:
        return c.flops_upper if self.basis == "upper" else c.flops_estimate

    def run_alerts(
        self,
        total: RunTotal,
        at_ns: int,
        parent_of: ParentCompute = _no_parent,
        recent: JobDelta | None = None,
    ) -> list[ScopeAlert]:
        """Every alert of a run whose condition holds now (the store keeps only the new ones):
        its cumulative figure (own plus `parent_of`'s) crossed or forecast to cross each FLOP
        threshold, and the derived-run rule. Forecasts take the run's current rate from
        `recent`, its sums over its last days (`Store.run_recent`); None: from its whole
        measured span (a caller without the days)."""
        account, run = total.account, total.run
        own = self.figure(total)
        parent = parent_of(account, run)
        inherited = 0 if parent is None else self.figure(parent)
        value = own + inherited
        rules = flop_rules(self.run_rules)
        out = [
            ScopeAlert("run", account, run, 0, "crossed", r, self.basis, value, at_ns)
            for r in rules
            if r.threshold <= value
        ]
        if parent is not None and DERIVED_RULE in self.run_rules and 3 * own > inherited:
            derived = ScopeAlert(
                "run", account, run, 0, "derived", DERIVED_RULE, self.basis, own, at_ns
            )
            out.append(dataclasses.replace(derived, parent_value=inherited))
        window = total if recent is None else recent
        rate = self.rate(self.figure(window), window.first_start_ns, window.last_end_ns)
        if rate is None or self.forecast_days <= 0:
            return out
        horizon_s = self.forecast_days * 86400
        for r in rules:
            if r.threshold <= value:
                continue
            eta = (r.threshold - value) / rate
            if eta <= horizon_s:
                out.append(
                    ScopeAlert(
                        "run", account, run, 0, "forecast", r, self.basis, value, at_ns, rate, eta
                    )
                )
        return out

    def rate(self, value: int, first_start_ns: int, last_end_ns: int) -> float | None:
        """FLOP/s over the measured span, or None while the span is shorter than the least."""
        span_s = (last_end_ns - first_start_ns) / 1e9
        if span_s <= 0 or span_s < self.forecast_min_span_s or value <= 0:
            return None
        return value / span_s

    def account_alerts(
        self, account: str, windows: Sequence[tuple[int, int, int]], at_ns: int
    ) -> list[ScopeAlert]:
        """Every account alert whose condition holds: `windows` as (days, estimate, upper)."""
        out = []
        for days, estimate, upper in windows:
            value = upper if self.basis == "upper" else estimate
            out += [
                ScopeAlert("account", account, "", days, "crossed", r, self.basis, value, at_ns)
                for r in flop_rules(self.account_rules)
                if r.threshold <= value
            ]
        return out


def time_to_next(
    rules: Sequence[Rule], value: int, rate: float | None
) -> tuple[Rule, float | None] | None:
    """The next threshold above `value` and the seconds to it at `rate` (None: no rate);
    None when every threshold is reached."""
    ahead = [r for r in flop_rules(rules) if r.threshold > value]
    if not ahead:
        return None
    nxt = ahead[0]
    return nxt, None if rate is None or rate <= 0 else (nxt.threshold - value) / rate
