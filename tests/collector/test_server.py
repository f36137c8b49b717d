"""The collector as a service: a real grpc.aio server on 127.0.0.1:0, real clients."""

from __future__ import annotations

import asyncio
import logging
import urllib.request

import grpc
import pytest

from flopwatch.collector.rpc.servicer import PUBLIC_KEY_METADATA
from flopwatch.collector.server import CollectorService, run_collector
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.errors import ConfigError
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc
from tests.collector.collector_helpers import make_pki, run
from tests.collector.server_helpers import config, enroll, past_node, submit
from tests.nodes import expected_totals

ACCEPTED = cpb.ACK_STATUS_ACCEPTED


@pytest.mark.parametrize("workers", [0, 2])
def test_round_trip_over_insecure_grpc(db_path, caplog, workers):
    nodes = [past_node("node-a", gpus=2), past_node("node-b", gpus=2)]
    enroll(db_path, *nodes)
    envs = {n.node_id: n.envelopes(40) for n in nodes}
    keys = {n.node_id: ((PUBLIC_KEY_METADATA, n.public_raw.hex()),) for n in nodes}

    async def main():
        service = CollectorService(config(db_path, verify_workers=workers))
        with caplog.at_level(logging.WARNING, logger="flopwatch.collector.server"):
            port, metrics_port = await service.start()
        assert "plaintext gRPC: --insecure" in caplog.text
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                # Two agents stream at once; each gets one ack per envelope, in order.
                results = await asyncio.gather(
                    *(submit(channel, e, keys[node]) for node, e in envs.items())
                )
                for node, acks in zip(nodes, results, strict=True):
                    assert [a.status for a in acks] == [ACCEPTED] * 40
                    assert [(a.key_id, a.sequence) for a in acks] == [
                        (node.key_id, s) for s in range(1, 41)
                    ]
                again = await submit(channel, envs["node-a"][:3])
                assert {a.status for a in again} == {cpb.ACK_STATUS_DUPLICATE}
                stub = collector_pb2_grpc.CollectorStub(channel)
                listing = await stub.ListJobs(cpb.ListJobsRequest())
                prefixed = await stub.ListJobs(cpb.ListJobsRequest(job_prefix="nope"))
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
        finally:
            await service.stop()
        return listing, prefixed, metrics.decode()

    listing, prefixed, metrics = run(main())

    all_envs = envs["node-a"] + envs["node-b"]
    [(job, (estimate, upper))] = expected_totals(nodes, all_envs).items()
    [listed] = listing.jobs
    assert (listed.job_id, listed.flops_estimate, listed.flops_upper) == (
        job,
        str(estimate),
        str(upper),
    )
    assert listed.gpu_intervals == 160
    assert (listing.flop_model_version, listing.alert_basis) == ("1", "upper")
    assert list(prefixed.jobs) == []
    assert "flopwatch_records_accepted_total 80.0" in metrics
    assert "flopwatch_records_duplicate_total 3.0" in metrics
    # With workers, each record was verified once, ahead, in a worker; the 3 sent again
    # without a presented key were verified on the ingest thread.
    assert f"flopwatch_records_verified_ahead_total {80.0 if workers else 0.0}" in metrics
    # The store was closed on stop; what was acked is on disk.
    store = SQLiteStore(db_path)
    assert [t.flops_upper for t in store.job_totals()] == [upper]
    store.close()


def test_rejections_travel_as_acks(db_path):
    node = past_node()

    async def main():
        service = CollectorService(config(db_path, metrics_listen=None))
        port, metrics_port = await service.start()
        assert metrics_port is None
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await submit(channel, [node.envelope()])
        finally:
            await service.stop()

    [ack] = run(main())
    assert (ack.status, ack.reason, ack.key_id) == (
        cpb.ACK_STATUS_REJECTED,
        "unknown_key",
        node.key_id,
    )


def test_trust_on_first_use_via_metadata(db_path):
    node = past_node("node-new")

    async def main():
        service = CollectorService(config(db_path, enroll_on_first_use=True))
        port, _ = await service.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                md = ((PUBLIC_KEY_METADATA, node.public_raw.hex()),)
                acks = await submit(channel, node.envelopes(2), metadata=md)
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await submit(
                        channel, [node.envelope()], metadata=((PUBLIC_KEY_METADATA, "zz"),)
                    )
                return acks, bad.value.code()
        finally:
            await service.stop()

    acks, code = run(main())
    assert [a.status for a in acks] == [ACCEPTED, ACCEPTED]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    store = SQLiteStore(db_path)
    assert [(n.key_id, n.node_id) for n in store.nodes()] == [(node.key_id, "node-new")]
    store.close()


def test_mtls_round_trip_and_refusal_without_client_certificate(db_path, tmp_path):
    pki = make_pki(tmp_path)
    node = past_node()
    enroll(db_path, node)
    cfg = config(
        db_path,
        insecure=False,
        tls_ca=pki["ca_cert"],
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
    )

    async def main():
        service = CollectorService(cfg)
        port, _ = await service.start()
        target = f"127.0.0.1:{port}"
        ca = pki["ca_cert"].read_bytes()
        try:
            good = grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=pki["client_key"].read_bytes(),
                certificate_chain=pki["client_cert"].read_bytes(),
            )
            async with grpc.aio.secure_channel(target, good) as channel:
                acks = await submit(channel, node.envelopes(3))
            anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
            async with grpc.aio.secure_channel(target, anonymous) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await submit(channel, node.envelopes(1))
            return acks, refused.value.code()
        finally:
            await service.stop()

    acks, code = run(main())
    assert [a.status for a in acks] == [ACCEPTED] * 3
    assert code == grpc.StatusCode.UNAVAILABLE


def test_run_collector_serves_until_stopped(db_path):
    node = past_node()
    enroll(db_path, node)

    async def main():
        stop = asyncio.Event()
        bound: asyncio.Future[tuple[int, int | None]] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            run_collector(config(db_path), ready=lambda g, m: bound.set_result((g, m)), stop=stop)
        )
        done, _ = await asyncio.wait({bound, task}, return_when=asyncio.FIRST_COMPLETED)
        assert bound in done, task.exception()
        port, _ = bound.result()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            acks = await submit(channel, node.envelopes(2))
        stop.set()
        await task
        return acks

    assert [a.status for a in run(main())] == [ACCEPTED] * 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"db": "mysql://db/flopwatch"}, "use sqlite:PATH"),
        ({"db": "sqlite:"}, "use sqlite:PATH"),
        ({"insecure": False}, "mTLS needs --tls-cert, --tls-key and --tls-ca"),
        ({"metrics_listen": "nonsense"}, "HOST:PORT"),
        ({"health_listen": "nonsense:port"}, "cannot listen on nonsense:port"),
        ({"alert_basis": "median"}, "alert basis"),
    ],
)
def test_bad_configuration_is_a_config_error(db_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        run(CollectorService(config(db_path, **changes)).start())


def test_port_in_use_is_a_config_error(db_path, tmp_path):
    async def main():
        first = CollectorService(config(db_path))
        port, _ = await first.start()
        try:
            second = CollectorService(
                config(tmp_path / "other.db", listen=f"127.0.0.1:{port}", metrics_listen=None)
            )
            with pytest.raises(ConfigError, match="cannot listen"):
                await second.start()
        finally:
            await first.stop()

    run(main())
