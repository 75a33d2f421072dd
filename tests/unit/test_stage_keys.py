"""Pinned stage keys: a change here renames every result on disk, so it must be deliberate.

If this test fails, a change altered what a stage's identity hashes. Undo it, or (only
for a real change of what a stage computes) update the pins and say why in the commit.
"""
from __future__ import annotations

import copy

import pytest
from conftest import BASE_SWEEP

from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import validate_spec
from orchestrator.planning.stage_identity import stage_key
from workers.catalog import STAGE_KINDS  # the kinds a sweep plans (preflight has no key: it runs beside a sweep)

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


#: a recipe for the tasks and transfer evaluations the base sweep does not train
_RECIPE = {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.003}


def _sweep(**changes) -> dict:
    return {**copy.deepcopy(BASE_SWEEP), **changes}


#: small sweeps beside the base one, so that every stage kind, every mask source (NPID,
#: Exemplar, S4L, labels_10pct, adjusted random), layer-wise and one-shot pruning, rewinding
#: an existing dense run and both transfer evaluations have pinned keys. Each entry: the sweep,
#: the rewind iterations an existing dense run captured (None: a new workspace), label -> key.
PINNED_PLANS = {
    "rewind of an existing dense run": (
        _sweep(rewind=["1ep"], mask_source=["labels"], pruning={"fractions": [0.8]}), [0], {
            "dense labels seed=0": "dense-77b5767897dc",
            "rewind labels seed=0 k=11": "rewind-9da5a2050965",
            "imp labels seed=0 k=1ep level=1": "imp-e108de8c3a77",
            "eval labels reinit seed=0 k=1ep f=0.8": "eval-eb2c4d6f1a01",
        }),
    "mask sources": (
        _sweep(mask_source=["npid", "exemplar", "s4l", "labels_10pct", "adjusted_random"], rewind=["1ep"],
               pruning={"fractions": [0.8, 0.512]},
               recipes={**BASE_SWEEP["recipes"], "npid": _RECIPE, "exemplar": _RECIPE, "s4l": _RECIPE,
                        "labels_10pct": _RECIPE}), None, {
            "dense npid seed=0": "dense-74a1dd8c8d85",
            "imp npid seed=0 k=1ep level=1": "imp-944fd2cf0846",
            "eval npid winning_ticket seed=0 k=1ep f=0.512": "eval-475870494e64",
            "eval npid reinit seed=0 k=1ep f=0.8": "eval-0232f760ff60",
            "dense exemplar seed=0": "dense-3f992b0f75a7",
            "imp exemplar seed=0 k=1ep level=1": "imp-b83d86287cf9",
            "eval exemplar winning_ticket seed=0 k=1ep f=0.512": "eval-34b1b3031fe0",
            "dense s4l seed=0": "dense-393aa804050d",
            "imp s4l seed=0 k=1ep level=1": "imp-54c8d46f2bd4",
            "eval s4l winning_ticket seed=0 k=1ep f=0.512": "eval-fa6e45c14eec",
            "dense labels_10pct seed=0": "dense-bc2cf5287262",
            "imp labels_10pct seed=0 k=1ep level=1": "imp-27bf4ec1b8e6",
            "eval labels_10pct winning_ticket seed=0 k=1ep f=0.512": "eval-32c173082b05",
            "random_mask adjusted seed=0 f=0.512": "random_mask-857c274bf6aa",
            "eval adjusted_random reinit seed=0 f=0.512": "eval-c513e5572acc",
        }),
    "layer-wise": (
        _sweep(pruning={"fractions": [0.8, 0.512], "layers": 2}), None, {
            "imp labels seed=0 k=0 level=3": "imp-284909286724",
            "eval labels reinit seed=0 k=0 f=0.512": "eval-64193a21a603",
            "imp rotnet seed=0 k=0 level=2": "imp-534f324b283e",
            "eval rotnet winning_ticket seed=0 k=0 f=0.512": "eval-6c0bfd52eb6d",
            "random_mask seed=0 f=0.512": "random_mask-114ef37cd5c1",
            "eval random reinit seed=0 f=0.512": "eval-8d297461dd9b",
        }),
    "one-shot": (
        _sweep(mask_source=["labels", "random"], pruning={"fractions": [0.8], "one_shot": True}), None, {
            "eval labels winning_ticket seed=0 k=0 f=0.8": "eval-541a299f9ec2",
            "eval labels reinit seed=0 k=0 f=0.8": "eval-d0df1b131f51",
            "random_mask seed=0 f=0.8": "random_mask-48751e07901b",
            "eval random reinit seed=0 f=0.8": "eval-9a66ceca2fa3",
        }),
    "transfer, linear (sgd) and fine-tuning": (
        _sweep(mask_source=["rotnet"], init=["reinit"], pruning={"fractions": [0.8]},
               transfer={"dataset": {"name": "digits"}, "linear": {"recipe": _RECIPE},
                         "finetune": {"recipe": _RECIPE, "compare_prune_during": True}}), None, {
            "imp rotnet seed=0 k=0 level=1": "imp-1f0cf323f794",
            "features rotnet seed=0 k=0 f=0.8": "features-0003b9edce7e",
            "linear_eval rotnet seed=0 k=0 f=0.8": "linear_eval-754aaf2eac14",
            "finetune rotnet seed=0 k=0 f=0.8": "finetune-38ce147480fd",
            "finetune prune_during rotnet seed=0 k=0 f=0.8": "finetune-87ef197d2368",
            "eval rotnet reinit seed=0 k=0 f=0.8": "eval-f6fb9e62b5a0",
        }),
    "transfer, linear (svm, map)": (
        _sweep(mask_source=["rotnet"], init=["reinit"], pruning={"fractions": [0.8]},
               transfer={"dataset": {"name": "digits"}, "linear": {"classifier": "svm", "metric": "map"}}), None, {
            "features rotnet seed=0 k=0 f=0.8": "features-0003b9edce7e",
            "linear_eval rotnet seed=0 k=0 f=0.8": "linear_eval-f11378cbbee2",
        }),
}


@pytest.mark.parametrize("name", PINNED_PLANS)
def test_the_keys_of_every_kind_and_source_are_pinned(name):
    sweep, captured, pinned = PINNED_PLANS[name]
    spec = validate_spec(copy.deepcopy(sweep), "test.yaml")
    plan = plan_sweep(spec, lambda key: captured) if captured is not None else plan_sweep(spec)
    by_label = {stage.label: key for key, stage in plan.stages.items()}
    assert {label: by_label.get(label) for label in pinned} == pinned


def test_every_registered_stage_kind_has_a_pinned_key():
    """A new stage kind must come with a pinned key (add a sweep that plans it to PINNED_PLANS)."""
    pinned = [*PINNED_KEYS.values(), *(key for _, _, keys in PINNED_PLANS.values() for key in keys.values())]
    kinds = {key.rpartition("-")[0] for key in pinned}
    assert set(STAGE_KINDS) - kinds == set(), "stage kinds without a pinned key"
