"""Replay a recorded NVML trace (format: tests/fixtures/h100-trace-1/README.md).

Readings carry the trace's own timestamps, so job windows written against the recording line up.
`speed` paces the replay: 1.0 is real time, 10.0 ten times faster, None as fast as possible.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flopwatch.agent.backends.base import (
    BindingStatus,
    GpuInfo,
    GpuReading,
    HardwareBinding,
    shares_from_samples,
)
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_KEYS, cores_per_sm
from flopwatch.errors import BackendError
from flopwatch.reads import MAX_TRACE_BYTES, read_at_most


@dataclass(frozen=True)
class Trace:
    gpu: GpuInfo
    interval_s: float
    readings: tuple[GpuReading, ...]


def _ns(t: float) -> int:
    return round(t * 1e9)


def _reading(gpu: GpuInfo, rec: dict[str, Any], running_before: Sequence[int]) -> GpuReading:
    t0, t1 = float(rec["t0"]), float(rec["t1"])
    gpm = rec.get("gpm") or {}
    busy = None
    if gpm and all(gpm.get(k) is not None for k in GPM_PIPE_KEYS.values()):
        busy = {pipe: float(gpm[key]) / 100.0 for pipe, key in GPM_PIPE_KEYS.items()}
    clocks = [float(c) for c in rec.get("clock_polled_mhz") or []]
    mean_clock = sum(clocks) / len(clocks) if clocks else 0.0
    energy = rec.get("energy_mj")
    samples = [(int(p["pid"]), float(p["sm"])) for p in rec.get("proc_util") or []]
    running = [int(p["pid"]) for p in rec.get("procs") or []]
    error = None
    if busy is None:
        error = "GPM metrics missing in trace"
    elif not clocks:
        error = "no SM clock readings in trace interval"
    return GpuReading(
        gpu=gpu,
        start_ns=_ns(t0),
        end_ns=_ns(t1),
        pipe_busy=busy,
        sm_clock_mhz_s=mean_clock * (t1 - t0),
        clock_samples=len(clocks),
        energy_mj=int(energy[1]) - int(energy[0]) if energy else None,
        processes=shares_from_samples(samples, running, running_before),
        error=error,
    )


def load_trace(path: Path) -> Trace:
    """Parse a trace file; raise BackendError naming the line on any malformed input."""
    try:
        data = read_at_most(path, MAX_TRACE_BYTES)
    except OSError as e:
        raise BackendError(f"cannot read trace {path}: {e.strerror}") from e
    if len(data) > MAX_TRACE_BYTES:
        raise BackendError(f"trace {path} is larger than {MAX_TRACE_BYTES} bytes")
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError as e:
        raise BackendError(f"trace {path} is not UTF-8 text: {e}") from e
    gpu: GpuInfo | None = None
    interval_s = 1.0
    readings: list[GpuReading] = []
    running_before: list[int] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if rec.get("type") == "meta":
                cc = (int(rec["cc"][0]), int(rec["cc"][1]))
                gpu = GpuInfo(
                    uuid=str(rec["uuid"]),
                    name=str(rec["name"]),
                    sm_count=int(rec["cores"]) // cores_per_sm(cc),
                    cc=cc,
                    max_sm_clock_mhz=int(rec["max_sm_clock_mhz"]),
                    serial=str(rec.get("serial", "")),
                )
                interval_s = float(rec.get("interval_s", 1.0))
            elif rec.get("type") == "interval":
                if gpu is None:
                    raise BackendError(f"{path}:{n}: interval before the meta line")
                reading = _reading(gpu, rec, running_before)
                readings.append(reading)
                running_before = [int(p["pid"]) for p in rec.get("procs") or []]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise BackendError(f"{path}:{n}: malformed trace line: {e}") from e
    if gpu is None:
        raise BackendError(f"{path}: no meta line")
    return Trace(gpu=gpu, interval_s=interval_s, readings=tuple(readings))


class ReplayBackend:
    """Deliver a trace's readings one interval at a time."""

    def __init__(
        self,
        path: Path,
        speed: float | None = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._trace = load_trace(path)
        self._speed = speed
        self._sleep = sleep
        self._iter: Iterator[GpuReading] = iter(self._trace.readings)

    @property
    def trace(self) -> Trace:
        return self._trace

    def gpus(self) -> Sequence[GpuInfo]:
        return (self._trace.gpu,)

    def next_readings(self) -> list[GpuReading] | None:
        reading = next(self._iter, None)
        if reading is None:
            return None
        if self._speed:
            self._sleep((reading.end_ns - reading.start_ns) / 1e9 / self._speed)
        return [reading]

    def hardware_bindings(self, nonce: bytes) -> list[HardwareBinding]:
        """A recording cannot be attested now: the trace's GPU says so."""
        return [HardwareBinding(self._trace.gpu, BindingStatus.NOT_SUPPORTED, "replayed trace")]

    def close(self) -> None:
        self._iter = iter(())
