"""The file fuzz targets (tests/hostile/fuzz_config.py, fuzz_jobs_file.py, fuzz_archive.py) as a
plain pytest smoke: each gets its seeds and a few hundred deterministic mutants of them
(`fuzz_common.smoke_inputs`), so CI exercises them without atheris; and each atheris entry
runs a short session, so `make fuzz` does not rot (skipped where atheris is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import fuzz_archive, fuzz_config, fuzz_jobs_file
from tests.hostile.fuzz_common import short_session, smoke_inputs

TARGETS = {
    "config": fuzz_config,
    "jobs_file": fuzz_jobs_file,
    "archive": fuzz_archive,
}
SMOKE_INPUTS = 300


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_smoke_a_few_hundred_mutants_without_a_crash(name: str) -> None:
    target = TARGETS[name]
    inputs = list(smoke_inputs(target.SEEDS, SMOKE_INPUTS, seed=17, tokens=target.TOKENS))
    assert len(inputs) == SMOKE_INPUTS and len(set(inputs)) > SMOKE_INPUTS // 2
    for data in inputs:
        target.test_one_input(data)


def test_the_seeds_are_accepted_inputs() -> None:
    """A target whose seeds are all refused would fuzz nothing but its first check."""
    fuzz_config.test_one_input(fuzz_config.SEEDS[0])
    assert len(fuzz_config.seen) == 1
    assert fuzz_config.seen[0].thresholds == (10**23, 10**24, 10**25)
    fuzz_jobs_file.test_one_input(fuzz_jobs_file.SEEDS[0])
    assert [w.job_id for w in fuzz_jobs_file.load_jobs(fuzz_jobs_file.PATH)] == [
        "calib-bf16",
        "x",
    ]
    fuzz_archive.test_one_input(fuzz_archive.ARCHIVE)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_atheris_entry_runs_a_short_session(name: str, tmp_path: Path) -> None:
    short_session(Path(TARGETS[name].__file__), 500, tmp_path)
