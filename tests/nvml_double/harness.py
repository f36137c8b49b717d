"""Build the NVML test double and run code against it in a subprocess.

pynvml loads `libnvidia-ml.so.1` by the normal loader search and keeps it for the life of the
process, so every use of the double runs in a child process whose LD_LIBRARY_PATH names the
double's folder (never in the pytest process). `library_dir` builds the library when it is missing
or older than its source, with the command `make nvml-double` runs, so plain `pytest` works too.
`TraceReference` reads a trace in Python: the figures the tests expect, computed independently of
the C code.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flopwatch.agent.backends.nvml.ids import GPM_PIPE_KEYS
from tests.paths import H100_TRACE, REPO

SOURCE = Path(__file__).with_name("nvml_double.c")
PROBE = Path(__file__).with_name("probe.py")
BUILD = REPO / "build"
LIB_NAME = "libnvidia-ml.so.1"
# Keep in step with NVML_DOUBLE_CFLAGS / NVML_DOUBLE_LIBS in the Makefile (test_double.py checks).
CFLAGS = (
    "-std=c11",
    "-O2",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
    "-Wall",
    "-Wextra",
    "-Werror",
)
LIBS = ("-lm", "-lpthread")
NO_V3_DEFINE = "-DNVML_DOUBLE_NO_V3"

# The served clock in tests: trace time t shows as unix time EPOCH + (t - first t0) / SPEED.
EPOCH = 1_700_000_000.0
PROBE_TIMEOUT_S = 60
POLL_S = 0.1  # the backend probe polls the SM clock every 0.1 s of trace time


def library_dir(no_v3: bool = False) -> Path:
    """The folder holding the built double (the variant without *_v3 symbols if `no_v3`)."""
    out_dir = BUILD / ("nvml-double-no-v3" if no_v3 else "nvml-double")
    lib = out_dir / LIB_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest workers and make may build at once
        if lib.exists() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
            return out_dir
        cc = os.environ.get("CC", "cc")
        if shutil.which(cc) is None:
            raise RuntimeError(
                f"the NVML test double needs a C compiler: {cc!r} not found (install gcc or set CC)"
            )
        tmp = out_dir / f".{LIB_NAME}.{os.getpid()}.tmp"
        cmd = [cc, *CFLAGS, *([NO_V3_DEFINE] if no_v3 else []), "-o", str(tmp), str(SOURCE), *LIBS]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"building the NVML double failed: {' '.join(cmd)}\n{done.stderr}")
        tmp.replace(lib)
    return out_dir


def double_env(
    *,
    trace: Path = H100_TRACE / "trace.jsonl",
    no_v3: bool = False,
    frozen: bool = True,
    epoch: float = EPOCH,
    speed: float = 1.0,
    **switches: str | int,
) -> dict[str, str]:
    """The environment of a child process that loads the double (switches: NVML_DOUBLE_<NAME>)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NVML_DOUBLE_")}
    env["LD_LIBRARY_PATH"] = str(library_dir(no_v3))
    env["NVML_DOUBLE_TRACE"] = str(trace)
    env["NVML_DOUBLE_EPOCH"] = repr(epoch)
    env["NVML_DOUBLE_SPEED"] = repr(speed)
    if frozen:
        env["NVML_DOUBLE_FROZEN"] = "1"
    for name, value in switches.items():
        env[f"NVML_DOUBLE_{name.upper()}"] = str(value)
    return env


