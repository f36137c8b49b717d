"""The collector's gRPC services on a real grpc.aio server on 127.0.0.1:0: IngestService,
QueryService and LogService; the deprecated Collector answering byte for byte alike; and
grpc.health.v1.Health on the main port and alone on the plaintext health port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flopwatch.collector.rpc.servicer import (
    INGEST_SERVICE,
    LEGACY_SERVICE,
    LOG_SERVICE,
    PUBLIC_KEY_METADATA,
    QUERY_SERVICE,
)
from flopwatch.collector.server import CollectorService
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from tests.collector.collector_helpers import make_pki, run
from tests.collector.server_helpers import config, enroll, past_node
from tests.nodes import Node

ACCEPTED = cpb.ACK_STATUS_ACCEPTED
DUPLICATE = cpb.ACK_STATUS_DUPLICATE
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
EVERY_SERVICE = ("", INGEST_SERVICE, QUERY_SERVICE, LOG_SERVICE, LEGACY_SERVICE)


def requests(envelopes: list[bytes]) -> AsyncIterator[cpb.SubmitRequest]:
    async def gen() -> AsyncIterator[cpb.SubmitRequest]:
        for data in envelopes:
            yield cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(data))

    return gen()


async def acks_of(stub, node: Node, envelopes: list[bytes]) -> list[cpb.SubmitResponse]:
    """Submit's whole answer, as the responses came."""
    metadata = ((PUBLIC_KEY_METADATA, node.public_raw.hex()),)
    return [r async for r in stub.Submit(requests(envelopes), metadata=metadata)]


def acks_bytes(responses: list[cpb.SubmitResponse]) -> list[bytes]:
    return [a.SerializeToString() for r in responses for a in r.acks]


def flat(responses: list[cpb.SubmitResponse]) -> list[tuple[int, int]]:
    return [(a.sequence, a.status) for r in responses for a in r.acks]


async def health_of(target: str, services=EVERY_SERVICE) -> list[int]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return [
            (await stub.Check(health_pb2.HealthCheckRequest(service=s))).status for s in services
        ]


