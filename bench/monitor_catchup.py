"""Monitor catch-up: entries and GPU-intervals verified and counted per second per core, against
one collector's verification rate per core.

    .venv/bin/python bench/monitor_catchup.py [--nodes 16] [--records 250] [--gpus 8]

What it does, in order:

1. The log: `--nodes` simulated nodes each sign `--records` chained envelopes of `--gpus` H100s
   (one 1 s interval each, as bench/collector_throughput.py builds them), interleaved the way
   many streams arrive; they become a collector's log (the collector's own TileLog over an
   in-memory store), written as tlog-tiles files to a directory and served by a separate
   `python -m http.server` process: the monitor reads it over loopback HTTP like any static log.
2. The collector's rate per core (the reference, bench/collector_throughput.py's stage 2): the
   same envelopes through the collector's `Ingestor` into SQLite (verify, judge chains and
   overlap, aggregate, commit in batches of 256), on one core, in this process.
3. The monitor: `flopwatch.monitor` catches up from an empty state (fetch the checkpoint and
   every tile and bundle, authenticate them, verify and recompute every entry, judge chains and
   GPU time, total, commit per bundle). The figure is entries per second of this process's CPU
   time (the monitor is single-threaded: per core), and GPU-intervals per second likewise; the
   wall-clock rate is printed too (the server process shares the machine's cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root (tests/)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector_throughput import node_envelopes

from flopwatch.collector.alerts.events import ThresholdPolicy
from flopwatch.collector.ingest.ingestor import Ingestor
from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.collector.log.tiles_dir import TileDirectory
from flopwatch.collector.store.sqlite.store import SQLiteStore
from flopwatch.keys import SigningKey, public_raw
from flopwatch.monitor.config import LogConfig, MonitorConfig
from flopwatch.monitor.service import Monitor
from flopwatch.tlog.tiles import new_tiles
from tests.collector.log.log_fakes import MemoryLog

ORIGIN = "bench.example/log"


def collector_rate(keyed: list[tuple[SigningKey, list[bytes]]], order: list[bytes]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        for i, (key, _) in enumerate(keyed):
            store.enroll(public_raw(key.public_key), f"bench-node-{i}")
        ingestor = Ingestor(store, ThresholdPolicy((10**30,), "upper"), [])
        cpu = time.process_time()
        for i in range(0, len(order), 256):
            acks = ingestor.ingest(order[i : i + 256])
            assert all(a.status == "accepted" for a in acks), acks[0]
        seconds = time.process_time() - cpu
        store.close()
    return len(order) / seconds


def serve(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # "Serving HTTP on 127.0.0.1 port N ..."
    port = int(line.split(" port ")[1].split()[0])
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "checkpoint", timeout=5).read()
            break
        except OSError:
            time.sleep(0.05)
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--records", type=int, default=250)
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args()
    keyed = [node_envelopes(i, args.gpus, args.records) for i in range(args.nodes)]
    order = [envs[r] for r in range(args.records) for _, envs in keyed]
    n, intervals = len(order), len(order) * args.gpus
    print(
        f"log: {n:,} entries, {intervals:,} GPU-intervals ({args.nodes} nodes x "
        f"{args.records} records x {args.gpus} GPUs)"
    )

    reference = collector_rate(keyed, order)
    print(
        f"collector Ingestor, one core:   {reference:>9,.0f} entries/s  "
        f"{reference * args.gpus:>10,.0f} GPU-intervals/s"
    )

    store = MemoryLog()
    store.add(*order)
    tile_log = TileLog(store, SigningKey.generate(), ORIGIN)  # type: ignore[arg-type]
    _, note = tile_log.checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        directory = TileDirectory(Path(tmp) / "tiles")
        directory.write(new_tiles(0, n), lambda ref: tile_log.read(ref, n), note.to_bytes())
        proc, url = serve(Path(tmp) / "tiles")
        try:
            config = MonitorConfig(
                logs=(
                    LogConfig(
                        name="bench",
                        url=url,
                        log_key=tile_log.signer.verifier,
                        node_keys={k.key_id: k.public_key for k, _ in keyed},
                    ),
                ),
                state=Path(tmp) / "monitor.db",
            )
            monitor = Monitor(config)
            wall, cpu = time.perf_counter(), time.process_time()
            monitor.catch_up()
            cpu = time.process_time() - cpu
            wall = time.perf_counter() - wall
            stats = monitor.followers[0].stats
            assert stats.counted == n and not stats.problems, stats
            monitor.close()
        finally:
            proc.terminate()
            proc.wait()
    rate = n / cpu
    print(
        f"monitor catch-up, per CPU s:    {rate:>9,.0f} entries/s  "
        f"{rate * args.gpus:>10,.0f} GPU-intervals/s"
    )
    print(
        f"monitor catch-up, wall clock:   {n / wall:>9,.0f} entries/s  ({stats.requests} requests)"
    )
    print(f"monitor / collector per core:   {rate / reference:.0%}  (goal >= 80%)")


if __name__ == "__main__":
    main()
