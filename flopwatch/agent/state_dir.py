"""The agent's state directory (node key, spool, registered jobs), held by one agent at a time.

Two agents on one state directory would append to one spool and sign with one key from two
chains: each would find the other's records in its spool and both would stop. So the agent
takes an exclusive lock (`flopwatch.lockfile`) on STATE_DIR/agent.lock before it reads or
writes anything there, and holds it until it exits; a second agent refuses to start, naming the
directory and the first agent's pid, and leaves the first alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flopwatch.errors import ConfigError
from flopwatch.lockfile import HeldLock, hold

LOCK_FILE = "agent.lock"


def hold_state_dir(state_dir: Path) -> HeldLock:
    """Prepare `state_dir` (`prepare_state_dir`) and lock it for this process, or ConfigError."""
    prepare_state_dir(state_dir)
    return hold(
        state_dir / LOCK_FILE,
        f"state directory {state_dir}",
        hint="another agent runs on it; stop that one first, or give this one its own --state-dir",
    )


def prepare_state_dir(state_dir: Path) -> None:
    """Create `state_dir` (mode 0700, with its parents) if missing; ConfigError if it names
    something that is not a directory."""
    try:
        st = os.stat(state_dir)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConfigError(f"--state-dir {state_dir}: {e.strerror}") from e
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"--state-dir {state_dir} is not a directory; give the directory where this node's "
            "key, spool and jobs are kept"
        )
    if st is None:
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create --state-dir {state_dir}: {e.strerror}") from e
