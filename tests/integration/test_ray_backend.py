"""The Ray backend against a real local Ray cluster (a head and a worker node on 127.0.0.1):
non-blocking launch by address, a worker killed mid-training, the driver killed mid-sweep,
a sweep cancelled on Ray and finished locally."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, TINY
from conftest import ledger_states as _states
from mount_namespace import cannot, private_mounts

import results
from orchestrator.backends.ray.job_client import DRIVER_RECORD
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from workers.stages.paths import CHECKPOINT_FILE, DONE_FILE, LOG_FILE, stage_dir
from workers.stages.artifacts import atomic_write_json

pytestmark = pytest.mark.ray


def _sweep(tmp_path, name, sweep=TINY, **ray):
    sweep = dict(copy.deepcopy(sweep), workspace=str(tmp_path / name), backend="ray", ray=ray)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def cli(*args, env=None, check=True):
    extra = ["--no-progress"] if args[0] in ("launch", "resume") else []
    result = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args), *extra], capture_output=True,
                            text=True, env=dict(env or os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _wait(workspace, env, until, timeout=300, poll=0.5, status_every=15.0):
    """Wait until ``until(states)``, reading the ledger, and every ``status_every`` seconds
    through `prunesweep status` from another process (as a researcher would)."""
    deadline = time.time() + timeout
    last_status = time.time()
    while time.time() < deadline:
        if time.time() - last_status > status_every:
            cli("status", workspace, env=env)
            last_status = time.time()
        states = _states(workspace)
        if until(states):
            return states
        time.sleep(poll)
    raise AssertionError(f"timed out; states: { {k: r['state'] for k, r in _states(workspace).items()} }")


def _all_done(states):
    return all(row["state"] == "done" for row in states.values())


def _done_times(workspace):
    return {p.parent.name: p.stat().st_mtime_ns for p in (workspace / "stages").glob(f"*/{DONE_FILE}")}


def _top1(workspace):
    return {(r.mask_source, r.init, r.nominal_fraction, r.seed): r.top1 for r in results.load(workspace).itertuples()}


def _same_as(workspace, reference) -> bool:
    """Every cell of ``workspace`` has the top-1 of the same cell of the reference run."""
    ours, theirs = _top1(workspace), _top1(reference)
    return bool(ours) and all(theirs.get(cell) == top1 for cell, top1 in ours.items())


def _recorded_once(workspace):
    frame = results.load(workspace)
    return not frame.duplicated(["sweep", "mask_source", "init", "rewind", "nominal_fraction", "seed"]).any()


def _driver(workspace):
    return json.loads((workspace / DRIVER_RECORD).read_text())


def _job_status(cluster, job) -> str:
    """The Ray job's status, asked from a fresh process with the cluster's auth settings."""
    script = ("import sys; from ray.job_submission import JobSubmissionClient as C; "
              "print(C(sys.argv[1]).get_job_status(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", script, cluster.dashboard, job], env=cluster.env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def _wait_job_ended(cluster, job, timeout=60):
    deadline = time.time() + timeout
    while (status := _job_status(cluster, job)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.time() < deadline, f"Ray job {job} did not end ({status})"
        time.sleep(0.5)
    return status


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The tiny grid run once on the local backend."""
    tmp_path = tmp_path_factory.mktemp("local")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(dict(TINY, workspace=str(tmp_path / "local"))))
    cli("launch", path)
    return tmp_path / "local"


def test_launch_by_address_returns_and_matches_a_local_run(ray_cluster, tmp_path, local_reference):
    path = _sweep(tmp_path, "ray", address=ray_cluster.dashboard)
    workspace = tmp_path / "ray"
    result = cli("launch", path, env=ray_cluster.env)
    assert "submitted 17 stage(s)" in result.stdout
    job = _driver(workspace)["submission_id"]
    assert f"Ray driver job {job}" in cli("status", workspace, env=ray_cluster.env).stdout
    states = _wait(workspace, ray_cluster.env, _all_done)
    assert {row["backend"] for row in states.values()} == {"ray"}
    assert {row["job_id"] for row in states.values()} == {job}
    assert all(row["attempts"] == 1 and row["pid"] for row in states.values())
    assert _top1(workspace) == _top1(local_reference)
    assert _recorded_once(workspace)
    assert _wait_job_ended(ray_cluster, job) == "SUCCEEDED"


#: a part of the tiny grid (9 stages): its cells are cells of the tiny grid, with the same stage keys.
PART = {**TINY, "mask_source": ["labels", "random"]}

