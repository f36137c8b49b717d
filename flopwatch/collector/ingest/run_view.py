"""The run and account totals the metrics endpoint shows, kept by the ingest thread.

Loaded once from the store (paged), then refreshed after each commit for the runs and accounts
the batch touched, with each touched account's trailing windows (`AccountWindows.days`) as of
the commit's UTC day. A window therefore moves on at a UTC day boundary only when its account
commits again: until then its series shows the sums as of its last commit. `flopwatch accounts`
computes windows when asked and is exact. Not thread-safe: the ingestor copies it under its lock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from flopwatch.collector.store.base import PageStore, TotalsStore
from flopwatch.collector.store.records import AccountTotal, RunTotal, WindowTotal
from flopwatch.verify.sums import DAY_NS

_PAGE = 1000


class _Store(PageStore, TotalsStore, Protocol):
    """What the view reads: pages of runs and accounts, and the totals of given runs."""


@dataclass(frozen=True)
class AccountView:
    """An account's totals with its trailing windows (in the configured order; () if none
    were computed yet)."""

    total: AccountTotal
    windows: tuple[WindowTotal, ...] = ()


class RunView:
    """Run and account totals by key; see the module docstring."""

    def __init__(self, store: _Store, windows: Sequence[int] = ()) -> None:
        self._store = store
        self._windows = tuple(windows)
        self.runs: dict[tuple[str, str], RunTotal] = {}
        self.accounts: dict[str, AccountView] = {}

    def load(self) -> None:
        """Read every run and account the store holds (windows come with later commits)."""
        after: tuple[str, str] = ("", "")  # no run: run names are never empty
        while True:
            runs = self._store.run_page(None, "", after, _PAGE)
            self.runs.update(((r.account, r.run), r) for r in runs)
            if len(runs) < _PAGE:
                break
            after = (runs[-1].account, runs[-1].run)
        cursor: str | None = None
        while True:
            accounts = self._store.account_page("", cursor, _PAGE)
            self.accounts.update((a.account, AccountView(a)) for a in accounts)
            if len(accounts) < _PAGE:
                break
            cursor = accounts[-1].account

    def read(
        self, runs: Collection[tuple[str, str]], now_ns: int
    ) -> tuple[dict[tuple[str, str], RunTotal], dict[str, AccountView]]:
        """Read the totals of `runs` ((account, run) pairs) and of their accounts, for
        `apply` (which the caller may do under its lock)."""
        fresh = self._store.runs_for(runs) if runs else {}
        touched = {account for account, _ in runs}
        windows: dict[str, tuple[WindowTotal, ...]] = {}
        if self._windows and touched:
            windows = self._store.account_windows(touched, now_ns // DAY_NS, self._windows)
        accounts: dict[str, AccountView] = {}
        for account in touched:
            page_a = self._store.account_page(account, None, 1)
            if page_a and page_a[0].account == account:
                accounts[account] = AccountView(page_a[0], windows.get(account, ()))
        return fresh, accounts

    def apply(
        self, runs: dict[tuple[str, str], RunTotal], accounts: dict[str, AccountView]
    ) -> None:
        self.runs.update(runs)
        self.accounts.update(accounts)
