"""Which ends of a SLURM job's stage process are retried, and the record reconcile reads (no cluster
needed; how it reaches the ledger: test_slurm_retries_in_ledger.py).
The retry itself, on the real cluster: tests/integration/test_slurm_backend.py."""
from __future__ import annotations

import signal

from orchestrator.backends.slurm.attempts import (
    describe_exit,
    exit_failure_class,
    read_record,
    record_failure,
    retriable,
    summary,
)


def test_a_process_killed_by_a_signal_is_an_infrastructure_failure_and_retried_unless_stopped_on_purpose():
    assert exit_failure_class(-signal.SIGKILL) == "infrastructure" and retriable(-signal.SIGKILL)
    assert retriable(-signal.SIGSEGV)
    assert exit_failure_class(1) == "deterministic" and not retriable(1)  # the stage raised
    for stopping in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # scancel, a shutdown: the job ends
        assert not retriable(-stopping)
    assert not retriable(0)
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(3) == "exit 3"


def test_failed_attempts_are_recorded_per_job_and_read_back(tmp_path):
    stage = tmp_path / "ws" / "stages" / "dense-1"
    stage.mkdir(parents=True)
    environ = {"SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "0", "SLURM_JOB_ID": "13"}
    record_failure(stage, -signal.SIGKILL, retried=True, environ=environ)
    record_failure(stage, -signal.SIGKILL, retried=False, environ=environ)
    failures = read_record(tmp_path / "ws", "dense-1", "12_0")
    assert [(f["class"], f["why"], f["retried"]) for f in failures] == [
        ("infrastructure", "killed by SIGKILL", True), ("infrastructure", "killed by SIGKILL", False)]
    assert read_record(tmp_path / "ws", "dense-1", "14_0") is None  # another job's: not this one's story
    assert summary(failures).startswith("attempt 2; 1 retried, last: infrastructure, killed by SIGKILL on ")
    # a new job of the stage (a resume) starts a new record
    record_failure(stage, -signal.SIGBUS, retried=True, environ={"SLURM_JOB_ID": "20"})
    assert [f["why"] for f in read_record(tmp_path / "ws", "dense-1", "20")] == ["killed by SIGBUS"]
