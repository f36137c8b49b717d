"""Rolling windows per account and per entity: UTC-day buckets summed over trailing windows of
days, as the collector keeps them (`flopwatch accounts`, `--account-windows`), so compute split
over many runs (or many job names) is still seen. Pure.

A record's compute counts for the UTC day its intervals end in (`flopwatch.verify.sums.utc_day`,
the record's own time, not when the monitor counted it), per account ("<log>:<account>") and per
entity (the regulator's mapping). A window of N days is the N UTC days through `today` (the
monitor's clock), today included. Days older than `kept_days` before today are not kept: no
window reaches them (a record of such a day adds to the all-time totals only); nor are days more
than `kept_days` ahead of today (`Windows.last_kept`). The buckets are
committed with each log's position, like every other total, so a restart counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flopwatch.errors import ConfigError
from flopwatch.monitor.labels import Entities
from flopwatch.monitor.totals import Figures
from flopwatch.verify.sums import DAY_NS, Sum

WINDOW_KINDS = ("account", "entity")
MAX_DAYS_KEPT = 3660  # ten years of days: a bound on the state's rows per account

DayKey = tuple[str, str, int]  # (kind, key, UTC day)


@dataclass(frozen=True)
class Windows:
    """Which trailing windows (days) the monitor sums, and how many UTC days it keeps."""

    days: tuple[int, ...] = (30, 90, 365)
    kept_days: int = 400

    def __post_init__(self) -> None:
        if not self.days or any(d < 1 for d in self.days):
            raise ConfigError(f"account windows must be positive numbers of days, got {self.days}")
        if not max(self.days) <= self.kept_days <= MAX_DAYS_KEPT:
            raise ConfigError(
                f"window days kept ({self.kept_days}) must be at least the longest window "
                f"({max(self.days)}) and at most {MAX_DAYS_KEPT}"
            )

    def first_kept(self, now_ns: int) -> int:
        """The oldest UTC day kept at `now_ns`."""
        return now_ns // DAY_NS - self.kept_days + 1

    def last_kept(self, now_ns: int) -> int:
        """The latest UTC day kept at `now_ns`: a record dated further ahead (a node clock far
        off, or a hostile log) adds no bucket, so each total holds at most 2 * kept_days."""
        return now_ns // DAY_NS + self.kept_days


def day_keys(
    account_days: Mapping[tuple[str, int], Sum], log: str, entities: Entities
) -> Iterable[tuple[DayKey, Sum]]:
    """A record's (account, day) sums as the buckets they add to: its account's and entity's."""
    for (account, day), s in account_days.items():
        key = f"{log}:{account}"
        yield ("account", key, day), s
        yield ("entity", entities.of(key), day), s


def window(days: Mapping[int, Figures], today: int, n: int) -> Figures:
    """The sum of the buckets of the `n` UTC days through `today`."""
    out = Figures()
    for day, f in days.items():
        if today - n < day <= today:
            out.flops_estimate += f.flops_estimate
            out.flops_upper += f.flops_upper
            out.gpu_intervals += f.gpu_intervals
            if f.first_start_ns:
                out.first_start_ns = (
                    f.first_start_ns
                    if not out.first_start_ns
                    else min(out.first_start_ns, f.first_start_ns)
                )
            out.last_end_ns = max(out.last_end_ns, f.last_end_ns)
    return out


def by_total(buckets: Mapping[DayKey, Figures]) -> dict[tuple[str, str], dict[int, Figures]]:
    """Buckets grouped per (kind, key)."""
    out: dict[tuple[str, str], dict[int, Figures]] = {}
    for (kind, key, day), f in buckets.items():
        out.setdefault((kind, key), {})[day] = f
    return out


def parse_windows(text: str) -> tuple[int, ...]:
    """'30,90,365' -> (30, 90, 365): days, ascending, each once."""
    try:
        days = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        days = []
    if not days or days[0] < 1 or days[-1] > MAX_DAYS_KEPT:
        raise ConfigError(
            f"--account-windows takes days such as 30,90,365 (1 to {MAX_DAYS_KEPT}), got {text!r}"
        )
    return tuple(days)
