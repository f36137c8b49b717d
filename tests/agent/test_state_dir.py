"""One agent per state directory: a second one refuses at once and the first runs on unharmed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flopwatch.agent.state_dir import LOCK_FILE, hold_state_dir
from flopwatch.cli.main import main
from flopwatch.errors import ConfigError

STARTED = b"next sequence"  # the agent's INFO line once its key and spool are open


def agent_argv(state_dir: Path) -> list[str]:
    # Nothing listens on port 1: the agent samples, spools and retries, which is all it needs.
    return [
        *(sys.executable, "-m", "flopwatch", "agent", "--collector", "127.0.0.1:1", "--insecure"),
        *("--backend", "sim:1", "--state-dir", str(state_dir), "--node-id", "node-1"),
        *("--metrics-listen", "off", "--control-socket", "off", "--attribution", "none"),
    ]


def test_a_second_agent_on_the_same_state_dir_exits_and_the_first_runs_on(tmp_path):
    state = tmp_path / "state"
    first = subprocess.Popen(agent_argv(state), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert first.stderr is not None
    try:
        for line in first.stderr:  # wait until the first agent holds the directory
            if STARTED in line:
                break
        else:
            pytest.fail(f"the first agent ended first: {first.wait()}")
        key = (state / "node.key").read_bytes()

        second = subprocess.run(agent_argv(state), capture_output=True, timeout=120, check=False)
        err = second.stderr.decode()
        assert second.returncode == 2, err
        assert f"state directory {state} is in use by pid {first.pid}" in err
        assert "give this one its own --state-dir" in err
        assert "Traceback" not in err

        assert first.poll() is None  # still running
        assert (state / "node.key").read_bytes() == key
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        rest = first.stderr.read().decode()
        assert "ERROR" not in rest and "Traceback" not in rest, rest
    finally:
        first.kill()
        first.wait(timeout=60)
        first.stderr.close()


def test_a_state_dir_that_is_a_file_is_a_message_not_a_traceback(tmp_path, capsys):
    state = tmp_path / "state"
    state.write_text("not a directory")
    with pytest.raises(ConfigError, match="is not a directory"):
        hold_state_dir(state)
    code = main([a for a in agent_argv(state)[3:]])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--state-dir {state} is not a directory" in err
    assert state.read_text() == "not a directory"


def test_a_missing_state_dir_is_created_owner_only_and_locked(tmp_path):
    state = tmp_path / "new" / "state"
    with hold_state_dir(state):
        assert (os.stat(state).st_mode & 0o777) == 0o700
        assert (state / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()}"):
            hold_state_dir(state)
    hold_state_dir(state).release()
