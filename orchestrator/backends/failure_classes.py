"""Why an attempt at a stage failed, and whether that is worth another attempt.

Every backend reports a failed attempt with an *error class* (the name the ledger keeps in
``error_class``: the exception the stage raised, or a name of ours for a process that died)
and this module sorts it into one of two *failure classes*:

- ``infrastructure``: the stage's code did not fail, the machine under it did: the worker
  process was killed by a signal (node loss, SIGKILL), its node failed, it was preempted
  past the scheduler's requeue budget, Ray lost its worker. Another attempt (resuming from
  the stage's last epoch checkpoint) can succeed, so the backend retries it automatically,
  up to the backend's ``retries`` setting (default 2) per launch or resume.
- ``deterministic``: the stage's own code raised (a bug, bad data, out of memory...). The same
  inputs would fail the same way, so it is never retried: the stage is failed, its
  dependents are blocked and ``status`` shows why.

The classifier is pure: it reads what a finished attempt left (its exit status or signal,
and the error record the worker writes when the stage raises,
:mod:`workers.stages.error_record`), so every backend (local, SLURM, Ray) decides alike.
"""
from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

INFRASTRUCTURE = "infrastructure"
DETERMINISTIC = "deterministic"
FAILURE_CLASSES = (INFRASTRUCTURE, DETERMINISTIC)

#: the default of every backend's ``retries`` setting, and its bound.
DEFAULT_RETRIES = 2
MAX_RETRIES = 10

#: error classes of our own naming an attempt whose process or machine died under it. A backend
#: that detects another kind of infrastructure failure adds its name here (module import time).
INFRASTRUCTURE_ERRORS: set[str] = {
    "WorkerDied",  # the stage's process exited without reporting (killed by a signal, or os._exit)
    "NodeFailure",  # the scheduler says the node failed
    "Preempted",  # preempted (or timed out) past the scheduler's requeue budget
    "StageBusy",  # another live process held the stage's lock (it will end; the next attempt may find it done)
    # Ray's names for a worker process, raylet or node that died (ray.exceptions)
    "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError", "ActorDiedError",
    "RaySystemError",
}

#: error classes that are never a failure of the attempt: the user or the scheduler stopped it.
NOT_FAILURES = frozenset({"Interrupted", "Cancelled", "KeyboardInterrupt", "SystemExit"})


@dataclass(frozen=True)
class Failure:
    """One failed attempt: its failure class, its error class and a message for the ledger."""

    failure_class: str
    error_class: str
    message: str

    @property
    def retryable(self) -> bool:
        """Whether another attempt may succeed (an infrastructure failure)."""
        return self.failure_class == INFRASTRUCTURE


def failure_class(error_class: Optional[str]) -> Optional[str]:
    """The failure class of an error class the ledger recorded (None when it is no failure)."""
    if not error_class or error_class in NOT_FAILURES or error_class == "DependencyFailed":
        return None
    return INFRASTRUCTURE if error_class in INFRASTRUCTURE_ERRORS else DETERMINISTIC


def signal_name(number: int) -> str:
    """``9`` -> ``SIGKILL`` (or ``signal 99`` for one Python does not name)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(exit_code: Optional[int] = None, error_record: Optional[Mapping[str, Any]] = None,
             term_signal: Optional[int] = None, reported: Optional[tuple[str, str]] = None) -> Failure:
    """Classify a failed attempt from what it left.

    ``reported``: (error class, message) the worker sent back itself (the local pipe, Ray's
    task error), which wins; else ``error_record``: the record the worker wrote when the stage
    raised (:func:`workers.stages.error_record.read_error`), which says the stage's code failed. With
    neither, the process died without a word: ``term_signal`` (or a negative ``exit_code``,
    Python's way of saying killed by a signal) names the signal. A process that died that way
    is an infrastructure failure: the stage's code never got to report anything.
    """
    if reported is not None:
        name, message = reported
        return Failure(failure_class(name) or DETERMINISTIC, name, message)
    if error_record:
        name = str(error_record.get("error_class") or "Exception")
        message = str(error_record.get("message") or "")
        return Failure(failure_class(name) or DETERMINISTIC, name, message)
    if term_signal is None and exit_code is not None and exit_code < 0:
        term_signal = -exit_code
    if term_signal is not None:
        how = f"was killed by {signal_name(term_signal)}"
    elif exit_code is not None:
        how = f"exited with code {exit_code} without reporting an error"
    else:
        how = "disappeared without reporting an error"
    return Failure(INFRASTRUCTURE, "WorkerDied", f"the stage's process {how} (node loss, a kill, or the kernel's "
                                                 "out-of-memory killer)")


def should_retry(failure: Failure, retries_used: int, retries: int) -> bool:
    """Whether to start another attempt: an infrastructure failure with retries left."""
    return failure.retryable and retries_used < retries


class RetryBudget:
    """The retries one run (launch or resume) may still spend, per stage: ``retries`` each."""

    def __init__(self, retries: int = DEFAULT_RETRIES):
        self.retries = retries
        self.used: dict[str, int] = {}

    def spend(self, key: str, failure: Failure) -> bool:
        """Whether stage ``key`` gets another attempt after ``failure`` (counting it when it does)."""
        used = self.used.get(key, 0)
        if not should_retry(failure, used, self.retries):
            return False
        self.used[key] = used + 1
        return True

    def note(self, key: str, failure: Failure) -> str:
        """The message of a failure that ends the stage: with the retries it used, if any."""
        used = self.used.get(key, 0)
        if not failure.retryable or not used:
            return failure.message
        return f"{failure.message}\n(failed {used + 1} attempts in a row; retries: {self.retries})"


def describe(error_class: Optional[str], attempts: int) -> str:
    """``WorkerDied (infrastructure), attempt 2`` for status lines."""
    kind = failure_class(error_class)
    return f"{error_class or '?'}{f' ({kind})' if kind else ''}, attempt {attempts}"
