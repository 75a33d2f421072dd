"""Shared helpers of the workers tests (imported by the other test_workers_* files), plus
tests of the small pieces: seeds, the digits dataset, the tasks and the model builder."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # lets a bare `pytest` import the project's packages
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

from workers.stages.artifacts import atomic_write_json  # noqa: E402
from workers.data.datasets import DATASETS, load_split, train_size  # noqa: E402
from workers.entry import run_stage  # noqa: E402
from workers.models import build_model, redraw_head  # noqa: E402
from workers.pruning.masks import first_conv_names  # noqa: E402
from workers.training.seeds import derive_seed  # noqa: E402
from workers.tasks.objectives import evaluate_accuracy, get_task, rotate_batch  # noqa: E402

# The small CNN gains nothing from intra-op threads, and on a shared 2-core machine two
# OpenMP threads per process slow training down >10x; backends run workers with one.
torch.set_num_threads(1)

DIGITS = {"name": "digits"}
SMALL_ARCH = {"name": "small_cnn", "width": 8}
QUICK_RECIPE = {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 3e-3}
COMMON = {"dataset": DIGITS, "arch": SMALL_ARCH, "recipe": QUICK_RECIPE, "seed": 0}
#: the config of a stage that trains nothing (a random mask): no recipe.
UNTRAINED = {"dataset": DIGITS, "arch": SMALL_ARCH, "seed": 0}
PRUNE_ROUND = {"kind": "prune_round", "rate": 0.2, "scope": "global"}


def make_stage(root: Path, name: str, kind: str, config: dict, deps: dict | None = None) -> Path:
    """Write a stage folder ``root/name`` with its stage.json; return the folder."""
    stage_dir = Path(root) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stage_dir / "stage.json", {"kind": kind, "key": name, "identity": {},
                                                 "config": config, "deps": deps or {}})
    return stage_dir


def run(root: Path, name: str, kind: str, config: dict, deps: dict | None = None) -> dict:
    """Write and run a stage; return its manifest."""
    return run_stage(make_stage(root, name, kind, config, deps))


def load(path: Path) -> dict:
    """Load a saved dict of tensors."""
    return torch.load(path, map_location="cpu", weights_only=True)


def test_derive_seed_is_stable_and_separates_tags():
    assert derive_seed(0, "reinit") == derive_seed(0, "reinit")
    seeds = {derive_seed(0, "reinit"), derive_seed(0, "head"), derive_seed(1, "reinit"),
             derive_seed(0, "random_mask")}
    assert len(seeds) == 4
    assert all(0 <= s < 2**31 for s in seeds)


def test_digits_registry_matches_the_real_split():
    split = load_split(DIGITS)
    spec = DATASETS["digits"]
    assert train_size(DIGITS) == spec.train_size == split.train_images.shape[0] == 1347
    assert split.test_images.shape == (450, 1, 8, 8) and split.test_labels.shape == (450,)
    assert split.train_images.dtype == torch.float32 and split.train_labels.dtype == torch.int64
    assert abs(float(split.train_images.mean())) < 1e-4
    assert abs(float(split.train_images.std()) - 1.0) < 1e-3
    assert sorted(split.train_labels.unique().tolist()) == list(range(10))
    with pytest.raises(ValueError, match="unknown dataset"):
        train_size({"name": "mnist"})


def test_rotnet_batch_holds_every_image_in_four_rotations():
    images = load_split(DIGITS).train_images[:5]
    inputs, targets = get_task("rotnet").make_batch(images, torch.zeros(5, dtype=torch.int64))
    assert inputs.shape == (20, 1, 8, 8)
    for k in range(4):
        assert torch.equal(inputs[5 * k:5 * (k + 1)], torch.rot90(images, k, dims=(2, 3)))
        assert targets[5 * k:5 * (k + 1)].tolist() == [k] * 5
    assert torch.equal(rotate_batch(images)[0], inputs)
    spec = DATASETS["digits"]
    assert get_task("labels").num_outputs(spec) == 10 and get_task("rotnet").num_outputs(spec) == 4


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = build_model({"name": "small_cnn", "width": 16}, 10, 1, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    second = build_model({"name": "small_cnn", "width": 16}, 10, 1, seed=7)
    other = build_model({"name": "small_cnn", "width": 16}, 10, 1, seed=8)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.features[0].weight, other.features[0].weight)
    assert first.head.out_features == 10 and first.head.in_features == 32
    assert first(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert all(not hasattr(m, "bias") or m.bias is None
               for m in first.modules() if isinstance(m, torch.nn.Conv2d))
    head_before = first.head.weight.clone()
    redraw_head(first, derive_seed(7, "head"))
    assert not torch.equal(head_before, first.head.weight)
    assert torch.equal(torch.random.get_rng_state(), before)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"name": "resnet"}, 10, 1, seed=0)


def test_untrained_accuracy_is_near_chance_for_both_tasks():
    split = load_split(DIGITS)
    for task_name, chance in (("labels", 0.1), ("rotnet", 0.25)):
        task = get_task(task_name)
        model = build_model(SMALL_ARCH, task.num_outputs(DATASETS["digits"]), 1, seed=0)
        accuracy = evaluate_accuracy(model, task, split.test_images, split.test_labels)
        assert 0.0 <= accuracy < chance + 0.25


def test_catalog_matches_the_registries_and_needs_no_torch():
    import inspect
    import subprocess

    from workers import catalog, models

    from workers.pruning import rule_kinds as mask_rule_kinds

    from workers.pruning import mask_sources

    from workers.stages import registry as stage_registry
    assert catalog.DATASETS["digits"] == {"num_classes": 10, "in_channels": 1,
                                          "train_size": 1347, "test_size": 450}
    assert set(catalog.ARCHITECTURES) == set(models.ARCHITECTURES)
    for name, options in catalog.ARCHITECTURES.items():
        signature = inspect.signature(models.ARCHITECTURES[name])
        assert {k: signature.parameters[k].default for k in options} == options
    from workers.tasks.objectives import get_task
    assert list(catalog.TASKS) == list(mask_sources.TASKS) == [
        "labels", "rotnet", "exemplar", "s4l", "labels_10pct", "npid"]
    assert all(get_task(name).name == name for name in catalog.TASKS)  # every declared task has its implementation
    assert list(catalog.SUBSET_TASKS) == ["s4l", "labels_10pct"] and list(catalog.SUBSET_ONLY_TASKS) == ["labels_10pct"]
    assert list(catalog.MASK_SOURCES) == list(mask_sources.MASK_SOURCES)
    small = models.build_model({"name": "small_cnn", "width": 4}, 10, 1, seed=0)
    assert len(first_conv_names(small, catalog.CONVOLUTIONS["small_cnn"])) == catalog.CONVOLUTIONS["small_cnn"]
    with pytest.raises(ValueError, match="1..4"):
        first_conv_names(small, catalog.CONVOLUTIONS["small_cnn"] + 1)
    assert set(catalog.CONVOLUTIONS) == set(catalog.ARCHITECTURES)  # the paper networks: tests/workers/test_transfer.py
    assert list(catalog.STAGE_KINDS) == ["dense", "rewind", "imp", "random_mask", "eval", "features", "linear_eval",
                                         "finetune"]
    assert all(callable(kind.load()) for kind in stage_registry.STAGE_KINDS.values())
    from workers.stages.contract import StageConfig, StageMetrics
    assert all(issubclass(kind.config_model(), StageConfig) and issubclass(kind.metrics_model(), StageMetrics)
               for kind in stage_registry.STAGE_KINDS.values())
    assert list(catalog.MASK_RULE_KINDS) == list(mask_rule_kinds.MASK_RULE_KINDS)
    assert all(callable(mask_rule_kinds.mask_rule_function(kind)) for kind in catalog.MASK_RULE_KINDS)
    assert catalog.iterations_per_epoch(1347, 64) == 22
    probe = ("import sys, workers.catalog, workers.data.datasets, workers.entry, workers.stages.registry, "
             "orchestrator.planning.planner; "
             "sys.exit(int('torch' in sys.modules or 'sklearn' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], cwd=ROOT).returncode == 0
