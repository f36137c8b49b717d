"""GPU check: the agent on real NVML beside GPU work whose operation count is exact.

    python bench/gpu_check.py [--seconds 15] [--kinds bf16,tf32,fp64] [--out FILE.json]
    make gpu-check

Needs an NVIDIA GPU with its driver (NVML) and PyTorch with CUDA for the workload; CI never runs
it (no GPU there). It takes about 2 to 3 minutes. In order:

1. Starts the workload: one PyTorch process (this file with --worker) that runs dense matrix
   products on GPU 0 when asked and counts them. Each product of n x n matrices is exactly
   2 n^3 floating-point operations, so a phase's exact count is 2 n^3 x its products.
2. Baseline: the workload alone (bf16 products) for --seconds: products per second.
3. Starts a collector (SQLite, loopback, --insecure) and `flopwatch agent --backend nvml`,
   exactly as an operator would, at a 1 s interval.
4. Per kind in --kinds: `flopwatch job start --gpus all --precision P`, one phase of the
   workload, `flopwatch job end`. The first phase is bf16 again: its rate against the baseline
   is the workload's slowdown with the agent running.
5. Reads the agent's CPU time (/proc/PID/stat, all threads) and peak RSS over the phases, waits
   until the collector's totals stop changing, and reads them with `flopwatch jobs --json`.
6. Stops the agent and runs the bf16 baseline once more (the GPU's clocks drift as it warms; the
   slowdown is taken against the mean of the two baselines).
7. Prints, per job: the exact count, the agent's estimate and upper bound, and their ratios;
   the agent's CPU (% of one core) and peak RSS; the slowdown. --out also writes them as JSON.

The estimate uses the declared precision (the HMMA pipe's rate depends on it); the upper bound
never does and must never be below the exact count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_overhead import (
    flopwatch_cmd,
    start_collector,
    status_kb,
    stop,
    usage,
    wait_for_ports,
)

# kind: (matrix size n, precision declared to the agent)
KINDS = {
    "bf16": (8192, "bf16"),
    "fp16": (8192, "fp16"),
    "tf32": (8192, "tf32"),
    "fp32": (4096, "fp32"),
    "fp64": (4096, "fp64"),
}
SETTLE_S = 3.0  # the collector's totals must stay the same this long before they are read
SETTLE_TIMEOUT_S = 60.0
GAP_S = 2.0  # idle seconds around each job, so that no agent interval mixes two jobs


# -- the workload process ---------------------------------------------------------------------


def dry_worker() -> int:
    """--dry-run: the same protocol without a GPU (sleeps; no operations)."""
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        kind, seconds = line.split()
        time.sleep(float(seconds))
        answer = {"kind": kind, "n": 0, "products": 0, "flops": 0, "timed_products": 0}
        print(json.dumps({**answer, "timed_s": float(seconds), "tflops_per_s": 1.0}), flush=True)
    return 0


def worker() -> int:
    """Serve phases: read "KIND SECONDS" lines, run products, answer one JSON line each."""
    import torch  # noqa: PLC0415 (only the workload process needs torch)

    dtypes = {
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "tf32": torch.float32,
        "fp32": torch.float32,
        "fp64": torch.float64,
    }
    dev = torch.device("cuda:0")
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        kind, seconds = line.split()
        n, _ = KINDS[kind]
        torch.backends.cuda.matmul.allow_tf32 = kind == "tf32"
        a = torch.randn(n, n, device=dev, dtype=dtypes[kind])
        b = torch.randn(n, n, device=dev, dtype=dtypes[kind])
        c = torch.empty(n, n, device=dev, dtype=dtypes[kind])
        products = 0
        for _ in range(3):  # warm-up, counted: the agent sees these too
            torch.matmul(a, b, out=c)
            products += 1
        torch.cuda.synchronize()
        timed, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < float(seconds):
            for _ in range(10):
                torch.matmul(a, b, out=c)
            torch.cuda.synchronize()
            timed += 10
        elapsed = time.perf_counter() - t0
        products += timed
        flops = products * 2 * n**3
        answer = {
            "kind": kind,
            "n": n,
            "products": products,
            "flops": flops,
            "timed_products": timed,
            "timed_s": elapsed,
            "tflops_per_s": timed * 2 * n**3 / elapsed / 1e12,
        }
        del a, b, c
        torch.cuda.empty_cache()
        print(json.dumps(answer), flush=True)
    return 0


class Workload:
    def __init__(self, dry_run: bool) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--dry-worker" if dry_run else "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = self._answer()
        self.pid = int(first["pid"])

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the workload exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, kind: str, seconds: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kind} {seconds}\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- the check --------------------------------------------------------------------------------


def jobs_json(port: int, names: list[str]) -> dict[str, Any]:
    """The collector's totals of the jobs named (ids end with /NAME)."""
    out = subprocess.run(
        flopwatch_cmd("jobs", "--collector", f"127.0.0.1:{port}", "--insecure", "--json"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    jobs: dict[str, Any] = json.loads(out)["jobs"]
    return {k: v for k, v in jobs.items() if k.rsplit("/", 1)[-1] in names}


def settled_jobs(port: int, names: list[str]) -> dict[str, Any]:
    """The collector's totals of the jobs named, once they stayed the same for SETTLE_S."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = jobs_json(port, names)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_S)
        now = jobs_json(port, names)
        if now == last:
            return now
        last = now
    print(f"warning: totals still changing after {SETTLE_TIMEOUT_S} s; reading them as they are")
    return last


def job_cmd(socket: Path, action: str, job: str, *extra: str) -> None:
    subprocess.run(
        flopwatch_cmd("job", action, "--job", job, "--socket", str(socket), *extra),
        check=True,
        capture_output=True,
    )


def nvml_facts() -> dict[str, Any]:
    """What the driver says about GPU 0 (printed with the figures)."""
    import pynvml  # noqa: PLC0415

    pynvml.nvmlInit()
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(h)
        driver = pynvml.nvmlSystemGetDriverVersion()
        facts: dict[str, Any] = {
            "gpu": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "pynvml": getattr(pynvml, "__version__", "?"),
            "cc": list(pynvml.nvmlDeviceGetCudaComputeCapability(h)),
            "cores": pynvml.nvmlDeviceGetNumGpuCores(h),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "gpm_supported": bool(pynvml.nvmlGpmQueryDeviceSupport(h).isSupportedDevice),
        }
        try:
            facts["mig_mode"] = list(pynvml.nvmlDeviceGetMigMode(h))
        except pynvml.NVMLError as e:
            facts["mig_mode"] = str(e)
        try:
            facts["cc_feature"] = int(pynvml.nvmlSystemGetConfComputeState().ccFeature)
        except pynvml.NVMLError as e:
            facts["cc_feature"] = str(e)
        return facts
    finally:
        pynvml.nvmlShutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per phase (default 15)")
    p.add_argument(
        "--kinds", default="bf16,tf32,fp64", help="phases under the agent (default bf16,tf32,fp64)"
    )
    p.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the plumbing without a GPU: simulated GPU (sim:1), a workload that sleeps",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dry-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker()
    if args.dry_worker:
        return dry_worker()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds or args.seconds <= 0:
        p.error(f"--kinds from {','.join(KINDS)}; --seconds positive (unknown: {unknown})")
    if kinds[0] != "bf16":
        kinds.insert(0, "bf16")  # the slowdown compares bf16 with and without the agent

    facts: dict[str, Any] = {"gpu": "none (dry run)", "driver": "-", "pynvml": "-"}
    if not args.dry_run:
        facts = nvml_facts()
    print(f"GPU check on {facts['gpu']} (driver {facts['driver']}, pynvml {facts['pynvml']})")
    work = Workload(args.dry_run)
    base1 = work.run("bf16", args.seconds)
    print(f"baseline bf16 without the agent: {base1['tflops_per_s']:.1f} TFLOP/s")
    phases: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="flopwatch-gpu-check-") as tmp:
        root = Path(tmp)
        clog, alog = root / "collector.log", root / "agent.log"
        socket = root / "agent.sock"
        collector = start_collector(root, clog)
        agent: subprocess.Popen[bytes] | None = None
        try:
            grpc_port, _ = wait_for_ports(clog, collector)
            agent = subprocess.Popen(
                flopwatch_cmd(
                    "agent",
                    "--collector",
                    f"127.0.0.1:{grpc_port}",
                    "--backend",
                    "sim:1" if args.dry_run else "nvml",
                    "--interval",
                    "1",
                    "--attribution",
                    "none",
                    "--control-socket",
                    str(socket),
                    "--metrics-listen",
                    "off",
                    "--state-dir",
                    str(root / "agent"),
                    "--node-id",
                    "gpu-check",
                    "--insecure",
                ),
                stdout=subprocess.DEVNULL,
                stderr=alog.open("wb"),
            )
            deadline = time.monotonic() + 60
            while not socket.exists():
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the agent did not start:\n{alog.read_text()}")
                time.sleep(0.2)
            time.sleep(GAP_S)
            before = usage(agent.pid)
            for kind in kinds:
                job = f"gpu-check-{kind}-{len(phases)}"
                job_cmd(socket, "start", job, "--gpus", "all", "--precision", KINDS[kind][1])
                time.sleep(GAP_S)
                phases.append((job, work.run(kind, args.seconds)))
                time.sleep(GAP_S)
                job_cmd(socket, "end", job)
                print(f"phase {job}: {phases[-1][1]['tflops_per_s']:.1f} TFLOP/s")
            after = usage(agent.pid)
            peak_mb = status_kb(agent.pid, "VmHWM") / 1024
            totals = settled_jobs(grpc_port, [job for job, _ in phases])
        finally:
            if agent is not None:
                stop(agent, "agent")
            stop(collector, "collector")
        agent_log_tail = alog.read_text(errors="replace")[-3000:]
    base2 = work.run("bf16", args.seconds)
    work.close()
    print(f"baseline bf16 without the agent, again: {base2['tflops_per_s']:.1f} TFLOP/s")

    cpu_percent = 100.0 * (after.cpu_s - before.cpu_s) / (after.wall_s - before.wall_s)
    baseline = (base1["tflops_per_s"] + base2["tflops_per_s"]) / 2
    with_agent = phases[0][1]["tflops_per_s"]
    slowdown = 100.0 * (1 - with_agent / baseline)
    rows = []
    print()
    print(f"{'job':<22} {'exact FLOPs':>12} {'estimate':>12} {'est/exact':>9} {'upper/exact':>11}")
    for job, phase in phases:
        got = next((v for k, v in totals.items() if k.endswith("/" + job)), None)
        est = float(got["flops"]) if got else 0.0
        upper = float(got["flops_upper"]) if got else 0.0
        exact = float(phase["flops"]) or float("nan")  # a dry run counts nothing
        rows.append({"job": job, **phase, "estimate": est, "upper": upper})
        print(
            f"{job:<22} {exact:>12.4e} {est:>12.4e} {est / exact:>9.3f} {upper / exact:>11.3f}"
            + ("" if got else "   (no total at the collector)")
        )
    print()
    print(
        f"agent CPU: {cpu_percent:.2f} % of one core over {after.wall_s - before.wall_s:.0f} s "
        f"(utime+stime, all threads); peak RSS {peak_mb:.1f} MB"
    )
    print(
        f"workload slowdown with the agent: {slowdown:+.2f} % (bf16 {with_agent:.1f} TFLOP/s "
        f"against {base1['tflops_per_s']:.1f} before and {base2['tflops_per_s']:.1f} after)"
    )
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {
                    "nvml": facts,
                    "phases": rows,
                    "baseline": [base1, base2],
                    "agent_cpu_percent": cpu_percent,
                    "agent_peak_rss_mb": peak_mb,
                    "slowdown_percent": slowdown,
                    "collector_totals": totals,
                    "agent_log_tail": agent_log_tail,
                },
                indent=1,
            )
        )
    unsound = [r["job"] for r in rows if r["upper"] < r["flops"]]
    if unsound:
        print(f"error: upper bound below the exact count for {unsound}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
