"""A fake `scontrol` for the Slurm source: a real executable that answers `scontrol show job -o
ID` from files, as the real one prints, so the agent's subprocess call, timeout and parsing run
for real (tests/deploy/test_slurm_hooks.py does the same for `flopwatch`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPT = f"""#!{sys.executable}
# Appends its argv to calls.jsonl beside it; prints jobs/ID (exit 0), or as Slurm does for an
# unknown job (exit 1); with a file 'hang' beside it, never answers.
import json, pathlib, sys, time
here = pathlib.Path(__file__).parent
with open(here / "calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if (here / "hang").exists():
    time.sleep(60)
job = here / "jobs" / sys.argv[-1]
if not job.exists():
    sys.stderr.write("slurm_load_jobs error: Invalid job id specified\\n")
    sys.exit(1)
sys.stdout.write(job.read_text())
"""


def job_line(
    job: str,
    *,
    account: str = "physics",
    name: str = "train",
    comment: str = "(null)",
    wckey: str = "(null)",
    array_job: str | None = None,
) -> str:
    """One job as `scontrol show job -o` prints it (Slurm 23.x field order, shortened)."""
    array = f"ArrayJobId={array_job} ArrayTaskId=1 " if array_job else ""
    return (
        f"JobId={job} {array}JobName={name} UserId=alice(1000) GroupId=alice(1000) "
        f"MCS_label=N/A Priority=4294901 Nice=0 Account={account} QOS=normal WCKey={wckey} "
        "JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 "
        "Partition=gpu NodeList=node-1 NumNodes=1 NumCPUs=8 TRES=cpu=8,gres/gpu=1 "
        f"Command=/home/alice/train.sh WorkDir=/home/alice Comment={comment} "
        "StdErr=/home/alice/slurm-%j.out\n"
    )


class FakeScontrol:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "fake-scontrol"
        (self.dir / "jobs").mkdir(parents=True)
        self.path = self.dir / "scontrol"
        self.path.write_text(SCRIPT)
        self.path.chmod(0o755)

    def add(self, job: str, **fields: str) -> None:
        (self.dir / "jobs" / job).write_text(job_line(job, **fields))

    def hang(self) -> None:
        (self.dir / "hang").touch()

    def calls(self) -> list[list[str]]:
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]
