"""The planner shares every stage it can and keys stages only by what they depend on."""
from __future__ import annotations

import copy

from orchestrator.planning.planner import NO_REWIND, plan_sweep
from orchestrator.spec import validate_spec


def _spec(sweep, **changes):
    sweep = copy.deepcopy(sweep)
    for dotted, value in changes.items():
        node = sweep
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return validate_spec(sweep, "test.yaml")


def _plan(sweep, **changes):
    return plan_sweep(_spec(sweep, **changes))


def test_counts_and_sharing(sweep_dict):
    plan = _plan(sweep_dict)  # fractions 0.8 -> 1 round, 0.512 -> 3 rounds
    counts = plan.counts_by_kind()
    # labels chain trains levels 1..3 (its last level is the winning-ticket eval), rotnet 1..2
    assert counts == {"dense": 2, "imp": 5, "random_mask": 2, "eval": 8}
    assert len(plan.cells) == 2 * 2 * 1 + 2 + 2 * 2  # labels, random, rotnet
    assert plan.trainings == 2 + 5 + 8
    # naive: per IMP-source cell dense + L rounds + eval (a labels winning-ticket cell's last round is
    # its evaluation: dense + L rounds); per random cell one eval
    assert plan.naive_trainings == ((1 + 1) + (1 + 3)) + ((2 + 1) + (2 + 3)) + 2 * ((2 + 1) + (2 + 3)) + 2
    assert plan.total_epochs == 2 * plan.trainings


def test_labels_winning_ticket_is_the_imp_training(sweep_dict):
    plan = _plan(sweep_dict)
    for cell in plan.cells:
        stage = plan.stages[cell.stage_key]
        if cell.mask_source == "labels" and cell.init == "winning_ticket":
            assert stage.kind == "imp" and stage.config["level"] == cell.level
        else:
            assert stage.kind == "eval"


def test_level_zero_winning_ticket_at_k0_is_the_dense_run(sweep_dict):
    plan = _plan(sweep_dict, pruning__fractions=[1.0])
    cell = next(c for c in plan.cells if c.mask_source == "labels" and c.init == "winning_ticket")
    assert plan.stages[cell.stage_key].kind == "dense"
    # reinit of the full network is one computation whatever the mask source
    reinit = {c.stage_key for c in plan.cells if c.init == "reinit"}
    assert len(reinit) == 1


def test_different_eval_recipe_gets_its_own_evaluations(sweep_dict):
    recipe = dict(sweep_dict["recipes"]["labels"], lr=0.001)
    plan = _plan(sweep_dict, recipes__eval=recipe)
    labels_wt = [c for c in plan.cells if c.mask_source == "labels" and c.init == "winning_ticket"]
    assert all(plan.stages[c.stage_key].kind == "eval" for c in labels_wt)
    assert plan.counts_by_kind()["imp"] == 2 + 2  # both chains stop one level short


def test_chains_serve_every_fraction(sweep_dict):
    plan = _plan(sweep_dict, pruning__fractions=[0.8, 0.64, 0.512, 0.21])
    assert plan.counts_by_kind()["imp"] == 7 + 6  # labels to level 7, rotnet to level 6
    assert plan.counts_by_kind()["dense"] == 2


def test_nominal_fraction_rounds_to_nearest_round(sweep_dict):
    spec = _spec(sweep_dict, pruning__fractions=[0.01, 0.05, 0.7])
    assert [spec.level_for(f) for f in spec.pruning.fractions] == [21, 13, 2]
    plan = plan_sweep(spec)
    assert {c.level for c in plan.cells} == {21, 13, 2}


def test_adding_seeds_fractions_inits_reuses_every_stage(sweep_dict):
    small = _plan(sweep_dict, init=["winning_ticket"], seeds=[0], pruning__fractions=[0.8])
    big = _plan(sweep_dict, init=["winning_ticket", "reinit"], seeds=[0, 1], pruning__fractions=[0.8, 0.512])
    assert set(small.stages) <= set(big.stages)


