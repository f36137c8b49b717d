"""The monitor reads a real collector's tiles over HTTPS with a client certificate (the
collector's `--tiles-listen` without a token: mTLS readers only): a reader certificate of the
collector's CA follows the log (its node keys learnt from the log's own key statements); no
client certificate, or one of another CA, is refused, and the monitor says why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from flopwatch.certs import READER_ROLE, issue, load_certificate, load_private_key, write_pair
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.server import CollectorService
from flopwatch.keys import SigningKey
from flopwatch.monitor import events
from flopwatch.monitor.config import LogConfig
from flopwatch.monitor.follower import LogStats
from flopwatch.tlog.note import Ed25519NoteSigner
from flopwatch.v1 import collector_pb2 as cpb
from tests.collector.collector_helpers import make_pki, run
from tests.collector.server_helpers import config, enroll, past_node, submit
from tests.monitor.monitor_helpers import monitor
from tests.monitor.test_monitor import job_totals
from tests.nodes import expected_totals

ORIGIN = "collector.example/log"


def reader_pair(pki: dict[str, Path], directory: Path) -> tuple[Path, Path]:
    """A reader certificate (`flopwatch certs issue --role reader`) of the PKI's CA."""
    pki["ca_key"].chmod(0o600)  # make_pki writes it 0644; flopwatch reads only owner-only keys
    ca, ca_key = load_certificate(pki["ca_cert"]), load_private_key(pki["ca_key"])
    pair = issue(ca, ca_key, "regulator", server=False, role=READER_ROLE, valid_days=1)
    cert, key = directory / "reader.pem", directory / "reader.key"
    write_pair(cert, key, pair)
    return cert, key


def test_a_reader_certificate_follows_the_log_and_others_are_refused(tmp_path: Path) -> None:
    db_path = tmp_path / "collector.db"
    pki = make_pki(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = make_pki(other_dir)  # another CA, with a client certificate of its own
    reader_cert, reader_key = reader_pair(pki, tmp_path)
    key_path = tmp_path / "collector-key.pem"
    key = SigningKey.load_or_create(key_path)[0]
    node = past_node("node-a")
    enroll(db_path, node)  # its statement is logged when the collector starts
    envs = node.envelopes(3)
    cfg = config(
        db_path,
        insecure=False,
        tls_ca=pki["ca_cert"],
        tls_cert=pki["server_cert"],
        tls_key=pki["server_key"],
        log_key=key_path,
        tlog=TlogConfig(origin=ORIGIN, tiles_listen="127.0.0.1:0", checkpoint_interval_s=3600),
    )
    log_key = Ed25519NoteSigner(ORIGIN, key.private_key).verifier

    def follow(name: str, **tls: Path) -> tuple[dict[str, tuple[int, int]], LogStats, dict]:
        lc = LogConfig(name=name, url=f"https://127.0.0.1:{port}/", log_key=log_key, **tls)
        m = monitor(tmp_path, [lc], state=f"{name}.db")
        try:
            m.catch_up()
            return m.state.positions(), m.followers[0].stats, job_totals(m)
        finally:
            m.close()

    async def main() -> dict[str, tuple[dict[str, tuple[int, int]], LogStats, dict]]:
        nonlocal port
        service = CollectorService(cfg)
        grpc_port, _ = await service.start()
        try:
            agent = grpc.ssl_channel_credentials(
                root_certificates=pki["ca_cert"].read_bytes(),
                private_key=pki["client_key"].read_bytes(),
                certificate_chain=pki["client_cert"].read_bytes(),
            )
            async with grpc.aio.secure_channel(f"127.0.0.1:{grpc_port}", agent) as channel:
                acks = await submit(channel, envs)
            assert {a.status for a in acks} == {cpb.ACK_STATUS_ACCEPTED}
            assert service.tlog is not None and service.tlog.port is not None
            assert await asyncio.to_thread(service.tlog.publish)
            port = service.tlog.port
            ca = pki["ca_cert"]
            return {
                "reader": await asyncio.to_thread(
                    follow, "reader", ca_file=ca, client_cert=reader_cert, client_key=reader_key
                ),
                "none": await asyncio.to_thread(follow, "none", ca_file=ca),
                "other_ca": await asyncio.to_thread(
                    follow,
                    "other_ca",
                    ca_file=ca,
                    client_cert=other["client_cert"],
                    client_key=other["client_key"],
                ),
                "wrong_server_ca": await asyncio.to_thread(
                    follow,
                    "wrong_server_ca",
                    ca_file=other["ca_cert"],
                    client_cert=reader_cert,
                    client_key=reader_key,
                ),
            }
        finally:
            await service.stop()

    port = 0
    got = run(main())
    # The reader follows the whole log: the node key's enrollment, then its 3 records, counted
    # with the key learnt from the log (no node keys pinned).
    positions, stats, totals = got["reader"]
    assert positions == {"reader": (4, 4)}
    assert (stats.counted, stats.key_statements, stats.problems) == (3, 1, {})
    assert totals == expected_totals([node], envs)
    # Without a client certificate, or with one of another CA, the log refuses the TLS session:
    # nothing is read, and the monitor names the refusal (under TLS 1.3 the server's alert may
    # reach the client as a closed connection, so both readings name the client certificate).
    for name, says in (
        ("none", "client certificate"),
        ("other_ca", "client certificate"),
        ("wrong_server_ca", "the log's certificate does not verify against ca_file"),
    ):
        positions, stats, totals = got[name]
        assert positions == {} and totals == {}
        assert stats.problems == {events.UNREACHABLE: 1}
        assert says in stats.last_error, (name, stats.last_error)