def run_probe(
    scenario: str,
    env: Mapping[str, str],
    *,
    python: str = sys.executable,
    pythonpath: Iterable[Path] = (),
    **params: Any,
) -> Any:
    """Run `probe.py <scenario>` in a child process; its JSON answer.

    `pythonpath` goes before the repository (a folder holding another pynvml release)."""
    child = dict(env)
    child["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), str(REPO)])
    done = subprocess.run(
        [python, str(PROBE), scenario, json.dumps(params)],
        env=child,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
        check=False,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise AssertionError(f"probe {scenario} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


@dataclass
class TraceReference:
    """A trace read in Python: what the double should serve at a trace time."""

    meta: dict[str, Any]
    intervals: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = H100_TRACE / "trace.jsonl") -> TraceReference:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        meta = next(r for r in rows if r["type"] == "meta")
        ivs = sorted((r for r in rows if r["type"] == "interval"), key=lambda r: r["t0"])
        return cls(meta, ivs)

    @property
    def t0(self) -> float:
        return float(self.intervals[0]["t0"])

    @property
    def t1(self) -> float:
        return float(self.intervals[-1]["t1"])

    def served(self, t: float, epoch: float = EPOCH, speed: float = 1.0) -> float:
        """The unix time the double shows for trace time t."""
        return epoch + (t - self.t0) / speed

    def at(self, t: float) -> dict[str, Any] | None:
        return next((r for r in self.intervals if r["t0"] <= t < r["t1"]), None)

    def mean(self, key: str, a: float, b: float) -> float:
        """Time-weighted mean percent of a GPM key over [a, b] (0 outside the trace)."""
        total = 0.0
        for r in self.intervals:
            lo, hi = max(a, r["t0"]), min(b, r["t1"])
            if hi > lo:
                total += (hi - lo) * r["gpm"][key]
        return total / (b - a)

    def clock(self, t: float) -> int:
        r = self.at(t)
        if r is None:
            return int(
                self.intervals[0 if t < self.t0 else -1]["clock_polled_mhz"][
                    0 if t < self.t0 else -1
                ]
            )
        clocks = r["clock_polled_mhz"]
        k = math.floor((t - r["t0"]) / (r["t1"] - r["t0"]) * len(clocks))
        return int(clocks[min(max(k, 0), len(clocks) - 1)])

    def energy(self, t: float) -> int:
        r = self.at(t)
        if r is None:
            return int(
                self.intervals[0]["energy_mj"][0]
                if t < self.t0
                else self.intervals[-1]["energy_mj"][1]
            )
        e0, e1 = r["energy_mj"]
        return int(e0 + (e1 - e0) * (t - r["t0"]) / (r["t1"] - r["t0"]))

    def pids(self, t: float) -> list[int]:
        r = self.at(t)
        return sorted(p["pid"] for p in r["procs"]) if r else []

    def busiest(self, key: str = "hmma_tensor", seconds: int = 3) -> float:
        """The start of the busiest `seconds` whole intervals for `key` (a window to test)."""
        best = max(
            range(len(self.intervals) - seconds),
            key=lambda i: sum(r["gpm"][key] for r in self.intervals[i : i + seconds]),
        )
        return float(self.intervals[best]["t0"])


def expected_clock(ref: TraceReference, a: float, b: float) -> float:
    """MHz x s over [a, b] from readings every POLL_S from a (trapezoid rule)."""
    n = round((b - a) / POLL_S)
    pts = [ref.clock(a + k * POLL_S) for k in range(n + 1)]
    return sum((x + y) / 2 * POLL_S for x, y in itertools.pairwise(pts))


def check_whole_gpu(
    reading: dict[str, Any], scale: float = 1.0, ref: TraceReference | None = None
) -> None:
    """A whole GPU's (or a compute instance's, `scale`d) backend reading matches the trace."""
    ref = ref or TraceReference.load()
    a, b = reading["start"], reading["end"]
    assert reading["error"] is None
    busy = reading["pipe_busy"]
    assert set(busy) == {p.value for p in GPM_PIPE_KEYS}
    for pipe, key in GPM_PIPE_KEYS.items():
        assert busy[pipe.value] == pytest.approx(scale * ref.mean(key, a, b) / 100, abs=1e-9)
    assert reading["clock_mhz_s"] == pytest.approx(expected_clock(ref, a, b), rel=1e-9)
    assert reading["clock_samples"] >= round((b - a) / POLL_S)
