"""A fake /proc tree in tmp_path for the attribution sources
(flopwatch/agent/attribution/procfs.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def add_process(
    root: Path,
    pid: int,
    *,
    environ: dict[str, str] | None = None,
    cgroups: Sequence[str] = (),
    start_ticks: int = 1000,
    comm: str = "python3",
) -> None:
    """Write /proc/PID/{stat,environ,cgroup}; `environ` None leaves it unreadable (absent)."""
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    # field 22 (starttime) is the 20th after the ')' that closes the command name
    rest = ["S", "1"] + ["0"] * 17 + [str(start_ticks), "0"]
    (d / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
    if environ is not None:
        (d / "environ").write_bytes(
            b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items())
        )
    (d / "cgroup").write_text("".join(f"{i}:{c}\n" for i, c in enumerate(cgroups)))


def remove_process(root: Path, pid: int) -> None:
    d = root / str(pid)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
