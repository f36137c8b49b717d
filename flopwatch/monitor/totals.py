"""Totals per job, run, account and legal entity, and the regulator's thresholds on them. Pure.

A total adds up its jobs' figures from every counted record of every followed log: FLOPs (an
estimate and a sound upper bound, exact integers), GPU-interval contributions and the span of
time they cover. A threshold names a kind of total, a number of FLOPs and the figure compared
with it (the upper bound unless told otherwise: no crossing is missed). It fires once per
total, ever; the caller keeps the set of fired (threshold, kind, key). A threshold on an
account's or entity's rolling window (`account@30:1e25`: its last 30 UTC days,
flopwatch.monitor.windows) fires once per account or entity, ever, too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from flopwatch.errors import ConfigError
from flopwatch.monitor.events import KINDS, Alert
from flopwatch.monitor.labels import Labels
from flopwatch.verify.sums import Sum

BASES = ("upper", "estimate")
# FLOPs a threshold may name: above any physically reachable total, below SQLite's TEXT worries.
MAX_THRESHOLD_FLOPS = 10**40

TotalKey = tuple[str, str]  # (kind, key)


@dataclass
class Figures:
    flops_estimate: int = 0
    flops_upper: int = 0
    gpu_intervals: int = 0
    first_start_ns: int = 0  # 0: nothing yet
    last_end_ns: int = 0

    def add(self, s: Sum) -> None:
        self.flops_estimate += s[0]
        self.flops_upper += s[1]
        self.first_start_ns = s[2] if not self.first_start_ns else min(self.first_start_ns, s[2])
        self.last_end_ns = max(self.last_end_ns, s[3])
        self.gpu_intervals += s[4]


def add_record(
    totals: dict[TotalKey, Figures],
    jobs: Mapping[str, Sum],
    labels: Mapping[str, Labels],
) -> set[TotalKey]:
    """Add a record's per-job sums to every total they count for; the totals touched."""
    touched: set[TotalKey] = set()
    for job, s in jobs.items():
        lab = labels[job]
        for kind in KINDS:
            key = (kind, lab.key(kind))
            totals.setdefault(key, Figures()).add(s)
            touched.add(key)
    return touched


@dataclass(frozen=True)
class Threshold:
    kind: str
    flops: int
    basis: str = "upper"
    window: int = 0  # days of a rolling window (account and entity only); 0: all time

    @property
    def name(self) -> str:
        kind = f"{self.kind}@{self.window}" if self.window else self.kind
        return f"{kind}:{self.flops}:{self.basis}"

    def value(self, f: Figures) -> int:
        return f.flops_upper if self.basis == "upper" else f.flops_estimate


def parse_threshold(text: str, windows: tuple[int, ...] = ()) -> Threshold:
    """KIND[@DAYS]:FLOPS[:BASIS], e.g. "run:1e26", "entity:5e25:estimate" or "account@30:1e25"
    (an account's last 30 UTC days; DAYS one of `windows`)."""
    parts = text.strip().split(":")
    kind, _, days = parts[0].partition("@")
    if len(parts) not in (2, 3) or kind not in KINDS:
        raise ConfigError(
            f"threshold {text[:80]!r} is not KIND[@DAYS]:FLOPS[:BASIS] with KIND one of "
            + ", ".join(KINDS)
        )
    window = 0
    if days:
        if kind not in ("account", "entity") or not days.isdigit() or int(days) not in windows:
            raise ConfigError(
                f"threshold {text[:80]!r}: a window is account@DAYS or entity@DAYS with DAYS "
                f"one of the windows kept ({', '.join(map(str, windows)) or 'none'})"
            )
        window = int(days)
    basis = parts[2] if len(parts) == 3 else "upper"
    if basis not in BASES:
        raise ConfigError(f"threshold {text[:80]!r}: basis is 'upper' or 'estimate'")
    try:
        value = float(parts[1]) if any(c in parts[1] for c in ".eE") else int(parts[1])
    except ValueError:
        raise ConfigError(f"threshold {text[:80]!r}: {parts[1][:40]!r} is not a number") from None
    if not math.isfinite(value) or not 1 <= value <= MAX_THRESHOLD_FLOPS or value != int(value):
        raise ConfigError(f"threshold {text[:80]!r}: FLOPs must be a whole number >= 1")
    return Threshold(kind, int(value), basis, window)


def crossed(
    thresholds: Iterable[Threshold],
    totals: Mapping[TotalKey, Figures],
    touched: Iterable[TotalKey],
    fired: set[tuple[str, str, str]],
) -> list[Alert]:
    """Alerts for touched totals at or over a threshold that has not fired for them; each is
    added to `fired` (a threshold added later still fires on the total's next change)."""
    out = []
    by_kind: dict[str, list[Threshold]] = {}
    for t in thresholds:
        if not t.window:
            by_kind.setdefault(t.kind, []).append(t)
    for kind, key in sorted(touched):
        f = totals[(kind, key)]
        for t in by_kind.get(kind, ()):
            ident = (t.name, kind, key)
            if ident in fired or t.value(f) < t.flops:
                continue
            fired.add(ident)
            out.append(Alert(t.name, kind, key, t.value(f), f.flops_estimate, f.flops_upper))
    return out


def crossed_windows(
    thresholds: Iterable[Threshold],
    touched: Iterable[tuple[str, str]],
    value: Callable[[str, str, int], Figures],
    fired: set[tuple[str, str, str]],
) -> list[Alert]:
    """Alerts for rolling-window thresholds that touched (kind, key) totals reach: `value`
    gives a total's window of n days. Each fires once per key, ever (added to `fired`)."""
    out = []
    windowed = [t for t in thresholds if t.window]
    for kind, key in sorted(touched):
        for t in windowed:
            ident = (t.name, kind, key)
            if t.kind != kind or ident in fired:
                continue
            f = value(kind, key, t.window)
            if t.value(f) < t.flops:
                continue
            fired.add(ident)
            out.append(Alert(t.name, kind, key, t.value(f), f.flops_estimate, f.flops_upper))
    return out
