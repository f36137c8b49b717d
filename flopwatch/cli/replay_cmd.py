"""`flopwatch replay TRACE --jobs JOBS.json`: FLOPs per job from a recorded trace."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flopwatch.cli.common import EXIT_OK

HELP = "compute FLOPs per job from a recorded NVML trace, offline (calibration and audit)"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "replay",
        help=HELP,
        description=HELP
        + ". Runs the trace through the agent's own sampling, attribution, signing and "
        "verification path and prints JSON: "
        '{"jobs": {"<job>": {"flops": <estimate>, "flops_upper": <upper bound>}}, ...}.',
    )
    p.add_argument("trace", type=Path, help="trace.jsonl recorded with nvml-recorder")
    p.add_argument(
        "--jobs",
        type=Path,
        help='JSON list of {"job", "pid", "start", "end", "precision"?}; a job gets the GPU '
        "work of its pid inside its window. Without it all work is 'unattributed'.",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flopwatch.agent.replay_report import replay
    from flopwatch.jobs_file import load_jobs

    windows = load_jobs(args.jobs, source="replay") if args.jobs else []
    result = replay(args.trace, windows)
    json.dump(result.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK
