"""A runner for the retry tests: the stages named in ``PRUNESWEEP_TEST_DIE`` SIGKILL their own
process right after their first epoch checkpoint, once each (a marker in ``PRUNESWEEP_TEST_MARKS``
remembers), like a node lost mid-training; ``PRUNESWEEP_TEST_HOLD``: a file naming the stages
(comma-separated) whose processes wait (after that checkpoint) until the file is removed."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from workers import entry

from workers.training import checkpoints
from workers.stages.paths import CHECKPOINT_FILE


def run_stage(folder) -> dict:
    """``workers.entry.run_stage``, with the test's kill or hold after the stage's first checkpoint."""
    folder = Path(folder)
    victims = os.environ.get("PRUNESWEEP_TEST_DIE", "").split(",")
    marker = Path(os.environ.get("PRUNESWEEP_TEST_MARKS", "/nonexistent")) / folder.name
    hold = Path(os.environ.get("PRUNESWEEP_TEST_HOLD", "/nonexistent"))
    holding = hold.exists() and folder.name in hold.read_text().strip().split(",")
    original = checkpoints.atomic_save_with

    def save_then_act(path, save):
        original(path, save)
        if Path(path).name != CHECKPOINT_FILE:
            return
        if folder.name in victims and not marker.exists():
            marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        while holding and hold.exists():
            time.sleep(0.05)

    checkpoints.atomic_save_with = save_then_act
    try:
        return entry.run_stage(folder)
    finally:
        checkpoints.atomic_save_with = original
