"""Simulated GPU nodes that sign chained envelopes of H100 readings, for every test that needs
records (collector, verifier, CLI, deploy).

Built on the agent's own RecordBuilder, so the envelopes are exactly what an agent signs. No
collector code: verifier tests must not need the collector to make their records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey, public_raw
from flopwatch.model import Pipe, Precision
from flopwatch.runs import WorkloadClass
from flopwatch.verify import RecordVerifier

S = 10**9
T0 = 1_800_000_000 * S
NOW = T0 + 30 * 86400 * S  # after every interval the tests build
PID = 42


class Node:
    """A GPU node with its own key: builds signed, chained envelopes of H100 readings.

    Each call to `envelope` covers the next `seconds` on every GPU (contiguous intervals),
    attributed to `job`.
    """

    def __init__(
        self,
        node_id: str = "node-a",
        *,
        gpus: int = 1,
        job: str = "slurm:c/1",
        key: SigningKey | None = None,
        start_ns: int = T0,
        gpu_prefix: str | None = None,
        run: str = "",
        account: str = "",
        workload_class: WorkloadClass = WorkloadClass.UNKNOWN,
    ) -> None:
        self.node_id = node_id
        # What its job's window declares: run (empty: the job is its own), account, class.
        self.labels = {"run": run, "account": account, "workload_class": workload_class}
        self.key = key or SigningKey.generate()
        self.job = job
        self.t = start_ns
        prefix = gpu_prefix if gpu_prefix is not None else f"GPU-{node_id}"
        self.gpus = [
            GpuInfo(
                uuid=f"{prefix}-{i}",
                name="NVIDIA H100 80GB HBM3",
                sm_count=132,
                cc=(9, 0),
                max_sm_clock_mhz=1980,
                index=i,
            )
            for i in range(gpus)
        ]
        self.builder = self.new_builder()

    def new_builder(self, head: ChainHead | None = None) -> RecordBuilder:
        return RecordBuilder(
            node_id=self.node_id,
            cluster="c",
            signer=self.key,
            head=head or ChainHead(),
            now_ns=lambda: NOW,
        )

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def public_raw(self) -> bytes:
        return public_raw(self.key.public_key)

    def readings(self, start: int, seconds: float, busy: float) -> list[GpuReading]:
        end = start + round(seconds * S)
        return [
            GpuReading(
                gpu=g,
                start_ns=start,
                end_ns=end,
                pipe_busy={Pipe.HMMA: busy, Pipe.FP32: 0.05},
                sm_clock_mhz_s=1800.0 * seconds,
                clock_samples=max(1, round(10 * seconds)),
                energy_mj=700_000,
                processes=(ProcessShare(PID, 1.0),),
            )
            for g in self.gpus
        ]

    def env(
        self,
        seconds: float = 1.0,
        busy: float = 0.5,
        *,
        job: str | None = None,
        builder: RecordBuilder | None = None,
        start_ns: int | None = None,
        labels: Mapping[str, Any] | None = None,
    ) -> Envelope:
        """`labels`: run, account, workload_class, run_source of the job's window."""
        start = self.t if start_ns is None else start_ns
        labels = {**self.labels, **(labels or {})}
        windows = [JobWindow(job or self.job, PID, 0, None, Precision.BF16, **labels)]
        env = (builder or self.builder).build(self.readings(start, seconds, busy), windows)
        if start_ns is None:
            self.t = start + round(seconds * S)
        return env

    def envelope(self, seconds: float = 1.0, busy: float = 0.5, **kw: Any) -> bytes:
        return self.env(seconds, busy, **kw).to_bytes()

    def envelopes(self, n: int, seconds: float = 1.0, busy: float = 0.5) -> list[bytes]:
        return [self.envelope(seconds, busy) for _ in range(n)]


def expected_totals(nodes: Sequence[Node], envelopes: Sequence[bytes]) -> dict[str, list[int]]:
    """job -> [estimate, upper], recomputed by verifying the envelopes independently."""
    v = RecordVerifier(trusted_keys={n.key_id: n.key.public_key for n in nodes})
    out: dict[str, list[int]] = {}
    for data in envelopes:
        for c in v.verify_bytes(data).contributions:
            t = out.setdefault(c.job_id, [0, 0])
            t[0] += c.flops_estimate
            t[1] += c.flops_upper
    return out


def expected_runs(
    nodes: Sequence[Node], envelopes: Sequence[bytes]
) -> dict[tuple[str, str], list[int]]:
    """(account, run) -> [estimate, upper, contributions, GPU time (ns x ppm), energy (mJ x
    ppm)], recomputed from each verified record's intervals (not the verifier's sums): every
    job's figures, with the interval's time and energy by the job's share."""
    v = RecordVerifier(trusted_keys={n.key_id: n.key.public_key for n in nodes})
    out: dict[tuple[str, str], list[int]] = {}
    for data in envelopes:
        for iv in v.verify_bytes(data).attestation.intervals:
            for j in iv.jobs:
                t = out.setdefault((j.account, j.run or j.job_id), [0, 0, 0, 0, 0])
                t[0] += j.flops_estimate
                t[1] += j.flops_upper
                t[2] += 1
                t[3] += (iv.end_unix_ns - iv.start_unix_ns) * j.share_ppm
                t[4] += iv.energy_mj * j.share_ppm
    return out


def by_account(runs: dict[tuple[str, str], list[int]]) -> dict[str, list[int]]:
    """`expected_runs` added up per account."""
    out: dict[str, list[int]] = {}
    for (account, _), figures in runs.items():
        t = out.setdefault(account, [0] * len(figures))
        for i, f in enumerate(figures):
            t[i] += f
    return out
