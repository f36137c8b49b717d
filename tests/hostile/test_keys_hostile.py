"""Hostile use of keys and client roles, through a real collector where it matters.

- A client floods the collector with records, each signed by a fresh key it presents, all under
  one node name (the reported attack: 500 fake pending keys in a second). The keys awaiting
  approval stay within `PendingKeyLimits`, every flood record is answered RETRY (never counted),
  and an enrolled node streaming at the same time has every record accepted.
- Role marks a client might forge or garble grant nothing: only the exact marks the CA issues
  (`flopwatch:role/agent`, `flopwatch:role/reader`) count; an unknown one leaves no role at all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flopwatch.certs import client_roles
from flopwatch.collector.config import PendingKeyLimits
from flopwatch.collector.rpc.servicer import PUBLIC_KEY_METADATA
from flopwatch.collector.server import CollectorService
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.v1 import collector_pb2 as cpb
from tests.collector.collector_helpers import run
from tests.collector.server_helpers import config, enroll, past_node, submit

FLOOD_KEYS = 300


def test_a_flood_of_fresh_keys_stays_bounded_and_a_real_node_goes_on(tmp_path):
    db = tmp_path / "collector.db"
    honest = past_node("gpu-001")
    enroll(db, honest)
    fakes = [past_node("gpu-017") for _ in range(FLOOD_KEYS)]
    limits = PendingKeyLimits()

    async def main():
        service = CollectorService(config(db, metrics_listen=None))
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                async def flood():
                    acks = []
                    for fake in fakes:
                        meta = ((PUBLIC_KEY_METADATA, fake.public_raw.hex()),)
                        acks += await submit(channel, [fake.envelope()], meta)
                    return acks

                started = time.perf_counter()
                flooded, good = await asyncio.gather(flood(), submit(channel, honest.envelopes(20)))
                return flooded, good, time.perf_counter() - started
        finally:
            await service.stop()

    flooded, good, seconds = run(main())
    assert {(a.status, a.reason) for a in flooded} == {(cpb.ACK_STATUS_RETRY, "unknown_key")}
    assert [a.status for a in good] == [cpb.ACK_STATUS_ACCEPTED] * 20
    store = SQLiteStore(db)
    try:
        pending = store.pending_keys()
        assert len(pending) == limits.max_per_node
        assert {p.node_id for p in pending} == {"gpu-017"}
        assert [t.job_id for t in store.job_totals()] == [honest.job]
    finally:
        store.close()
    print(f"{FLOOD_KEYS} fresh keys over gRPC in {seconds:.2f} s")


def _cert_with_uris(uris: list[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forger")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("uris", "roles"),
    [
        ([], {"agent"}),  # issued before roles
        (["flopwatch:role/reader"], {"reader"}),
        (["flopwatch:role/admin"], set()),  # unknown mark: no role, not the legacy default
        (["flopwatch:role/READER"], set()),
        (["flopwatch:role/reader/../agent"], set()),
        (["https://example.org/flopwatch:role/reader"], {"agent"}),  # not a role mark at all
        (["flopwatch:role/agent", "flopwatch:role/reader"], {"agent", "reader"}),
    ],
)
def test_only_exact_role_marks_count(uris, roles):
    assert client_roles(_cert_with_uris(uris)) == roles
