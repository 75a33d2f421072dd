"""``prunesweep cancel WS --stage KEY``: stop one running stage, on whichever backend runs it.

The stage ends ``cancelled`` (not failed: nothing is retried), the stages that wait for it
are blocked with the cause "cancelled", the rest of the sweep goes on, and ``resume`` runs
it again. The command writes the stage's cancel request
(:mod:`orchestrator.backends.cancel_request`), asks its backend to stop it
(:meth:`~orchestrator.backends.base.Backend.cancel_stage`: the local backend signals the
stage's own process group, SLURM cancels its array task, Ray's driver cancels its task),
and waits until the ledger says how it ended. Where no driver runs the workspace (a SLURM
launch returned at once), this command records the stage cancelled itself once no process
holds the stage's lock any more.
"""
from __future__ import annotations

import difflib
import getpass
import socket
import time
from pathlib import Path

from orchestrator.backends import BACKENDS, backend_class
from orchestrator.backends.cancel_request import clear_cancel, request_cancel
from orchestrator.errors import UserError
from orchestrator.state.ledger import Ledger
from orchestrator.state.reconcile import reconcile
from orchestrator.state.workspace import WorkspaceLock, stage_dir
from workers.stages.lock import describe_since, holder

#: seconds the command waits for the stage to end after asking its backend to stop it.
WAIT_S = 120.0
_POLL_S = 0.2
#: keys shown by "did you mean" and in the list of running stages.
SHOWN = 5


def resolve_key(given: str, keys: list[str]) -> str:
    """The stage key ``given`` names: itself, or the one key it is a prefix of (of the whole key, or of
    its hash after ``KIND-``, as git takes a short commit id). UserError naming the closest keys else."""
    if given in keys:
        return given
    matches = [key for key in keys if given and (key.startswith(given) or key.partition("-")[2].startswith(given))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:SHOWN]) + (", ..." if len(matches) > SHOWN else "")
        raise UserError(f"--stage {given}: the prefix matches {len(matches)} stages ({shown}); give more of the key")
    close = difflib.get_close_matches(given, keys, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else "; `prunesweep status WORKSPACE` lists them"
    raise UserError(f"--stage {given}: no stage of this workspace has that key{hint}")


def cancel_stage(workspace: Path, given: str, wait_s: float = WAIT_S) -> int:
    """Cancel the running stage ``given`` names (a key or a unique prefix) and print how it ended.

    Exit 0 once it is cancelled; 1 when it ended otherwise meanwhile (done, failed) or is still
    stopping after ``wait_s``; UserError (exit 2) for a key of no stage or of a stage not running.
    """
    ledger = Ledger(workspace)
    try:
        reconcile(workspace, ledger)  # the states of now: a stage that just ended is not running any more
        rows = {row["key"]: row for row in ledger.stages()}
        key = resolve_key(given, list(rows))
        row = rows[key]
        if row["state"] != "running":
            running = [k for k, r in rows.items() if r["state"] == "running"]
            what = (f"running now: {', '.join(running[:SHOWN])}{', ...' if len(running) > SHOWN else ''}"
                    if running else "no stage is running")
            raise UserError(f"--stage {key}: it is {row['state']}, not running; only a running or queued stage can "
                            f"be cancelled ({what})")
        if row["backend"] not in BACKENDS:
            raise UserError(f"--stage {key}: it runs on backend {row['backend']!r}, which this prunesweep does not "
                            f"know; allowed: {', '.join(BACKENDS)}")
        folder = stage_dir(workspace, key)
        reason = (f"cancelled by {getpass.getuser()} on {socket.gethostname()} at {describe_since(time.time())} "
                  "(prunesweep cancel --stage)")
        request_cancel(folder, reason)
        try:
            how = backend_class(row["backend"]).cancel_stage(
                workspace, row, lambda: [r for r in ledger.stages() if r["state"] == "running"
                                         and r["backend"] == row["backend"]])
        except BaseException:
            clear_cancel(folder)  # nothing was stopped: no request stays behind to surprise a later run
            raise
        state = _wait_until_ended(workspace, ledger, key, reason, wait_s)
    finally:
        ledger.close()
    if state == "running":
        print(f"{key}: {how}; it is still stopping after {wait_s:g} s: `prunesweep status {workspace}` shows when "
              "it has ended")
        return 1
    if state != "cancelled":
        print(f"{key}: {how}; it ended {state} before it was stopped")
        return 1
    print(f"{key}: cancelled ({how}); the stages that wait for it are blocked; `prunesweep resume {workspace}` "
          "runs them all again")
    return 0


def _wait_until_ended(workspace: Path, ledger: Ledger, key: str, reason: str, wait_s: float) -> str:
    """The stage's ledger state once it is not running; ``running`` after ``wait_s``."""
    folder = stage_dir(workspace, key)
    deadline = time.monotonic() + wait_s
    while True:
        state = ledger.stages([key])[0]["state"]
        if state != "running":
            return state
        if holder(folder) is None and WorkspaceLock(workspace).holder() is None:
            ledger.mark_cancelled(key, reason)  # no driver runs the workspace to record it (SLURM)
            return "cancelled"
        if time.monotonic() >= deadline:
            return "running"
        time.sleep(_POLL_S)