def test_each_service_answers_and_the_deprecated_collector_answers_alike(db_path):
    a, b = past_node("node-a"), past_node("node-b")
    enroll(db_path, a, b)
    envs_a, envs_b = a.envelopes(4), b.envelopes(3)

    async def main():
        service = CollectorService(config(db_path, tree_head_interval_s=3600.0))
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                ingest = collector_pb2_grpc.IngestServiceStub(channel)
                query = collector_pb2_grpc.QueryServiceStub(channel)
                log = collector_pb2_grpc.LogServiceStub(channel)
                old = collector_pb2_grpc.CollectorStub(channel)
                out = {
                    "new": await acks_of(ingest, a, envs_a),
                    "old": await acks_of(old, b, envs_b),  # agents already deployed
                    "again new": await acks_of(ingest, a, envs_a),
                    "again old": await acks_of(old, a, envs_a),
                }
                [job] = (await query.ListJobs(cpb.ListJobsRequest())).jobs
                calls = [
                    ("ListJobs", cpb.ListJobsRequest()),
                    ("ListJobs", cpb.ListJobsRequest(page_size=1)),
                    ("ListJobGpus", cpb.ListJobGpusRequest(job_id=job.job_id)),
                    ("ListNodes", cpb.ListNodesRequest()),
                ]
                # The log: both keys' enrollments (logged at start), then the 7 records.
                log_calls = [
                    ("GetTreeHead", cpb.GetTreeHeadRequest()),
                    ("GetInclusionProof", cpb.GetInclusionProofRequest(leaf_index=2, tree_size=9)),
                    (
                        "GetInclusionProof",
                        cpb.GetInclusionProofRequest(
                            record=cpb.RecordRef(key_id=b.key_id, sequence=2), tree_size=9
                        ),
                    ),
                    ("GetConsistencyProof", cpb.GetConsistencyProofRequest(old_size=3, new_size=9)),
                ]
                answers = []
                for stub, calls_ in ((query, calls), (log, log_calls)):
                    for method, request in calls_:
                        new = await getattr(stub, method)(request)
                        legacy = await getattr(old, method)(request)
                        answers.append((method, new, legacy))
                errors = []
                for stub, method, request in (
                    (query, "ListJobGpus", cpb.ListJobGpusRequest(job_id="no-such-job")),
                    (query, "ListNodes", cpb.ListNodesRequest(page_token="not-a-token")),
                    (log, "GetInclusionProof", cpb.GetInclusionProofRequest(leaf_index=99)),
                ):
                    for s in (stub, old):
                        with pytest.raises(grpc.aio.AioRpcError) as e:
                            await getattr(s, method)(request)
                        errors.append((method, e.value.code(), e.value.details()))
        finally:
            await service.stop()
        return out, job, answers, errors

    out, job, answers, errors = run(main())
    assert flat(out["new"]) == [(s, ACCEPTED) for s in range(1, 5)]
    assert flat(out["old"]) == [(s, ACCEPTED) for s in range(1, 4)]
    # The same stream to either name gets the same acks back, byte for byte (how many acks share
    # a response depends on timing, not on the name).
    assert acks_bytes(out["again new"]) == acks_bytes(out["again old"])
    assert flat(out["again old"]) == [(s, DUPLICATE) for s in range(1, 5)]
    assert job.gpu_intervals > 0
    assert len(answers) == 8
    for method, new, legacy in answers:
        assert new.SerializeToString() == legacy.SerializeToString(), method
    [nodes] = [new for method, new, _ in answers if method == "ListNodes"]
    assert sorted(n.key_id for n in nodes.nodes) == sorted([a.key_id, b.key_id])
    [(_, head, _)] = [x for x in answers if x[0] == "GetTreeHead"]
    assert head.tree_head.payload
    # Errors too: same codes, same details.
    assert [code for _, code, _ in errors] == [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    assert errors[0::2] == errors[1::2]


def test_health_serving_after_start_and_not_serving_from_stop_on_both_ports(db_path):
    async def main():
        service = CollectorService(config(db_path, health_listen="127.0.0.1:0"))
        port, _ = await service.start()
        assert service.health_port is not None and service.health_port != port
        targets = [f"127.0.0.1:{port}", f"127.0.0.1:{service.health_port}"]
        try:
            started = [await health_of(t) for t in targets]
            channels = [grpc.aio.insecure_channel(t) for t in targets]
            watches = [
                health_pb2_grpc.HealthStub(c).Watch(health_pb2.HealthCheckRequest(service=s))
                for c in channels
                for s in ("", INGEST_SERVICE)
            ]
            first = [(await w.read()).status for w in watches]
            stopping = asyncio.create_task(service.stop())
            then = [(await w.read()).status for w in watches]
            for w in watches:  # the watches end; the servers stop without waiting out the grace
                w.cancel()
            await stopping
            for c in channels:
                await c.close()
        finally:
            await service.stop()
        return started, first, then

    started, first, then = run(main())
    assert started == [[SERVING] * len(EVERY_SERVICE)] * 2
    assert first == [SERVING] * 4
    assert then == [NOT_SERVING] * 4


def test_health_port_serves_health_alone(db_path):
    node = past_node()
    enroll(db_path, node)

    async def main():
        service = CollectorService(config(db_path, health_listen="127.0.0.1:0"))
        await service.start()
        codes = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.health_port}") as channel:
                # Empty streams: a write to a method the server lacks may end INTERNAL instead
                # of UNIMPLEMENTED (grpc/grpc#36066); the question here is the method.
                for stub in (
                    collector_pb2_grpc.IngestServiceStub(channel),
                    collector_pb2_grpc.CollectorStub(channel),
                ):
                    call = stub.Submit(requests([]))
                    codes.append(await call.code())
                for call in (
                    collector_pb2_grpc.QueryServiceStub(channel).ListJobs(cpb.ListJobsRequest()),
                    collector_pb2_grpc.LogServiceStub(channel).GetTreeHead(
                        cpb.GetTreeHeadRequest()
                    ),
                    collector_pb2_grpc.CollectorStub(channel).ListNodes(cpb.ListNodesRequest()),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call
                    codes.append(e.value.code())
        finally:
            await service.stop()
        return codes

    assert run(main()) == [grpc.StatusCode.UNIMPLEMENTED] * 5


def test_health_port_is_plaintext_beside_an_mtls_main_port(db_path, tmp_path):
    # A Kubernetes gRPC probe presents no client certificate: the main port refuses it, the
    # health port answers it.
    pki = make_pki(tmp_path)
    cfg = config(
        db_path,
        insecure=False,
        tls_ca=pki["ca_cert"],
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
        health_listen="127.0.0.1:0",
    )

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        try:
            plain = await health_of(f"127.0.0.1:{service.health_port}", ("",))
            anonymous = grpc.ssl_channel_credentials(root_certificates=pki["ca_cert"].read_bytes())
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", anonymous) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        finally:
            await service.stop()
        return plain, refused.value.code()

    assert run(main()) == ([SERVING], grpc.StatusCode.UNAVAILABLE)


def test_no_health_port_unless_configured(db_path):
    async def main():
        service = CollectorService(config(db_path))
        port, _ = await service.start()
        try:
            return service.health_port, await health_of(f"127.0.0.1:{port}", ("",))
        finally:
            await service.stop()

    assert run(main()) == (None, [SERVING])
