"""The campaign simulator (bench/campaign_model.py) on DAGs small enough to add up by hand,
and the paper DAG that bench/campaign_simulation.py feeds it."""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from campaign_model import Fate, Model, StageSpec, simulate  # noqa: E402

H = 12 * 3600.0  # the human's delay
R = 300.0  # a restart's cost


def chain(prefix: str, durations, kind: str = "imp", epochs: int = 0) -> list[StageSpec]:
    stages, previous = [], ()
    for i, duration in enumerate(durations):
        stages.append(StageSpec(f"{prefix}{i}", kind, duration, previous, epochs))
        previous = (stages[-1].key,)
    return stages


def fails(plan: dict) -> object:
    """A fate function: ``{(key, attempt): Fate}``, every other attempt runs through."""
    return lambda stage, attempt: plan.get((stage.key, attempt), Fate())


def model(**kwargs) -> Model:
    return Model(**{"gpus": 1, "human_delay_s": H, "restart_s": R, **kwargs})


@pytest.mark.parametrize("policy", ["afterok", "per_stage", "shipped"])
def test_a_chain_on_one_gpu_takes_the_sum_of_its_durations(policy):
    out = simulate(chain("a", [100, 250, 50]), model(policy=policy))
    assert out.makespan_s == 400 and out.done == 3 and out.unfinished == 0
    assert out.gpu_hours == pytest.approx(400 / 3600) and out.gpu_hours_wasted == 0
    assert out.human_interventions == 0


@pytest.mark.parametrize("policy", ["afterok", "per_stage", "shipped"])
def test_two_independent_chains_on_two_gpus_take_the_longer(policy):
    dag = chain("a", [100, 200], kind="imp") + chain("b", [300, 50], kind="eval")  # arrays of their own
    assert simulate(dag, model(gpus=2, policy=policy)).makespan_s == 350
    # one GPU: one after the other
    assert simulate(dag, model(gpus=1, policy=policy)).makespan_s == 650


def test_the_old_policy_waits_for_the_whole_array_of_the_wave_before():
    dag = chain("a", [100, 200]) + chain("b", [300, 50])  # one kind: arrays [a0, b0] then [a1, b1]
    assert simulate(dag, model(gpus=2, policy="per_stage")).makespan_s == 350
    old = simulate(dag, model(gpus=2, policy="afterok"))
    assert old.makespan_s == 300 + 200 and old.finished_at["a1"] == 500


def test_stages_ask_for_gpus_per_stage_gpus():
    dag = chain("a", [100]) + chain("b", [100]) + chain("c", [100])
    assert simulate(dag, model(gpus=16, gpus_per_stage=8)).makespan_s == 200
    out = simulate(dag, model(gpus=24, gpus_per_stage=8))
    assert out.makespan_s == 100 and out.gpu_hours == pytest.approx(3 * 100 * 8 / 3600)


def test_an_infrastructure_failure_costs_the_old_policy_a_human_and_the_new_one_a_retry():
    dag = chain("a", [100, 200, 50])
    fate = fails({("a1", 0): Fate(infra_after_s=80)})
    old = simulate(dag, model(policy="afterok"), fate)
    assert old.makespan_s == 100 + 80 + H + R + 200 + 50
    assert (old.human_interventions, old.automatic_retries, old.done) == (1, 0, 3)
    new = simulate(dag, model(policy="per_stage"), fate)
    assert new.makespan_s == 100 + 80 + R + 200 + 50
    assert (new.human_interventions, new.automatic_retries, new.done) == (0, 1, 3)
    for out in (old, new):  # the 80 s lost and the restart
        assert out.gpu_hours_wasted == pytest.approx((80 + R) / 3600)


