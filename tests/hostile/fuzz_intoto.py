"""Coverage-guided fuzzing (atheris, libFuzzer) of in-toto statements: the JSON DSSE envelope,
the Statement and its compute-usage predicate, checked against a verified bundle.

    .venv/bin/python tests/hostile/fuzz_intoto.py -atheris_runs=200000 [CORPUS_DIR ...]
    make fuzz                       # every harness, bounded by FUZZ_RUNS

Each input's first byte picks what the rest is: (even) the statement file a regulator is
handed, or (odd) a payload that the collector itself signed, as a buggy or lying collector
would. Any exception other than StatementVerificationError with a known reason is a crash. The
first CORPUS_DIR (a temporary one if none is given) is seeded, when empty, with the honest ones.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(include=["flopwatch.intoto", "flopwatch.verify.intoto"]):
    from tests.hostile.test_intoto_hostile import CASE, PAYLOAD, outcome
    from tests.intoto.statements import COLLECTOR, sign_payload


def one_input(data: bytes) -> None:
    if not data:
        return
    rest = data[1:]
    outcome(sign_payload(rest, COLLECTOR) if data[0] % 2 else rest)


def seed_corpus(args: list[str]) -> list[str]:
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if not dirs:
        dirs = [tempfile.mkdtemp(prefix="flopwatch-fuzz-intoto-")]
        args = [*args, dirs[0]]
    corpus = Path(dirs[0])
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        (corpus / "statement").write_bytes(b"\x00" + CASE.statement)
        (corpus / "payload").write_bytes(b"\x01" + PAYLOAD)
    return args


if __name__ == "__main__":
    atheris.Setup(seed_corpus(sys.argv), one_input)
    atheris.Fuzz()