#: one dense run long enough to be killed between two epoch checkpoints, then a short eval of its mask.
LONG_DENSE = {
    **TINY, "mask_source": ["labels"], "init": ["reinit"], "pruning": {"fractions": [0.8]},
    "recipes": {"labels": {"epochs": 6, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
                "eval": {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01}},
}


def _kill_dense_mid_training(cluster, workspace):
    """SIGKILL the Ray worker process of the dense stage once it has an epoch checkpoint."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if workspace.joinpath("ledger.sqlite").exists():
            rows = [row for row in _states(workspace).values() if row["kind"] == "dense"]
            if rows and rows[0]["state"] == "running" and rows[0]["pid"]:
                folder = stage_dir(workspace, rows[0]["key"])
                if (folder / CHECKPOINT_FILE).exists() and not (folder / DONE_FILE).exists():
                    os.kill(rows[0]["pid"], signal.SIGKILL)
                    return rows[0]["key"]
        time.sleep(0.1)
    raise AssertionError("the dense stage never ran with a checkpoint")


def test_a_killed_worker_is_retried_from_its_checkpoint(ray_cluster, tmp_path):
    path = _sweep(tmp_path, "ray", sweep=LONG_DENSE, address=ray_cluster.dashboard, retries=1)
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    dense = _kill_dense_mid_training(ray_cluster, workspace)
    states = _wait(workspace, ray_cluster.env, _all_done)
    assert states[dense]["attempts"] == 2
    assert "attempt 1" in states[dense]["retried"] and "WorkerDied (infrastructure)" in states[dense]["retried"]
    assert "retried automatically (1):" in cli("status", workspace, env=ray_cluster.env).stdout
    assert "resumed from checkpoint.pt" in (stage_dir(workspace, dense) / LOG_FILE).read_text()

    # the same stage run uninterrupted in a fresh folder gives the same numbers
    fresh = tmp_path / "fresh" / dense
    fresh.mkdir(parents=True)
    shutil.copy(stage_dir(workspace, dense) / "stage.json", fresh / "stage.json")
    import torch

    from workers.entry import run_stage

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the Ray worker (one thread per CPU asked for)
    try:
        metrics = {k: v for k, v in run_stage(fresh)["metrics"].items() if k != "wall_time_s"}
    finally:
        torch.set_num_threads(threads)
    killed = json.loads((stage_dir(workspace, dense) / DONE_FILE).read_text())["metrics"]
    assert metrics == {k: v for k, v in killed.items() if k != "wall_time_s"}


def test_a_worker_killed_past_max_retries_fails_with_its_reason(ray_cluster, tmp_path):
    path = _sweep(tmp_path, "ray", sweep=LONG_DENSE, address=ray_cluster.dashboard, max_retries=0)
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    dense = _kill_dense_mid_training(ray_cluster, workspace)
    states = _wait(workspace, ray_cluster.env,
                   lambda s: s[dense]["state"] == "failed" and not [r for r in s.values() if r["state"] == "running"])
    assert states[dense]["error_class"] == "WorkerCrashedError"
    assert {row["state"] for key, row in states.items() if key != dense} == {"blocked"}
    status = cli("status", workspace, env=ray_cluster.env).stdout
    assert "[WorkerCrashedError (infrastructure), attempt 1, ray" in status
    cli("resume", workspace, "--backend", "ray", env=ray_cluster.env)
    _wait(workspace, ray_cluster.env, _all_done)
    assert "resumed from checkpoint.pt" in (stage_dir(workspace, dense) / LOG_FILE).read_text()


def test_a_stage_that_raises_is_not_retried_and_blocks_only_its_dependents(ray_cluster, tmp_path):
    sweep = {**TINY, "mask_source": ["labels"], "init": ["winning_ticket"], "pruning": {"fractions": [0.8]},
             "seeds": [0, 1]}
    path = _sweep(tmp_path, "ray", sweep=sweep, address=ray_cluster.dashboard)
    workspace = tmp_path / "ray"
    stages = plan_sweep(load_spec(path)).stages
    victim = next(key for key, stage in stages.items() if stage.kind == "dense" and stage.config["seed"] == 0)
    broken = stages[victim].to_json()
    broken["config"]["recipe"]["optimizer"] = "no-such-optimizer"
    atomic_write_json(stage_dir(workspace, victim) / "stage.json", broken)
    cli("launch", path, env=ray_cluster.env)
    states = _wait(workspace, ray_cluster.env,
                   lambda s: len(s) == 4 and not [r for r in s.values() if r["state"] in ("planned", "running")])
    dependents = {key for key, stage in stages.items() if victim in stage.deps.values()}
    assert states[victim]["state"] == "failed" and states[victim]["attempts"] == 1 and not states[victim]["retried"]
    assert {key for key, row in states.items() if row["state"] == "blocked"} == dependents
    assert {row["state"] for key, row in states.items() if key != victim and key not in dependents} == {"done"}
    status = cli("status", workspace, env=ray_cluster.env, check=False).stdout
    assert f"[{states[victim]['error_class']} (deterministic), attempt 1, ray" in status


def test_killing_the_driver_loses_no_finished_stage_and_resume_continues_on_ray(ray_cluster, tmp_path,
                                                                              local_reference):
    path = _sweep(tmp_path, "ray", sweep=PART, address=ray_cluster.dashboard)
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    driver = _driver(workspace)
    at_kill = _wait(workspace, ray_cluster.env, lambda s: sum(r["state"] == "done" for r in s.values()) >= 3
                    and any(r["state"] == "running" for r in s.values()), poll=0.1)
    os.kill(driver["pid"], signal.SIGKILL)
    assert _wait_job_ended(ray_cluster, driver["submission_id"]) == "FAILED"
    before = _done_times(workspace)
    assert 3 <= len(before) < len(_states(workspace)), "the kill should land mid-sweep"
    cli("status", workspace, env=ray_cluster.env)  # reconciles: no stage of the dead driver is running
    states = _states(workspace)
    assert not [row for row in states.values() if row["state"] == "running"]
    # a stage running at the kill either finished its artifacts before Ray stopped its worker
    # (done) or is marked to be rerun; nothing else
    for key in [key for key, row in at_kill.items() if row["state"] == "running"]:
        assert states[key]["state"] == "done" or (states[key]["state"], states[key]["error_class"]) == \
            ("planned", "Interrupted"), states[key]
    assert {row["state"] for row in states.values() if row["error_class"] == "Interrupted"} <= {"planned"}

    assert "submitted" in cli("resume", workspace, "--backend", "ray", env=ray_cluster.env).stdout
    assert _driver(workspace)["submission_id"] != driver["submission_id"]
    _wait(workspace, ray_cluster.env, _all_done)
    assert {k: v for k, v in _done_times(workspace).items() if k in before} == before
    assert _same_as(workspace, local_reference)
    assert _recorded_once(workspace)


def test_a_sweep_begun_on_ray_is_finished_with_the_local_backend(ray_cluster, tmp_path, local_reference):
    path = _sweep(tmp_path, "ray", sweep=PART, address=ray_cluster.dashboard)
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    job = _driver(workspace)["submission_id"]
    _wait(workspace, ray_cluster.env, lambda s: sum(r["state"] == "done" for r in s.values()) >= 2)
    assert job in cli("cancel", workspace, env=ray_cluster.env).stdout
    assert _job_status(ray_cluster, job) == "STOPPED"
    before = _done_times(workspace)
    assert len(before) < len(_states(workspace)), "the cancel should land mid-sweep"
    assert not [row for row in _states(workspace).values() if row["state"] == "running"]
    cli("resume", workspace, "--backend", "local", env=ray_cluster.env)
    assert _all_done(_states(workspace))
    assert {k: v for k, v in _done_times(workspace).items() if k in before} == before
    assert _same_as(workspace, local_reference)
    assert _recorded_once(workspace)


def test_without_an_address_a_ray_is_started_for_the_sweep_and_stopped_after(tmp_path, local_reference):
    from cluster.ray_fixture import MARKER, _marked_pids

    path = _sweep(tmp_path, "ray", sweep=PART)
    tag = f"no-address-{tmp_path.name}"
    env = dict(os.environ, **{MARKER: tag})
    env.pop("RAY_ADDRESS", None)
    result = cli("launch", path, env=env)  # blocks until the sweep is done
    assert "ran 10 stage(s)" in result.stdout and "10 done" in result.stdout
    workspace = tmp_path / "ray"
    states = _states(workspace)
    assert _all_done(states) and {row["backend"] for row in states.values()} == {"ray"}
    assert _same_as(workspace, local_reference) and _recorded_once(workspace)
    deadline = time.time() + 30
    while _marked_pids(tag, tmp_path / "none") and time.time() < deadline:
        time.sleep(0.5)
    assert not _marked_pids(tag, tmp_path / "none"), "the Ray started for the sweep left processes behind"


def test_a_node_that_cannot_see_the_workspace_fails_the_launch(ray_cluster, tmp_path):
    # a mount namespace of its own (with a user namespace where mount(2) is refused, as in an
    # unprivileged container); where none can be made: a skip, a failure under CI=true
    unshare, why = private_mounts()
    if not unshare:
        cannot(f"hiding the workspace from one node needs a mount namespace of its own: {why}")
    # a third node whose own mount namespace has an empty tmpfs over this test's folder
    prefix = (*unshare, "sh", "-c", f'mount -t tmpfs tmpfs "{tmp_path}" && exec "$@"', "sh")
    tag = f"{ray_cluster.tag}-blind"
    ray_cluster.add_node(num_cpus=1, prefix=prefix, tag=tag)
    try:
        path = _sweep(tmp_path, "ray", sweep=PART, address=ray_cluster.dashboard)
        result = cli("launch", path, env=ray_cluster.env, check=False)
    finally:
        ray_cluster.remove_node(tag)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunesweep: error: "), result.stderr
    assert "must be on storage every Ray node shares" in lines[0] and "not seen from 1 of 3 node(s)" in lines[0]
    assert "No such file or directory" in lines[0]
    workspace = tmp_path / "ray"
    assert _wait_job_ended(ray_cluster, _driver(workspace)["submission_id"]) == "FAILED"
    assert {row["state"] for row in _states(workspace).values()} == {"planned"}
