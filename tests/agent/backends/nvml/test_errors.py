"""No exception of an NVML call escapes the backend except as a BackendError from setup, after
which NVML is shut down and every GPM buffer freed; a bad attestation nonce is an answer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from flopwatch.agent.backends.base import BindingStatus
from flopwatch.agent.backends.nvml.ids import GPM_PIPE_METRICS
from flopwatch.errors import BackendError
from flopwatch.model import Pipe
from tests.agent.backends.nvml.fake_nvml import FakeGpu, FakeMig, FakeNvml, make

HMMA = GPM_PIPE_METRICS[Pipe.HMMA]


def gpu(**kw: object) -> FakeGpu:
    args: dict[str, object] = {"busy": lambda t: {HMMA: 50.0}, "clock": lambda t: 1410.0}
    return FakeGpu(**(args | kw))  # type: ignore[arg-type]


def mig_gpu() -> FakeGpu:
    return gpu(migs=[FakeMig(gpu_instance=1, sm_count=60, busy=lambda t: {HMMA: 10.0})])


def test_a_name_pynvml_cannot_decode_is_a_setup_error_and_nvml_is_shut_down() -> None:
    backend, nv, _ = make([mig_gpu(), gpu()])
    name = nv.nvmlDeviceGetName

    def bad_name(handle: Any) -> Any:
        if handle == 1:  # pynvml decodes driver strings itself, strictly
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return name(handle)

    nv.nvmlDeviceGetName = bad_name  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="cannot set up the GPUs"):
        backend.gpus()
    assert nv.shutdowns == 1
    assert len(nv.freed) == 2  # the MIG instance's buffers, allocated before GPU 1 failed


def test_an_nvml_error_at_setup_frees_what_was_allocated() -> None:
    backend, nv, _ = make([gpu(), mig_gpu()])
    alloc = nv.nvmlGpmSampleAlloc
    calls = []

    def second_fails() -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise FakeNvml.NVMLError(FakeNvml.NVML_ERROR_UNKNOWN)
        return alloc()

    nv.nvmlGpmSampleAlloc = second_fails  # type: ignore[method-assign]
    with pytest.raises(BackendError):
        backend.gpus()
    assert len(nv.freed) == 1 and nv.shutdowns == 1
    backend.close()  # nothing left to free or shut down
    assert len(nv.freed) == 1 and nv.shutdowns == 1


def test_no_gpu_shuts_nvml_down() -> None:
    backend, nv, _ = make([])
    with pytest.raises(BackendError, match="no GPU"):
        backend.gpus()
    assert nv.shutdowns == 1


@pytest.mark.parametrize("nonce", [b"", bytes(31), bytes(33), "x" * 32])
def test_a_nonce_of_the_wrong_size_is_an_error_answer_not_a_type_error(nonce: Any) -> None:
    backend, nv, _ = make([gpu(), gpu()])
    nv.cc_state = SimpleNamespace(environment=2, ccFeature=1, devToolsMode=0)
    answers = backend.hardware_bindings(nonce)
    assert [a.status for a in answers] == [BindingStatus.ERROR] * 2
    assert all("must be 32 bytes" in a.detail and a.report == b"" for a in answers)
    assert nv.nonces == []
    (ok, _) = backend.hardware_bindings(bytes(32))
    assert ok.status is BindingStatus.REPORT
