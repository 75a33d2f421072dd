"""The SLURM backend against the real local cluster: non-blocking launch, status, cancel, resume."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import results
from conftest import ROOT, TINY, ledger_states as _states
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec

pytestmark = pytest.mark.slurm


def _sweep(tmp_path, backend, **slurm):
    sweep = dict(TINY, workspace=str(tmp_path / backend), backend=backend, slurm=slurm)
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def cli(*args, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                            env=dict(env or os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _wait(workspace, env, until, timeout=420):
    """Poll `prunesweep status` (as a researcher would) until ``until(states)``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        cli("status", workspace, env=env)
        states = _states(workspace)
        if until(states):
            return states
        time.sleep(3)
    raise AssertionError(f"timed out; states: { {k: r['state'] for k, r in _states(workspace).items()} }")


def _top1(workspace):
    return {(r.mask_source, r.init, r.nominal_fraction, r.seed): r.top1 for r in results.load(workspace).itertuples()}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("local")
    cli("launch", _sweep(tmp_path, "local"), "--no-progress")
    return tmp_path / "local"


def test_launch_returns_at_once_and_matches_a_local_run(slurm_cluster, tmp_path, local_reference):
    path = _sweep(tmp_path, "slurm", max_array_size=3)
    started = time.time()
    result = cli("launch", path, env=slurm_cluster.env)
    assert "submitted 17 stage(s)" in result.stdout and time.time() - started < 60
    workspace = tmp_path / "slurm"
    job_ids = {key: row["job_id"] for key, row in _states(workspace).items()}
    arrays = {job_id.split("_")[0] for job_id in job_ids.values()}
    assert len(arrays) > 5  # waves x kinds, chunked to MaxArraySize 3
    known = set(slurm_cluster.run("squeue", "--noheader", "--states=all", "--format=%F").stdout.split())
    assert arrays <= known, (arrays, known)
    # launching the same sweep again while its jobs are queued or running submits nothing new
    again = cli("launch", path, env=slurm_cluster.env)
    assert "submitted" not in again.stdout and "ran 0 stage(s)" in again.stdout, again.stdout
    assert {key: row["job_id"] for key, row in _states(workspace).items()} == job_ids
    after = set(slurm_cluster.run("squeue", "--noheader", "--states=all", "--format=%F").stdout.split())
    assert after <= known, f"the relaunch submitted {after - known}"
    _wait(workspace, slurm_cluster.env, lambda s: all(r["state"] == "done" for r in s.values()))
    assert _top1(workspace) == _top1(local_reference)


