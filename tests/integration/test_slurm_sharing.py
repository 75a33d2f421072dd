"""SLURM distributed stages (``slurm.ranks``) and GPU sharing (``slurm.stages_per_job``) on the real local cluster."""
from __future__ import annotations

import re

import pytest
import yaml

from conftest import TINY, ledger_states as _states
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from test_slurm_backend import _top1, _wait, _wait_for_checkpoint, cli

pytestmark = pytest.mark.slurm


def _write(tmp_path, name, backend, sweep=TINY, **slurm):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(sweep, workspace=str(tmp_path / name), backend=backend, slurm=slurm)))
    return path


def _all_done(states):
    return all(r["state"] == "done" for r in states.values())


@pytest.fixture(scope="module")
def local_tiny(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("local")
    cli("launch", _write(tmp_path, "local", "local"), "--no-progress")
    return tmp_path / "local"


def test_packed_stages_run_in_fewer_jobs_and_match_a_local_run(slurm_cluster, tmp_path, local_tiny):
    path = _write(tmp_path, "slurm", "slurm", stages_per_job={"eval": 3, "imp": 2})
    cli("launch", path, env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    states = _states(workspace)
    jobs = {row["job_id"] for row in states.values()}
    assert len(jobs) < len(states) == len(plan_sweep(load_spec(path)).stages)
    by_job = {job: [k for k, r in states.items() if r["job_id"] == job] for job in jobs}
    assert max(len(keys) for keys in by_job.values()) == 3
    assert all(len(keys) == 1 for job, keys in by_job.items() if states[keys[0]]["kind"] not in ("eval", "imp"))
    states = _wait(workspace, slurm_cluster.env, _all_done)
    assert len(states) == len(plan_sweep(load_spec(path)).stages)  # each stage counted once, done
    assert _top1(workspace) == _top1(local_tiny)


def test_a_stage_that_raises_inside_a_pack_fails_alone(slurm_cluster, tmp_path):
    path = _write(tmp_path, "slurm", "slurm", stages_per_job={"eval": 8})
    plan = plan_sweep(load_spec(path))
    workspace = tmp_path / "slurm"
    # an eval of a plain dense run's mask (reinit at the first level): several of those share the first eval wave
    victim = next(k for k, s in plan.stages.items() if s.kind == "eval" and set(s.deps) == {"previous"}
                  and plan.stages[s.deps["previous"]].kind == "dense")
    broken = plan.stages[victim].to_json()
    broken["config"]["recipe"]["optimizer"] = "no-such-optimizer"
    from workers.stages.artifacts import atomic_write_json
    atomic_write_json(workspace / "stages" / victim / "stage.json", broken)
    cli("launch", path, env=slurm_cluster.env)
    siblings = [k for k, r in _states(workspace).items() if r["job_id"] == _states(workspace)[victim]["job_id"]
                and k != victim]
    assert siblings, "the victim runs alone: this tests nothing"
    states = _wait(workspace, slurm_cluster.env, lambda s: s[victim]["state"] == "failed"
                   and not [r for r in s.values() if r["state"] == "running"])
    assert all(states[k]["state"] == "done" for k in siblings)
    assert states[victim]["error_class"] == "PythonException"
    assert "no-such-optimizer" in states[victim]["error_message"]
    assert not [k for k, r in states.items() if r["state"] == "failed" and k != victim]


def _two_evals(tmp_path, name, backend, epochs, **slurm):
    """labels, one fraction, reinit and random reinit: two eval stages of one wave, ``epochs`` long."""
    recipes = {"labels": dict(TINY["recipes"]["labels"], epochs=epochs, batch_size=32)}
    sweep = dict(TINY, recipes=recipes, mask_source=["labels", "random"], init=["reinit"],
                 pruning={"fractions": [0.8]}, arch={"name": "small_cnn", "width": 16})
    return _write(tmp_path, name, backend, sweep, **slurm)


def test_a_warning_signal_saves_every_stage_of_a_pack_and_requeues_it(slurm_cluster, tmp_path):
    cli("launch", _two_evals(tmp_path, "local", "local", 30), "--no-progress")
    path = _two_evals(tmp_path, "slurm", "slurm", 30, stages_per_job={"eval": 2})
    cli("launch", path, env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    evals = [k for k, r in _states(workspace).items() if r["kind"] == "eval"]
    job = _states(workspace)[evals[0]]["job_id"]
    assert len(evals) == 2 and _states(workspace)[evals[1]]["job_id"] == job
    for key in evals:
        _wait_for_checkpoint(workspace, key, epochs=2)
    slurm_cluster.run("scancel", "--signal=USR2", job)  # what submitit does to simulate a preemption
    _wait(workspace, slurm_cluster.env, _all_done)
    for key in evals:
        log = (workspace / "stages" / key / "log.txt").read_text()
        assert "saved progress at iteration" in log and "stopped (SystemExit)" in log, log
        assert re.search(r"resumed from checkpoint.pt at epoch \d+ \(iteration [1-9]", log), log
    logs = (workspace / "slurm" / job.split("_")[0]).glob("*_log.*")  # submitit notes the requeue in .out
    requeues = [line for path in logs for line in path.read_text().splitlines() if "Requeued job" in line]
    assert len(requeues) == 1, requeues
    assert _top1(workspace) == _top1(tmp_path / "local")


def test_a_stage_of_two_ranks_runs_as_one_job_of_two_tasks(slurm_cluster, tmp_path):
    sweep = dict(TINY, mask_source=["labels"], init=["winning_ticket"], pruning={"fractions": [0.8]})
    path = _write(tmp_path, "slurm", "slurm", sweep, ranks={"imp": {"nodes": 1, "tasks_per_node": 2}})
    cli("launch", path, env=slurm_cluster.env)
    workspace = tmp_path / "slurm"
    states = _wait(workspace, slurm_cluster.env, _all_done)
    assert len(states) == 2  # dense, imp: each one stage, each counted once
    imp = next(k for k, r in states.items() if r["kind"] == "imp")
    log = (workspace / "stages" / imp / "log.txt").read_text()
    assert "starting on 2 ranks" in log and "mask identical on 2 ranks" in log and log.count(" done in ") == 1
    job = states[imp]["job_id"].split("_")[0]
    assert len(list((workspace / "slurm" / job).glob("*_log.err"))) == 2  # one log per task
