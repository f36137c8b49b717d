"""Flood: issue 17's attacker against a collector, while one honest node streams records.

    .venv/bin/python bench/flood.py [--seconds 25] [--streams 300] [--idle 1000]
        [--envelope-kib 900] [--rate 5] [--no-limits]

The collector runs as `flopwatch collector` in its own process (mTLS, SQLite in a temp dir,
default settings unless --no-limits), listening on [::]. Then, all at once:

- the attacker (one process, one valid client certificate, from 127.0.0.1) opens `--streams`
  Submit streams over 20 connections, each pushing garbage envelopes of `--envelope-kib` KiB
  as fast as gRPC lets it, and `--idle` streams that send nothing; a stream that is refused or
  closed is opened again 50 ms later;
- the honest node (this process, its own certificate, from ::1, so another address) sends one
  signed record every 1/`--rate` s on one stream and times each ack.

It prints the collector's peak RSS (VmHWM from /proc) and the RSS it started with, the honest
node's ack latency (p50, p99, max) and how many records it had accepted, and what the
collector's /metrics say about streams refused, bytes in flight and rejections, and how many
lines its log got. `--no-limits` turns the stream caps off and sets the byte budgets, idle
timeout and connection cap out of reach (the fair queue stays): a picture of the collector
before its limits. `--rss-guard-mib` (default 3000) stops the run if the collector grows past
it, so a run cannot take the machine down.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flopwatch import certs
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.v1 import collector_pb2 as cpb
from flopwatch.v1 import collector_pb2_grpc, envelope_pb2
from tests.nodes import Node, S

CONNECTIONS = 20


def free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


def make_pki(d: Path) -> dict[str, Path]:
    ca = certs.create_ca("flood CA")
    files = {}
    for name, pair in (
        ("ca", ca),
        ("server", certs.issue(ca.cert, ca.key, "collector", server=True)),
        ("attacker", certs.issue(ca.cert, ca.key, "attacker", server=False)),
        ("node", certs.issue(ca.cert, ca.key, "node", server=False)),
    ):
        files[f"{name}_cert"], files[f"{name}_key"] = d / f"{name}.pem", d / f"{name}.key"
        certs.write_pair(files[f"{name}_cert"], files[f"{name}_key"], pair)
    return files


def credentials(pki: dict[str, Path], who: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki["ca_cert"].read_bytes(),
        private_key=pki[f"{who}_key"].read_bytes(),
        certificate_chain=pki[f"{who}_cert"].read_bytes(),
    )


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# -- the attacker ------------------------------------------------------------------------------
def attacker(port: int, pki: dict[str, Path], args: argparse.Namespace, stop: float) -> None:
    asyncio.run(_attack(port, pki, args, stop))


async def _attack(port: int, pki: dict[str, Path], args: argparse.Namespace, stop: float) -> None:
    creds = credentials(pki, "attacker")
    channels = [
        grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            creds,
            options=[
                ("grpc.max_send_message_length", 2 << 20),
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        for _ in range(CONNECTIONS)
    ]
    junk = cpb.SubmitRequest(
        envelope=envelope_pb2.Envelope(
            payload_type="application/vnd.flopwatch.attestation+protobuf",
            payload=os.urandom(args.envelope_kib * 1024),
            signatures=[envelope_pb2.Signature(keyid="ab" * 32, sig=os.urandom(64))],
        )
    )

    async def flood(i: int) -> None:
        async def requests():
            while time.time() < stop:
                yield junk

        while time.time() < stop:
            try:
                call = collector_pb2_grpc.IngestServiceStub(channels[i % CONNECTIONS]).Submit(
                    requests(), timeout=max(0.1, stop - time.time())
                )
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)

    async def idle(i: int) -> None:
        async def nothing():
            await asyncio.sleep(max(0.0, stop - time.time()))
            return
            yield

        while time.time() < stop:
            try:
                call = collector_pb2_grpc.IngestServiceStub(channels[i % CONNECTIONS]).Submit(
                    nothing(), timeout=max(0.1, stop - time.time())
                )
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)

    await asyncio.gather(
        *(flood(i) for i in range(args.streams)), *(idle(i) for i in range(args.idle))
    )
    for c in channels:
        await c.close()


# -- the honest node ---------------------------------------------------------------------------
async def honest(
    port: int, pki: dict[str, Path], node: Node, args: argparse.Namespace, stop: float
) -> tuple[list[float], int]:
    """Latencies (s) of acks, and how many records were accepted."""
    latencies: list[float] = []
    accepted = 0
    sent: dict[int, float] = {}
    envelopes = iter(node.envelopes(int(args.seconds * args.rate) + 10))
    async with grpc.aio.secure_channel(f"[::1]:{port}", credentials(pki, "node")) as channel:

        async def requests():
            seq = 0
            while time.time() < stop:
                seq += 1
                sent[seq] = time.perf_counter()
                yield cpb.SubmitRequest(envelope=envelope_pb2.Envelope.FromString(next(envelopes)))
                await asyncio.sleep(1 / args.rate)

        call = collector_pb2_grpc.IngestServiceStub(channel).Submit(
            requests(), metadata=(("flopwatch-public-key", node.public_raw.hex()),)
        )
        async for response in call:
            now = time.perf_counter()
            for ack in response.acks:
                latencies.append(now - sent.pop(ack.sequence))
                accepted += ack.status == cpb.ACK_STATUS_ACCEPTED
    return latencies, accepted


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("flopwatch_submit", "flopwatch_inflight", "flopwatch_tls")):
                key = sample.name + "".join(f"{{{v}}}" for v in sample.labels.values())
                out[key] = sample.value
            elif sample.name.startswith(("flopwatch_peer_records_rejected", "flopwatch_rej")):
                out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=25)
    p.add_argument("--streams", type=int, default=300, help="flooding streams")
    p.add_argument("--idle", type=int, default=1000, help="idle streams")
    p.add_argument("--envelope-kib", type=int, default=900)
    p.add_argument("--rate", type=float, default=5, help="honest records per second")
    p.add_argument("--no-limits", action="store_true")
    p.add_argument("--rss-guard-mib", type=int, default=3000)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="flopwatch-flood-"))
    pki = make_pki(work)
    node = Node("honest-node", gpus=8, start_ns=time.time_ns() - 86400 * S)
    db = work / "collector.db"
    store = SQLiteStore(db)
    store.enroll(node.public_raw, node.node_id)
    store.close()
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "flopwatch", "collector",
        "--listen", f"[::]:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--db", f"sqlite:{db}", "--tls-ca", str(pki["ca_cert"]),
        "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]),
    ]  # fmt: skip
    if args.no_limits:
        argv += [
            "--max-streams-per-address", "0", "--max-streams-per-certificate", "0",
            "--max-inflight-bytes", str(1 << 40), "--max-inflight-bytes-per-peer", str(1 << 40),
            "--stream-idle-timeout", "1d", "--max-connections", "1000000",
        ]  # fmt: skip
    log_path = work / "collector.log"
    with log_path.open("w") as log:
        collector = subprocess.Popen(argv, stderr=log, stdout=log)
    try:
        deadline = time.time() + 60
        while True:
            try:
                metrics(metrics_port)
                break
            except OSError:
                assert collector.poll() is None, log_path.read_text()
                assert time.time() < deadline, "collector did not start"
                time.sleep(0.2)
        start_rss = rss_kib(collector.pid, "VmRSS")
        stop = time.time() + args.seconds
        attack = mp.get_context("spawn").Process(target=attacker, args=(port, pki, args, stop))
        attack.start()
        time.sleep(1)  # the flood is under way before the honest node starts

        async def watch() -> tuple[list[float], int, int, bool]:
            task = asyncio.create_task(honest(port, pki, node, args, stop))
            peak, guarded = 0, False
            while not task.done():
                peak = max(peak, rss_kib(collector.pid, "VmRSS"))
                if peak > args.rss_guard_mib * 1024:
                    guarded = True
                    collector.kill()
                    break
                await asyncio.sleep(0.25)
            latencies, accepted = await task
            return latencies, accepted, peak, guarded

        latencies, accepted, sampled_peak, guarded = asyncio.run(watch())
        attack.join(timeout=60)
        if attack.is_alive():
            attack.kill()
        hwm = rss_kib(collector.pid, "VmHWM") if collector.poll() is None else sampled_peak
        figures = metrics(metrics_port) if collector.poll() is None else {}
    finally:
        collector.terminate()
        collector.wait(timeout=30)
    lines = log_path.read_text().splitlines()
    q = [float("nan")] * 99
    if len(latencies) > 1:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(
        f"limits: {'OFF' if args.no_limits else 'default'}; {args.streams} flooding streams of "
        f"{args.envelope_kib} KiB garbage envelopes + {args.idle} idle streams, {args.seconds:g} s"
    )
    print(
        f"collector RSS: {start_rss / 1024:.0f} MiB at start, peak {hwm / 1024:.0f} MiB"
        + ("  (STOPPED by --rss-guard-mib)" if guarded else "")
    )
    print(
        f"honest node: {len(latencies)} acks, {accepted} accepted; ack latency p50 "
        f"{q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
        f"max {max(latencies, default=0) * 1000:.0f} ms"
    )
    for key, value in sorted(figures.items()):
        print(f"  {key} = {value:g}")
    print(f"collector log: {len(lines)} lines, {sum(len(x) + 1 for x in lines)} bytes")


if __name__ == "__main__":
    main()
