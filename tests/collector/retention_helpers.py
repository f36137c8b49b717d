"""A store filled for the retention tests: one job over long ago, one still running.

Times (collector clock and intervals): job 1 on node a ran at T0 (three records); job 2 on node b
ran at T0 too (one record) and again 20 days later, so it was still measuring at the cut-off
CUT = T0 + 10 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.base import Store
from tests.nodes import T0, Node, S

DAY = 86400 * S
CUT = T0 + 10 * DAY  # records of jobs over before this may go


@dataclass
class Filled:
    a: Node  # job slurm:c/1, over at T0 + 3 s
    b: Node  # job slurm:c/2, still running at CUT
    early_a: list[bytes] = field(default_factory=list)  # job 1's records (prunable)
    early_b: list[bytes] = field(default_factory=list)  # job 2's old record (kept)
    late_b: list[bytes] = field(default_factory=list)  # job 2 after the cut-off
    clock: list[int] = field(default_factory=lambda: [T0])

    def ingestor(self, store: Store) -> Ingestor:
        return Ingestor(
            store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: self.clock[0]
        )


def fill(store: Store) -> Filled:
    a, b = Node("node-a", job="slurm:c/1"), Node("node-b", job="slurm:c/2")
    for n in (a, b):
        store.enroll(n.public_raw, n.node_id)
    f = Filled(a, b)
    f.clock[0] = T0 + 3600 * S
    f.early_a = a.envelopes(3)
    f.early_b = b.envelopes(1)
    acks = f.ingestor(store).ingest([*f.early_a, *f.early_b])
    assert {x.status for x in acks} == {"accepted"}
    f.clock[0] = T0 + 20 * DAY + 60 * S
    f.late_b = [b.envelope(start_ns=T0 + 20 * DAY)]
    acks = f.ingestor(store).ingest(f.late_b)
    assert {x.status for x in acks} == {"accepted"}
    return f