def test_unrelated_axes_and_defaults_do_not_rename(sweep_dict):
    base = _plan(sweep_dict)
    explicit_defaults = _plan(
        sweep_dict, pruning__rate=0.2, pruning__scope="global", pruning__one_shot=False,
        recipes__labels=dict(sweep_dict["recipes"]["labels"], momentum=0.9, weight_decay=0.0, nesterov=False,
                             schedule={"kind": "constant", "milestones": [], "gamma": 0.1, "warmup_epochs": 0}),
        arch=dict(sweep_dict["arch"]),
    )
    assert set(base.stages) == set(explicit_defaults.stages)
    more_sources = _plan(sweep_dict, mask_source=["rotnet", "labels", "random"], local={"workers": 1})
    assert set(base.stages) == set(more_sources.stages)


def test_settings_that_matter_rename(sweep_dict):
    base = _plan(sweep_dict)
    for change in ({"recipes__labels": dict(sweep_dict["recipes"]["labels"], lr=0.01)},
                   {"arch": {"name": "small_cnn", "width": 4}},
                   {"pruning__rate": 0.5}):
        other = _plan(sweep_dict, **change)
        labels_dense = lambda plan: {k for k, s in plan.stages.items() if s.kind in ("dense", "imp") and s.config["task"] == "labels"}
        assert labels_dense(base) != labels_dense(other) or "pruning__rate" in change
        assert set(base.stages) != set(other.stages)


def test_one_dense_run_serves_every_rewind_point(sweep_dict):
    plan = _plan(sweep_dict, rewind=[0, "3it", "1ep"])
    dense = [s for s in plan.stages.values() if s.kind == "dense"]
    assert len(dense) == 2
    ipe = 11  # 1347 images / batch 128
    assert all(s.config["capture_iterations"] == [0, 3, ipe] for s in dense)
    assert plan.counts_by_kind()["imp"] == 3 * 5


def test_rewind_point_added_later_gets_a_rewind_stage(sweep_dict):
    first = _plan(sweep_dict)
    captured = {k: s.config["capture_iterations"] for k, s in first.stages.items() if s.kind == "dense"}
    spec = _spec(sweep_dict, rewind=[0, "5it"])
    later = plan_sweep(spec, captured.get)
    assert {k for k, s in later.stages.items() if s.kind == "dense"} == set(captured)
    rewinds = [s for s in later.stages.values() if s.kind == "rewind"]
    assert sorted(s.config["rewind_iteration"] for s in rewinds) == [5, 5]
    assert set(first.stages) <= set(later.stages)
    for stage in later.stages.values():
        if stage.kind == "imp" and stage.config["rewind_iteration"] == 5:
            assert later.stages[stage.deps["rewind"]].kind == "rewind"


def test_random_cells_are_reinit_with_matching_counts(sweep_dict):
    plan = _plan(sweep_dict)
    random = [c for c in plan.cells if c.mask_source == "random"]
    assert {c.init for c in random} == {"reinit"} and {c.rewind for c in random} == {NO_REWIND}
    for cell in random:
        mask = plan.stages[plan.stages[cell.stage_key].deps["mask"]]
        assert mask.config["mask_rule"]["keep"] == {"rate": 0.2, "level": cell.level}


def test_one_shot_has_no_chains(sweep_dict):
    plan = _plan(sweep_dict, pruning__one_shot=True)
    assert "imp" not in plan.counts_by_kind()
    for cell in plan.cells:
        stage = plan.stages[cell.stage_key]
        assert stage.kind == "eval" and cell.level is None
        if cell.mask_source != "random":
            assert stage.config["mask_rule"] == {"kind": "one_shot", "fraction": cell.nominal_fraction, "scope": "global"}


def test_dependencies_come_first(sweep_dict):
    plan = _plan(sweep_dict, rewind=[0, "1ep"], seeds=[0, 1])
    seen = set()
    for key, stage in plan.stages.items():
        assert set(stage.deps.values()) <= seen
        seen.add(key)
