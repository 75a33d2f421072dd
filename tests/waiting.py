"""Waiting in tests for something another process does."""
from __future__ import annotations

import time


def wait_for(condition, what: str, timeout: float = 120, poll: float = 0.05):
    """``condition()``'s first true value, polled every ``poll`` s; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
