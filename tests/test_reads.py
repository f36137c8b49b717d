"""Files from outside are read within their bound: the size is checked while reading, so an
endless input (/dev/zero, a FIFO whose writer never stops) costs the bound, not the input."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import flopwatch.jobs_file
from flopwatch.agent.backends import replay
from flopwatch.errors import BackendError, ConfigError
from flopwatch.reads import read_at_most, read_limited

ZERO = Path("/dev/zero")
MIB = 1 << 20


def test_read_at_most_stops_one_byte_past_the_limit_of_an_endless_device() -> None:
    assert len(read_at_most(ZERO, MIB)) == MIB + 1


def test_read_limited_refuses_an_endless_device_and_keeps_a_file_at_the_limit(tmp_path) -> None:
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        read_limited(ZERO, MIB, "input")
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * MIB)
    assert read_limited(exact, MIB, "input") == b"x" * MIB


def test_a_fifo_whose_writer_never_stops_is_cut_at_the_limit(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def write_forever() -> None:
        with fifo.open("wb") as f:
            try:
                while not stop.is_set():
                    f.write(b"\0" * 65536)
            except BrokenPipeError:  # the reader has closed its end: what the test waits for
                pass

    writer = threading.Thread(target=write_forever, daemon=True)
    writer.start()
    try:
        with pytest.raises(ConfigError, match="larger than"):
            read_limited(fifo, MIB, "jobs file")
    finally:
        stop.set()
        writer.join(timeout=10)
    assert not writer.is_alive()


def test_jobs_file_and_trace_readers_refuse_an_endless_input(monkeypatch) -> None:
    monkeypatch.setattr(flopwatch.jobs_file, "MAX_JOBS_FILE_BYTES", MIB)
    with pytest.raises(ConfigError, match="jobs file /dev/zero is larger"):
        flopwatch.jobs_file.load_jobs(ZERO)
    monkeypatch.setattr(replay, "MAX_TRACE_BYTES", MIB)
    with pytest.raises(BackendError, match="trace /dev/zero is larger"):
        replay.load_trace(ZERO)
