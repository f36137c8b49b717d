"""Agents killed with SIGKILL and restarted while they stream.

Each kill lands at a seeded moment, in terms of contributions committed, on a seeded agent,
which is restarted at once and measures on from the time it is back (as a real agent does). What
the agents signed is read from their own spools (each run fits in one segment, which the spool
never deletes): the collector must hold exactly those records, the totals must be their sums,
and the seconds a killed agent did not measure must be signed AGENT_RESTART gaps.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from tests.faults.evidence import (
    gap_spans,
    holes,
    measured_spans,
    merge,
    missing_sequences,
    unaccounted,
)
from tests.faults.fleet import contributions, job_totals
from tests.faults.lab import FaultLab
from tests.faults.processes import Progress, committed, jobs_json
from tests.faults.waits import wait_until

pytestmark = pytest.mark.faults

SEED = 7_1_3
KILLS = 4


@pytest.mark.parametrize("per_record", [1, 3], ids=["1-interval-records", "3-interval-records"])
def test_agents_sigkilled_and_restarted_lose_nothing_and_sign_the_downtime(
    make_lab: Callable[..., FaultLab], per_record: int
) -> None:
    """With several intervals per record, a kill also loses the rounds not yet signed: they
    lie in the AGENT_RESTART gap like the rest of the downtime."""
    lab = make_lab(nodes=3, intervals=100)
    total = contributions(r for records in lab.offline.values() for r in records)
    collector = lab.collector()
    collector.start()
    agents = lab.agents(collector.address, ["--intervals-per-record", str(per_record)])
    for a in agents:
        a.start()
    progress = Progress(collector.address)
    restarts: Counter[str] = Counter()
    try:
        rng = random.Random(SEED)
        for moment in sorted(rng.sample(range(total // 10, total * 6 // 10), KILLS)):
            wait_until(committed(progress, moment, agents), f"{moment} contributions committed")
            victim = rng.choice([a for a in agents if a.running])
            victim.kill()
            victim.start(resume=True)
            restarts[victim.node.node_id] += 1
        for a in agents:
            assert a.wait(timeout=120) == 0, a.tail()
        totals = jobs_json(collector.address)
    finally:
        progress.close()
    assert collector.stop() == 0

    spooled, held = lab.spooled(), lab.held(collector)
    # The collector holds every record the agents stored, once; the totals are their sums.
    assert sorted((r.key_id, r.sequence) for r in held) == sorted(
        (r.key_id, r.sequence) for r in spooled
    )
    assert totals == job_totals(spooled) == job_totals(held)
    assert all(not m for m in missing_sequences(held).values())
    # Every second between a node's first and last reading was measured or is a signed gap:
    # the holes in a restarted node's measured time are exactly its AGENT_RESTART gaps (one
    # per restart, or one for two restarts when it was killed again before signing a record).
    assert all(not h for h in unaccounted(held).values())
    measured, restart_gaps = measured_spans(held), gap_spans(held, "agent_restart")
    for node in lab.nodes:
        for gpu in node.backend(realtime=False).gpus():
            downtime = holes(measured[gpu.uuid])
            assert merge(restart_gaps.get(gpu.uuid, [])) == downtime
            assert (1 if restarts[node.node_id] else 0) <= len(downtime) <= restarts[node.node_id]
