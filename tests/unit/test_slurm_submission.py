"""The SLURM backend's submission policy (orchestrator/backends/slurm/submission.py) and that
``SlurmBackend.run`` submits exactly its arrays: what the campaign simulator runs is what ships.
No cluster: submitit's executor is replaced by one that records each array."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from orchestrator.backends.base import StageToRun
from orchestrator.backends.slurm import backend as slurm_backend
from orchestrator.backends.slurm import submit_limits, task_updates
from orchestrator.backends.slurm.pack import PackJob
from orchestrator.backends.slurm.submission import DEPENDENCY, plan_arrays


def _dag() -> list[StageToRun]:
    """Two IMP chains under one dense stage, an evaluation per round, a stage queued by an earlier launch."""
    tasks = [StageToRun("dense", Path("dense"), kind="dense")]
    for chain in "ab":
        previous = "dense"
        for level in range(3):
            key = f"imp-{chain}{level}"
            tasks.append(StageToRun(key, Path(key), (previous,), kind="imp"))
            tasks.append(StageToRun(f"eval-{chain}{level}", Path(f"eval-{chain}{level}"), (key,), kind="eval"))
            previous = key
    tasks.append(StageToRun("late", Path("late"), ("elsewhere",), kind="eval", after_jobs=("77_3",)))
    return tasks


def test_arrays_per_wave_and_kind_chunked_each_waiting_afterany_for_the_arrays_it_needs():
    plan = plan_arrays(_dag(), {"retries": 3, "ranks": {"dense": {"nodes": 2}}}, max_array_size=1)
    described = [(a.kind, [t.key for (t,) in a.packs], a.after, a.after_jobs, a.distributed, a.retries) for a in plan]
    assert described == [
        ("dense", ["dense"], (), (), True, 0),  # distributed: no retry inside its job
        ("eval", ["late"], (), ("77",), False, 3),  # wave 0 too: its input is not in this launch
        ("imp", ["imp-a0"], (0,), (), False, 3), ("imp", ["imp-b0"], (0,), (), False, 3),  # chunked to 1
        # wave 2: the kinds in the order their first stage comes (the planner's order)
        ("eval", ["eval-a0"], (2,), (), False, 3), ("eval", ["eval-b0"], (3,), (), False, 3),
        ("imp", ["imp-a1"], (2,), (), False, 3), ("imp", ["imp-b1"], (3,), (), False, 3),
        ("eval", ["eval-a1"], (6,), (), False, 3), ("eval", ["eval-b1"], (7,), (), False, 3),
        ("imp", ["imp-a2"], (6,), (), False, 3), ("imp", ["imp-b2"], (7,), (), False, 3),
        ("eval", ["eval-a2"], (10,), (), False, 3), ("eval", ["eval-b2"], (11,), (), False, 3),
    ]
    assert DEPENDENCY == "afterany" and plan[4].dependency({2: "12"}) == "afterany:12"
    assert plan[-2].dependency({10: "3", 11: "4"}) == "afterany:3"
    assert plan[1].dependency({}) == "afterany:77" and plan[0].dependency({}) is None
    packed = plan_arrays(_dag(), {"stages_per_job": {"eval": 2}}, max_array_size=1000)
    assert [len(pack) for pack in packed[-1].packs] == [2] and packed[-1].after == (6,) and len(packed) == 8


def test_the_backend_submits_exactly_the_planned_arrays(monkeypatch, tmp_path):
    arrays: list[dict] = []

    class Executor:
        def __init__(self, kind, dependency):
            self.array = {"kind": kind, "dependency": dependency, "jobs": []}

        @contextlib.contextmanager
        def batch(self):
            yield
            arrays.append(self.array)

        def submit(self, runs, folders):
            self.array["jobs"].append((type(runs).__name__, getattr(runs, "retries", None), folders))
            return type("Job", (), {"job_id": f"{100 + len(arrays)}_{len(self.array['jobs']) - 1}"})()

    monkeypatch.setattr(slurm_backend.SlurmBackend, "preflight", lambda self: None)
    monkeypatch.setattr(slurm_backend.SlurmBackend, "_executor", lambda self, kind, needs: Executor(kind, needs))
    monkeypatch.setattr(slurm_backend, "snapshot_code", lambda runner, into: tmp_path)
    applied: list[list[str]] = []
    monkeypatch.setattr(task_updates, "apply", lambda arguments: applied.extend(arguments) or [])
    monkeypatch.setattr(submit_limits, "submit_limit", lambda account=None: None)  # no accounting
    settings = {"max_array_size": 1, "retries": 3, "submit_interval_s": 0, "ranks": {"dense": {"nodes": 2}}}
    started = []
    events = type("Events", (), {"started": lambda self, key, host, pid, job_id=None: started.append((key, job_id))})()
    slurm_backend.SlurmBackend(settings, tmp_path / "slurm").run(_dag(), events)
    plan = plan_arrays(_dag(), settings, max_array_size=1)
    ids = {i: str(100 + i) for i in range(len(plan))}
    assert [(a["kind"], a["dependency"]) for a in arrays] == [(p.kind, p.dependency(ids)) for p in plan]
    for array, planned in zip(arrays, plan, strict=True):
        folders = [str(task.folder) for (task,) in planned.packs]
        if planned.distributed:
            assert array["jobs"] == [("StageJob", None, folder) for folder in folders]
        else:
            assert array["jobs"] == [(PackJob.__name__, planned.retries, [folder]) for folder in folders]
    assert [key for key, _ in started] == [task.key for p in plan for (task,) in p.packs]
    job_ids = {(i, j): f"{100 + i}_{j}" for i, p in enumerate(plan) for j in range(len(p.packs))}
    assert applied == [update for i, p in enumerate(plan) for update in task_updates.updates(p, i, job_ids)]
    assert ["JobId=101_[0]", "Dependency=afterany:77_3", "Nice=0"] in applied  # its own task of array 77


def test_each_job_waits_for_the_jobs_of_its_own_inputs_only():
    plan = plan_arrays(_dag(), {}, max_array_size=1000)
    assert [(a.kind, [t.key for (t,) in a.packs]) for a in plan] == [
        ("dense", ["dense"]), ("eval", ["late"]), ("imp", ["imp-a0", "imp-b0"]),
        ("eval", ["eval-a0", "eval-b0"]), ("imp", ["imp-a1", "imp-b1"]),
        ("eval", ["eval-a1", "eval-b1"]), ("imp", ["imp-a2", "imp-b2"]), ("eval", ["eval-a2", "eval-b2"])]
    assert plan[4].waits == (((2, 0),), ((2, 1),)) and plan[4].after == (2,)
    assert plan[1].waits == ((),) and plan[1].waits_outside == (("77_3",),)
    ids = {(i, j): f"{10 + i}" + (f"_{j}" if len(p.packs) > 1 else "") for i, p in enumerate(plan)
           for j in range(len(p.packs))}
    assert plan[4].job_dependency(1, ids) == "afterany:12_1" and plan[4].dependency({2: "12"}) == "afterany:12"
    assert plan[2].job_dependency(0, ids) == "afterany:10"  # a one-job array is a plain job id
    assert task_updates.updates(plan[4], 4, ids) == [["JobId=14_[0]", "Dependency=afterany:12_0", "Nice=0"],
                                                     ["JobId=14_[1]", "Dependency=afterany:12_1", "Nice=0"]]
    assert task_updates.updates(plan[0], 0, ids) == []  # no dependency, nice 0: nothing to change


def test_the_longest_remaining_chain_gets_the_smallest_nice_and_the_first_index():
    tasks = [StageToRun("a0", Path("a0"), kind="imp", priority=1.0), StageToRun("b0", Path("b0"), kind="imp", priority=3.0),
             StageToRun("b1", Path("b1"), ("b0",), kind="eval", priority=2.0),
             StageToRun("a1", Path("a1"), ("a0",), kind="eval", priority=0.5)]
    plan = plan_arrays(tasks, {}, max_array_size=1000)
    assert [[t.key for (t,) in a.packs] for a in plan] == [["b0", "a0"], ["b1", "a1"]]
    # ranks 0..3 of the priorities 3, 2, 1, 0.5, each step the plan's 2 arrays: b1 (wave 1) before a0 (wave 0)
    assert [a.nice for a in plan] == [(0, 4), (2, 6)]


def test_job_lists_are_ranges_of_one_arrays_tasks():
    assert task_updates.job_list(["7_0", "7_1", "7_2", "7_5", "7_7", "7_8"]) == "7_[0-2,5,7-8]"
    assert task_updates.job_list(["9"]) == "9"


def test_a_launch_the_association_limit_cannot_take_is_refused_before_any_sbatch(monkeypatch, tmp_path):
    from orchestrator.errors import UserError

    recorded = "prj|12|\nother||5\n"  # sacctmgr -nP show assoc format=Account,MaxSubmit,GrpSubmit
    assert submit_limits.parse_submit_limit(recorded) == 5 and submit_limits.parse_submit_limit(recorded, "prj") == 12
    assert submit_limits.parse_submit_limit("prj||\n") is None
    monkeypatch.setattr(slurm_backend.SlurmBackend, "preflight", lambda self: None)
    monkeypatch.setattr(submit_limits, "submit_limit", lambda account=None: 14)
    monkeypatch.setattr(submit_limits, "queued_jobs", lambda user=None: 2)  # 12 more: the DAG has 14 stages
    monkeypatch.setattr(slurm_backend.SlurmBackend, "_executor", lambda self, kind, needs: pytest.fail("submitted"))
    with pytest.raises(UserError, match=r"queues 14 job\(s\) .* leaves room for 12; nothing was submitted"):
        slurm_backend.SlurmBackend({}, tmp_path / "slurm").run(_dag(), None)  # type: ignore[arg-type]
