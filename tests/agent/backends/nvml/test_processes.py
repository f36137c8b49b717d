"""Which processes a device's interval is attributed to: pids no process can have are dropped
(nvidia-ml-py 12.535.77 read them as garbage), and a driver without the `_v3` process call is
read through `_v2` (pynvml >= 12.575 raises NVMLLibraryMismatchError, not an NVMLError)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flopwatch.agent.backends.base import ProcessShare
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.agent.backends.nvml.lib import Nvml
from flopwatch.agent.backends.nvml.processes import (
    PID_MAX_LIMIT,
    plausible_pids,
    read_pid_max,
    running_pids,
)
from flopwatch.model import Pipe
from tests.agent.backends.nvml.fake_nvml import (
    FakeGpu,
    FakeLibraryMismatchError,
    FakeNvml,
    FakeTime,
    make,
)

HMMA = GPM_PIPE_METRICS[Pipe.HMMA]


def gpu(**kw: object) -> FakeGpu:
    args: dict[str, object] = {"busy": lambda t: {HMMA: 50.0}, "clock": lambda t: 1410.0}
    return FakeGpu(**(args | kw))  # type: ignore[arg-type]


def test_impossible_pids_are_dropped_not_attributed(caplog: pytest.LogCaptureFixture) -> None:
    # What 12.535.77 returns after the first entry: zeros, negatives, values past any pid_max.
    g = gpu(procs=[100, 0, -7, 2**32 - 1, 5_000_000, 32_767, 32_768])
    backend, _, _ = make([g], pid_max=32_768)
    caplog.set_level(logging.DEBUG, "flopwatch.agent.backends.nvml.processes")
    readings = backend.next_readings()
    assert readings is not None
    assert readings[0].processes == (ProcessShare(100, 0.5), ProcessShare(32_767, 0.5))
    assert "impossible pids" in caplog.text


def test_impossible_pids_in_utilization_samples_are_dropped() -> None:
    g = gpu(procs=[100], proc_sm={100: 30.0, 9_999_999: 30.0})
    backend, _, _ = make([g], pid_max=PID_MAX_LIMIT)
    readings = backend.next_readings()
    assert readings is not None
    assert readings[0].processes == (ProcessShare(100, 1.0),)


def test_pid_max_is_read_from_the_kernel_with_a_safe_default(tmp_path: Path) -> None:
    f = tmp_path / "pid_max"
    f.write_text("32768\n")
    assert read_pid_max(f) == 32_768
    for bad in ("", "lots", "-1", "99999999", "1"):
        f.write_text(bad)
        assert read_pid_max(f) == PID_MAX_LIMIT, bad
    assert read_pid_max(tmp_path / "missing") == PID_MAX_LIMIT
    assert 1 < read_pid_max() <= PID_MAX_LIMIT  # this machine's


def test_plausible_pids_sorts_and_dedups() -> None:
    assert plausible_pids([5, 3, 5, 0, 10], pid_max=10, where="x") == [3, 5]


def test_a_driver_without_the_v3_call_is_read_through_v2() -> None:
    backend, nv, _ = make([gpu(procs=[100, 200], procs_v3=False)])
    with pytest.raises(FakeLibraryMismatchError):  # what the unversioned wrapper raises
        nv.nvmlDeviceGetComputeRunningProcesses(0)
    readings = backend.next_readings()  # and it does not escape
    assert readings is not None and readings[0].error is None
    assert readings[0].processes == (ProcessShare(100, 0.5), ProcessShare(200, 0.5))


def test_without_v3_nor_a_v2_in_pynvml_the_device_has_no_process_list() -> None:
    nv = FakeNvml(FakeTime(), [gpu(procs=[100], procs_v3=False)])
    nv.nvmlDeviceGetComputeRunningProcesses_v2 = None  # type: ignore[assignment,method-assign]
    assert running_pids(Nvml(nv), 0, PID_MAX_LIMIT, "GPU 0") == []


def test_lib_treats_a_library_mismatch_as_function_not_found() -> None:
    nvml = Nvml(FakeNvml(FakeTime(), []))
    e = FakeLibraryMismatchError("no _v3")
    assert isinstance(e, nvml.error) and not isinstance(e, FakeNvml.NVMLError)
    assert nvml.is_code(e, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND")
    assert not nvml.is_code(e, "NVML_ERROR_NOT_SUPPORTED")

    def raises() -> None:
        raise e

    assert nvml.optional(raises) is None


def test_call_first_raises_what_is_not_a_missing_function() -> None:
    nv = FakeNvml(FakeTime(), [])
    nvml = Nvml(nv)

    def broken(handle: int) -> None:
        raise FakeNvml.NVMLError(FakeNvml.NVML_ERROR_UNKNOWN)

    nv.nvmlDeviceGetComputeRunningProcesses = broken  # type: ignore[method-assign]
    with pytest.raises(FakeNvml.NVMLError) as e:
        nvml.call_first(("nvmlDeviceGetComputeRunningProcesses", "nope_v2"), 0)
    assert e.value.value == FakeNvml.NVML_ERROR_UNKNOWN
    with pytest.raises(FakeNvml.NVMLError) as e:
        nvml.call_first(("nope", "nope_v2"), 0)
    assert e.value.value == FakeNvml.NVML_ERROR_FUNCTION_NOT_FOUND
