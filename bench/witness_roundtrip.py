"""Witnessing: what does one checkpoint cost, from signing it to holding a quorum's cosignatures?

    .venv/bin/python bench/witness_roundtrip.py [--checkpoints 200] [--witnesses 2] \\
        [--grow 2500]

What it does: starts `--witnesses` witness servers (`flopwatch.witness`, SQLite state with
synchronous=FULL, on loopback HTTP) following one log, and a collector-side `TlogService` over an
in-memory log (the store is not what is measured). Each round appends `--grow` leaves (about 2,500
records a second, the design's load, times the 1 s of one round), then `publish()`: sign the
checkpoint, send add-checkpoint with a consistency proof to every witness at once, check each
cosignature against the policy (all of the witnesses), publish. It prints the median and p95 wall
time of a round: the collector's checkpoint, proofs and checks, the HTTP round trips, and each
witness's work (parse, verify the log's signature and the proof, fsync its state, cosign).

The figure is per checkpoint, whatever the records in it: a collector making one checkpoint
every 10 s (the default) spends this once per 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root (tests/)

from flopwatch.collector.log.checkpoints import TileLog
from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.collector.log.tlog_service import TlogService
from flopwatch.httpserve import HttpService
from flopwatch.keys import SigningKey
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.witness.service import Witness, witness_handler
from flopwatch.witness.state import WitnessState
from tests.collector.log.log_fakes import MemoryLog

ORIGIN = "bench.example/log"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--witnesses", type=int, default=2)
    ap.add_argument("--grow", type=int, default=2500, help="leaves appended per checkpoint")
    args = ap.parse_args()
    key = SigningKey.generate()
    log = MemoryLog()
    tile_log = TileLog(log, key, ORIGIN)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        services, states, lines = [], [], []
        for i in range(args.witnesses):
            cosigner = Cosigner(f"w{i}.bench.example", SigningKey.generate().private_key)
            state = WitnessState(Path(tmp) / f"w{i}.db")
            w = Witness(cosigner=cosigner, logs={ORIGIN: [tile_log.signer.verifier]}, state=state)
            service = HttpService("127.0.0.1:0", witness_handler(w))
            services.append(service)
            states.append(state)
            lines.append(f"witness W{i} {cosigner.verifier.vkey()} http://127.0.0.1:{service.port}")
        names = " ".join(f"W{i}" for i in range(args.witnesses))
        policy = Path(tmp) / "policy"
        policy.write_text("\n".join([*lines, f"group all all {names}", "quorum all", ""]))
        tlog = TlogService(TlogConfig(witness_policy=policy), tile_log, lambda f, *a: f(*a))
        rounds: list[float] = []
        try:
            for _ in range(args.checkpoints):
                log.grow_to(log.log_size() + args.grow)
                t0 = time.perf_counter()
                assert tlog.publish(), "the quorum did not cosign"
                rounds.append(time.perf_counter() - t0)
        finally:
            tlog.close()
            for s in services:
                s.close()
            for st in states:
                st.close()
    rounds.sort()
    p95 = rounds[int(0.95 * (len(rounds) - 1))]
    print(
        f"witness round trip per checkpoint ({args.witnesses} witnesses on loopback, all must "
        f"cosign, {args.checkpoints} checkpoints, +{args.grow} leaves each, final size "
        f"{log.log_size()}): median {statistics.median(rounds) * 1e3:.2f} ms, "
        f"p95 {p95 * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
