"""Spool faults: a spool that fills while the collector is down, a disk that fills, a corrupt tail.

What the spool loses is lost for good, but never silently: the agent signs gaps naming every
lost sequence number and exactly the seconds of the records they name, and the totals equal
what an uninterrupted run signs minus exactly the records never delivered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

import flopwatch.agent.spool.store
from flopwatch.agent.config import AgentConfig
from flopwatch.agent.service import Agent
from flopwatch.agent.spool.format import SEGMENT_RE, Frame, scan
from flopwatch.errors import FlopwatchError
from flopwatch.verify.record import VerifiedRecord
from tests.faults.evidence import (
    gap_spans,
    measured_spans,
    merge,
    missing_sequences,
    reported_lost,
    unaccounted,
)
from tests.faults.fleet import CLUSTER, SimNode, contributions, job_totals, signed_offline
from tests.faults.full_disk import FullDisk, tmpfs
from tests.faults.lab import FaultLab
from tests.faults.processes import AgentProcess, Progress, committed, jobs_json
from tests.faults.waits import wait_until

pytestmark = pytest.mark.faults

RECORD_BYTES = 700  # a framed record of a 2-GPU node, about
SMALL_SPOOL = [
    "--spool-segment-bytes",
    str(6 * RECORD_BYTES),
    "--spool-max-bytes",
    str(18 * RECORD_BYTES),
]


def oldest_sequence(spool: Path) -> int:
    """The first sequence of the oldest segment left in a spool directory (0: none yet)."""
    names = [p.name for p in spool.iterdir()] if spool.is_dir() else []
    firsts = [int(n[4:-4]) for n in names if SEGMENT_RE.fullmatch(n)]
    return min(firsts, default=0)


def split(
    lab: FaultLab, lost: dict[str, set[int]], keys: dict[str, str]
) -> tuple[list[VerifiedRecord], list[VerifiedRecord]]:
    """The offline records of every node: (kept, lost), by the sequences `lost` under its key."""
    kept: list[VerifiedRecord] = []
    gone: list[VerifiedRecord] = []
    for node, records in lab.offline.items():
        for r in records:
            (gone if r.sequence in lost.get(keys[node], set()) else kept).append(r)
    return kept, gone


def spans_of(records: Iterable[VerifiedRecord]) -> dict[str, list[tuple[int, int]]]:
    return {uuid: merge(s) for uuid, s in measured_spans(records).items()}


def node_key_ids(held: Iterable[VerifiedRecord]) -> dict[str, str]:
    return {r.node_id: r.key_id for r in held}


def test_spool_overflow_while_collector_down_is_signed_gap_and_exact_loss(
    make_lab: Callable[..., FaultLab],
) -> None:
    lab = make_lab(nodes=2, intervals=160)
    collector = lab.collector()
    collector.start()
    collector.kill()  # down before the agents start; back on the same port later
    agents = lab.agents(collector.address, SMALL_SPOOL)
    for a in agents:
        a.start()
    for a in agents:
        wait_until(
            lambda a=a: oldest_sequence(a.state_dir / "spool") > 40,  # type: ignore[misc]
            f"{a.node.node_id} to drop 40 records from its full spool",
        )
    collector.start()
    for a in agents:
        assert a.wait(timeout=120) == 0, a.tail()
    totals = jobs_json(collector.address)
    assert collector.stop() == 0

    held = lab.held(collector)
    keys = node_key_ids(held)
    lost, missing = reported_lost(held), missing_sequences(held)
    # Every sequence the collector lacks is named by a signed gap. A gap may also name records
    # the spool dropped while they were on the wire, unacknowledged, that arrived after all:
    # it over-states the loss, never hides one.
    assert all(missing[k] <= lost[k] and len(missing[k]) >= 40 for k in keys.values())
    # The totals are the uninterrupted run's less exactly the records never delivered.
    kept, _ = split(lab, missing, keys)
    assert totals == job_totals(kept) == job_totals(held)
    # The gaps' seconds are exactly the seconds of the records they name, GPU by GPU.
    _, dropped = split(lab, lost, keys)
    assert {u: merge(s) for u, s in gap_spans(held, "spool_overflow").items()} == spans_of(dropped)
    assert all(not holes for holes in unaccounted(held).values())


def test_full_disk_loses_records_as_signed_gap_and_agent_carries_on(
    make_lab: Callable[..., FaultLab], monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = make_lab(nodes=1, intervals=160)
    node = lab.nodes[0]
    collector = lab.collector()
    collector.start()
    disk = FullDisk()
    monkeypatch.setattr(flopwatch.agent.spool.store, "os", disk)
    config = AgentConfig(
        collector=collector.address,
        state_dir=lab.root / node.node_id,
        node_id=node.node_id,
        cluster=CLUSTER,
        interval_s=node.interval_s,
        jobs_file=lab.jobs,
        insecure=True,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
    )
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["code"] = Agent(config, backend=node.backend(realtime=True)).run()
        except FlopwatchError as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, name="agent")
    thread.start()
    progress = Progress(collector.address)
    try:
        total = contributions(lab.offline[node.node_id])
        wait_until(committed(progress, total // 4, []), "a quarter of the run committed")
        disk.full.set()
        wait_until(lambda: disk.refused >= 40 or outcome, "the agent to hit the full disk")
        disk.full.clear()
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert outcome == {"code": 0}
        totals = jobs_json(collector.address)
    finally:
        disk.full.clear()
        progress.close()
        thread.join(timeout=120)
    assert collector.stop() == 0

    held = lab.held(collector)
    keys = node_key_ids(held)
    lost = reported_lost(held)
    assert lost == missing_sequences(held)
    assert len(lost[keys[node.node_id]]) >= 10
    kept, dropped = split(lab, lost, keys)
    assert totals == job_totals(kept) == job_totals(held)
    assert {u: merge(s) for u, s in gap_spans(held, "spool_overflow").items()} == spans_of(dropped)
    assert all(not holes for holes in unaccounted(held).values())


def spooled_frames(spool: Path) -> list[tuple[Path, Frame]]:
    """The valid frames of every segment in a spool directory, oldest first."""
    out = []
    for path in sorted(spool.glob("seg-*.log")):
        frames, _ = scan(path.read_bytes(), after=0)
        out += [(path, f) for f in frames]
    return out


def test_corrupt_spool_tail_is_signed_gap_and_exact_loss(
    make_lab: Callable[..., FaultLab],
) -> None:
    lab = make_lab(nodes=1, intervals=60)
    node = lab.nodes[0]
    collector = lab.collector()
    collector.start()
    collector.kill()  # nothing is delivered before the damage
    [first_run] = lab.agents(collector.address)
    first_run.start()
    spool = first_run.state_dir / "spool"
    wait_until(lambda: len(spooled_frames(spool)) == node.intervals, "the whole run spooled")
    first_run.kill()
    # Damage the tail: a flipped byte in the third-last record, the last one cut in half.
    frames = spooled_frames(spool)
    (path, garbled), (_, cut) = frames[-3], frames[-1]
    data = bytearray(path.read_bytes())
    data[garbled.envelope_at + 40] ^= 0xFF
    path.write_bytes(bytes(data[: cut.offset + (cut.end - cut.offset) // 2]))

    collector.start()
    # The agent restarts and measures on from where the planned run ended.
    resumed = SimNode(node.node_id, node.seed, node.end_ns, intervals=20)
    second_run = AgentProcess(
        resumed,
        collector=collector.address,
        state_dir=first_run.state_dir,
        jobs=lab.jobs,
        log=lab.root / "second-run.log",
    )
    second_run.start()
    assert second_run.wait(timeout=120) == 0, second_run.tail()
    totals = jobs_json(collector.address)
    assert collector.stop() == 0

    held = lab.held(collector)
    [key] = {r.key_id for r in held}
    n = node.intervals
    # The three damaged records are lost and named by a signed gap: the agent numbers on above
    # the last record that may exist, never reusing one the collector might hold.
    assert reported_lost(held) == missing_sequences(held) == {key: {n - 2, n - 1, n}}
    damaged = lab.offline[node.node_id][n - 3 :]
    after = signed_offline(resumed, lab.windows)
    assert totals == job_totals([*lab.offline[node.node_id][: n - 3], *after]) == job_totals(held)
    assert {u: merge(s) for u, s in gap_spans(held, "spool_corrupt").items()} == spans_of(damaged)
    assert all(not holes for holes in unaccounted(held).values())


def test_real_full_filesystem_loses_records_as_signed_gap_and_agent_carries_on(
    make_lab: Callable[..., FaultLab],
) -> None:
    # Enough intervals that the agent is still measuring when the collector is back (on a
    # loaded machine the restart takes seconds): the records its full disk lost are reported by
    # a later record's signed gap, which needs a later record.
    lab = make_lab(nodes=1, intervals=300)
    node = lab.nodes[0]
    collector = lab.collector()
    collector.start()
    collector.kill()  # down while the agent's disk fills
    # The agent's state directory is a 64 KiB filesystem; its spool bound is far above that.
    with tmpfs(lab.root / node.node_id, "64k"):
        [a] = lab.agents(collector.address, ["--spool-segment-bytes", str(8 * RECORD_BYTES)])
        a.start()
        wait_until(lambda: "not stored" in a.text(), "the agent's disk to fill")
        collector.start()  # acknowledgements let the spool delete segments: room again
        assert a.wait(timeout=120) == 0, a.tail()
        totals = jobs_json(collector.address)
        assert collector.stop() == 0
        held = lab.held(collector)

    keys = node_key_ids(held)
    lost = reported_lost(held)
    assert lost == missing_sequences(held) and lost[keys[node.node_id]]
    kept, refused = split(lab, lost, keys)
    assert totals == job_totals(kept) == job_totals(held)
    assert {u: merge(s) for u, s in gap_spans(held, "spool_overflow").items()} == spans_of(refused)
    assert all(not holes for holes in unaccounted(held).values())
