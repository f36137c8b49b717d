"""Sampled job reports: size and verification time, measured on a job generated for real, and
extrapolated to a frontier run.

    .venv/bin/python bench/sampled_report.py [--records 20000] [--rounds 1 60] [--gpus 8]
                                             [--samples 3000] [--probes 3000] [--run]

For each `--rounds` (sampling rounds per record; the agent signs up to 60 one-second rounds of
its GPUs in one record, kept under 60 KiB), it signs `--records` / rounds chained records (at
least 500) of `--gpus`
simulated H100s for one job, with one record of another job after every ninth (so probes land
on both), logs them in an RFC 6962 log in memory, makes the sampled report with the same pure
maker `flopwatch report --sampled` calls (flopwatch.verify.sampled_build), and verifies it with
SampledVerifier in this one process. It prints what was measured (report bytes, make and verify
seconds, and per opened record: bytes of envelope, log proof and sum-tree path, milliseconds)
and, from those per-item costs, an EXTRAPOLATION to a run of 20,000 GPUs for 100 days at 1 s
(1.7e11 GPU-intervals), where only the depths of the two trees and the count of opened records
change: nothing there was run.

With --run, the records are a run's (account "bench", run "frontier") instead of one job's:
each record of it is of one of two jobs of that run in turn (a restart), and the report is the
run report `flopwatch report --run --sampled` makes (leaves: the run's figures in each record).

With --store, it measures what MAKING a run report costs the collector instead: the run's records
(the first `--rounds` rounds of `--gpus` GPUs each, the run's two jobs in turn; 30 is what
the agent signs for a run's records) are ingested for real into a SQLite
store in a temporary directory (the collector's Ingestor: verified, committed, logged, indexed
by run), for each count of `--store-records`; then `build_sampled_run_report` (what `flopwatch
report --run --sampled` calls: two streamed passes over pages of the store) makes the report,
timed, and once more under tracemalloc for its peak Python memory; the report is verified. The
in-memory maker of before (the whole run read in one snapshot, `run_evidence`) is measured
alongside for comparison. Per-record cost and peak memory are printed, and the build time is
EXTRAPOLATED to a frontier run's record count (nothing that large was run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.collector.store

from flopwatch.agent.backends.sim import SIM_PID_BASE, SimBackend
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.translog import TransparencyLog
from flopwatch.collector.sampled_report import (
    REPORT_PAGE_LEAVES,
    Observer,
    build_sampled_run_report,
)
from flopwatch.collector.sampled_statement import RecordFacts, build_sampled_statement
from flopwatch.collector.store.factory import open_store
from flopwatch.collector.store.records import LeafScope
from flopwatch.keys import SigningKey, key_id_of_raw, public_raw
from flopwatch.merkle import MerkleLog
from flopwatch.statements import TreeHead
from flopwatch.sumtree import NODE_BYTES, Sums, SumTree, check_path, leaf_node
from flopwatch.verify.bundle_format import NodeKey
from flopwatch.verify.sampled import SampledVerifier
from flopwatch.verify.sampled_build import build_sampled
from flopwatch.verify.sampled_format import SampledReport, Scope, detectable_fraction
from tests.collector.store.reference_report import reference_report

START = 1_700_000_000 * 10**9
JOB = "manual:bench/frontier"
OTHER = "manual:bench/other"
RUN, ACCOUNT = "frontier", "bench"
RUN_JOBS = ("manual:bench/frontier-1", "manual:bench/frontier-2")
FRONTIER_GPU_INTERVALS = 20_000 * 100 * 86_400  # 1.728e11
TARGET_BYTES = 1 << 30
TARGET_S = 600.0


def _records(
    n: int, rounds: int, gpus: int, run: bool = False
) -> tuple[list[bytes], list[bool], NodeKey]:
    """`n` records of JOB (with `run`: of RUN's two jobs in turn), one of OTHER after every
    ninth; True where the record is JOB's (RUN's)."""
    key = SigningKey.generate()
    sim = SimBackend(gpus, seed=7, start_ns=START)
    builder = RecordBuilder(
        node_id="bench", cluster="bench", signer=key, head=ChainHead(), now_ns=lambda: START
    )
    out: list[bytes] = []
    mine: list[bool] = []
    made = 0
    while made < n:
        job = OTHER if len(out) % 10 == 9 else (RUN_JOBS[made % 2] if run else JOB)
        labels = {"run": RUN, "account": ACCOUNT} if run and job != OTHER else {}
        windows = [JobWindow(job, SIM_PID_BASE + g, 0, **labels) for g in range(gpus)]
        batch = []
        for _ in range(rounds):
            readings = sim.next_readings()
            assert readings is not None
            batch.append((readings, windows))
        for env in builder.build_records(batch):
            out.append(env.to_bytes())
            mine.append(job != OTHER)
            made += job != OTHER
    raw = public_raw(key.public_key)
    return out, mine, NodeKey(key_id_of_raw(raw), "bench", raw, "enrolled", START)


def measure(
    records: int, rounds: int, gpus: int, samples: int, probes: int, run: bool = False
) -> dict[str, float]:
    t = time.perf_counter()
    envelopes, mine, node = _records(records, rounds, gpus, run)
    sign_s = time.perf_counter() - t
    collector = SigningKey.generate()
    log = MerkleLog()
    for e in envelopes:
        log.append(e)
    head = TreeHead(log.size, log.root(), START, public_raw(collector.public_key)).sign(collector)

    class View:
        def entries(self, leaf_indices: Sequence[int]) -> dict[int, bytes]:
            return {i: envelopes[i] for i in leaf_indices}

        def inclusion_proofs(self, leaf_indices: Sequence[int]) -> dict[int, tuple[bytes, ...]]:
            return {i: log.inclusion_proof(i) for i in leaf_indices}

    job_records = [(i, e) for i, e in enumerate(envelopes) if mine[i]]
    t = time.perf_counter()
    scope = {"run": RUN, "account": ACCOUNT} if run else {"job_id": JOB}
    report = build_sampled(
        **scope,
        flop_model_version="1",
        records=job_records,
        log=View(),
        tree_head=head,
        nodes=(node,),
        signer=collector,
        created_ns=START,
        samples=samples,
        probes=probes,
    )
    make_s = time.perf_counter() - t
    data = report.to_bytes()
    verifier = SampledVerifier(collector_key_id=collector.key_id, min_samples=1, min_probes=0)
    t = time.perf_counter()
    result = verifier.verify(data)
    verify_s = time.perf_counter() - t
    opened = len(report.openings) + len(report.probes)
    env_bytes = sum(len(o.envelope) for o in report.openings) + sum(
        len(p.envelope) for p in report.probes
    )
    log_depth = math.ceil(math.log2(log.size))
    sum_depth = math.ceil(math.log2(len(job_records)))
    # The cost of one level of a sum-tree path: hashing two nodes and adding their sums.
    leaves = [leaf_node(i, bytes(32), Sums(i, i, 1, 1)) for i in range(1 << 12)]
    tree = SumTree(leaves)
    t = time.perf_counter()
    for p in range(0, 1 << 12, 4):
        check_path(p, tree.size, leaves[p], tree.path(p), tree.root)
    level_ms = (time.perf_counter() - t) * 1e3 / (1 << 10) / 12
    intervals = result.gpu_intervals / len(job_records)
    return {
        "records": len(job_records),
        "log_size": log.size,
        "intervals_per_record": intervals,
        "sign_s": sign_s,
        "make_s": make_s,
        "report_bytes": len(data),
        "verify_s": verify_s,
        "opened": opened,
        "envelope_bytes": env_bytes / opened,
        "log_depth": log_depth,
        "sum_depth": sum_depth,
        "per_opened_bytes": len(data) / opened,
        "per_opened_ms": verify_s * 1e3 / opened,
        "level_ms": level_ms,
        "detectable": result.misstated_fraction_95,
    }


def extrapolate(m: dict[str, float], samples: int, probes: int) -> dict[str, float]:
    """A frontier run's report from the measured per-item costs (an EXTRAPOLATION)."""
    records = FRONTIER_GPU_INTERVALS / m["intervals_per_record"]
    sum_depth = math.ceil(math.log2(records))
    log_depth = math.ceil(math.log2(records * 1.25))  # room for other jobs' records in the log
    extra_levels_bytes = (sum_depth - m["sum_depth"]) * NODE_BYTES + (
        log_depth - m["log_depth"]
    ) * 32
    per_opened = m["per_opened_bytes"] + extra_levels_bytes
    opened = samples + probes  # at most: a frontier run's draws rarely repeat
    extra_ms = (sum_depth - m["sum_depth"] + log_depth - m["log_depth"]) * m["level_ms"]
    return {
        "records": records,
        "sum_depth": sum_depth,
        "log_depth": log_depth,
        "report_bytes": opened * per_opened,
        "verify_s": opened * (m["per_opened_ms"] + extra_ms) / 1e3,
    }


