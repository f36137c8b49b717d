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

from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.store.base import Store
from flopwatch.collector.store.records import AlertEvent, JobTotal
from flopwatch.collector.store.sqlite.store import SQLiteStore
from tests.nodes import NOW, S

T = TypeVar("T")


class Clock:
    """A collector clock in ns that the test moves (`clock.ns = ...`, `clock.advance(s)`)."""

    def __init__(self) -> None:
        self.ns = NOW

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * S)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async test body on a fresh event loop (pytest-asyncio is not a dependency)."""
    return asyncio.run(coro)


def totals_of(store: SQLiteStore) -> dict[str, list[int]]:
    return {t.job_id: [t.flops_estimate, t.flops_upper] for t in store.job_totals()}


ALL = ("", "")  # `run_page` from the first run


def runs_of(store: Store) -> dict[tuple[str, str], list[int]]:
    """(account, run) -> [estimate, upper, contributions, GPU time fs, energy nJ]."""
    return {
        (t.account, t.run): [
            t.flops_estimate,
            t.flops_upper,
            t.gpu_intervals,
            t.gpu_time_fs,
            t.energy_nj,
        ]
        for t in store.run_page(None, "", ALL, 10**6)
    }


def accounts_of(store: Store) -> dict[str, list[int]]:
    return {
        t.account: [t.flops_estimate, t.flops_upper, t.gpu_intervals, t.gpu_time_fs, t.energy_nj]
        for t in store.account_page("", None, 10**6)
    }


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
            # The CA outlives its leaves, and leaves of a day that tests issue from it later
            # (flopwatch.certs.issue refuses a leaf that would outlive its CA).
            .not_valid_after(now + dt.timedelta(days=2 if ca else 1))
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
