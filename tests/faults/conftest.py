"""Fixtures of the fault suite: each test builds its own lab under tmp_path, torn down after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.lab import FaultLab


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., FaultLab]]:
    """`make_lab(nodes=3, intervals=200)`; every process a lab started is killed at the end."""
    labs: list[FaultLab] = []

    def make(**kwargs: int) -> FaultLab:
        labs.append(FaultLab(tmp_path, **kwargs))
        return labs[-1]

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()
