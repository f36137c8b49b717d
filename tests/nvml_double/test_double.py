"""The NVML double through the unmodified pynvml, in child processes: what each call serves from
the trace (checked against a Python reading of the same trace), how it refuses misuse, and each
switch's visible effect. The backend through the double: tests/agent/backends/nvml/."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from typing import Any

import pytest

from tests.nvml_double.harness import (
    CFLAGS,
    EPOCH,
    LIB_NAME,
    LIBS,
    NO_V3_DEFINE,
    TraceReference,
    double_env,
    library_dir,
    run_probe,
)
from tests.paths import REPO

REF = TraceReference.load()
KEYS = {
    1: "graphics",
    2: "sm_util",
    3: "sm_occ",
    4: "integer",
    5: "any_tensor",
    6: "dfma_tensor",
    7: "hmma_tensor",
    8: "dmma_tensor",
    9: "imma_tensor",
    10: "dram_bw",
    11: "fp64",
    12: "fp32",
    13: "fp16",
}
NOT_SUPPORTED, INVALID_ARGUMENT, NOT_FOUND, IN_USE, VERSION_MISMATCH = 3, 2, 6, 19, 25
BUSY = REF.busiest()  # start of the busiest 3 s of HMMA work in the trace


def symbols(no_v3: bool = False) -> set[str]:
    lib = library_dir(no_v3) / LIB_NAME
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True
    )
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def test_the_makefile_builds_with_the_harness_command() -> None:
    make = (REPO / "Makefile").read_text()
    flags = re.search(r"^NVML_DOUBLE_CFLAGS\s*:=\s*(.+)$", make, re.M)
    libs = re.search(r"^NVML_DOUBLE_LIBS\s*:=\s*(.+)$", make, re.M)
    assert flags and tuple(flags.group(1).split()) == CFLAGS
    assert libs and tuple(libs.group(1).split()) == LIBS
    assert NO_V3_DEFINE in make
    assert re.search(r"^pytest:.*\bnvml-double\b", make, re.M)


def test_exports_exactly_the_symbols_its_readme_lists() -> None:
    readme = (REPO / "tests" / "nvml_double" / "README.md").read_text()
    section = readme.split("## Exported symbols", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `(nvml\w+)`", section, re.M))
    assert symbols() == listed
    assert symbols(no_v3=True) == listed - {"nvmlDeviceGetComputeRunningProcesses_v3"}


def test_struct_layouts_match_pynvml() -> None:
    sizes = run_probe("layouts", double_env())
    assert len(sizes) == 13
    assert {name: pair for name, pair in sizes.items() if pair[0] != pair[1]} == {}


def test_identity_comes_from_the_trace_meta() -> None:
    got = run_probe("identity", double_env())
    (gpu,) = got["gpus"]
    meta = REF.meta
    assert got["driver"] == meta["driver"]
    assert gpu["name"] == meta["name"] and gpu["uuid"] == meta["uuid"]
    assert gpu["cc"] == meta["cc"] and gpu["cores"] == meta["cores"]
    assert gpu["sms"] == meta["cores"] // 128 == 132
    assert gpu["max_sm_clock"] == meta["max_sm_clock_mhz"]
    assert gpu["serial"] == "1650000000000"
    assert gpu["mig_mode"] == [0, 0] and gpu["gpm_supported"] == 1


def test_several_gpus_have_their_own_identity_and_processes() -> None:
    env = double_env(gpus=3)
    gpus = run_probe("identity", env)["gpus"]
    assert [g["serial"] for g in gpus] == ["1650000000000", "1650000000001", "1650000000002"]
    assert gpus[0]["uuid"] == REF.meta["uuid"]
    assert len({g["uuid"] for g in gpus}) == 3
    t = BUSY + 0.5
    pids = [run_probe("at_times", env, gpu=i, times=[t])[0]["procs"] for i in (0, 2)]
    assert [p[0] for p in pids[0]] == REF.pids(t)
    assert [p[0] for p in pids[1]] == [pid + 2 * 2048 for pid in REF.pids(t)]
    busy = run_probe("gpm", env, gpu=2, windows=[[BUSY, BUSY + 1]], ids=[7])
    assert busy[0][0][2] == pytest.approx(REF.mean("hmma_tensor", BUSY, BUSY + 1))


def test_gpm_metrics_are_the_trace_mean_over_the_sampled_window() -> None:
    windows = [
        [BUSY + 0.2, BUSY + 0.7],  # inside one interval
        [BUSY - 1.3, BUSY + 2.6],  # across several, cut at both ends
        [REF.t0 - 2.0, REF.t0 + 1.5],  # starting before the trace: idle there
        [REF.t1 - 0.5, REF.t1 + 3.0],  # ending after it
    ]
    got = run_probe("gpm", double_env(), windows=windows, ids=list(KEYS))
    for (a, b), rows in zip(windows, got, strict=True):
        for metric_id, ret, value, short in rows:
            assert ret == 0 and short == KEYS[metric_id]
            assert value == pytest.approx(REF.mean(KEYS[metric_id], a, b), abs=1e-9)
    assert got[0][6][2] > 50  # hmma in the busiest window: the test looks at real work


def test_gpm_misuse_is_refused_as_the_driver_does() -> None:
    got = run_probe("errors", double_env(gpus=2), t=BUSY)
    assert got["live_after_alloc"] == 2 and got["live_after_free"] == 0
    assert got["metrics_unsampled"]["value"] == INVALID_ARGUMENT
    assert got["too_close"][0][1] == INVALID_ARGUMENT  # 50 ms apart: counters not refreshed
    assert got["metrics_reversed"][0][1] == INVALID_ARGUMENT
    assert got["metrics_bad_version"]["value"] == VERSION_MISMATCH
    assert got["support_bad_version"] == VERSION_MISMATCH
    assert [m[1] for m in got["metrics_unknown_id"]] == [
        INVALID_ARGUMENT,
        NOT_SUPPORTED,
        NOT_SUPPORTED,
        INVALID_ARGUMENT,
    ]
    assert got["metrics_two_gpus"]["value"] == INVALID_ARGUMENT
    assert got["free"] == {"ok": None}
    assert got["double_free"]["value"] == INVALID_ARGUMENT
    assert got["bad_index"]["value"] == INVALID_ARGUMENT
    assert got["bad_handle"]["value"] == INVALID_ARGUMENT
    assert got["after_shutdown"]["value"] == 1  # NVML_ERROR_UNINITIALIZED


def test_clock_energy_and_processes_at_an_instant() -> None:
    times = [REF.t0 - 5, BUSY + 0.05, BUSY + 0.55, BUSY + 1.95, REF.t1 + 5]
    got = run_probe("at_times", double_env(), times=times)
    for t, row in zip(times, got, strict=True):
        assert row["t"] == t
        assert row["clock"] == REF.clock(t)
        assert row["energy"] == pytest.approx(REF.energy(t), abs=1)
        r = REF.at(t)
        assert [p[:2] for p in row["procs"]] == (
            [[p["pid"], p["mem"]] for p in r["procs"]] if r else []
        )
        assert all(p[2:] == [0xFFFFFFFF, 0xFFFFFFFF] for p in row["procs"])
    assert got[0]["clock"] == REF.intervals[0]["clock_polled_mhz"][0]
    assert got[-1]["clock"] == REF.intervals[-1]["clock_polled_mhz"][-1]
    assert got[1]["energy"] < got[2]["energy"] < got[3]["energy"]


def served_us(t: float) -> int:
    return round(REF.served(t) * 1e6)


def test_process_utilization_serves_new_samples_in_served_time() -> None:
    samples = [(s, r["t1"]) for r in REF.intervals for s in r.get("proc_util", [])]
    (first, t1), (second, _) = samples[0], samples[1]
    ts = first["ts"] / 1e6
    got = run_probe("at_times", double_env(), times=[ts - 1e-3, ts, t1])
    assert got[0]["putil"]["value"] == NOT_FOUND  # before the sample was taken
    assert got[1]["putil"] == [[first["pid"], served_us(ts), first["sm"], first["mem"]]]
    since = run_probe("at_times", double_env(), times=[second["ts"] / 1e6], since_us=served_us(ts))
    assert [p[:2] for p in since[0]["putil"]] == [[second["pid"], served_us(second["ts"] / 1e6)]]


def test_utilization_samples_come_every_sixth_of_a_second() -> None:
    t = BUSY + 1.0
    (row,) = run_probe("at_times", double_env(), times=[t])
    stamps = [s[0] for s in row["samples"]]
    assert len(stamps) == 100  # the newest 100
    assert all(abs((b - a) - 1e6 / 6) <= 1 for a, b in itertools.pairwise(stamps))
    assert stamps[-1] <= served_us(t) < stamps[-1] + 1e6 / 6
    for stamp, value in row["samples"][-12:]:
        hi = REF.t0 + (stamp / 1e6 - EPOCH)
        assert value == round(REF.mean("graphics", hi - 1 / 6, hi))
    (later,) = run_probe("at_times", double_env(), times=[t], since_us=stamps[-1])
    assert later["samples"]["value"] == NOT_FOUND


def test_real_time_maps_the_wall_clock_onto_the_trace() -> None:
    env = double_env(frozen=False, epoch=time.time() - 100.0, speed=2.0)
    t = run_probe("trace_time", env)
    assert 200.0 <= t - REF.t0 < 220.0  # 100 s at speed 2, plus this child's start-up


def test_fail_metric_switch_fails_only_those_metrics() -> None:
    got = run_probe(
        "gpm", double_env(fail_metric="7,12"), windows=[[BUSY, BUSY + 1]], ids=[6, 7, 12, 13]
    )
    assert [m[1] for m in got[0]] == [0, NOT_SUPPORTED, NOT_SUPPORTED, 0]


def test_no_gpm_switch() -> None:
    env = double_env(no_gpm=1)
    assert run_probe("identity", env)["gpus"][0]["gpm_supported"] == 0
    got = run_probe("gpm", env, windows=[[BUSY, BUSY + 1]], ids=[7])
    assert got[0]["value"] == NOT_SUPPORTED and got[0]["nvml_error"]


def test_gpm_sample_fails_switch_says_supported_but_cannot_sample() -> None:
    env = double_env(gpm_sample_fails=1)
    assert run_probe("identity", env)["gpus"][0]["gpm_supported"] == 1
    got = run_probe("gpm", env, windows=[[BUSY, BUSY + 1]], ids=[7])
    assert got[0]["value"] == NOT_SUPPORTED
    (row,) = run_probe("at_times", env, times=[BUSY])
    assert len(row["samples"]) == 100  # the utilization fallback is there


def test_in_use_switch() -> None:
    got = run_probe("gpm", double_env(in_use=1), windows=[[BUSY, BUSY + 1]], ids=[7])
    assert got[0]["value"] == IN_USE and got[0]["exc"] == "NVMLError_InUse"


NONCE = bytes(range(32))


def test_confidential_computing_switch() -> None:
    on = run_probe("conf_compute", double_env(cc=1), nonce=NONCE.hex())
    assert on["state"] == [2, 1, 0]
    report = bytes.fromhex(on["report"])
    assert len(report) == 168 and report.startswith(b"NVDBLATT")
    assert NONCE in report and REF.meta["uuid"].encode() in report
    assert on["cec_present"] == 1 and NONCE in bytes.fromhex(on["cec"])
    assert REF.meta["uuid"] in on["cert"] and "BEGIN CERTIFICATE" in on["cert"]
    other = run_probe("conf_compute", double_env(cc=1), nonce=bytes(32).hex())
    assert other["report"][-64:] != on["report"][-64:]  # the digests depend on the nonce
    assert run_probe("conf_compute", double_env(cc="devtools"), nonce=NONCE.hex())["state"] == [
        2,
        1,
        1,
    ]
    off = run_probe("conf_compute", double_env(), nonce=NONCE.hex())
    assert off["state"] == [0, 0, 0]
    assert off["report"]["value"] == NOT_SUPPORTED and off["cert"]["value"] == NOT_SUPPORTED


def gpm_by_id(rows: list[list[Any]]) -> dict[int, float]:
    assert all(r[1] == 0 for r in rows), rows
    return {r[0]: r[2] for r in rows}


def test_mig_switch_serves_compute_instances_that_sum_to_their_gpu_instance() -> None:
    a, b = BUSY, BUSY + 2.0
    got = run_probe("mig", double_env(mig="2:3"), a=a, b=b, ids=[2, 7, 12])
    assert got["mode"] == [1, 1]
    devices, empty = got["slots"][:6], got["slots"][6:]
    assert [e["value"] for e in empty] == [NOT_FOUND]
    assert [(d["gi"], d["ci"]) for d in devices] == [(7, 0), (7, 1), (7, 2), (8, 0), (8, 1), (8, 2)]
    assert len({d["uuid"] for d in devices}) == 6 and all(
        d["uuid"].startswith("MIG-") for d in devices
    )
    assert devices[0]["name"] == f"{REF.meta['name']} MIG 1c.3g.40gb"
    assert {d["sms"] for d in devices} == {16}
    hmma = REF.mean("hmma_tensor", a, b)
    for gi in ("7", "8"):
        cis = [d for d in devices if str(d["gi"]) == gi]
        per_ci = [gpm_by_id(d["gpm"])[7] for d in cis]
        assert per_ci == pytest.approx([hmma / 3, 2 * hmma / 3, hmma])
        whole = gpm_by_id(got["gi"][gi])[7] * sum(d["sms"] for d in cis)
        assert sum(v * d["sms"] for v, d in zip(per_ci, cis, strict=True)) == pytest.approx(whole)
    pids = REF.pids(a)
    assert [d["procs"] for d in devices] == [
        [[p, 7, 0] for p in pids],
        [],
        [],
        [[p + 256, 8, 0] for p in pids],
        [],
        [],
    ]
    assert got["parent_procs"] == [[p, 7, 0] for p in pids] + [[p + 256, 8, 0] for p in pids]
    assert got["whole_gpu_sample"]["value"] == NOT_SUPPORTED
    assert got["putil"]["value"] == NOT_SUPPORTED


def test_a_driver_without_v3_symbols() -> None:
    t = BUSY + 0.5
    got = run_probe("processes", double_env(no_v3=True), t=t)
    unversioned = got["nvmlDeviceGetComputeRunningProcesses"]
    # nvidia-ml-py 13.x (the one installed here) raises an exception that is not an NVMLError.
    assert unversioned["exc"] == "NVMLLibraryMismatchError" and not unversioned["nvml_error"]
    assert got["nvmlDeviceGetComputeRunningProcesses_v3"]["exc"] == "NVMLError_FunctionNotFound"
    assert [p[0] for p in got["nvmlDeviceGetComputeRunningProcesses_v2"]] == REF.pids(t)


@pytest.mark.parametrize(
    ("switches", "why"),
    [
        ({"trace": REPO / "no-such-trace.jsonl"}, "missing trace"),
        ({"mig": "3:3"}, "3 x 3 instances exceed 7 slices"),
        ({"gpus": "0"}, "no GPU"),
        ({"fail_metric": "7,x"}, "bad metric id"),
        ({"speed": "fast"}, "not a number"),
    ],
)
def test_a_bad_configuration_fails_init_with_a_reason(switches: dict[str, Any], why: str) -> None:
    got = run_probe("init_only", double_env(**switches))
    assert got["value"] == 999 and got["nvml_error"], why


def test_a_malformed_trace_fails_init(tmp_path: Any) -> None:
    bad = tmp_path / "trace.jsonl"
    bad.write_text(REF_META_LINE + '{"type": "interval", "t0": 1, "t1": 2, "gpm": {"sm_util": [}\n')
    got = run_probe("init_only", double_env(trace=bad))
    assert got["value"] == 999


REF_META_LINE = (REPO / "tests/fixtures/h100-trace-1/trace.jsonl").read_text().splitlines()[
    0
] + "\n"
