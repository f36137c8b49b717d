"""Signing records: what does RecordBuilder cost per GPU-interval, and what sizes does it sign?

    .venv/bin/python bench/record_builder.py [--gpus 8] [--rounds 1 5 25 100] [--batches 200]

What it does: takes `--rounds` sampling rounds of `--gpus` simulated H100s (two jobs), then
builds the records of that batch `--batches` times (`RecordBuilder.build_records`: attribution,
FLOP figures, exact sizing, splitting at 60 KiB, one Ed25519 signature per record) and prints,
per batch size, the best of three runs in microseconds per GPU-interval, and the sizes of the
records one batch becomes.
"""

from __future__ import annotations

import argparse
import time

from flopwatch.agent.backends.sim import SIM_PID_BASE, SimBackend
from flopwatch.agent.records import ChainHead, RecordBuilder
from flopwatch.attribution import JobWindow
from flopwatch.keys import SigningKey

START = 1_700_000_000 * 10**9


def measure(gpus: int, rounds: int, batches: int) -> tuple[float, list[int]]:
    sim = SimBackend(gpus, seed=7, start_ns=START)
    windows = [JobWindow(f"manual:bench/job-{n % 2}", SIM_PID_BASE + n, 0) for n in range(gpus)]
    batch = []
    for _ in range(rounds):
        readings = sim.next_readings()
        assert readings is not None
        batch.append((readings, windows))
    builder = RecordBuilder(
        node_id="bench",
        cluster="bench",
        signer=SigningKey.generate(),
        head=ChainHead(),
        now_ns=lambda: START,
    )
    sizes = [len(e.to_bytes()) for e in builder.build_records(batch)]
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(batches):
            builder.build_records(batch)
        best = min(best, (time.perf_counter() - t) / batches / (gpus * rounds) * 1e6)
    return best, sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--rounds", type=int, nargs="+", default=[1, 5, 25, 100])
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args()
    for rounds in args.rounds:
        us, sizes = measure(args.gpus, rounds, args.batches)
        print(f"{args.gpus} GPUs x {rounds} rounds: {us:.1f} us per GPU-interval; records {sizes}")


if __name__ == "__main__":
    main()
