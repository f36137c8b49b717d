"""Per-job, per-run and per-account series of /metrics: bounded by recency and count, and the
size of a scrape with 100,000 jobs seen."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from flopwatch.collector.config import MetricsSeries
from flopwatch.collector.ingest.ingestor import Ingestor, IngestSnapshot
from flopwatch.collector.ingest.run_view import AccountView
from flopwatch.collector.metrics import recent, register_metrics
from flopwatch.collector.store.records import AccountTotal, JobTotal, RunTotal, WindowTotal
from flopwatch.runs import CLASS_BIT, WorkloadClass
from tests.nodes import NOW, Node

HOUR = 3600 * 10**9


def _job(i: int, last_end_ns: int) -> JobTotal:
    return JobTotal(
        f"slurm:c/{i}", 10**18 + i, 2 * 10**18 + i, 0, last_end_ns, 1, (), 10**15, 10**9
    )


def test_recent_keeps_active_items_most_recent_first_up_to_the_cap():
    jobs = [_job(i, NOW - i * HOUR) for i in range(30)]
    kept = recent(jobs, MetricsSeries(recent_s=10 * 3600.0, max_series=100), NOW)
    assert sorted(j.job_id for j in kept) == sorted(f"slurm:c/{i}" for i in range(11))
    capped = recent(jobs, MetricsSeries(recent_s=10 * 3600.0, max_series=3), NOW)
    assert [j.job_id for j in capped] == ["slurm:c/0", "slurm:c/1", "slurm:c/2"]


def test_run_account_and_window_series_after_a_run_spans_two_nodes(store, make_ingestor):
    a = Node("node-a", job="slurm:c/1", run="llm-7b", account="acme")
    b = Node("node-b", job="slurm:c/2", run="llm-7b", account="acme")
    for n in (a, b):
        n.labels["workload_class"] = WorkloadClass.PRETRAINING
        store.enroll(n.public_raw, n.node_id)
    made = make_ingestor(store)
    clock = lambda: max(a.t, b.t) + 10**9  # noqa: E731  the windows end on the records' day
    ingestor = Ingestor(store, made.policy, [], now_ns=clock, account_windows=(30, 90, 365))
    registry = CollectorRegistry()
    ingestor.ingest(a.envelopes(2) + b.envelopes(3))
    register_metrics(registry, ingestor.snapshot, now_ns=clock)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    jobs = {j.job_id: j for j in ingestor.snapshot().jobs}
    estimate = jobs["slurm:c/1"].flops_estimate + jobs["slurm:c/2"].flops_estimate
    gpu_fs = jobs["slurm:c/1"].gpu_time_fs + jobs["slurm:c/2"].gpu_time_fs
    run = {"account": "acme", "run": "llm-7b", "class": "pretraining"}
    assert value("flopwatch_run_flops_total", **run) == float(estimate)
    assert value("flopwatch_run_gpu_seconds_total", **run) == gpu_fs / 10**15
    assert value("flopwatch_account_flops_total", account="acme") == float(estimate)
    energy = value("flopwatch_account_energy_joules_total", account="acme")
    assert energy is not None and energy > 0
    for days in (30, 90, 365):
        assert value("flopwatch_account_window_flops", account="acme", window=f"{days}d") == float(
            estimate
        )
    text = generate_latest(registry).decode()
    assert "GPU board energy in joules" in text
    gpu = a.gpus[0].uuid
    assert value("flopwatch_gpu_flops_total", node="node-a", gpu=gpu, Hostname="node-a", UUID=gpu)


def test_series_of_jobs_runs_and_accounts_inactive_too_long_are_dropped():
    old, fresh = NOW - 48 * HOUR, NOW - HOUR
    snap = _snapshot(jobs=[_job(1, old), _job(2, fresh)], runs=[_run("r1", old), _run("r2", fresh)])
    registry = CollectorRegistry()
    register_metrics(registry, lambda: snap, now_ns=lambda: NOW)
    assert registry.get_sample_value("flopwatch_job_flops_total", {"job_id": "slurm:c/2"})
    assert registry.get_sample_value("flopwatch_job_flops_total", {"job_id": "slurm:c/1"}) is None
    run = {"account": "acme", "class": "fine-tuning"}
    assert registry.get_sample_value("flopwatch_run_flops_total", {**run, "run": "r2"})
    assert registry.get_sample_value("flopwatch_run_flops_total", {**run, "run": "r1"}) is None
    assert registry.get_sample_value("flopwatch_account_flops_total", {"account": "acme"})
    later = CollectorRegistry()
    register_metrics(later, lambda: snap, now_ns=lambda: NOW + 48 * HOUR)
    assert later.get_sample_value("flopwatch_job_flops_total", {"job_id": "slurm:c/2"}) is None
    assert later.get_sample_value("flopwatch_account_flops_total", {"account": "acme"}) is None


def _run(name: str, last_end_ns: int) -> RunTotal:
    bit = CLASS_BIT[WorkloadClass.FINE_TUNING]
    return RunTotal("acme", name, bit, 10**20, 2 * 10**20, 0, last_end_ns, 1, 10**15, 10**9)


def _snapshot(jobs: list[JobTotal], runs: list[RunTotal], accounts: int = 1) -> IngestSnapshot:
    last = max(r.last_end_ns for r in runs)
    views = tuple(
        AccountView(
            AccountTotal(
                "acme" if a == 0 else f"acct-{a}", 0, 1, 10**20, 10**20, 0, last, 1, 10**15, 10**9
            ),
            tuple(WindowTotal(d, 0, 10**20, 10**20) for d in (30, 90, 365)),
        )
        for a in range(accounts)
    )
    return IngestSnapshot(
        jobs=tuple(jobs), chains=(), accepted=0, duplicate=0, retry=0, rejected={},
        runs=tuple(runs), accounts=views,
    )  # fmt: skip


def _scrape(snap: IngestSnapshot, series: MetricsSeries) -> tuple[int, float]:
    registry = CollectorRegistry()
    register_metrics(registry, lambda: snap, series=series, now_ns=lambda: NOW)
    began = time.perf_counter()
    size = len(generate_latest(registry))
    return size, time.perf_counter() - began


def test_scrape_with_100000_jobs_seen_stays_small_with_the_default_bound():
    """100,000 jobs (10,000 runs, 1,000 accounts) seen over 100 days, one job ending every
    86.4 s: the default bound (24 h, 10,000 series each) shows the last day's 1,000 jobs."""
    n = 100_000
    step = 100 * 24 * HOUR // n
    jobs = [_job(i, NOW - i * step) for i in range(n)]
    runs = [_run(f"run-{i}", NOW - i * 10 * step) for i in range(n // 10)]
    snap = _snapshot(jobs, runs, accounts=1000)
    bounded, bounded_s = _scrape(snap, MetricsSeries())
    everything, everything_s = _scrape(
        snap, MetricsSeries(recent_s=1000 * 86400.0, max_series=1_000_000)
    )
    print(
        f"\n/metrics with {n} jobs seen: default bound {bounded} bytes in {bounded_s:.3f} s; "
        f"unbounded {everything} bytes in {everything_s:.3f} s"
    )
    assert everything > 10 * bounded  # 100,000 job series against about 1,000
    assert bounded < 2_000_000
