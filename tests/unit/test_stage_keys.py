"""Pinned stage keys: a change here renames every result on disk, so it must be deliberate.

If this test fails, a change altered what a stage's identity hashes. Undo it, or (only
for a real change of what a stage computes) update the pins and say why in the commit.
"""
from __future__ import annotations

from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import validate_spec
from orchestrator.planning.stage_identity import stage_key

PINNED_KEYS = {
    "dense labels seed=0": "dense-77b5767897dc",
    "imp labels seed=0 k=0 level=3": "imp-7cd6efe8ae83",
    "eval labels reinit seed=0 k=0 f=0.512": "eval-1a02c3683705",
    "dense rotnet seed=0": "dense-fd3763ce2aff",
    "eval rotnet winning_ticket seed=0 k=0 f=0.8": "eval-3a8d85f118ed",
    "random_mask seed=0 f=0.8": "random_mask-2bad893535b2",
    "eval random reinit seed=0 f=0.512": "eval-226ea632b7ba",
}


def test_hash_function_is_pinned():
    assert stage_key("dense", {"seed": 0}) == "dense-4bd063d10521"


def test_stage_keys_are_pinned(sweep_dict):
    plan = plan_sweep(validate_spec(sweep_dict, "test.yaml"))
    by_label = {stage.label: key for key, stage in plan.stages.items()}
    assert {label: by_label[label] for label in PINNED_KEYS} == PINNED_KEYS


def test_pins_survive_new_options_at_their_defaults(sweep_dict):
    sweep_dict["pruning"].update(rate=0.2, scope="global", one_shot=False)
    sweep_dict["recipes"]["labels"].update(momentum=0.9, nesterov=False, weight_decay=0.0)
    sweep_dict["local"] = {"workers": 2}
    plan = plan_sweep(validate_spec(sweep_dict, "test.yaml"))
    by_label = {stage.label: key for key, stage in plan.stages.items()}
    assert {label: by_label[label] for label in PINNED_KEYS} == PINNED_KEYS


def test_task_recipe_options_at_their_defaults_rename_nothing(sweep_dict):
    """``negatives`` (NPID) and ``batch_counts`` (RotNet) written at their defaults keep every key,
    the pinned ones included; another value renames the stages of that task only."""
    sweep_dict["mask_source"].append("npid")
    sweep_dict["recipes"]["npid"] = {"epochs": 2, "batch_size": 128, "optimizer": "sgd", "lr": 0.03}

    def keys(npid=None, rotnet=None):
        sweep = {**sweep_dict, "recipes": {**sweep_dict["recipes"]}}
        sweep["recipes"]["npid"] = {**sweep["recipes"]["npid"], **(npid or {})}
        sweep["recipes"]["rotnet"] = {**sweep["recipes"]["rotnet"], **(rotnet or {})}
        return {stage.label: key for key, stage in plan_sweep(validate_spec(sweep, "test.yaml")).stages.items()}

    plain = keys()
    at_defaults = keys({"negatives": 4096}, {"batch_counts": "images"})
    assert at_defaults == plain and {label: plain[label] for label in PINNED_KEYS} == PINNED_KEYS
    more_negatives, samples = keys({"negatives": 16384}), keys(rotnet={"batch_counts": "samples"})
    for changed, task in ((more_negatives, "npid"), (samples, "rotnet")):
        renamed = {label for label in plain if changed[label] != plain[label]}
        assert f"dense {task} seed=0" in renamed
        assert all(f" {task} " in label for label in renamed), renamed
