"""What the file fuzz targets share (fuzz_config.py, fuzz_jobs_file.py, fuzz_archive.py):

  instrumented   wraps a target's imports: run as a script, the flopwatch modules it imports are
                 instrumented for coverage (atheris.instrument_imports); under pytest, nothing.
  fuzz_main      the atheris (libFuzzer) entry of every harness here: `python
                 tests/hostile/fuzz_X.py -atheris_runs=N [CORPUS_DIR ...]`; the first corpus
                 directory (a temporary one if none is given) is seeded with the target's honest
                 inputs when empty; a file instead replays that one input. A crash (any exception
                 the target lets through) stops it and writes crash-<sha1>.
  smoke_inputs   the same target as a plain pytest smoke, without atheris: a few hundred inputs
                 made from the seeds by a deterministic mutator (random.Random(seed)): byte
                 flips, insertions of the target's interesting tokens, deletions, duplications,
                 truncations, splices, and now and then plain random bytes.
  short_session  what pytest runs of any atheris harness (these and fuzz_envelope.py,
                 fuzz_tlog.py, fuzz_intoto.py), so `make fuzz` does not rot: a bounded session
                 in a subprocess that must end cleanly with no crash file (skipped where
                 atheris is not installed).

A target is `test_one_input(data: bytes) -> None`, which raises only on a defect: it catches the
refusals its input may earn (ConfigError) and checks what it accepted.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
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


def fuzz_main(
    test_one_input: Callable[[bytes], None], seeds: Sequence[bytes] | Mapping[str, bytes]
) -> None:
    """Run `test_one_input` under atheris with the command line's libFuzzer flags; an empty
    first corpus gets the seeds (named `seed-<i>`, or by their keys)."""
    import atheris  # noqa: PLC0415 (only here: the pytest smoke runs without it)

    args = list(sys.argv)
    corpora = [Path(a) for a in args[1:] if not a.startswith("-")]
    if not corpora:
        corpora = [Path(tempfile.mkdtemp(prefix="flopwatch-fuzz-corpus-"))]
        args.append(str(corpora[0]))
    if not corpora[0].is_file():  # a file: reproduce that one input (e.g. a crash-<sha1>)
        corpora[0].mkdir(parents=True, exist_ok=True)
        if not any(corpora[0].iterdir()):
            named = seeds if isinstance(seeds, Mapping) else _numbered(seeds)
            for name, data in named.items():
                (corpora[0] / name).write_bytes(data)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def _numbered(seeds: Sequence[bytes]) -> dict[str, bytes]:
    return {f"seed-{i}": data for i, data in enumerate(seeds)}


def short_session(harness: Path, runs: int, tmp_path: Path) -> Path:
    """Run `harness` for `runs` inputs in a subprocess and check it ended cleanly with no crash
    file; returns its corpus directory (seeded by the harness). Skips without atheris."""
    import pytest  # noqa: PLC0415 (only here: the harnesses run without pytest)

    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    done = subprocess.run(
        [
            sys.executable,
            str(harness),
            f"-atheris_runs={runs}",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {runs} in" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
    return corpus
