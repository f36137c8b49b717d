"""The processes NVML lists on a device, with pids no process can have dropped.

nvidia-ml-py 12.535.77 reads the driver's process entries with the wrong struct size, so every
pid after the first is garbage (XuehaiPan/nvitop#75); other releases could go wrong the same
way. A pid the kernel cannot hand out (<= 0, or >= its pid_max) is therefore dropped with a
debug log, never attributed. NVML reports pids of the host's pid namespace, which is where the
agent runs (`hostPID` on Kubernetes), so the host's pid_max applies.

Running processes are read with nvmlDeviceGetComputeRunningProcesses (the `_v3` symbol) and,
on a driver without it, its `_v2` version where pynvml offers one (Nvml.call_first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flopwatch.agent.backends.nvml.lib import Nvml

log = logging.getLogger(__name__)

# The kernel's PID_MAX_LIMIT on 64-bit Linux: no pid reaches it, whatever pid_max says.
PID_MAX_LIMIT = 4_194_304
PID_MAX_FILE = Path("/proc/sys/kernel/pid_max")
RUNNING_PROCESSES = (
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetComputeRunningProcesses_v2",
)


def read_pid_max(path: Path = PID_MAX_FILE) -> int:
    """The kernel's pid_max (pids lie in 1 .. pid_max - 1); PID_MAX_LIMIT where unreadable."""
    try:
        value = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return PID_MAX_LIMIT
    return value if 1 < value <= PID_MAX_LIMIT else PID_MAX_LIMIT


def plausible_pids(pids: Iterable[Any], pid_max: int, where: str) -> list[int]:
    """The pids a process can have, sorted and unique; the others are logged and dropped."""
    kept: set[int] = set()
    dropped: set[int] = set()
    for p in pids:
        pid = int(p)
        (kept if 0 < pid < pid_max else dropped).add(pid)
    if dropped:
        log.debug("%s: NVML gave impossible pids %s (pid_max %d): dropped", where, dropped, pid_max)
    return sorted(kept)


def running_pids(nvml: Nvml, handle: Any, pid_max: int, where: str) -> list[int]:
    """Pids of the compute processes running on the device now; empty where NVML cannot say."""
    procs = nvml.optional(nvml.call_first, RUNNING_PROCESSES, handle)
    return plausible_pids((p.pid for p in procs or ()), pid_max, where)
