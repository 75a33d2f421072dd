"""``prunesweep cancel WS --stage KEY`` on the real local SLURM cluster and a real Ray cluster (issue 27,
point 4): the dense stage of a one-chain digits sweep is cancelled mid-training by a short prefix of
its key; it ends cancelled (not failed, not retried), the stages after it are blocked with the cause
"cancelled", and ``resume`` finishes the sweep. (The local backend: tests/workers/test_cancel_stage.py.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, TINY
from conftest import ledger_states as _states

from orchestrator.state.workspace import WorkspaceLock, stage_dir
from workers.stages.artifacts import CHECKPOINT_FILE, DONE_FILE, LOG_FILE

#: a dense run long enough (tens of seconds) to be cancelled between two epochs, then the stages after it.
CHAIN = {**TINY, "mask_source": ["labels"], "init": ["winning_ticket"], "pruning": {"fractions": [0.8]},
         "arch": {"name": "small_cnn", "width": 16},
         "recipes": {"labels": {"epochs": 40, "batch_size": 32, "optimizer": "adam", "lr": 0.01}}}


def _cli(*args, env):
    extra = ["--no-progress"] if args[0] in ("launch", "resume") else []
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args), *extra], capture_output=True,
                          text=True, env=dict(env, PYTHONPATH=str(ROOT)), timeout=600)


def _sweep(tmp_path, backend, **section):
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump({**CHAIN, "workspace": str(tmp_path / backend), "backend": backend,
                                    backend: section}))
    return path, tmp_path / backend


def _wait(what, condition, timeout=420):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _dense_mid_training(workspace):
    """The dense stage's key once it runs with an epoch checkpoint and is far from its end."""
    def ready():
        if not (workspace / "ledger.sqlite").exists():
            return None
        rows = [row for row in _states(workspace).values() if row["kind"] == "dense" and row["state"] == "running"]
        if rows:
            log = stage_dir(workspace, rows[0]["key"]) / LOG_FILE
            if (stage_dir(workspace, rows[0]["key"]) / CHECKPOINT_FILE).exists() and log.exists() \
                    and "epoch 2/" in log.read_text():
                return rows[0]["key"]
        return None
    return _wait("the dense stage mid-training", ready)


def _cancel_and_check(workspace, env, how: str) -> str:
    dense = _dense_mid_training(workspace)
    cancelled = _cli("cancel", workspace, "--stage", dense[:len("dense-") + 5], env=env)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"{dense}: cancelled ({how}" in cancelled.stdout, cancelled.stdout
    assert not (stage_dir(workspace, dense) / DONE_FILE).exists(), "the cancel came too late to test anything"

    def settled():
        _cli("status", workspace, env=env)  # as a researcher would: it reconciles with the scheduler
        states = _states(workspace)
        return states if not [row for row in states.values() if row["state"] == "running"] else None

    states = _wait("nothing running", settled)
    assert (states[dense]["state"], states[dense]["error_class"]) == ("cancelled", "Cancelled")
    assert states[dense]["attempts"] == 1 and not states[dense]["retried"]
    others = {key: row for key, row in states.items() if key != dense}
    assert others and {(row["state"], row["error_class"]) for row in others.values()} == {
        ("blocked", "DependencyCancelled")}
    status = _cli("status", workspace, env=env)
    assert "cancelled stages (1):" in status.stdout and f"dependency {dense} was cancelled" in status.stdout
    again = _cli("cancel", workspace, "--stage", dense, env=env)
    assert again.returncode == 2 and f"--stage {dense}: it is cancelled, not running" in again.stderr
    return dense


@pytest.mark.slurm
def test_cancel_one_stage_on_slurm(slurm_cluster, tmp_path):
    path, workspace = _sweep(tmp_path, "slurm")
    assert _cli("launch", path, env=slurm_cluster.env).returncode == 0
    dense_job = next(row["job_id"] for row in _states(workspace).values() if row["kind"] == "dense")
    key = _cancel_and_check(workspace, slurm_cluster.env, f"scancel {dense_job}")
    accounted = slurm_cluster.run("sacct", "-n", "-P", "-X", "-j", dense_job, "-o", "State").stdout
    assert "CANCELLED" in accounted, accounted
    assert _cli("resume", workspace, "--backend", "slurm", env=slurm_cluster.env).returncode == 0

    def finished():
        _cli("status", workspace, env=slurm_cluster.env)
        return all(row["state"] == "done" for row in _states(workspace).values())

    _wait("the resumed sweep", finished, timeout=600)
    assert "resumed from checkpoint.pt" in (stage_dir(workspace, key) / LOG_FILE).read_text()


@pytest.mark.ray
def test_cancel_one_stage_on_ray(ray_cluster, tmp_path):
    path, workspace = _sweep(tmp_path, "ray", address=ray_cluster.dashboard)
    assert _cli("launch", path, env=ray_cluster.env).returncode == 0
    key = _cancel_and_check(workspace, ray_cluster.env, "the Ray driver cancels task stage-")
    _wait("the driver job to end", lambda: WorkspaceLock(workspace).holder() is None)
    assert _cli("resume", workspace, "--backend", "ray", env=ray_cluster.env).returncode == 0
    _wait("the resumed sweep", lambda: all(row["state"] == "done" for row in _states(workspace).values()),
          timeout=600)
    assert "resumed from checkpoint.pt" in (stage_dir(workspace, key) / LOG_FILE).read_text()
    assert os.path.exists(stage_dir(workspace, key) / DONE_FILE)
