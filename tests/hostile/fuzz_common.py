"""What the file fuzz targets share (fuzz_config.py, fuzz_jobs_file.py, fuzz_archive.py):

  instrumented   wraps a target's imports: run as a script, the flopwatch modules it imports are
                 instrumented for coverage (atheris.instrument_imports); under pytest, nothing.
  fuzz_main      the atheris (libFuzzer) entry: `python tests/hostile/fuzz_X.py -atheris_runs=N
                 [CORPUS_DIR ...]`; the first corpus directory (a temporary one if none is given)
                 is seeded with the target's honest inputs when empty. A crash (any exception
                 the target lets through) stops it and writes crash-<sha1>.
  smoke_inputs   the same target as a plain pytest smoke, without atheris: a few hundred inputs
                 made from the seeds by a deterministic mutator (random.Random(seed)): byte
                 flips, insertions of the target's interesting tokens, deletions, duplications,
                 truncations, splices, and now and then plain random bytes.

A target is `test_one_input(data: bytes) -> None`, which raises only on a defect: it catches the
refusals its input may earn (ConfigError) and checks what it accepted.
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def instrumented(name: str) -> Any:
    """For `with instrumented(__name__):` around a target's imports."""
    if name != "__main__":
        return contextlib.nullcontext()
    import atheris  # noqa: PLC0415 (only here: the pytest smoke runs without it)

    return atheris.instrument_imports(include=["flopwatch"])


def smoke_inputs(
    seeds: Sequence[bytes], count: int, *, seed: int, tokens: Sequence[bytes] = ()
) -> Iterator[bytes]:
    """`count` inputs: the seeds themselves, then mutants of them (deterministic)."""
    rng = random.Random(seed)
    yield from seeds
    for _ in range(max(0, count - len(seeds))):
        if rng.random() < 0.05:
            yield rng.randbytes(rng.randint(0, 256))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            _mutate(rng, data, seeds, tokens)
        yield bytes(data)


def _mutate(
    rng: random.Random, data: bytearray, seeds: Sequence[bytes], tokens: Sequence[bytes]
) -> None:
    at = rng.randint(0, len(data))
    kind = rng.randrange(7)
    if kind == 0 and data:  # flip bits of one byte
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # insert a token (or random bytes)
        piece = rng.choice(tokens) if tokens and rng.random() < 0.8 else rng.randbytes(4)
        data[at:at] = piece
    elif kind == 2 and data:  # delete a range
        del data[at : at + rng.randint(1, 16)]
    elif kind == 3 and data:  # duplicate a range
        start = rng.randrange(len(data))
        data[at:at] = data[start : start + rng.randint(1, 64)]
    elif kind == 4:  # truncate
        del data[at:]
    elif kind == 5:  # splice another seed's tail
        other = rng.choice(seeds)
        data[at:] = other[rng.randint(0, len(other)) :]
    elif data:  # set a byte to an edge value
        data[rng.randrange(len(data))] = rng.choice((0, 0x7F, 0x80, 0xFF, 0x0A, 0x1B))


def fuzz_main(test_one_input: Callable[[bytes], None], seeds: Sequence[bytes]) -> None:
    """Run `test_one_input` under atheris with the command line's libFuzzer flags."""
    import atheris  # noqa: PLC0415 (only here: the pytest smoke runs without it)

    args = list(sys.argv)
    corpora = [Path(a) for a in args[1:] if not a.startswith("-")]
    if not corpora:
        corpora = [Path(tempfile.mkdtemp(prefix="flopwatch-fuzz-corpus-"))]
        args.append(str(corpora[0]))
    if not corpora[0].is_file():  # a file: reproduce that one input (e.g. a crash-<sha1>)
        corpora[0].mkdir(parents=True, exist_ok=True)
        if not any(corpora[0].iterdir()):
            for i, data in enumerate(seeds):
                (corpora[0] / f"seed-{i}").write_bytes(data)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()
