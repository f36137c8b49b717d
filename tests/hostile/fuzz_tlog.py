"""Coverage-guided fuzzing (atheris, libFuzzer) of the C2SP log parsers: signed notes and
checkpoints with cosignatures, add-checkpoint requests judged by a witness, witness policies,
entry bundles and tiles, tile paths, vkeys, 409 bodies and witness answers; the monitor's
checks of tiles against a checkpoint and of cosignatures against a policy.

    .venv/bin/python tests/hostile/fuzz_tlog.py -atheris_runs=200000 [CORPUS_DIR ...]
    make fuzz                       # the envelope harness, then this one, bounded by FUZZ_RUNS

Each input's first byte picks the parser (tests/hostile/tlog_seeds.py); the rest is its input.
Any exception other than VerificationError with a known reason is a crash: libFuzzer stops and
writes the input to crash-<sha1>. The first CORPUS_DIR (a temporary one if none is given) is
seeded, when empty, with each parser's honest input.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["flopwatch.tlog", "flopwatch.monitor"]):
    from tests.hostile.tlog_seeds import SEEDS, exercise

KINDS = sorted(SEEDS)


def one_input(data: bytes) -> None:
    if not data:
        return
    exercise(KINDS[data[0] % len(KINDS)], data[1:])


def seed_corpus(args: list[str]) -> list[str]:
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:
        dirs = [tempfile.mkdtemp(prefix="flopwatch-fuzz-tlog-")]
        args = [*args, dirs[0]]
    corpus = Path(dirs[0])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, kind in enumerate(KINDS):
            (corpus / kind).write_bytes(bytes([i]) + SEEDS[kind])
    return args


if __name__ == "__main__":
    atheris.Setup(seed_corpus(sys.argv), one_input)
    atheris.Fuzz()
