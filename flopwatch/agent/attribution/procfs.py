"""What /proc says about a process: its environment, its cgroups, its start time.

The root is configurable (`--proc-root`) so that tests can lay out a fake /proc tree. A process
that is gone or unreadable yields None: callers treat it as unknown, never as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

MAX_PROC_FILE_BYTES = 1 << 20  # /proc/PID/environ may be large; read no more than this
T = TypeVar("T")


class ProcFs:
    """Reads /proc/PID/{environ,cgroup,stat} under `root`."""

    def __init__(self, root: Path = Path("/proc")) -> None:
        self.root = root

    def _read(self, pid: int, name: str) -> bytes | None:
        try:
            with (self.root / str(pid) / name).open("rb") as f:
                return f.read(MAX_PROC_FILE_BYTES)
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        except OSError as e:  # PermissionError: environ of another user's process without root
            log.debug("cannot read %s of pid %d: %s", name, pid, e)
            return None

    def environ(self, pid: int) -> dict[str, str] | None:
        data = self._read(pid, "environ")
        if data is None:
            return None
        out = {}
        for item in data.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep and key:
                out[key.decode(errors="replace")] = value.decode(errors="replace")
        return out

    def cgroups(self, pid: int) -> list[str] | None:
        """The cgroup paths of the process (v1: one per hierarchy; v2: one)."""
        data = self._read(pid, "cgroup")
        if data is None:
            return None
        paths = []
        for line in data.decode(errors="replace").splitlines():
            parts = line.split(":", 2)  # hierarchy-ID:controllers:path
            if len(parts) == 3:
                paths.append(parts[2])
        return paths

    def start_ticks(self, pid: int) -> int | None:
        """The process's start time (clock ticks since boot): with the pid, it names one
        process; a pid reused by a later process has another start time."""
        data = self._read(pid, "stat")
        if data is None:
            return None
        # The command name (field 2) is in parentheses and may hold spaces and ')'.
        fields = data.decode(errors="replace").rpartition(")")[2].split()
        try:
            return int(fields[19])  # field 22 of the whole line
        except (IndexError, ValueError):
            return None


@dataclass
class _Entry(Generic[T]):
    start_ticks: int | None
    value: T | None
    seen: int


class PidCache(Generic[T]):
    """Resolves each process once in its lifetime.

    A pid is looked up again only when its start time changes (the pid was reused). A process
    that exited keeps what was learned about it while it ran: its work in the interval where it
    exited is still its job's. Pids not asked about for `keep` rounds are forgotten.
    """

    def __init__(self, proc: ProcFs, resolve: Callable[[int], T | None], keep: int = 120) -> None:
        self._proc = proc
        self._resolve = resolve
        self._keep = keep
        self._round = 0
        self._entries: dict[int, _Entry[T]] = {}

    def lookup(self, pids: Collection[int]) -> dict[int, T]:
        self._round += 1
        for pid in pids:
            ticks = self._proc.start_ticks(pid)
            entry = self._entries.get(pid)
            if entry is not None and (ticks is None or ticks == entry.start_ticks):
                entry.seen = self._round
                continue
            value = self._resolve(pid) if ticks is not None else None
            self._entries[pid] = _Entry(ticks, value, self._round)
        horizon = self._round - self._keep
        for pid in [p for p, e in self._entries.items() if e.seen < horizon]:
            del self._entries[pid]
        return {
            pid: e.value
            for pid in pids
            if (e := self._entries.get(pid)) is not None and e.value is not None
        }

    def __len__(self) -> int:
        return len(self._entries)
