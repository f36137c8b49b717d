"""The SQLite store's per-device sums and runs of measured time, against a model.

Records of two nodes (two GPUs each), at chosen one-second slots with holes, arrive in any order
and in batches of any size. Whatever the order and batching, the runs the store holds are the
slots joined end to start, and the per-GPU and per-(job, GPU) sums are the sums of the records.
Batches where a device has one new run take the batched write path; several runs of one device
in a batch take the run-by-run path: both are exercised here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.intervals import Merge, merge
from flopwatch.verify import RecordVerifier
from tests.nodes import NOW, T0, Node

S = 10**9
SLOTS = 12


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[list[int]], list[int], list[int]]:
    slots = [
        sorted(draw(st.sets(st.integers(0, SLOTS - 1), min_size=1, max_size=SLOTS)))
        for _ in range(2)
    ]
    count = sum(len(s) for s in slots)
    order = draw(st.permutations(range(count)))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, count - 1)), max_size=count)))
    return slots, list(order), [c for c in cuts if c < count]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(scenario())
def test_runs_and_sums_match_the_records_whatever_the_order_and_batching(
    case: tuple[list[list[int]], list[int], list[int]],
) -> None:
    slots, order, cuts = case
    nodes = [Node(f"node-{n}", gpus=2, job=f"slurm:c/{n}") for n in range(2)]
    envelopes = [nodes[n].envelope(start_ns=T0 + slot * S) for n in range(2) for slot in slots[n]]
    shuffled = [envelopes[i] for i in order]
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "c.db")
        for node in nodes:
            store.enroll(node.public_raw, node.node_id)
        ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: NOW)
        acks = [a for batch in batches for a in ingestor.ingest(batch)]
        assert [a.status for a in acks] == ["accepted"] * len(envelopes)

        verifier = RecordVerifier(trusted_keys={n.key_id: n.key.public_key for n in nodes})
        per_gpu: dict[str, list[int]] = {}
        per_job_gpu: dict[tuple[str, str], list[int]] = {}
        for data in envelopes:
            for c in verifier.verify_bytes(data).contributions:
                per_gpu.setdefault(c.gpu_uuid, [0, 0, 0])
                per_job_gpu.setdefault((c.job_id, c.gpu_uuid), [0, 0, 0])
                for sums in (per_gpu[c.gpu_uuid], per_job_gpu[(c.job_id, c.gpu_uuid)]):
                    sums[0] += c.flops_estimate
                    sums[1] += c.flops_upper
                    sums[2] += 1

        for n, node in enumerate(nodes):
            joined = merge((), [(T0 + s * S, T0 + (s + 1) * S) for s in slots[n]])
            assert isinstance(joined, Merge)
            want = list(joined.runs)
            for gpu in node.gpus:
                assert store.coverage(gpu.uuid, T0, T0 + SLOTS * S) == want
                g = next(t for t in store.gpu_totals() if t.gpu == gpu.uuid)
                assert [g.flops_estimate, g.flops_upper, g.gpu_intervals] == per_gpu[gpu.uuid]
            held = {
                (j.job_id, j.gpu_uuid): [j.flops_estimate, j.flops_upper, j.gpu_intervals]
                for j in store.job_gpu_page(node.job, ("", ""), 100)
            }
            assert held == {k: v for k, v in per_job_gpu.items() if k[0] == node.job}
        store.close()
