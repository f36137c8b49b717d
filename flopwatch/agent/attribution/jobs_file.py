"""JOBS.json windows (`--jobs`): fixed per-process windows for replay, demos and calibration.

Ids are kept exactly as written in the file (not namespaced): replayed traces and the demo
name their jobs themselves. Format: flopwatch/jobs_file.py.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from flopwatch.attribution import JobWindow
from flopwatch.jobs_file import load_jobs


class JobsFileSource:
    name = "jobs-file"

    def __init__(self, path: Path) -> None:
        self._windows = load_jobs(path)

    def windows(self, pids: Collection[int], now_ns: int) -> list[JobWindow]:
        return self._windows

    def close(self) -> None:
        pass