def test_a_retry_resumes_from_the_last_epoch_checkpoint():
    dag = chain("a", [400], epochs=4)  # 100 s an epoch
    out = simulate(dag, model(policy="per_stage"), fails({("a0", 0): Fate(infra_after_s=250)}))
    assert out.makespan_s == 250 + R + 200  # epochs 3 and 4 again; half an epoch lost
    assert out.gpu_hours_wasted == pytest.approx((50 + R) / 3600)


def test_the_old_policy_couples_independent_chains_the_new_one_does_not():
    # wave 0: a0, b0 (one array); wave 1: a1, b1 (one array, afterok on wave 0's)
    dag = chain("a", [100, 100]) + chain("b", [100, 100])
    fate = fails({("a0", 0): Fate(infra_after_s=50)})
    new = simulate(dag, model(gpus=2, policy="per_stage", retries=0), fate)
    # b's chain goes on; a0 waits for a human, then a0 and a1 run
    assert new.finished_at["b1"] == 200
    assert new.makespan_s == 50 + H + R + 100 + 100 and new.human_interventions == 1
    old = simulate(dag, model(gpus=2, policy="afterok"), fate)
    # b1 waits for the whole wave-0 array: the resume resubmits a0 and b1 (one array) and a1
    assert old.finished_at["b1"] == 50 + H + 100
    assert old.makespan_s == 50 + H + R + 100 + 100 and old.human_interventions == 1
    with_retries = simulate(dag, model(gpus=2, policy="per_stage"), fate)
    assert with_retries.makespan_s == 50 + R + 100 + 100 and with_retries.human_interventions == 0


def test_a_failure_blocks_its_wave_arrays_dependents_only_under_the_old_policy():
    # a0 -> a1 -> a2 and b0 -> b1 -> b2, on 2 GPUs; a0 fails for good (no retries, no human)
    dag = chain("a", [100, 100, 100]) + chain("b", [100, 100, 100])
    fate = fails({("a0", 0): Fate(infra_after_s=50)})
    never = dict(gpus=2, retries=0, max_resumes=0)
    new = simulate(dag, model(policy="per_stage", **never), fate)
    assert (new.done, new.unfinished, new.makespan_s) == (3, 3, 300)  # b's chain, a0 failed, a1 a2 blocked
    old = simulate(dag, model(policy="afterok", **never), fate)
    assert (old.done, old.unfinished, old.makespan_s) == (1, 5, 100)  # b0 only: b1 waits on a0's array


def test_a_deterministic_failure_is_not_retried_and_blocks_only_its_dependents():
    dag = chain("a", [100, 100, 100]) + chain("b", [100, 100, 100])
    broken = lambda stage, attempt: Fate(broken_at=0.5) if stage.key == "a1" else Fate()  # noqa: E731
    new = simulate(dag, model(gpus=2, policy="per_stage"), broken)
    assert (new.done, new.unfinished, new.automatic_retries, new.human_interventions) == (4, 2, 0, 0)
    assert new.makespan_s == 300 and new.failures == {"deterministic": 1}
    old = simulate(dag, model(gpus=2, policy="afterok"), broken)
    # a1 fails at 150; b2 (wave 2) waits on a1's array: a human resumes at 150 + H, a1 fails again at
    # 150 + H + R + 50 while b2 finishes at 250 + H; the next visit finds only the deterministic failure: still
    # progress since (b2), so a second resume reruns a1, which fails again; the third visit gives up
    assert old.done == 4 and old.unfinished == 2
    assert old.makespan_s == 150 + H + 100 == old.finished_at["b2"]
    assert old.human_interventions == 2 and old.failures == {"deterministic": 3}
    assert old.gpu_hours_wasted == pytest.approx(3 * 50 / 3600 + 2 * R / 3600)


