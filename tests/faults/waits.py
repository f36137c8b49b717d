"""Waiting on what the processes under test do: poll a condition until a deadline, never a
guessed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.02


def wait_until(condition: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll `condition` until it returns something true; return that. AssertionError at the
    deadline, naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_S)
