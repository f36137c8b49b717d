"""Client roles over real mTLS: an agent certificate streams records but cannot list jobs or
nodes; a reader certificate lists them but cannot stream records; both read the transparency
log (public evidence) and the health service. Certificates issued before roles (no role mark)
are agents'. The deprecated Collector service enforces the same roles, RPC by RPC."""

from __future__ import annotations

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flopwatch import certs
from flopwatch.collector.rpc.roles import METHOD_ROLES, DenialStats, peer_roles
from flopwatch.collector.server import CollectorService
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc
from tests.collector.collector_helpers import make_pki, run
from tests.collector.server_helpers import config, enroll, past_node, submit

OK = "OK"
DENIED = grpc.StatusCode.PERMISSION_DENIED.name


@pytest.fixture
def pki(tmp_path):
    """The test CA of make_pki (its client certificate has no role mark: a legacy agent's),
    plus an agent and a reader certificate that CA issued with `flopwatch.certs.issue`."""
    files = make_pki(tmp_path)
    ca_key = serialization.load_pem_private_key(files["ca_key"].read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = certs.CertifiedKey(certs.load_certificate(files["ca_cert"]), ca_key)
    for role in certs.CLIENT_ROLES:
        pair = certs.issue(ca.cert, ca.key, f"{role}-1", server=False, role=role, valid_days=1)
        (tmp_path / role).mkdir()  # key files are never written into a missing directory
        cert_path, key_path = certs.pair_paths(tmp_path / role, f"{role}-1")
        certs.write_pair(cert_path, key_path, pair)
        files[f"{role}_cert"], files[f"{role}_key"] = cert_path, key_path
    return files


def credentials(pki, who: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki["ca_cert"].read_bytes(),
        private_key=pki[f"{who}_key"].read_bytes(),
        certificate_chain=pki[f"{who}_cert"].read_bytes(),
    )


async def outcome(call) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code().name
    return OK


def test_each_role_may_call_its_own_rpcs_only(db_path, pki):
    node = past_node()
    enroll(db_path, node)
    cfg = config(
        db_path,
        insecure=False,
        tls_ca=pki["ca_cert"],
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
    )
    envelopes = node.envelopes(4)

    async def calls(target: str, who: str, envelope: bytes) -> dict[str, str]:
        async with grpc.aio.secure_channel(target, credentials(pki, who)) as channel:
            query = collector_pb2_grpc.QueryServiceStub(channel)
            tlog = collector_pb2_grpc.LogServiceStub(channel)
            legacy = collector_pb2_grpc.CollectorStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            return {
                "Submit": await outcome(submit(channel, [envelope])),
                "ListJobs": await outcome(query.ListJobs(cpb.ListJobsRequest())),
                "ListNodes": await outcome(query.ListNodes(cpb.ListNodesRequest())),
                "ListRuns": await outcome(query.ListRuns(cpb.ListRunsRequest())),
                "ListAccounts": await outcome(query.ListAccounts(cpb.ListAccountsRequest())),
                "legacy ListJobs": await outcome(legacy.ListJobs(cpb.ListJobsRequest())),
                "GetTreeHead": await outcome(tlog.GetTreeHead(cpb.GetTreeHeadRequest())),
                "legacy GetTreeHead": await outcome(legacy.GetTreeHead(cpb.GetTreeHeadRequest())),
                "Health": await outcome(health.Check(health_pb2.HealthCheckRequest())),
            }

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        target = f"127.0.0.1:{port}"
        try:
            seen = {
                who: await calls(target, who, envelopes[i])
                for i, who in enumerate(("agent", "reader", "client"))
            }
            async with grpc.aio.secure_channel(target, credentials(pki, "agent")) as channel:
                acks = await submit(channel, envelopes)
            sample = service.registry.get_sample_value
            exported = {
                m: sample("flopwatch_role_denied_calls_total", {"method": m}) for m in METHOD_ROLES
            }
            by_peer = {
                s.labels["peer"]: s.value
                for metric in service.registry.collect()
                if metric.name == "flopwatch_peer_role_denied_calls"
                for s in metric.samples
                if s.name.endswith("_total")
            }
        finally:
            await service.stop()
        return seen, acks, dict(service.roles.stats.by_method), exported, by_peer

    seen, acks, denied, exported, by_peer = run(main())
    agent = {
        "Submit": OK,
        "ListJobs": DENIED,
        "ListNodes": DENIED,
        "ListRuns": DENIED,
        "ListAccounts": DENIED,
        "legacy ListJobs": DENIED,
        "GetTreeHead": OK,
        "legacy GetTreeHead": OK,
        "Health": OK,
    }
    assert seen["agent"] == agent
    assert seen["client"] == agent  # a certificate without a role mark: an agent's, as before
    assert seen["reader"] == {
        **agent,
        "Submit": DENIED,
        "ListJobs": OK,
        "ListNodes": OK,
        "ListRuns": OK,
        "ListAccounts": OK,
        "legacy ListJobs": OK,
    }
    # The agents' records counted once; the reader's (the second) never reached the ingestor.
    dup, accepted = cpb.ACK_STATUS_DUPLICATE, cpb.ACK_STATUS_ACCEPTED
    assert [a.status for a in acks] == [dup, accepted, dup, accepted]
    assert denied == {
        "/flopwatch.v1.QueryService/ListJobs": 2,
        "/flopwatch.v1.QueryService/ListNodes": 2,
        "/flopwatch.v1.QueryService/ListRuns": 2,
        "/flopwatch.v1.QueryService/ListAccounts": 2,
        "/flopwatch.v1.Collector/ListJobs": 2,
        "/flopwatch.v1.Collector/Submit": 1,
    }
    # Exported: by method, and by peer (address and certificate fingerprint).
    assert {m: n for m, n in exported.items() if n is not None} == denied
    assert sorted(by_peer.values()) == [1, 5, 5]  # reader: Submit; agent, unmarked: 5 each
    assert all(p.startswith("127.0.0.1 cert ") for p in by_peer)


def test_every_collector_rpc_has_a_role():
    services = cpb.DESCRIPTOR.services_by_name
    methods = {f"/{s.full_name}/{m.name}" for s in services.values() for m in s.methods}
    assert methods == set(METHOD_ROLES)


def test_a_call_without_a_peer_certificate_has_no_role():
    assert peer_roles({}) == frozenset()
    assert peer_roles({"x509_pem_cert": [b"not a certificate"]}) == frozenset()


def test_denials_are_counted_by_method_and_by_a_bounded_number_of_peers():
    stats = DenialStats(clock=lambda: 0.0, max_label_values=2)
    reader, agent = frozenset({"reader"}), frozenset({"agent"})
    for i in range(5):
        stats.denied("/flopwatch.v1.QueryService/ListJobs", f"10.0.0.{i} cert ab", reader)
    stats.denied("/flopwatch.v1.IngestService/Submit", "10.0.0.0 cert ab", agent)
    by_method, by_peer = stats.counts()
    assert by_method == {
        "/flopwatch.v1.QueryService/ListJobs": 5,
        "/flopwatch.v1.IngestService/Submit": 1,
    }
    assert by_peer == {"10.0.0.0 cert ab": 2, "10.0.0.1 cert ab": 1, "other": 3}
