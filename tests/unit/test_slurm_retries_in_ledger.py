"""A SLURM job's in-job retries reach the ledger (issue 11 §2): reconcile copies the attempt records
that pack.py writes into the ``attempts`` and ``retried`` columns, once however often it reads them,
and ``status`` shows them in the section that lists the local backend's retries."""
from __future__ import annotations

import json
import signal

from orchestrator.backends.slurm.attempts import record_failure
from orchestrator.state.ledger import Ledger
from orchestrator.state.reconcile import reconcile
from orchestrator.planning.stage_identity import Stage
from orchestrator.commands.status import print_status
from orchestrator.state.workspace import materialise
from workers.stages.paths import stage_dir
from workers.stages.artifacts import write_done

JOB = {"SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "0"}


def _workspace(tmp_path):
    stages = [Stage("dense", {"seed": i}, {"seed": i}, label=f"dense {i}", epochs=1) for i in range(3)]
    materialise(tmp_path, stages)
    ledger = Ledger(tmp_path)
    ledger.register("s", "s.yaml", "{}", {}, stages, [])
    return ledger, [stage.key for stage in stages]


def _finish(workspace, key):
    folder = stage_dir(workspace, key)
    (folder / "final.pt").write_bytes(key.encode() * 10)
    metrics = {"fraction_remaining": 1.0, "top1": 0.5, "epochs": 1, "wall_time_s": 2.0, "zero_fraction": 0.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    write_done(folder, ["final.pt", "metrics.json"], metrics)


def _row(ledger, key):
    return ledger.stages([key])[0]


def test_a_jobs_retries_are_counted_once_in_the_ledger_and_shown_with_local_ones(tmp_path, capsys):
    ledger, (retried, untouched, local) = _workspace(tmp_path)
    for key in (retried, untouched):
        ledger.mark_running(key, "node1", 99, "slurm", "12_0")
        _finish(tmp_path, key)
    record_failure(stage_dir(tmp_path, retried), -signal.SIGKILL, retried=True, environ=JOB)
    record_failure(stage_dir(tmp_path, retried), -signal.SIGBUS, retried=True, environ=JOB)
    ledger.mark_running(local, "laptop", 7, "local")
    ledger.note_retry(local, "attempt 1 (laptop pid 7): WorkerDied (infrastructure): killed by SIGKILL")

    assert {retried, untouched} <= reconcile(tmp_path, ledger)
    row = _row(ledger, retried)
    assert row["state"] == "done" and row["attempts"] == 3  # the job's start, and two starts again inside it
    lines = row["retried"].splitlines()
    assert [line.split(" (job ")[0] for line in lines] == ["attempt 1", "attempt 2"]
    assert lines[0].startswith("attempt 1 (job 12_0 on ") and lines[0].endswith("): infrastructure: killed by SIGKILL")
    assert lines[1].endswith("): infrastructure: killed by SIGBUS")
    assert _row(ledger, untouched)["attempts"] == 1 and _row(ledger, untouched)["retried"] is None

    # the same record read again (the stage is running again in the ledger's eyes): nothing added
    ledger.connection.execute("UPDATE stages SET state = 'running' WHERE key = ?", (retried,))
    reconcile(tmp_path, ledger)
    assert (_row(ledger, retried)["attempts"], _row(ledger, retried)["retried"]) == (3, row["retried"])

    # a later job of the stage: its retries add to the first job's, which stay
    ledger.mark_running(retried, "node2", 5, "slurm", "20")
    record_failure(stage_dir(tmp_path, retried), -signal.SIGKILL, retried=True, environ={"SLURM_JOB_ID": "20"})
    reconcile(tmp_path, ledger)
    ledger.connection.execute("UPDATE stages SET state = 'running' WHERE key = ?", (retried,))
    reconcile(tmp_path, ledger)
    now = _row(ledger, retried)
    assert now["attempts"] == 5 and now["retried"].splitlines()[:2] == lines
    assert now["retried"].splitlines()[2].startswith("attempt 4 (job 20 on ")  # its first attempt failed
    ledger.close()

    print_status(tmp_path)
    out = capsys.readouterr().out
    assert "retried automatically (2):" in out  # SLURM's and the local backend's, in one section
    assert f"{retried}  dense" in out and "(job 12_0 on " in out and "WorkerDied (infrastructure)" in out
    assert "slurm: stage" not in out  # the SLURM-only list is gone


def test_a_done_stage_costs_no_attempt_record_read(tmp_path, monkeypatch):
    ledger, keys = _workspace(tmp_path)
    for key in keys:
        ledger.mark_running(key, "node1", 99, "slurm", "12_0")
        _finish(tmp_path, key)
    reconcile(tmp_path, ledger)  # running -> done: each record looked for once
    from orchestrator.backends.slurm import backend as slurm_backend

    def unread(*args, **kwargs):
        raise AssertionError("an attempt record was read for a stage already done")

    monkeypatch.setattr(slurm_backend, "read_record", unread)
    assert reconcile(tmp_path, ledger) == set(keys)
