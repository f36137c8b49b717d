"""The monitor: follows every configured log in turn, counting into one ledger, and reports.

`poll` runs one round over the logs; `catch_up` rounds until no log has entries left below its
kept checkpoint; `run` catches up, then polls every `poll_interval_s` until stopped. Problems
and alerts new in a commit go to the log (WARNING), the webhook, and the metrics. If the state
cannot be written, the in-memory ledger is rebuilt from the state before the next round, so
what was not committed is counted again, once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from flopwatch.errors import StoreError
from flopwatch.monitor.config import LogConfig, MonitorConfig
from flopwatch.monitor.coverage import Coverage
from flopwatch.monitor.events import Alert, Problem
from flopwatch.monitor.fetch import TileFetcher, client_tls, load_token
from flopwatch.monitor.follower import Fetcher, LogFollower
from flopwatch.monitor.ledger import Batch, Ledger
from flopwatch.monitor.metrics import Snapshot
from flopwatch.monitor.state import MonitorState
from flopwatch.monitor.totals import Figures, TotalKey
from flopwatch.monitor.webhook import MonitorWebhook
from flopwatch.monitor.windows import window
from flopwatch.verify.sums import DAY_NS

log = logging.getLogger(__name__)


def make_fetcher(config: LogConfig, monitor: MonitorConfig) -> TileFetcher:
    token = None if config.token_file is None else load_token(config.token_file)
    tls = None
    if config.url.startswith("https:"):
        tls = client_tls(config.ca_file, config.client_cert, config.client_key)
    elif token is not None:
        log.warning("log %s: tiles over plain HTTP, the bearer token travels in clear", config.name)
    return TileFetcher(config.url, token=token, tls=tls, limits=monitor.limits.fetch)


class Monitor:
    def __init__(
        self,
        config: MonitorConfig,
        *,
        fetchers: Mapping[str, Fetcher] | None = None,
        webhook: MonitorWebhook | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.state = MonitorState(config.state)
        self._clock_ns = clock_ns
        self._webhook = webhook
        self._lock = threading.Lock()
        self._published: dict[TotalKey, Figures] = {}
        self._published_days: dict[TotalKey, dict[int, Figures]] = {}  # rolling windows' buckets
        self.alerts_fired = 0
        self.ledger = self._load_ledger()
        self._fetchers: dict[str, Fetcher] = dict(fetchers or {})
        self.followers = []
        try:
            for lc in config.logs:
                fetcher = self._fetchers.get(lc.name)
                if fetcher is None:
                    fetcher = self._fetchers[lc.name] = make_fetcher(lc, config)
                self.followers.append(
                    LogFollower(
                        lc,
                        fetcher,
                        state=self.state,
                        ledger=lambda: self.ledger,
                        notify=self._notify,
                        clock_ns=clock_ns,
                        limits=config.limits,
                    )
                )
        except BaseException:
            self.close()
            raise

    def _load_ledger(self) -> Ledger:
        totals = self.state.totals()
        days = self.state.days()
        with self._lock:
            self._published = {k: replace(f) for k, f in totals.items() if k[0] != "job"}
            self._published_days = {k: dict(d) for k, d in days.items()}
        return Ledger(
            lookup=self.state.lookup,
            coverage=Coverage(self.state.coverage()),
            totals=totals,
            fired=self.state.fired(),
            thresholds=self.config.thresholds,
            entities=self.config.entities,
            days=days,
            windows=self.config.windows,
            clock_ns=self._clock_ns,
        )

    def close(self) -> None:
        for f in self._fetchers.values():
            close = getattr(f, "close", None)
            if close is not None:
                close()
        self.state.close()

    # -- reporting ---------------------------------------------------------------------------
    def _notify(self, problems: list[Problem], alerts: list[Alert], batch: Batch) -> None:
        with self._lock:
            for key, f in batch.totals.items():
                if key[0] != "job":
                    self._published[key] = replace(f)
            for total in {(kind, name) for kind, name, _ in batch.days}:
                buckets = self.ledger.days.get(total, {})
                self._published_days[total] = {d: replace(f) for d, f in buckets.items()}
            self.alerts_fired += len(alerts)
        for p in problems:
            log.warning("log %s: %s (%s): %s", p.log, p.reason, p.subject, p.detail)
            if self._webhook is not None:
                self._webhook.emit(p.describe())
        for a in alerts:
            log.warning(
                "THRESHOLD %s crossed by %s %r: %d FLOPs (estimate %d, upper bound %d)",
                a.threshold,
                a.kind,
                a.key,
                a.value,
                a.flops_estimate,
                a.flops_upper,
            )
            if self._webhook is not None:
                self._webhook.emit(a.describe())

    def snapshot(self) -> Snapshot:
        today = self._clock_ns() // DAY_NS
        days = self.config.windows.days
        with self._lock:
            totals = dict(self._published)
            fired = self.alerts_fired
            windows = {
                k: tuple(window(buckets, today, n) for n in days)
                for k, buckets in self._published_days.items()
            }
        return Snapshot(
            windows=windows,
            window_days=days,
            logs={
                f.name: replace(f.stats, problems=dict(f.stats.problems)) for f in self.followers
            },
            totals=totals,
            alerts_fired=fired,
            webhook_failed=0 if self._webhook is None else self._webhook.stats().failed,
        )

    # -- following ---------------------------------------------------------------------------
    def poll(self) -> bool:
        """One round over every log; True if some log has entries left to count."""
        behind = False
        for f in self.followers:
            try:
                behind |= f.poll()
            except StoreError as e:
                log.error("monitor state: %s; reloading it before the next round", e)
                self.ledger = self._load_ledger()
                raise
        return behind

    def catch_up(self, max_rounds: int | None = None) -> int:
        """Poll until no log is behind its kept checkpoint; the rounds it took."""
        rounds = 0
        while max_rounds is None or rounds < max_rounds:
            rounds += 1
            if not self.poll():
                break
        return rounds

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(StoreError):  # logged; the ledger was reloaded
                self.catch_up()
            stop.wait(self.config.poll_interval_s)
