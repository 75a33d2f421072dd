"""The Ray backend's placement of stages on the real local Ray cluster (tests/cluster/ray_fixture.py):
two eval stages sharing the worker node's one (declared) GPU through ``num_gpus: 0.5``; an
eval stage as two ranks in a placement group (gloo on CPU); a rank that dies; ranks the
cluster cannot hold."""
from __future__ import annotations

import os
import re
import time

import pytest

import results
from conftest import TINY, ledger_states
from workers.stages.paths import LOG_FILE, stage_dir
from test_ray_backend import _all_done, _sweep, _wait, cli

pytestmark = pytest.mark.ray

#: one dense training, then two evaluations of its mask (winning ticket, reinit): both ready at once.
TWO_EVALS = {
    **TINY, "mask_source": ["labels"], "init": ["winning_ticket", "reinit"], "pruning": {"fractions": [0.8]},
    "recipes": {"labels": TINY["recipes"]["labels"],
                "eval": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.01}},
}
_TASK_START = re.compile(r"^ray: task on (\S+) pid (\d+) started at ([\d.]+), GPU ids (\[.*\]), "
                         r"CUDA_VISIBLE_DEVICES=(.*)$", re.M)
_TASK_END = re.compile(r"^ray: task pid (\d+) returned at ([\d.]+)$", re.M)
_RANK = re.compile(r"^ray: rank (\d+) of (\d+) on (\S+) pid (\d+) MASTER_ADDR=(\S+) MASTER_PORT=(\d+) "
                   r"CUDA_VISIBLE_DEVICES=(.*)$", re.M)


def _evals(workspace) -> list[str]:
    return sorted(key for key, row in ledger_states(workspace).items() if row["kind"] == "eval")


def _log(workspace, key) -> str:
    return (stage_dir(workspace, key) / LOG_FILE).read_text()


def test_two_eval_stages_share_the_one_gpu_at_the_same_time(ray_cluster, tmp_path):
    # evals of 6 epochs (~10 s each) leave room for a loaded machine to start the second late
    sweep = {**TWO_EVALS, "recipes": {**TWO_EVALS["recipes"], "eval": {**TWO_EVALS["recipes"]["eval"], "epochs": 6}}}
    path = _sweep(tmp_path, "ray", sweep=sweep, address=ray_cluster.dashboard,
                  resources={"eval": {"num_cpus": 0.5, "num_gpus": 0.5}})
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    _wait(workspace, ray_cluster.env, _all_done)
    runs = []
    for key in _evals(workspace):
        (host, pid, start, gpus, visible), = _TASK_START.findall(_log(workspace, key))
        (end_pid, end), = _TASK_END.findall(_log(workspace, key))
        assert end_pid == pid
        runs.append(dict(host=host, pid=pid, start=float(start), end=float(end), gpus=gpus, visible=visible))
    first, second = runs
    assert len(runs) == 2 and first["pid"] != second["pid"]
    # the one GPU the worker node declares, handed to both (half each), visible to both the same way
    assert first["gpus"] == second["gpus"] == "['0']" and first["visible"] == second["visible"] == "0"
    assert first["start"] < second["end"] and second["start"] < first["end"], f"the two evals did not overlap: {runs}"
    assert len(results.load(workspace)) == 2


def test_unplaceable_ranks_stop_the_launch_naming_the_key(ray_cluster, tmp_path):
    # the cluster has 3 CPUs: five 1-CPU ranks can never be placed
    path = _sweep(tmp_path, "ray", sweep=TWO_EVALS, address=ray_cluster.dashboard,
                  resources={"eval": {"num_cpus": 1, "ranks": 5}})
    result = cli("launch", path, env=ray_cluster.env, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunesweep: error: ray.resources.eval: 5 rank(s) of {CPU: 1}"), \
        result.stderr
    assert "at most 3 fit" in lines[0]
    assert {row["state"] for row in ledger_states(tmp_path / "ray").values()} == {"planned"}


def test_an_eval_stage_as_two_ranks_in_a_placement_group(ray_cluster, tmp_path):
    path = _sweep(tmp_path, "ray", sweep=TWO_EVALS, address=ray_cluster.dashboard,
                  resources={"eval": {"num_cpus": 1, "ranks": 2}})
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    states = _wait(workspace, ray_cluster.env, _all_done)
    assert len(states) == 3 and all(row["attempts"] == 1 for row in states.values())
    for key in _evals(workspace):
        ranks = _RANK.findall(_log(workspace, key))
        addr = ranks[0][4]
        assert sorted(rank for rank, *_ in ranks) == ["0", "1"] and {world for _, world, *_ in ranks} == {"2"}
        assert {(addr, port) for *_, addr, port, _visible in ranks} == {(addr, ranks[0][5])}  # one rendezvous
        assert states[key]["pid"] == int(next(pid for rank, _, _, pid, *_ in ranks if rank == "0"))
        assert "starting on 2 ranks" in _log(workspace, key)  # the worker joined one process group of two
    frame = results.load(workspace)
    assert len(frame) == 2 and frame["top1"].between(0, 1).all()


def _kill_rank_one(workspace, key, timeout=180):
    """SIGKILL rank 1 of ``key`` once it runs; return (rank 0's pid, rank 1's pid)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = stage_dir(workspace, key) / LOG_FILE
        ranks = {rank: int(pid) for rank, _, _, pid, *_ in _RANK.findall(log.read_text())} if log.exists() else {}
        if "1" in ranks and "0" in ranks:
            os.kill(ranks["1"], 9)
            return ranks["0"], ranks["1"]
        time.sleep(0.1)
    raise AssertionError(f"rank 1 of {key} never started")


def _gone(pid, timeout=60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_a_rank_that_dies_fails_its_stage_and_resume_finishes_it(ray_cluster, tmp_path):
    sweep = {**TWO_EVALS, "init": ["winning_ticket"],
             "recipes": {**TWO_EVALS["recipes"], "eval": {**TWO_EVALS["recipes"]["eval"], "epochs": 8}}}
    path = _sweep(tmp_path, "ray", sweep=sweep, address=ray_cluster.dashboard, max_retries=0,
                  resources={"eval": {"num_cpus": 1, "ranks": 2}})
    workspace = tmp_path / "ray"
    cli("launch", path, env=ray_cluster.env)
    _wait(workspace, ray_cluster.env, lambda s: bool(_evals(workspace)))
    key, = _evals(workspace)
    rank0, _ = _kill_rank_one(workspace, key)
    states = _wait(workspace, ray_cluster.env, lambda s: s[key]["state"] == "failed")
    assert states[key]["error_class"] == "ActorDiedError", states[key]["error_message"]
    assert "ray: rank 1 of 2 died" in states[key]["error_message"]  # the log's tail
    assert _gone(rank0), "rank 0 kept running after rank 1 died"
    assert "ActorDiedError" in cli("status", workspace, env=ray_cluster.env).stdout
    cli("resume", workspace, "--backend", "ray", env=ray_cluster.env)
    states = _wait(workspace, ray_cluster.env, _all_done)
    assert states[key]["attempts"] == 2
    assert len(results.load(workspace)) == 1
