"""NvmlBackend over the real pynvml and the NVML double (tests/nvml_double), in child processes.

Time is stepped through the double (NVML_DOUBLE_FROZEN): each interval the probe advances the
trace by 0.1 s steps and polls the SM clock after each, as the poller thread would. The figures
are checked against a Python reading of the same trace. Each defect of issue 16 that the double
exposed (MIG per compute instance, vGPU, no _v3 symbol, nonce length, intervals under 100 ms, a
failing metric) has its test here, through the real pynvml.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.nvml_double.harness import (
    POLL_S,
    TraceReference,
    check_whole_gpu,
    double_env,
    run_probe,
)

REF = TraceReference.load()
BUSY = REF.busiest()
START = BUSY - 1.0  # one idle-to-busy edge, then busy intervals


def run(intervals: int = 4, start: float = START, **switches: Any) -> dict[str, Any]:
    params = {k: switches.pop(k) for k in ("interval_s", "nonce") if k in switches}
    got: dict[str, Any] = run_probe(
        "backend",
        double_env(**switches),
        start=start,
        intervals=intervals,
        trace_t0=REF.t0,
        poll_s=POLL_S,
        **params,
    )
    return got


def test_readings_match_the_trace_through_the_real_pynvml() -> None:
    got = run()
    assert "raised" not in got
    assert got["gpus"] == [
        {
            "uuid": REF.meta["uuid"],
            "name": REF.meta["name"],
            "sms": 132,
            "mig": "",
            "serial": "1650000000000",
        }
    ]
    readings = [r for (r,) in got["intervals"]]
    assert [round(r["start"] - START, 6) for r in readings] == [0.0, 1.0, 2.0, 3.0]
    for r in readings:
        check_whole_gpu(r)
        assert r["energy_mj"] == pytest.approx(REF.energy(r["end"]) - REF.energy(r["start"]), abs=1)
        pids = set(REF.pids(r["start"])) | set(REF.pids(r["end"]))
        assert {p for p, _ in r["processes"]} <= pids
        assert sum(s for _, s in r["processes"]) == pytest.approx(1.0 if pids else 0.0)
    assert readings[-1]["pipe_busy"]["hmma"] > 0.5  # real work was measured
    assert got["live_samples_after_close"] == 0  # close() freed every GPM sample


def test_several_gpus() -> None:
    got = run(intervals=2, gpus=2)
    assert len(got["gpus"]) == 2 and got["gpus"][0]["uuid"] != got["gpus"][1]["uuid"]
    for pair in got["intervals"]:
        assert len(pair) == 2
        for r in pair:
            check_whole_gpu(r)
        own = {p for p, _ in pair[1]["processes"]}
        assert own == {p + 2048 for p, _ in pair[0]["processes"]}


def mig_readings(got: dict[str, Any]) -> list[dict[str, Any]]:
    assert "raised" not in got, got.get("raised")
    (last,) = got["intervals"][-1:]
    return list(last)


def test_mig_compute_instances_never_sum_above_their_gpu_instance() -> None:
    readings = mig_readings(run(intervals=2, mig="2:2"))
    assert len(readings) == 4 and all(r["error"] is None for r in readings)
    r0 = readings[0]
    gi_busy = 0.75 * REF.mean("hmma_tensor", r0["start"], r0["end"]) / 100  # mean of 1/2 and 2/2
    for gi in (readings[:2], readings[2:]):
        total = sum(r["pipe_busy"]["hmma"] * r["sms"] for r in gi)
        assert total <= gi_busy * sum(r["sms"] for r in gi) * (1 + 1e-9)


def test_mig_each_compute_instance_gets_its_own_figures() -> None:
    readings = mig_readings(run(intervals=2, mig="2:2"))
    for k, r in enumerate(readings):
        check_whole_gpu(r, scale=(k % 2 + 1) / 2)


def test_no_gpm_bounds_work_from_utilization_samples() -> None:
    got = run(intervals=4, no_gpm=1)
    assert "raised" not in got
    readings = [r for rs in got["intervals"] for r in rs]
    assert readings and all(r["pipe_busy"] is None and r["error"] is None for r in readings)
    for r in readings[1:]:  # the first interval's start cuts a sample period: counted busy
        expect = REF.mean("graphics", r["start"], r["end"]) / 100
        assert r["utilization"] == pytest.approx(expect, abs=0.006)  # samples are whole percent


def test_gpm_supported_but_sampling_fails_falls_back_to_utilization() -> None:
    got = run(intervals=4, gpm_sample_fails=1)
    assert "raised" not in got, got.get("raised")
    first, *rest = [r for rs in got["intervals"] for r in rs]
    # The interval in which GPM kept failing is signed as a gap; from then on the GPU is
    # measured from NVML's utilization samples (nvml-utilization), never a gap again.
    assert first["error"] and first["cause"] == "sampling-error"
    assert rest and all(r["error"] is None and r["pipe_busy"] is None for r in rest)
    for r in rest[1:]:  # the first interval's start cuts a sample period: counted busy
        expect = REF.mean("graphics", r["start"], r["end"]) / 100
        assert r["utilization"] == pytest.approx(expect, abs=0.006)


def test_a_driver_without_v3_symbols_is_measured() -> None:
    got = run(intervals=2, no_v3=True)
    assert "raised" not in got, got.get("raised")
    for (r,) in got["intervals"]:
        check_whole_gpu(r)
        # the processes still arrive, through nvmlDeviceGetComputeRunningProcesses_v2
        pids = set(REF.pids(r["start"])) | set(REF.pids(r["end"]))
        assert pids and {p for p, _ in r["processes"]} <= pids


def test_profiler_holding_the_counters_is_a_gap() -> None:
    got = run(intervals=2, in_use=1)
    assert "raised" not in got
    for (r,) in got["intervals"]:
        assert r["pipe_busy"] is None and r["error"]
        assert r["cause"] == "profiler-busy"
        assert r["clock_mhz_s"] == 0.0


def test_a_failing_metric_the_model_counts_voids_the_interval() -> None:
    got = run(intervals=2, fail_metric=13)  # the FP16 pipe: counted on Hopper
    assert "raised" not in got
    for (r,) in got["intervals"]:  # never measured with a made-up value for that pipe
        assert r["pipe_busy"] is None and "13" in r["error"]
        assert r["cause"] == "sampling-error"


def test_a_failing_metric_the_model_does_not_need_is_not_read() -> None:
    got = run(intervals=2, fail_metric="1,2,3")  # SM util, SM occupancy, integer: no FLOP rate
    assert "raised" not in got
    for (r,) in got["intervals"]:
        check_whole_gpu(r)


NONCE = bytes(range(32))


def test_confidential_computing_reports_over_the_nonce() -> None:
    got = run(intervals=1, cc=1, nonce=NONCE.hex())
    ((status, _, report, chain),) = got["bindings"]
    assert status == "report"
    assert NONCE in bytes.fromhex(report) and "BEGIN CERTIFICATE" in chain
    off = run(intervals=1, nonce=NONCE.hex())
    assert off["bindings"][0][0] == "cc-off"


def test_a_nonce_of_the_wrong_length_is_refused_clearly() -> None:
    got = run(intervals=1, cc=1, nonce=bytes(16).hex())
    ((status, detail, report, _),) = got["bindings"]
    assert status == "error" and "32" in detail and report == ""


def test_an_interval_under_100_ms_is_refused_or_measured() -> None:
    got = run(intervals=3, interval_s=0.05)
    assert got["raised"]["exc"] == "ValueError" and "100 ms" in got["raised"]["text"]
