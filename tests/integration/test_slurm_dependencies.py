"""On the real local SLURM: each job of the backend's arrays waits for its own inputs' jobs only
(orchestrator/backends/slurm/task_updates.py), and among ready jobs the longest remaining chain
starts first (its nice), as the campaign simulator's ``shipped`` policy assumes and the
``wave_arrays`` policy (the backend before) does not. The stages sleep (bench/sleep_worker.py)."""
from __future__ import annotations

import json
import sys
import time

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.slurm


def _starts(workspace, keys) -> dict[str, float]:
    """Stage -> when its first attempt began (wall clock), from the sleep worker's times file."""
    from sleep_worker import TIMES_FILE

    starts = {}
    for key in keys:
        lines = (workspace / "stages" / key / TIMES_FILE).read_text().splitlines()
        starts[key] = min(json.loads(line)["start"] for line in lines if "start" in json.loads(line))
    return starts


def _simulated_order(stages, policy: str) -> list[str]:
    from campaign_model import Model, simulate

    out = simulate([stage.spec for stage in stages], Model(gpus=1, policy=policy, slurm={}, max_array_size=1000))
    starts = {key: at - next(s.spec.duration_s for s in stages if s.spec.key == key)
              for key, at in out.finished_at.items()}
    return sorted(starts, key=starts.__getitem__)


def test_a_stage_starts_when_its_own_input_ended_not_when_its_wave_did(slurm_cluster, tmp_path):
    from campaign_model import StageSpec
    from campaign_validation import SETTINGS, Stage, run_on_slurm

    # one kind: arrays [a0 b0] then [a1 b1]; b0 sleeps long, a1 needs a0 only
    stages = [Stage(StageSpec("a0", "imp", 1.0)), Stage(StageSpec("b0", "imp", 12.0)),
              Stage(StageSpec("a1", "imp", 1.0, ("a0",))), Stage(StageSpec("b1", "imp", 1.0, ("b0",)))]
    run = run_on_slurm(tmp_path, stages, timeout_s=300, settings=SETTINGS)
    assert run.of("done") == {"a0", "b0", "a1", "b1"}
    starts = _starts(tmp_path, ["a1", "b0"])
    assert starts["a1"] < run.launched + run.finished_at["b0"]  # before the wave before it ended
    assert starts["a1"] - starts["b0"] < 12.0


def test_among_ready_jobs_the_longest_remaining_chain_starts_first(slurm_cluster, tmp_path):
    from campaign_model import StageSpec
    from campaign_validation import SETTINGS, Stage, launch_on_slurm, read_run, wait_for_jobs

    # y0 -> y1 -> y2 (remaining chains 9, 8, 4 s) and x, z (3 s each), on one slot. x and z's array is
    # submitted before y1's: in submission order x and z would start before y1 and y2
    stages = [Stage(StageSpec("x", "eval", 3.0)), Stage(StageSpec("z", "eval", 3.0)),
              Stage(StageSpec("y0", "imp", 1.0)), Stage(StageSpec("y1", "imp", 4.0, ("y0",))),
              Stage(StageSpec("y2", "imp", 4.0, ("y1",)))]
    assert _simulated_order(stages, "shipped") == ["y0", "y1", "y2", "x", "z"]
    assert _simulated_order(stages, "wave_arrays") == ["x", "z", "y0", "y1", "y2"]
    cpus = int(slurm_cluster.run("sinfo", "-h", "-o", "%c").stdout.split()[0].rstrip("+"))
    blocker = slurm_cluster.run("sbatch", "--parsable", "-o", "/dev/null", "-c", str(cpus), "--wrap",
                                "sleep 300").stdout.strip()
    try:  # the node busy until every job is queued with its dependency and nice: then one job at a time
        deadline = time.monotonic() + 60
        while slurm_cluster.run("squeue", "-h", "-j", blocker, "-o", "%T").stdout.strip() != "RUNNING":
            assert time.monotonic() < deadline, "the blocking job never started"
            time.sleep(0.2)
        # priority/basic gives each new job the lowest priority so far minus one, minus its nice: at SLURM's
        # floor (1) every job has priority 1 and no nice can order them (seen on a long-lived test cluster)
        assert int(slurm_cluster.run("squeue", "-h", "-j", blocker, "-o", "%Q").stdout) > 1, \
            "SLURM's priorities are at their floor (1): nice cannot order jobs on this cluster"
        jobs, launched = launch_on_slurm(tmp_path, stages, {**SETTINGS, "cpus_per_task": cpus})
        nice = dict(line.split("|") for line in slurm_cluster.run(
            "squeue", "-h", "-r", "-j", ",".join(sorted({j.split("_")[0] for j in jobs.values()})), "-o",
            "%i|%y").stdout.split())
        assert int(nice[jobs["y1"]]) < int(nice[jobs["x"]])  # a later array, yet first
    finally:
        slurm_cluster.run("scancel", blocker, check=False)
    wait_for_jobs(jobs, 300)
    assert read_run(tmp_path, [s.spec.key for s in stages], launched).of("done") == {"x", "z", "y0", "y1", "y2"}
    starts = _starts(tmp_path, ["x", "z", "y0", "y1", "y2"])
    assert sorted(starts, key=starts.__getitem__) == ["y0", "y1", "y2", "x", "z"]
