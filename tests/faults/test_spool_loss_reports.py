"""The spool's account of what it lost, under repeated overflow, a cut tail and a full disk.

A loss is reported by the next record stored. If that record is lost too (dropped by a later
overflow, or cut from a corrupt tail before the collector had it), its report must come back,
or the collector would see sequence numbers missing that no signed gap names. A full disk must
cost records, named as lost, never the agent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flopwatch.agent.spool.store
from flopwatch.agent.backends.sim import SimBackend
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.agent.service import loss_gaps
from flopwatch.agent.spool.format import DISK_FULL_DETAIL
from flopwatch.agent.spool.store import Spool, SpoolLoss
from flopwatch.keys import SigningKey
from flopwatch.verify import RecordVerifier
from tests.agent.agent_fakes import T0, chain
from tests.faults.evidence import gap_spans, reported_lost
from tests.faults.full_disk import FullDisk

pytestmark = pytest.mark.faults

ENVS = chain(SigningKey.generate(), 12)
SIZE = len(ENVS[0].to_bytes()) + 16  # one frame
T0_NS = T0 * 10**9


def ranges(losses: list[SpoolLoss]) -> list[tuple[int, int, str]]:
    return [(x.first, x.last, x.reason) for x in losses]


def append(spool: Spool, seq: int) -> list[tuple[int, int, str]]:
    return ranges(spool.append(seq, ENVS[seq - 1].to_bytes()))


def test_a_dropped_record_returns_the_losses_it_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2 * SIZE, segment_bytes=SIZE)  # two records, one each
    assert append(spool, 1) == append(spool, 2) == []
    assert append(spool, 3) == [(1, 1, "overflow")]
    assert append(spool, 4) == [(2, 2, "overflow")]  # 4 reports 1
    spool.ack(4)  # the collector has 4, so 1 is reported for good
    assert append(spool, 5) == [(3, 3, "overflow")]  # 5 reports 2
    assert append(spool, 6) == []  # 6 reports 3; dropping 4, delivered, loses nothing
    # Appending 7 drops 5, undelivered: 2, which 5 reported, comes back with it.
    assert append(spool, 7) == [(2, 2, "overflow"), (5, 5, "overflow")]
    assert [s for s, _ in spool.pending()] == [6, 7]
    spool.close()
    # Until a stored record reports them, the ack state keeps them across a restart.
    again = Spool(tmp_path, max_bytes=2 * SIZE, segment_bytes=SIZE)
    assert ranges(list(again.recovery.losses)) == [(2, 2, "overflow"), (5, 5, "overflow")]
    again.close()


def test_a_reporting_record_cut_from_a_corrupt_tail_returns_its_losses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=4 * SIZE, segment_bytes=2 * SIZE)
    for seq in range(1, 5):
        assert append(spool, seq) == []
    assert append(spool, 5) == [(1, 2, "overflow")]
    assert append(spool, 6) == []  # 6 reports 1..2
    spool.close()
    newest = tmp_path / f"seg-{5:020d}.log"
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF  # 6 is unreadable now: a crash, or bad disk, before it was sent
    newest.write_bytes(bytes(data))

    report = Spool(tmp_path, max_bytes=4 * SIZE, segment_bytes=2 * SIZE).recovery
    assert ranges(list(report.losses)) == [(6, 6, "corrupt"), (1, 2, "overflow")]


def test_full_disk_costs_records_named_as_lost_not_the_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk()
    monkeypatch.setattr(flopwatch.agent.spool.store, "os", disk)
    spool = Spool(tmp_path, max_bytes=100 * SIZE, segment_bytes=10 * SIZE)
    assert append(spool, 1) == append(spool, 2) == []
    disk.full.set()
    [loss] = spool.append(3, ENVS[2].to_bytes())
    assert (loss.first, loss.last, loss.reason, loss.detail) == (3, 3, "overflow", DISK_FULL_DETAIL)
    assert append(spool, 4) == [(3, 4, "overflow")]  # consecutive refusals: one range
    spool.ack_many([1, 2])  # acks are kept in memory while the state cannot be saved
    assert [s for s, _ in spool.pending()] == []
    assert disk.refused >= 3
    disk.full.clear()
    assert append(spool, 5) == []  # 5 is stored and reports 3..4
    spool.close()

    again = Spool(tmp_path, max_bytes=100 * SIZE, segment_bytes=10 * SIZE)
    assert [s for s, _ in again.pending()] == [5]  # the acks reached the disk with 5
    assert again.recovery.losses == ()  # 5, still pending, carries the report
    again.close()


def test_a_loss_hours_long_is_one_signed_gap_a_verifier_accepts() -> None:
    # Records lost over three hours (a long outage: a full disk, or one big dropped segment)
    # must not make the record that reports them unacceptable.
    batch = SimBackend(2, seed=7, start_ns=T0_NS).next_readings()
    assert batch is not None
    start, end = T0_NS - 3 * 3600 * 10**9 - 123, T0_NS - 10**9
    gaps = loss_gaps([SpoolLoss(5, 9000, "overflow", start, end, "dropped")], batch)
    key = SigningKey.generate()
    builder = RecordBuilder(
        node_id="n", cluster="c", signer=key, head=ChainHead(), now_ns=lambda: T0_NS
    )
    record = RecordVerifier(trusted_keys={key.key_id: key.public_key}).verify(
        builder.build(batch, [], gaps)
    )
    assert gap_spans([record], "spool_overflow") == {r.gpu.uuid: [(start, end)] for r in batch}
    assert reported_lost([record]) == {key.key_id: set(range(5, 9001))}
