"""NVML probe: the agent's real NVML backend on GPU 0, under whichever nvidia-ml-py is importable.

    python bench/nvml_probe.py [--readings 4] [--interval 0.5] [--workers 2]

Needs an NVIDIA GPU and PyTorch with CUDA (the load). Starts --workers processes that run bf16
matrix products on GPU 0 (bench/gpu_check.py's workload), then takes --readings intervals with
flopwatch's NvmlBackend and prints, per reading: the pipes' busy fractions, the integrated SM
clock, energy, and the processes with their shares. It also lists the pids that
nvmlDeviceGetComputeRunningProcesses returns beside the workers' real pids: nvidia-ml-py
12.535.77 is known to return garbage after the first (its process-info struct has the wrong
size). Run it with PYTHONPATH pointing at another nvidia-ml-py to compare versions.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import pynvml
from gpu_check import Workload

from flopwatch.agent.backends.nvml.backend import NvmlBackend


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--readings", type=int, default=4, help="intervals to read (default 4)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds each (default 0.5)")
    p.add_argument("--workers", type=int, default=2, help="processes loading GPU 0 (default 2)")
    args = p.parse_args(argv)
    version = getattr(pynvml, "__version__", "?")
    print(f"nvidia-ml-py {version} from {pynvml.__file__}")
    workers = [Workload(dry_run=False) for _ in range(args.workers)]
    seconds = args.readings * args.interval + 3
    threads = [threading.Thread(target=w.run, args=("bf16", seconds)) for w in workers]
    for t in threads:
        t.start()
    time.sleep(1.0)
    backend = NvmlBackend(interval_s=args.interval)
    try:
        print(f"workers: pids {sorted(w.pid for w in workers)}")
        for gpu in backend.gpus():
            print(f"device: {gpu}")
        pynvml_pids = []
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            pynvml_pids = [int(p.pid) for p in procs]
        except Exception as e:
            print(f"nvmlDeviceGetComputeRunningProcesses raised {type(e).__name__}: {e}")
        print(f"nvmlDeviceGetComputeRunningProcesses pids: {pynvml_pids}")
        for _ in range(args.readings):
            for r in backend.next_readings() or []:
                busy = {k.value: round(v, 4) for k, v in (r.pipe_busy or {}).items()}
                print(
                    f"  [{(r.end_ns - r.start_ns) / 1e9:.3f} s] busy {busy} "
                    f"clock {r.sm_clock_mhz_s:.1f} MHz*s ({r.clock_samples} polls) "
                    f"energy {r.energy_mj} mJ processes {r.processes} error {r.error}"
                )
    finally:
        backend.close()
        for t in threads:
            t.join()
        for w in workers:
            w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
