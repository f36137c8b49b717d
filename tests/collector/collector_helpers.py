"""Helpers for the collector tests: simulated nodes that sign records, expected totals.

(Named collector_helpers, not helpers, so it cannot collide with another test folder's module
under pytest's default import mode.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flopwatch.agent.backends.base import GpuInfo, GpuReading, ProcessShare
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.base import AlertEvent, JobTotal
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.dsse import Envelope
from flopwatch.keys import SigningKey, public_raw
from flopwatch.model import Pipe, Precision
from flopwatch.verify import RecordVerifier

S = 10**9
T0 = 1_800_000_000 * S
NOW = T0 + 30 * 86400 * S  # after every interval the tests build
PID = 42
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async test body on a fresh event loop (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro)


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
    ) -> None:
        self.node_id = node_id
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
    ) -> Envelope:
        start = self.t if start_ns is None else start_ns
        windows = [JobWindow(job or self.job, PID, 0, None, Precision.BF16)]
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


def totals_of(store: SQLiteStore) -> dict[str, list[int]]:
    return {t.job_id: [t.flops_estimate, t.flops_upper] for t in store.job_totals()}


class RecordingSink:
    """An AlertSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    def emit(self, event: AlertEvent) -> None:
        self.events.append(event)


IngestorFactory = Callable[..., Ingestor]


def statuses(acks: Sequence[Any]) -> list[str]:
    return [a.status for a in acks]


def job_total(store: SQLiteStore, job: str) -> JobTotal:
    return store.totals_for([job])[job]


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(
        subject: str, key: ec.EllipticCurvePrivateKey, ca: bool, sans: list[x509.GeneralName]
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("test CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    files: dict[str, Path] = {}

    def write(label: str, c: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[f"{label}_cert"] = directory / f"{label}.pem"
        files[f"{label}_cert"].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        files[f"{label}_key"] = directory / f"{label}.key"
        files[f"{label}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    write("ca", cert("test CA", ca_key, True, []), ca_key)
    for label, sans in (
        ("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write(label, cert(f"test {label}", key, False, sans), key)
    return files
