"""Exactly-once totals (issue 4.3): SIGKILL the collector again and again while agents stream.

Three simulated nodes stream to a collector process on SQLite. The test kills it with SIGKILL at
moments drawn from a seeded generator, in terms of GPU-interval contributions committed, and
restarts it on the same port and database each time. Once every agent has drained, the totals
must equal, to the FLOP, what the agents signed: computed offline from the same readings, and
read back from the agents' spools; per job, and per run and account (one run spans two jobs on
every node). Each threshold alert is recorded exactly once.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable

import pytest

from flopwatch.collector.store.sqlite.store import SQLiteStore
from tests.faults.evidence import missing_sequences, unaccounted
from tests.faults.fleet import Totals, contributions, job_totals
from tests.faults.lab import FaultLab
from tests.faults.processes import Progress, accounts_json, committed, jobs_json, runs_json
from tests.faults.waits import wait_until

pytestmark = pytest.mark.faults

SEED = 4_3_2024
KILLS = 5
_ALERT = re.compile(r"FLOP threshold crossed: job=(\S+) threshold=(\d+)")


def thresholds_for(expected: Totals) -> tuple[int, int]:
    """Two thresholds the jobs cross part-way through the run: every job the low one, the
    biggest job the high one too (alerts compare the upper bound)."""
    uppers = sorted(t["flops_upper"] for t in expected.values())
    return uppers[0] // 3, uppers[-1] * 2 // 3


def test_collector_sigkilled_repeatedly_totals_equal_what_agents_signed(
    make_lab: Callable[..., FaultLab],
) -> None:
    lab = make_lab(nodes=3, intervals=240)
    expected = lab.expected
    thresholds = thresholds_for(expected)
    total = contributions(r for records in lab.offline.values() for r in records)

    collector = lab.collector(thresholds)
    collector.start()
    agents = lab.agents(collector.address)
    for a in agents:
        a.start()
    progress = Progress(collector.address)
    try:
        rng = random.Random(SEED)
        moments = sorted(rng.sample(range(total // 10, total * 7 // 10), KILLS))
        at_kill = []
        for moment in moments:
            at_kill.append(
                wait_until(committed(progress, moment, agents), f"{moment} contributions committed")
            )
            collector.kill()
            collector.start()
        # Every kill landed while records were still coming in.
        assert all(seen < total for seen in at_kill), (at_kill, total)
        for a in agents:
            assert a.wait(timeout=120) == 0, a.tail()
        totals = jobs_json(collector.address)
        runs, accounts = runs_json(collector.address), accounts_json(collector.address)
    finally:
        progress.close()
    assert collector.starts == KILLS + 1
    assert collector.stop() == 0

    assert totals == expected
    # Runs and accounts, added in the same transactions as the jobs: exactly once as well.
    assert set(runs) == {("acme", "model-7b"), ("", "eval-70b")}
    assert runs == lab.expected_runs
    assert accounts == lab.expected_accounts
    # The agents' own spools: every record they signed, and the same sums.
    spooled = lab.spooled()
    assert job_totals(spooled) == expected
    # The collector's evidence: each agent's whole chain, once, nothing unmeasured.
    held = lab.held(collector)
    assert job_totals(held) == expected
    assert sorted((r.key_id, r.sequence) for r in held) == sorted(
        (r.key_id, r.sequence) for r in spooled
    )
    assert all(not m for m in missing_sequences(held).values())
    assert all(not holes for holes in unaccounted(held).values())
    assert not any(r.gaps for r in held)

    # Alerts: recorded exactly once per (job, threshold) crossed, never notified twice.
    crossed = {(j, t) for j, v in expected.items() for t in thresholds if v["flops_upper"] >= t}
    assert len(crossed) > len(expected)  # some job crossed both thresholds
    store = SQLiteStore(collector.db)
    try:
        fired = [(a.job_id, a.threshold) for a in store.fired_alerts()]
    finally:
        store.close()
    assert sorted(fired) == sorted(crossed)
    notified = Counter((j, int(t)) for j, t in _ALERT.findall(collector.text()))
    assert set(notified) <= crossed
    assert max(notified.values()) == 1
