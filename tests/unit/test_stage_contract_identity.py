"""The planner's output is the worker's input: every stage is built from its kind's config model, whose
``identity_fields`` declare what its key hashes (the keys themselves are pinned in test_stage_keys.py)."""
from __future__ import annotations

import ast
import copy
import hashlib
import json

import pytest
from conftest import BASE_SWEEP, ROOT
from test_stage_keys import PINNED_PLANS

from orchestrator.planning.planner import plan_sweep
from orchestrator.planning.stage_identity import Stage
from orchestrator.spec import validate_spec
from workers.stages.contract import DenseConfig, LinearEvalConfig
from workers.stages.identity import Key, Setting, plan_stage
from workers.stages.registry import STAGE_KINDS

DATASET = {"name": "digits", "root": "/data/here", "image_size": None, "subset": None, "channels": None}
ARCH = {"name": "small_cnn", "width": 16}
RECIPE = {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.1}


def test_every_kind_declares_only_fields_of_its_own_config():
    for kind in STAGE_KINDS.values():
        model = kind.config_model()
        assert set(model.identity_fields) <= set(model.model_fields), (kind.name, model.identity_fields)
        assert all(isinstance(key, Key) for key in model.identity_fields.values())
    planned = {kind.name for kind in STAGE_KINDS.values() if kind.config_model().identity_fields}
    assert planned == set(STAGE_KINDS) - {"preflight"}  # preflight runs beside a sweep and has no key


def test_a_value_is_given_once_and_config_and_identity_follow():
    identity, config = plan_stage(
        DenseConfig, dataset=Setting(DATASET, {"name": "digits", "root": "/data/here"}), arch=Setting(ARCH, {}),
        task="labels", recipe=Setting(RECIPE, {"lr": 0.1}), seed=3, capture_iterations=[0, 11])
    assert config == {"dataset": DATASET, "arch": ARCH, "task": "labels", "recipe": RECIPE, "seed": 3,
                      "capture_iterations": [0, 11]}
    # the root says where the data lives, not what it is; the captures are no part of a dense run's identity
    assert identity == {"dataset": {"name": "digits"}, "arch": {}, "task": "labels", "recipe": {"lr": 0.1}, "seed": 3}


def test_settings_added_later_are_left_out_at_the_value_that_kept_the_old_keys():
    plain = plan_stage(LinearEvalConfig, refs={"features": "features-x"}, target=DATASET, metric="top1", seed=0,
                       recipe=Setting(RECIPE, {}), difficult="negative")
    assert plain[0] == {"features": "features-x", "seed": 0, "recipe": {}}
    assert plain[1]["difficult"] == "negative" and "classifier" not in plain[1]
    svm = plan_stage(LinearEvalConfig, refs={"features": "features-x"}, target=DATASET, metric="map", seed=0,
                     classifier="svm", difficult="ignore")
    assert svm[0] == {"features": "features-x", "seed": 0, "classifier": "svm", "metric": "map", "difficult": "ignore"}


def test_the_contract_refuses_a_stage_the_worker_would_refuse():
    with pytest.raises(ValueError, match="seed"):
        plan_stage(DenseConfig, dataset=DATASET, arch=ARCH, task="labels", recipe=RECIPE, seed="0")
    with pytest.raises(ValueError, match="no_such_setting"):
        plan_stage(DenseConfig, dataset=DATASET, arch=ARCH, task="labels", recipe=RECIPE, seed=0, no_such_setting=1)


@pytest.mark.parametrize("name", ["base", *PINNED_PLANS])
def test_every_planned_stage_parses_as_the_worker_parses_it(name):
    sweep, captured = (BASE_SWEEP, None) if name == "base" else PINNED_PLANS[name][:2]
    spec = validate_spec(copy.deepcopy(sweep), "test.yaml")
    plan = plan_sweep(spec, lambda key: captured) if captured is not None else plan_sweep(spec)
    for key, stage in plan.stages.items():
        parsed = STAGE_KINDS[stage.kind].config_model().model_validate(stage.to_json()["config"])
        assert parsed.model_dump(exclude_unset=True) == stage.config, key


def test_the_planner_builds_no_stage_by_hand():
    """Only through Stage.planned: a config or identity written by hand would bypass the contract."""
    tree = ast.parse((ROOT / "orchestrator" / "planning" / "planner.py").read_text())
    by_hand = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
               and isinstance(node.func, ast.Name) and node.func.id == Stage.__name__]
    assert not by_hand, by_hand


#: sha256 (first 16 hex) of the stage.json of every stage each plan holds (kind, key, label, identity, config,
#: deps): what the planner hands the worker, byte for byte. Like the pinned keys, a change must be deliberate
#: (a stage.json of an existing folder is never rewritten, so its stages would run what they did before).
PINNED_STAGE_FILES = {
    "base": "6432a1427d6302ab",
    "rewind of an existing dense run": "fc9a2b900d5f0e8e",
    "mask sources": "97852cb8f6a2a57e",
    "layer-wise": "3ae848fbb0d2f741",
    "one-shot": "f5be43628c2a7057",
    "transfer, linear (sgd) and fine-tuning": "833baab571d8b2f7",
    "transfer, linear (svm, map)": "a1e3b50795dd7574",
}


@pytest.mark.parametrize("name", PINNED_STAGE_FILES)
def test_the_stage_files_the_planner_writes_are_pinned(name):
    sweep, captured = (BASE_SWEEP, None) if name == "base" else PINNED_PLANS[name][:2]
    spec = validate_spec(copy.deepcopy(sweep), "test.yaml")
    plan = plan_sweep(spec, lambda key: captured) if captured is not None else plan_sweep(spec)
    text = json.dumps([stage.to_json() for stage in plan.stages.values()], sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == PINNED_STAGE_FILES[name]