def test_cancel_then_resume_on_another_backend(slurm_cluster, tmp_path, local_reference):
    path = _sweep(tmp_path, "slurm")
    cli("launch", path, env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    cancelled = cli("cancel", workspace, env=slurm_cluster.env).stdout
    assert "cancelled" in cancelled
    states = _states(workspace)
    assert not [r for r in states.values() if r["state"] == "running"]
    cli("resume", workspace, "--backend", "local", "--no-progress", env=slurm_cluster.env)
    assert all(r["state"] == "done" for r in _states(workspace).values())
    assert _top1(workspace) == _top1(local_reference)


def test_a_stage_that_raises_is_reported_and_blocks_its_dependents(slurm_cluster, tmp_path):
    path = _sweep(tmp_path, "slurm")
    plan = plan_sweep(load_spec(path))
    workspace = tmp_path / "slurm"
    victim = next(k for k, s in plan.stages.items() if s.kind == "dense" and s.config["task"] == "rotnet")
    broken = plan.stages[victim].to_json()
    broken["config"]["recipe"]["optimizer"] = "no-such-optimizer"
    from workers.stages.artifacts import atomic_write_json
    atomic_write_json(workspace / "stages" / victim / "stage.json", broken)
    cli("launch", path, env=slurm_cluster.env)
    states = _wait(workspace, slurm_cluster.env, lambda s: not [r for r in s.values() if r["state"] == "running"])
    assert "no-such-optimizer" in states[victim]["error_message"]
    assert states[victim]["error_class"] == "PythonException"
    dependents = _dependents(plan, victim)
    assert {k for k, r in states.items() if r["state"] == "blocked"} == dependents
    assert {k for k, r in states.items() if r["state"] == "done"} == set(plan.stages) - dependents - {victim}
    # a deterministic failure is not retried: one start, no attempt record
    log = (workspace / "stages" / victim / "log.txt").read_text()
    assert log.count(f"stage {victim} (dense) starting") == 1
    assert not (workspace / "slurm" / "attempts" / f"{victim}.json").exists()
    status = cli("status", workspace, env=slurm_cluster.env).stdout
    assert victim in status and f"job {states[victim]['job_id']}" in status
    assert f"log: {workspace / 'slurm' / states[victim]['job_id']}" in status  # where to read the whole story
    atomic_write_json(workspace / "stages" / victim / "stage.json", plan.stages[victim].to_json())
    cli("resume", workspace, "--backend", "slurm", env=slurm_cluster.env)
    _wait(workspace, slurm_cluster.env, lambda s: all(r["state"] == "done" for r in s.values()))


def _worker_pid(folder) -> int | None:
    """The pid of the stage process a SLURM job runs for the stage in ``folder`` (the job's child)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"orchestrator.backends.slurm.pack" in args and str(folder).encode() in args:
            return int(proc.name)
    return None


def test_a_worker_killed_mid_training_is_retried_and_gives_the_same_numbers(slurm_cluster, tmp_path):
    """SIGKILL the stage process mid-training (what a lost node or the OOM killer does to it): the job
    starts it again from its checkpoint, with no resume, and the numbers equal an undisturbed run's."""
    epochs = 40
    cli("launch", _single_chain_sweep(tmp_path, "local", epochs), "--no-progress")
    cli("launch", _single_chain_sweep(tmp_path, "slurm", epochs), env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    watcher = subprocess.Popen([sys.executable, "-m", "orchestrator", "status", str(workspace), "--watch",
                                "--interval", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(slurm_cluster.env, PYTHONPATH=str(ROOT)))
    dense = next(k for k in _states(workspace) if k.startswith("dense-"))
    _wait_for_checkpoint(workspace, dense, epochs=3)
    os.kill(_worker_pid(workspace / "stages" / dense), signal.SIGKILL)
    assert not (workspace / "stages" / dense / "DONE.json").exists(), "the kill came too late to test anything"
    _wait(workspace, slurm_cluster.env, lambda s: all(r["state"] == "done" for r in s.values()))
    log = (workspace / "stages" / dense / "log.txt").read_text()
    assert log.count(f"stage {dense} (dense) starting") == 2 and "resumed from checkpoint.pt at epoch" in log
    record = json.loads((workspace / "slurm" / "attempts" / f"{dense}.json").read_text())
    assert [(f["class"], f["why"], f["retried"]) for f in record["failures"]] == [
        ("infrastructure", "killed by SIGKILL", True)]
    status = cli("status", workspace, env=slurm_cluster.env).stdout
    assert "retried automatically (1):" in status and f"{dense}  " in status.split("retried automatically")[1]
    assert re.search(r"attempt 1 \(job \S+ on .*\): infrastructure: killed by SIGKILL", status), status
    assert _top1(workspace) == _top1(tmp_path / "local")
    # `status --watch` ended by itself once nothing was queued or running, with an ETA while it ran
    watched, _ = watcher.communicate(timeout=120)
    lines = [line for line in watched.splitlines() if re.match(r"\d\d:\d\d:\d\d  done ", line)]
    total = len(_states(workspace))
    assert watcher.returncode == 0 and len(lines) >= 2, watched
    assert any("ETA ~" in line for line in lines[:-1]), watched
    assert lines[-1].split("  ", 1)[1] == f"done {total}/{total}  running 0  queued 0  failed 0  blocked 0", watched
    assert "cells: 1 of 1 done" in watched  # then the full status


def test_unreachable_slurm_is_a_clear_error(tmp_path):
    env = dict(os.environ, PATH="/nonexistent", SLURM_CONF="/nonexistent")
    result = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(_sweep(tmp_path, "slurm"))],
                            capture_output=True, text=True, env=dict(env, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 2 and "sinfo" in result.stderr and "Traceback" not in result.stderr


def _job_of(workspace, key):
    return _states(workspace)[key]["job_id"]


def _wait_for_checkpoint(workspace, key, epochs=2, timeout=300):
    log = workspace / "stages" / key / "log.txt"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and f"epoch {epochs}/" in log.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"{key} never reached epoch {epochs}")


def test_requeue_mid_training_resumes_from_the_checkpoint(slurm_cluster, tmp_path):
    # a dense run long enough (~20 s idle) for the requeue to land well before its end: submitit
    # ignores the requeue's SIGTERM, so a run within KillWait (srun waits 7 s here) of its end just finishes
    recipes = {"labels": dict(TINY["recipes"]["labels"], epochs=100, batch_size=32)}
    sweep = dict(TINY, workspace=str(tmp_path / "slurm"), backend="slurm", recipes=recipes, mask_source=["labels"],
                 init=["winning_ticket"], pruning={"fractions": [0.8]}, arch={"name": "small_cnn", "width": 16})
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(sweep))
    local = dict(sweep, workspace=str(tmp_path / "local"), backend="local")
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(local))
    cli("launch", tmp_path / "local.yaml", "--no-progress")

    cli("launch", path, env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    dense = next(k for k in _states(workspace) if k.startswith("dense-"))
    _wait_for_checkpoint(workspace, dense, epochs=3)
    slurm_cluster.run("scontrol", "requeue", _job_of(workspace, dense))
    assert not (workspace / "stages" / dense / "DONE.json").exists(), "the requeue came too late to test anything"
    _wait(workspace, slurm_cluster.env, lambda s: all(r["state"] == "done" for r in s.values()))
    log = (workspace / "stages" / dense / "log.txt").read_text()
    assert "resumed from checkpoint.pt at epoch" in log and "resumed from checkpoint.pt at epoch 0 " not in log
    assert _top1(workspace) == _top1(tmp_path / "local")


def _dependents(plan, key):
    """Every stage that depends on ``key``, transitively."""
    found, stack = set(), [key]
    while stack:
        parent = stack.pop()
        for child, stage in plan.stages.items():
            if parent in (stage.deps or {}).values() and child not in found:
                found.add(child)
                stack.append(child)
    return found


def test_a_cancelled_stage_holds_back_only_its_dependents(slurm_cluster, tmp_path):
    """scancel one running IMP stage: every stage that does not need it finishes with no resume."""
    # the labels stages last long enough (~20 s each) for the scancel to land while the IMP level trains, well
    # before its end (submitit ignores scancel's SIGTERM: a stage within KillWait, 5 s, of its end just finishes)
    recipes = dict(TINY["recipes"], labels=dict(TINY["recipes"]["labels"], epochs=20, batch_size=32))
    sweep = dict(TINY, workspace=str(tmp_path / "slurm"), backend="slurm", recipes=recipes)
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(sweep))
    plan = plan_sweep(load_spec(path))
    cli("launch", path, env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    victim = next(k for k, r in _states(workspace).items() if r["label"].startswith("imp labels")
                  and plan.stages[k].deps.get("previous", "").startswith("dense-"))
    _wait_for_checkpoint(workspace, victim, epochs=2)
    slurm_cluster.run("scancel", _job_of(workspace, victim))
    assert not (workspace / "stages" / victim / "DONE.json").exists(), "the scancel came too late to test anything"
    states = _wait(workspace, slurm_cluster.env, lambda s: not [r for r in s.values() if r["state"] == "running"])
    dependents = _dependents(plan, victim)
    assert dependents and states[victim]["state"] == "failed" and states[victim]["error_class"] == "Cancelled"
    assert {k for k, r in states.items() if r["state"] == "blocked"} == dependents
    assert {k for k, r in states.items() if r["state"] == "done"} == set(plan.stages) - dependents - {victim}
    for key in dependents:  # each names the stage it waits for
        waits_for = set(plan.stages[key].deps.values()) & (dependents | {victim})
        assert any(k in states[key]["error_message"] for k in waits_for), states[key]["error_message"]
    status = cli("status", workspace, env=slurm_cluster.env).stdout
    assert "Cancelled" in status and f"blocked stages ({len(dependents)}, by cause)" in status
    with slurm_cluster.accounting(False):  # status stays right without sacct
        cli("status", workspace, env=slurm_cluster.env)
        assert _states(workspace)[victim]["state"] == "failed"
    done_before = {k for k, r in _states(workspace).items() if r["state"] == "done"}
    attempts = {k: r["attempts"] for k, r in _states(workspace).items()}
    cli("resume", workspace, env=slurm_cluster.env)
    states = _wait(workspace, slurm_cluster.env, lambda s: all(r["state"] == "done" for r in s.values()))
    assert all(states[k]["attempts"] == attempts[k] for k in done_before)  # no done stage ran twice
    assert len(results.load(workspace)) == 10


def _single_chain_sweep(tmp_path, backend, epochs, name=None, **slurm):
    """labels only, one fraction: a dense run (``epochs`` long) and one IMP level, in ``tmp_path/name``."""
    name = name or backend
    recipes = {"labels": dict(TINY["recipes"]["labels"], epochs=epochs, batch_size=32)}
    sweep = dict(TINY, workspace=str(tmp_path / name), backend=backend, recipes=recipes, mask_source=["labels"],
                 init=["winning_ticket"], pruning={"fractions": [0.8]}, arch={"name": "small_cnn", "width": 16},
                 slurm=slurm)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_stage_longer_than_its_time_limit_finishes_through_requeues(slurm_cluster, tmp_path):
    # ~60 s of training on an idle core, more than a 1-minute allocation can hold: SLURM sends
    # USR2 10-40 s into each allocation (50 s before the limit; its timer ticks coarsely), so the
    # dense stage needs several allocations
    epochs = 300
    cli("launch", _single_chain_sweep(tmp_path, "local", epochs), "--no-progress")
    limits = dict(time_min={"dense": 1}, signal_delay_s=50)
    cli("launch", _single_chain_sweep(tmp_path, "slurm", epochs, max_requeues=12, **limits), env=slurm_cluster.env)
    cli("launch", _single_chain_sweep(tmp_path, "slurm", epochs, name="no-requeue", max_requeues=0, **limits),
        env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    _wait(workspace, slurm_cluster.env, lambda s: all(r["state"] == "done" for r in s.values()), timeout=900)
    dense = next(k for k in _states(workspace) if k.startswith("dense-"))
    states = _wait(tmp_path / "no-requeue", slurm_cluster.env, lambda s: s[dense]["state"] == "failed")
    # submitit fails the job at a USR2 past max_requeues; a USR2 that comes too late (SLURM's
    # timer is coarse, a loaded machine slow) leaves SLURM to end it TIMEOUT: a Timeout either way
    message = states[dense]["error_message"]
    assert states[dense]["error_class"] == "Timeout" and ("max_requeues" in message or "ended TIMEOUT" in message)
    dense = next(k for k in _states(workspace) if k.startswith("dense-"))
    log = (workspace / "stages" / dense / "log.txt").read_text()
    assert "saved progress at iteration" in log and "stopped (SystemExit)" in log
    resumed = [int(m) for m in re.findall(r"resumed from checkpoint.pt at epoch \d+ \(iteration (\d+)\)", log)]
    assert any(iteration % 43 for iteration in resumed), log  # resumed inside an epoch (43 steps each)
    assert _top1(workspace) == _top1(tmp_path / "local")


def test_queued_jobs_run_the_code_of_their_launch(slurm_cluster, tmp_path):
    """Launch from a copy of the source with held jobs, break the copy, release: the sweep still finishes."""
    source = tmp_path / "src"
    for package in ("orchestrator", "workers", "results"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(slurm_cluster.env, PYTHONPATH=str(source))
    path = _single_chain_sweep(tmp_path, "slurm", 2, extra_sbatch={"hold": True})
    launched = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(path)], env=env,
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr
    workspace = tmp_path / "slurm"
    entry = source / "workers" / "entry.py"
    entry.write_text(entry.read_text() + "\n\ndef run_stage(stage_dir):\n    raise RuntimeError('edited after launch')\n")
    arrays = sorted({row["job_id"].split("_")[0] for row in _states(workspace).values()})
    slurm_cluster.run("scontrol", "release", ",".join(arrays))
    _wait(workspace, env, lambda s: all(r["state"] == "done" for r in s.values()))
    snapshots = list((workspace / "slurm" / "code").iterdir())
    assert len(snapshots) == 1 and "edited after launch" not in (snapshots[0] / "workers" / "entry.py").read_text()


def test_an_sbatch_that_hangs_is_a_clear_error(slurm_cluster, tmp_path):
    """A mocked sbatch that never answers (what a full queue does) beside the real cluster's tools."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\nsleep 600\n")
    (fake / "sbatch").chmod(0o755)
    env = dict(slurm_cluster.env, PATH=f"{fake}:{slurm_cluster.env['PATH']}")
    path = _single_chain_sweep(tmp_path, "slurm", 2, submit_timeout_s=3)
    started = time.time()
    result = cli("launch", path, env=env, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "sbatch did not answer" in result.stderr and "nothing was submitted" in result.stderr
    assert time.time() - started < 60
    assert not [r for r in _states(tmp_path / "slurm").values() if r["state"] == "running"]
