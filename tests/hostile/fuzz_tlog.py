"""Coverage-guided fuzzing (atheris, libFuzzer) of the C2SP log parsers: signed notes and
checkpoints with cosignatures, add-checkpoint requests judged by a witness, witness policies,
entry bundles and tiles, tile paths, vkeys, 409 bodies and witness answers; the monitor's
checks of tiles against a checkpoint and of cosignatures against a policy; node key statements
(the envelope as logged, and any payload signed) and what the monitor learns from them.

    .venv/bin/python tests/hostile/fuzz_tlog.py -atheris_runs=200000 [CORPUS_DIR ...]
    make fuzz                       # the envelope harness, then this one, bounded by FUZZ_RUNS

Each input's first byte picks the parser (tests/hostile/tlog_seeds.py); the rest is its input.
Any exception other than VerificationError with a known reason is a crash: libFuzzer stops and
writes the input to crash-<sha1>. The first CORPUS_DIR (a temporary one if none is given) is
seeded, when empty, with each parser's honest input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(
    include=["flopwatch.tlog", "flopwatch.monitor", "flopwatch.statements"]
):
    from tests.hostile.tlog_seeds import SEEDS, exercise

from tests.hostile.fuzz_common import fuzz_main

KINDS = sorted(SEEDS)


def one_input(data: bytes) -> None:
    if not data:
        return
    exercise(KINDS[data[0] % len(KINDS)], data[1:])


if __name__ == "__main__":
    fuzz_main(one_input, {kind: bytes([i]) + SEEDS[kind] for i, kind in enumerate(KINDS)})
