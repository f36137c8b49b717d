"""Coverage-guided fuzzing (atheris, libFuzzer) of in-toto statements: the JSON DSSE envelope,
the Statement and its compute-usage predicate, checked against a verified bundle, and its
compute-usage-sampled sibling, checked against a verified sampled report.

    .venv/bin/python tests/hostile/fuzz_intoto.py -atheris_runs=200000 [CORPUS_DIR ...]
    make fuzz                       # every harness, bounded by FUZZ_RUNS

Each input's first byte picks what the rest is: (bit 0 clear) the statement file a regulator is
handed, or (set) a payload that the collector itself signed, as a buggy or lying collector
would; (bit 1 clear) about a bundle, or (set) about a sampled report. Any exception other than
StatementVerificationError with a known reason is a crash. The first CORPUS_DIR (a temporary
one if none is given) is seeded, when empty, with the honest ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

with atheris.instrument_imports(
    include=["flopwatch.intoto", "flopwatch.verify.intoto", "flopwatch.verify.intoto_sampled"]
):
    from tests.hostile import test_intoto_hostile as bundle
    from tests.hostile import test_intoto_sampled_hostile as sampled
    from tests.intoto.statements import COLLECTOR, sign_payload

from tests.hostile.fuzz_common import fuzz_main


def one_input(data: bytes) -> None:
    if not data:
        return
    rest = data[1:]
    outcome = sampled.outcome if data[0] & 2 else bundle.outcome
    outcome(sign_payload(rest, COLLECTOR) if data[0] & 1 else rest)


if __name__ == "__main__":
    fuzz_main(
        one_input,
        {
            "statement": b"\x00" + bundle.CASE.statement,
            "payload": b"\x01" + bundle.PAYLOAD,
            "sampled-statement": b"\x02" + sampled.STATEMENT,
            "sampled-payload": b"\x03" + sampled.PAYLOAD,
        },
    )
