"""The durable spool: append, acks, segment deletion, crash recovery, overflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flopwatch.agent.spool.store import STATE_FILE, Spool
from flopwatch.dsse import Envelope
from flopwatch.errors import ConfigError, SpoolError
from flopwatch.keys import SigningKey
from tests.agent.agent_fakes import chain

KEY = SigningKey.generate()
ENVS = chain(KEY, 12)
SIZE = len(ENVS[0].to_bytes()) + 16  # one frame
SEG = 2 * SIZE  # two records per segment


def open_spool(d: Path, *, max_bytes: int = 100 * SEG) -> Spool:
    return Spool(d, max_bytes=max_bytes, segment_bytes=SEG)


def append_all(spool: Spool, envs: list[Envelope], first: int = 1) -> None:
    for i, env in enumerate(envs):
        assert spool.append(first + i, env.to_bytes()) == []


def segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("seg-*.log"))


def test_append_pending_ack_and_segment_deletion(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:5])
    assert [s for s, _ in spool.pending()] == [1, 2, 3, 4, 5]
    assert spool.pending()[2][1] == ENVS[2].to_bytes()
    assert [s for s, _ in spool.pending(limit=2, after=3)] == [4, 5]
    assert segments(tmp_path) == [f"seg-{n:020d}.log" for n in (1, 3, 5)]
    assert spool.depth() == 5 and spool.bytes() == 5 * SIZE

    spool.ack_many([1, 2, 4])  # segment 1 settled: deleted; segment 3 still holds 3
    assert [s for s, _ in spool.pending()] == [3, 5]
    assert segments(tmp_path) == [f"seg-{n:020d}.log" for n in (3, 5)]
    spool.ack(3)
    spool.ack(5)  # segment 5 is the newest: kept, its record is the chain head
    assert spool.depth() == 0 and segments(tmp_path) == [f"seg-{5:020d}.log"]
    assert spool.get(5) is None
    spool.close()


def test_reopen_keeps_acks_and_chain_head(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:5])
    spool.ack_many([1, 2, 3])
    spool.close()

    spool = open_spool(tmp_path)
    report = spool.recovery
    assert not report.corrupt and report.losses == ()
    assert report.head is not None
    assert (report.head.sequence, report.head.digest) == (5, ENVS[4].digest)
    assert [s for s, _ in spool.pending()] == [4, 5]
    with pytest.raises(SpoolError, match="not above"):
        spool.append(5, ENVS[4].to_bytes())
    spool.append(6, ENVS[5].to_bytes())
    spool.close()


def test_head_survives_in_ack_state_when_segments_are_gone(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:4])
    spool.ack_many([1, 2, 3, 4])
    spool.close()
    (tmp_path / f"seg-{3:020d}.log").write_bytes(b"")  # the newest segment lost its data

    report = open_spool(tmp_path).recovery
    assert report.head is not None
    assert (report.head.sequence, report.head.digest) == (2, ENVS[1].digest)  # `base`
    loss = report.tail_loss
    assert loss is not None and (loss.first, loss.last) == (3, 4)  # acked, so maybe held


def test_truncated_tail_recovers_valid_prefix_and_reports_loss(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:5])
    spool.close()
    last = tmp_path / f"seg-{5:020d}.log"
    last.write_bytes(last.read_bytes()[: SIZE // 2])  # crash in the middle of writing 5

    spool = open_spool(tmp_path)
    report = spool.recovery
    assert report.corrupt and report.truncated_bytes == SIZE // 2
    assert report.head is not None and report.head.sequence == 4
    assert report.head.digest == ENVS[3].digest
    loss = report.tail_loss
    assert loss is not None and (loss.first, loss.last, loss.reason) == (5, 5, "corrupt")
    assert [s for s, _ in spool.pending()] == [1, 2, 3, 4]
    assert not last.exists()  # nothing valid was left in it
    spool.append(7, ENVS[6].to_bytes())  # the agent goes on above the loss
    spool.close()
    assert [s for s, _ in open_spool(tmp_path).pending()] == [1, 2, 3, 4, 7]


def test_flipped_byte_in_last_frame_cuts_it(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:4])
    spool.close()
    last = tmp_path / f"seg-{3:020d}.log"
    data = bytearray(last.read_bytes())
    data[-10] ^= 0x01
    last.write_bytes(bytes(data))

    spool = open_spool(tmp_path)
    report = spool.recovery
    assert report.truncated_bytes == SIZE
    assert report.head is not None and report.head.sequence == 3
    loss = report.tail_loss
    assert loss is not None and (loss.first, loss.last) == (4, 4)
    assert last.stat().st_size == SIZE
    spool.close()
    # The loss is remembered: a second open before anything new reports the same range.
    again = open_spool(tmp_path).recovery.tail_loss
    assert again is not None and (again.first, again.last) == (4, 4)


def test_corrupt_middle_frame_counts_frames_after_it_as_lost(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100 * SEG, segment_bytes=10 * SIZE)
    append_all(spool, ENVS[:6])
    spool.close()
    seg = tmp_path / f"seg-{1:020d}.log"
    data = bytearray(seg.read_bytes())
    data[2 * SIZE + 20] ^= 0xFF  # inside record 3
    seg.write_bytes(bytes(data))

    report = open_spool(tmp_path).recovery
    assert report.head is not None and report.head.sequence == 2
    loss = report.tail_loss  # 4..6 still checked out past the cut: they may have been sent
    assert loss is not None and (loss.first, loss.last) == (3, 6)


def test_overflow_drops_oldest_segment_and_reports_undelivered(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=3 * SEG)
    append_all(spool, ENVS[:6])  # three full segments: at the limit
    spool.ack(1)
    losses = spool.append(7, ENVS[6].to_bytes())
    assert [(x.first, x.last, x.reason) for x in losses] == [(2, 2, "overflow")]
    assert [s for s, _ in spool.pending()] == [3, 4, 5, 6, 7]
    assert spool.bytes() <= 3 * SEG
    assert segments(tmp_path)[0] == f"seg-{3:020d}.log"
    spool.close()
    # Until a later record reports them (the next append), the losses survive a restart.
    spool = open_spool(tmp_path, max_bytes=3 * SEG)
    assert [(x.first, x.last) for x in spool.recovery.losses] == [(2, 2)]
    assert spool.append(8, ENVS[7].to_bytes()) == []
    spool.close()
    assert open_spool(tmp_path, max_bytes=3 * SEG).recovery.losses == ()


def test_partial_ack_state_tmp_file_is_ignored(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:3])
    spool.ack_many([1])
    spool.close()
    tmp = tmp_path / (STATE_FILE + ".tmp")
    tmp.write_bytes(b'{"version": 1, "settled": [[1, 3')  # a crash mid-write

    spool = open_spool(tmp_path)
    assert [s for s, _ in spool.pending()] == [2, 3]
    assert not tmp.exists()
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["settled"] == [[1, 1]]
    spool.close()


def test_unreadable_ack_state_means_resend_everything(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    append_all(spool, ENVS[:3])
    spool.ack_many([1])
    spool.close()
    (tmp_path / STATE_FILE).write_text("not json")
    assert [s for s, _ in open_spool(tmp_path).pending()] == [1, 2, 3]


def test_os_errors_become_spool_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match="cannot open spool"):
        open_spool(blocker / "spool")


def test_limits_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Spool(tmp_path, max_bytes=100, segment_bytes=80)
