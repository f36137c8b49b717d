"""NvmlBackend over the real pynvml and the NVML double (tests/nvml_double), in child processes.

Time is stepped through the double (NVML_DOUBLE_FROZEN): each interval the probe advances the
trace by 0.1 s steps and polls the SM clock after each, as the poller thread would. The figures
are checked against a Python reading of the same trace. Tests marked xfail(strict=True) show a
backend defect of issue 16 that the double exposes; they turn into failures once it is fixed, so
the mark must then go.
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
        assert own == {p + 2**25 for p, _ in pair[0]["processes"]}


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


@pytest.mark.xfail(
    strict=True,
    reason="issue 16: MIG samples each GPU instance (nvmlGpmMigSampleGet), so every compute "
    "instance gets the instance-wide figure instead of its own (nvmlGpmSampleGet on its handle)",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="issue 16: a vGPU guest's GPM says supported but sampling fails; the backend signs "
    "every interval as a SAMPLING_ERROR gap and never falls back to utilization samples",
)
def test_gpm_supported_but_sampling_fails_falls_back_to_utilization() -> None:
    got = run(intervals=3, gpm_sample_fails=1)
    readings = [r for rs in got["intervals"] for r in rs]
    assert readings and all(r["error"] is None and r["utilization"] is not None for r in readings)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16: on a driver without the _v3 symbol, pynvml >= 12.575 raises "
    "NVMLLibraryMismatchError (not an NVMLError) and it escapes the backend",
)
def test_a_driver_without_v3_symbols_is_measured() -> None:
    got = run(intervals=2, no_v3=True)
    assert "raised" not in got, got.get("raised")
    for (r,) in got["intervals"]:
        check_whole_gpu(r)


def test_profiler_holding_the_counters_is_a_gap() -> None:
    got = run(intervals=2, in_use=1)
    assert "raised" not in got
    for (r,) in got["intervals"]:
        assert r["pipe_busy"] is None and r["error"]
        assert r["clock_mhz_s"] == 0.0


def test_a_failing_metric_never_stops_the_backend() -> None:
    got = run(intervals=2, fail_metric=13)  # FP16 pipe
    assert "raised" not in got
    for (r,) in got["intervals"]:
        if r["pipe_busy"] is None:
            assert "13" in r["error"]
        else:  # measured without the failing pipe, never with a made-up value for it
            assert r["pipe_busy"].get("fp16", 0.0) == 0.0


NONCE = bytes(range(32))


def test_confidential_computing_reports_over_the_nonce() -> None:
    got = run(intervals=1, cc=1, nonce=NONCE.hex())
    ((status, _, report, chain),) = got["bindings"]
    assert status == "report"
    assert NONCE in bytes.fromhex(report) and "BEGIN CERTIFICATE" in chain
    off = run(intervals=1, nonce=NONCE.hex())
    assert off["bindings"][0][0] == "cc-off"


@pytest.mark.xfail(
    strict=True,
    reason="issue 16: a nonce of the wrong length raises TypeError inside pynvml, not an NVML "
    "error or a clear refusal",
)
def test_a_nonce_of_the_wrong_length_is_refused_clearly() -> None:
    got = run(intervals=1, cc=1, nonce=bytes(16).hex())
    raised = got.get("bindings", {})
    assert not (isinstance(raised, dict) and raised.get("exc") == "TypeError")


@pytest.mark.xfail(
    strict=True,
    reason="issue 16: intervals under 0.1 s are accepted, but NVML needs GPM samples more than "
    "100 ms apart: every such interval is a gap",
)
def test_an_interval_under_100_ms_is_refused_or_measured() -> None:
    got = run(intervals=3, interval_s=0.05)
    if "raised" in got:
        assert got["raised"]["exc"] in {"ValueError", "ConfigError", "BackendError"}
        return
    assert all(r["error"] is None for rs in got["intervals"] for r in rs)