def _store_build(
    records: int, rounds: int, gpus: int, samples: int, probes: int, page: int
) -> dict[str, float]:
    """Ingest a run of `records` records into a SQLite store, then make and verify its sampled
    run report from the store (`build_sampled_run_report`), timing and tracing the build."""
    envelopes, mine, node = _records(records, rounds, gpus, run=True)
    with tempfile.TemporaryDirectory() as tmp:
        end = START + (len(envelopes) * rounds + 60) * 10**9
        store = open_store(f"sqlite:{tmp}/bench.db", create=True, now_ns=lambda: end)
        store.enroll(node.public_key, node.node_id)
        ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [], now_ns=lambda: end)
        t = time.perf_counter()
        for i in range(0, len(envelopes), 500):
            acks = ingestor.ingest(envelopes[i : i + 500])
            assert all(a.status == "accepted" for a in acks), acks[0]
        ingest_s = time.perf_counter() - t
        db_bytes = os.path.getsize(f"{tmp}/bench.db")
        del envelopes
        collector = SigningKey.generate()
        log = TransparencyLog(store, collector, now_ns=lambda: end)

        def report(observe: Observer | None = None) -> SampledReport:
            return build_sampled_run_report(
                store,
                log,
                ACCOUNT,
                RUN,
                samples=samples,
                probes=probes,
                now_ns=lambda: end,
                page=page,
                observe=observe,
            )

        def build() -> bytes:
            return report().to_bytes()

        def before() -> bytes:
            scope = LeafScope(account=ACCOUNT, run=RUN)
            return reference_report(
                store, log, scope, created_ns=end, samples=samples, probes=probes
            )

        def with_statement() -> bytes:
            # `report --run --sampled --format in-toto`: the facts observed on the first pass
            facts = RecordFacts(Scope(run=RUN, account=ACCOUNT))
            made = report(facts.observe)
            data = made.to_bytes()
            build_sampled_statement(
                made, data, collector, facts, origin="bench.invalid/log", report_name="r"
            )
            return data

        out: dict[str, float] = {"records": sum(mine), "ingest_s": ingest_s, "db_bytes": db_bytes}
        t = time.perf_counter()
        with_statement()
        out["intoto_s"] = time.perf_counter() - t
        for name, make in (("stream", build), ("before", before)):
            t = time.perf_counter()
            data = make()
            out[f"{name}_s"] = time.perf_counter() - t
            tracemalloc.start()
            again = make()
            out[f"{name}_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert again == data
            out[f"{name}_bytes"] = len(data)
        assert out["stream_bytes"] == out["before_bytes"]
        verifier = SampledVerifier(collector_key_id=collector.key_id, min_samples=1, min_probes=0)
        t = time.perf_counter()
        result = verifier.verify(data)
        out["verify_s"] = time.perf_counter() - t
        out["gpu_intervals"] = result.gpu_intervals
        store.close()
    return out


def store_main(
    counts: Sequence[int], rounds: int, gpus: int, samples: int, probes: int, page: int
) -> None:
    rows = []
    for n in counts:
        m = _store_build(n, rounds, gpus, samples, probes, page)
        rows.append(m)
        per_us = m["stream_s"] / m["records"] * 1e6
        print(
            f"\nMEASURED: run of {m['records']:.0f} records of "
            f"{m['gpu_intervals'] / m['records']:.0f} GPU-intervals "
            f"({m['gpu_intervals']:.0f} GPU-intervals) ingested in {m['ingest_s']:.1f} s, "
            f"database {m['db_bytes'] / 2**20:.0f} MiB\n"
            f"  streamed build (page {page}): {m['stream_s']:.2f} s = {per_us:.0f} us per "
            f"record, peak {m['stream_peak'] / 2**20:.1f} MiB (tracemalloc)\n"
            f"  in-memory build of before: {m['before_s']:.2f} s, peak "
            f"{m['before_peak'] / 2**20:.1f} MiB; reports identical, "
            f"{m['stream_bytes'] / 2**20:.1f} MiB, verified in {m['verify_s']:.2f} s\n"
            f"  streamed build with its in-toto statement (--format in-toto): "
            f"{m['intoto_s']:.2f} s"
        )
    last = rows[-1]
    per_record_s = last["stream_s"] / last["records"]
    intervals = last["gpu_intervals"] / last["records"]
    records = FRONTIER_GPU_INTERVALS / intervals
    print(
        f"EXTRAPOLATED to 1.7e11 GPU-intervals at {intervals:.0f} GPU-intervals per record "
        f"({records:.3g} records), at the measured {per_record_s * 1e6:.0f} us per record: "
        f"{records * per_record_s / 3600:.1f} hours on one core; peak memory as measured "
        "(it does not grow with the run)"
    )
    if len(rows) > 1 and last["records"] > rows[0]["records"]:
        # What each further record costs, without the opened records' fixed cost.
        marginal_s = (last["stream_s"] - rows[0]["stream_s"]) / (
            last["records"] - rows[0]["records"]
        )
        print(
            f"EXTRAPOLATED at the marginal {marginal_s * 1e6:.0f} us per record (between the "
            f"first and last run): {records * marginal_s / 3600:.1f} hours on one core"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--rounds", type=int, nargs="+", default=[1, 60])
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--probes", type=int, default=3000)
    p.add_argument("--run", action="store_true", help="a run of two jobs instead of one job")
    p.add_argument("--store", action="store_true", help="measure the collector's streamed build")
    p.add_argument("--store-records", type=int, nargs="+", default=[1_000, 4_000])
    p.add_argument("--page", type=int, default=REPORT_PAGE_LEAVES)
    args = p.parse_args()
    if args.store:
        rounds = args.rounds[0]
        store_main(args.store_records, rounds, args.gpus, args.samples, args.probes, args.page)
        return
    print(
        f"{args.samples} samples: a fraction of {detectable_fraction(args.samples):.4%} "
        f"misstated records is found with 95 % probability; {args.probes} probes likewise "
        f"{detectable_fraction(args.probes):.4%} of the job's log window withheld"
    )
    for rounds in args.rounds:
        # The same GPU-intervals signed whatever the record size (at least 500 records).
        records = max(500, args.records // rounds)
        m = measure(records, rounds, args.gpus, args.samples, args.probes, args.run)
        print(
            f"\nMEASURED, {rounds} round(s) of {args.gpus} GPUs per record "
            f"({m['intervals_per_record']:.0f} GPU-intervals, {m['envelope_bytes']:.0f} bytes "
            f"per envelope): {'run (2 jobs)' if args.run else 'job'} of {m['records']:.0f} "
            f"records in a log of {m['log_size']:.0f}\n"
            f"  signing the records {m['sign_s']:.1f} s; making the report {m['make_s']:.1f} s; "
            f"report {m['report_bytes'] / 2**20:.1f} MiB; verifying {m['verify_s']:.2f} s "
            f"(one process)\n"
            f"  per opened record or probe ({m['opened']:.0f}): {m['per_opened_bytes']:.0f} "
            f"bytes (envelope {m['envelope_bytes']:.0f}, log proof {32 * m['log_depth']:.0f}, "
            f"sum path {NODE_BYTES * m['sum_depth']:.0f}), {m['per_opened_ms']:.2f} ms\n"
            f"  per tree level: {NODE_BYTES} + 32 bytes, {m['level_ms'] * 1e3:.1f} us "
            "(sum-tree step)"
        )
        x = extrapolate(m, args.samples, args.probes)
        print(
            f"EXTRAPOLATED to 20,000 GPUs x 100 days at 1 s ({FRONTIER_GPU_INTERVALS:.3g} "
            f"GPU-intervals, {x['records']:.3g} records; trees {x['sum_depth']} and "
            f"{x['log_depth']} deep): report {x['report_bytes'] / 2**20:.0f} MiB "
            f"(target {TARGET_BYTES / 2**20:.0f}), verify {x['verify_s']:.1f} s "
            f"(target {TARGET_S:.0f}) on one core"
        )


if __name__ == "__main__":
    main()