@pytest.mark.parametrize("policy", ["afterok", "per_stage", "shipped"])
def test_a_preemption_requeues_after_slurms_begin_time_and_never_fails_the_stage(policy):
    dag = chain("a", [100])
    once = fails({("a0", 0): Fate(preempt_after_s=40)})
    out = simulate(dag, model(policy=policy, requeue_delay_s=121), once)
    assert out.makespan_s == 40 + 121 + R + 60 and out.preemptions == 1 and out.human_interventions == 0
    # submitit requeues a preempted job without limit (only time-outs count against max_requeues)
    always = lambda stage, attempt: Fate(preempt_after_s=R + 10)  # noqa: E731  (10 s of progress a restart)
    out = simulate(chain("a", [1000]), model(policy=policy), always)  # the first attempt pays no restart: 310 s
    assert out.done == 1 and out.preemptions == 69 and out.human_interventions == 0 and not out.failures
    assert out.makespan_s == 70 * (R + 10)


def test_runs_are_a_function_of_the_seed():
    dag = chain("a", [3600] * 10, epochs=10) + chain("b", [1800] * 10, epochs=10)
    runs = [simulate(dag, Model(gpus=2, policy="per_stage", failure_p=0.3, preemptions_per_hour=0.5, seed=seed))
            for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert runs[0].automatic_retries > 0 and runs[0].preemptions > 0


def test_the_simulated_campaign_is_the_planners_paper_dag():
    from campaign_simulation import IMAGENET_TRAIN, paper_dag

    dag = paper_dag(samples_per_s=1000.0, gpus_per_stage=8, untimed_s=60.0)
    kinds = {}
    for stage in dag:
        kinds[stage.kind] = kinds.get(stage.kind, 0) + 1
    assert len(dag) == 567 and kinds == {"dense": 9, "imp": 264, "eval": 252, "random_mask": 42}
    keys = {s.key for s in dag}
    assert all(d in keys for s in dag for d in s.deps)
    rotnet = [s for s in dag if s.kind == "dense" and s.duration_s > 90 * IMAGENET_TRAIN / 8000 * 1.5]
    assert len(rotnet) == 3 and rotnet[0].duration_s == pytest.approx(90 * IMAGENET_TRAIN * 4 / 8000)
    # each kind's GPUs from the sweep's slurm.ranks: IMP rounds on 16 GPUs take half as long, dense ones keep 8
    ranked = paper_dag(1000.0, 8, 60.0, overrides=("slurm.ranks={imp: {nodes: 2, tasks_per_node: 8}}",))
    assert {(s.kind, s.gpus) for s in ranked if s.kind in ("imp", "dense")} == {("imp", 16), ("dense", 8)}
    assert [s.duration_s for s in ranked if s.kind == "imp"] == [s.duration_s / 2 for s in dag if s.kind == "imp"]


def test_the_what_if_gives_every_stage_of_a_longest_chain_twice_the_gpus():
    from campaign_model import critical_path_s, critical_stages, with_more_gpus

    dag = chain("a", [100, 200]) + chain("b", [200, 100]) + chain("c", [100, 100])
    assert critical_stages(dag) == {"a0", "a1", "b0", "b1"}  # both chains of 300 s
    faster = with_more_gpus(dag, critical_stages(dag), 2, gpus_per_stage=1)
    assert critical_path_s(faster) == 200 and [s.gpus for s in faster] == [2, 2, 2, 2, 0, 0]
    assert simulate(faster, model(gpus=5)).makespan_s == 200  # room for all three chains at once


def test_a_distributed_stage_is_not_retried_inside_its_job_unless_the_what_if_says_so():
    dag = chain("a", [100, 100])
    fate = fails({("a0", 0): Fate(infra_after_s=50)})
    ranks = {"ranks": {"imp": {"nodes": 2, "tasks_per_node": 1}}}
    shipped = simulate(dag, model(slurm=ranks), fate)
    assert shipped.human_interventions == 1 and shipped.automatic_retries == 0
    what_if = simulate(dag, model(slurm=ranks, retry_distributed=True), fate)
    assert what_if.human_interventions == 0 and what_if.makespan_s == 50 + R + 100 + 100


def _random_dag(seed: int, n: int = 40) -> list[StageSpec]:
    import random

    draw = random.Random(seed)
    stages: list[StageSpec] = []
    for i in range(n):
        deps = tuple(sorted({stages[draw.randrange(i)].key for _ in range(draw.randrange(3))})) if i else ()
        stages.append(StageSpec(f"s{i}", draw.choice(["dense", "imp", "eval"]), draw.uniform(600, 7200), deps,
                                draw.choice([0, 10])))
    return stages


@pytest.mark.parametrize("policy", ["afterok", "per_stage", "wave_arrays", "shipped"])
def test_every_gpu_hour_is_either_kept_work_or_wasted_and_no_stage_starts_before_its_dependencies(policy):
    for seed in range(5):
        dag = _random_dag(seed)
        work = sum(s.duration_s for s in dag) * 2 / 3600
        calm = simulate(dag, Model(gpus=6, gpus_per_stage=2, policy=policy, seed=seed))
        for stage in dag:
            for dep in stage.deps:
                assert calm.finished_at[stage.key] >= calm.finished_at[dep] + stage.duration_s - 1e-6
        stormy = simulate(dag, Model(gpus=6, gpus_per_stage=2, policy=policy, failure_p=0.2, preemptions_per_hour=0.3,
                                     restart_s=120, human_delay_s=3600, seed=seed))
        assert stormy.unfinished == 0 and stormy.gpu_hours_wasted > 0
        assert stormy.gpu_hours - stormy.gpu_hours_wasted == pytest.approx(work)
        for stage in dag:
            for dep in stage.deps:
                assert stormy.finished_at[stage.key] > stormy.finished_at[dep]
        assert stormy.makespan_s > calm.makespan_s


def test_the_lower_bound_is_the_critical_path_or_the_work_over_the_gpus():
    from campaign_model import critical_path_s, lower_bound_s

    dag = chain("a", [100, 200]) + chain("b", [300, 50]) + [StageSpec("c", "eval", 10, ("a1", "b1"))]
    assert critical_path_s(dag) == 360 and lower_bound_s(dag, gpus=3) == 360
    assert lower_bound_s(dag, gpus=1) == 660 and lower_bound_s(dag, gpus=3, gpus_per_stage=2) == 440
    assert simulate(dag, model(gpus=3, policy="per_stage")).makespan_s == 360
    # shipped: each job waits for its own input's job; the wave arrays of before waited for b0 (300) too
    assert simulate(dag, model(gpus=3, policy="shipped")).makespan_s == 360
    assert simulate(dag, model(gpus=3, policy="wave_arrays")).makespan_s == 300 + 200 + 10


# ---- the shipped policy: the SLURM backend's own arrays, afterany, in-job retries --------------------------
def test_a_job_costs_its_start_up_and_holds_its_gpus_a_while_after_its_stage():
    out = simulate(chain("a", [100, 200]), model(job_start_s=7, job_end_s=3))
    assert out.finished_at == {"a0": 7 + 100, "a1": 7 + 100 + 3 + 7 + 200}
    assert out.gpu_hours == pytest.approx((110 + 210) / 3600) and out.gpu_hours_wasted == pytest.approx(20 / 3600)


def test_a_failed_stage_blocks_its_dependents_only_when_their_jobs_start():
    # a0 -> a1 -> a2 and b0 -> b1 -> b2 on 2 GPUs, one kind: arrays [a0 b0], [a1 b1], [a2 b2], each afterany
    dag = chain("a", [100, 100, 100]) + chain("b", [100, 100, 100])
    out = simulate(dag, model(gpus=2, check_s=2, job_end_s=1, max_resumes=0, slurm={"retries": 0}),
                   fails({("a0", 0): Fate(infra_after_s=50)}))
    assert out.states == {"a0": "failed", "a1": "blocked", "a2": "blocked", "b0": "done", "b1": "done", "b2": "done"}
    # b0 ends at 100 (+1): the wave-1 array starts; a1's job finds a0 missing and ends after its check
    assert out.finished_at == {"b0": 100, "b1": 201, "b2": 302} and out.gpu_hours_wasted > 0


def test_resume_reruns_the_failed_stage_and_the_queued_stages_behind_it():
    dag = chain("a", [100, 100, 100]) + chain("b", [100, 100, 100])
    fate = fails({("a0", 0): Fate(infra_after_s=50)})
    out = simulate(dag, model(gpus=2, slurm={"retries": 0}), fate)
    assert out.human_interventions == 1 and out.unfinished == 0
    assert out.makespan_s == 50 + H + R + 100 + 100 + 100  # a0 resumed (a restart), then a1, a2: fresh arrays
    assert out.submissions == 3 + 3


def test_an_in_job_retry_keeps_its_gpu_a_requeue_keeps_its_place_a_resubmission_goes_last():
    dag = [StageSpec(k, "eval", 100) for k in ("a", "b", "c")]  # one array, a first; one GPU
    fate = fails({("a", 0): Fate(infra_after_s=50)})
    in_job = simulate(dag, model(), fate)
    assert in_job.finished_at == {"a": 50 + R + 100, "b": 50 + R + 200, "c": 50 + R + 300}
    assert in_job.retried == {"a"} and in_job.automatic_retries == 1
    requeue = simulate(dag, model(retry_mode="requeue", requeue_delay_s=10), fate)  # b takes the GPU meanwhile
    assert requeue.finished_at == {"b": 150, "a": 150 + R + 100, "c": 250 + R + 100}
    resubmit = simulate(dag, model(retry_mode="resubmit"), fate)
    assert resubmit.finished_at == {"b": 150, "c": 250, "a": 250 + R + 100} and resubmit.submissions == 2


def test_a_node_failure_is_requeued_by_slurm_or_fails_the_stage():
    dag = chain("a", [100, 100])
    fate = fails({("a0", 0): Fate(node_after_s=40)})
    requeued = simulate(dag, model(requeue_delay_s=121), fate)
    assert requeued.makespan_s == 40 + 121 + R + 100 + 100 and requeued.node_requeues == 1
    assert requeued.human_interventions == 0 and requeued.automatic_retries == 0
    lost = simulate(dag, model(node_requeue=False), fate)
    assert lost.human_interventions == 1 and lost.makespan_s == 40 + H + R + 100 + 100
    assert lost.failures == {"node failure": 1}


def test_a_bad_node_fails_every_stage_it_gets_until_it_is_drained():
    # two 1-GPU nodes; node 0 is bad from the start and fails each attempt after 10 s; drained at 1000 s
    dag = [StageSpec(f"s{i}", "eval", 100) for i in range(4)]
    out = simulate(dag, model(gpus=2, restart_s=0, bad_node_at_s=0, bad_node_fail_s=10, drain_after_s=1000,
                              max_resumes=0))
    # s0 on node 0: 3 attempts (2 in-job retries) fail by 30 s; the freed bad node takes s2, then s3
    assert out.states == {"s0": "failed", "s1": "done", "s2": "failed", "s3": "failed"}
    assert out.failures == {"bad node": 9} and out.automatic_retries == 6
    resumed = simulate(dag, model(gpus=2, restart_s=0, bad_node_at_s=0, bad_node_fail_s=10, drain_after_s=1000))
    # the human comes 12 h after the first failure (30 s); the bad node is drained by then: one node for three stages
    assert resumed.unfinished == 0 and resumed.makespan_s == 30 + H + 300
    # drained at 30 s, as s0 fails its last attempt; back, repaired, 100 s later
    repaired = simulate(dag, model(gpus=2, restart_s=0, bad_node_at_s=0, bad_node_fail_s=10, drain_after_s=30,
                                   repair_s=100, max_resumes=0))
    assert repaired.states == {"s0": "failed", "s1": "done", "s2": "done", "s3": "done"}
    assert repaired.finished_at == {"s1": 100, "s2": 200, "s3": 230}


def test_an_outage_stops_every_running_job_and_slurm_requeues_them_after_it():
    dag = chain("a", [100], epochs=10) + chain("b", [100], epochs=10)
    common = dict(gpus=2, outage_at_s=55, outage_s=3600, requeue_delay_s=121)
    out = simulate(dag, model(**common))
    assert out.node_requeues == 2 and out.human_interventions == 0
    assert out.makespan_s == 55 + 3600 + R + 50  # back at 3655 (BeginTime passed), from the checkpoint at 50 s
    no_requeue = simulate(dag, model(**common, node_requeue=False))
    assert no_requeue.human_interventions == 1 and no_requeue.makespan_s == 55 + H + R + 50


def test_the_shipped_policy_is_the_backends_own_plan(monkeypatch):
    from orchestrator.backends.slurm import submission

    dag = chain("a", [100, 200]) + chain("b", [300, 50])
    assert simulate(dag, model(gpus=2)).makespan_s == 350  # a1 waits for a0's job only
    shipped = submission.plan_arrays

    def whole_arrays(tasks, settings, max_array_size):
        plan = shipped(tasks, settings, max_array_size)
        return [replace(array, waits=tuple(tuple((i, j) for i in array.after for j in range(len(plan[i].packs)))
                                           for _ in array.packs)) for array in plan]

    monkeypatch.setattr(submission, "plan_arrays", whole_arrays)  # as if the backend changed its policy back
    assert simulate(dag, model(gpus=2)).makespan_s == 300 + 200
    for dependency in ("afterok", "aftercorr"):  # per job, the model knows afterany only
        monkeypatch.setattr(submission, "DEPENDENCY", dependency)
        with pytest.raises(NotImplementedError):
            simulate(dag, model(gpus=2))


def test_critical_path_first_starts_the_longest_remaining_chain_first():
    from campaign_model import remaining_chain_s

    dag = [StageSpec("x", "eval", 100), StageSpec("z", "eval", 100)] + chain("y", [100, 100])
    assert remaining_chain_s(dag) == {"x": 100, "z": 100, "y0": 200, "y1": 100}
    # two GPUs: in submission order x and z go first and the chain runs after them
    assert simulate(dag, model(gpus=2, policy="per_stage")).makespan_s == 300
    assert simulate(dag, model(gpus=2, policy="per_stage", critical_path_first=True)).makespan_s == 200
    # the backend's own lever: y0 gets the smallest nice of the plan, so it starts before x and z
    assert simulate(dag, model(gpus=2)).makespan_s == 200
    assert simulate(dag, model(gpus=2, policy="wave_arrays")).makespan_s == 300


def test_the_validation_dag_is_the_planners_with_a_raising_stage_and_two_killed_ones():
    from campaign_validation import Costs, barrier_dag, simulate_on, validation_dag

    stages = validation_dag(seed=0)
    assert 40 <= len(stages) <= 80 and len({s.spec.kind for s in stages}) == 4
    assert sorted(s.fail for s in stages if s.fail) == ["raise", "signal", "signal"]
    free = Costs(0.0, 0.0, 0.0, 0.0, 0.0)
    run, bound = simulate_on(stages, free, slots=2, per_node=2)
    broken = next(s.spec.key for s in stages if s.fail == "raise")
    assert run.of("failed") == {broken} and run.of("blocked") and run.retried == {
        s.spec.key for s in stages if s.fail == "signal"}
    assert bound == pytest.approx(sum(s.spec.duration_s for s in stages) / 2)  # bound by its work on 2 slots
    barrier = barrier_dag()  # six waves of one 6 s stage and one 1 s stage each
    assert simulate_on(barrier, free, 2, 2)[0].makespan_s == 21
    assert simulate_on(barrier, free, 2, 2, policy="wave_arrays")[0].makespan_s == 36
