"""A new mask source is one module: this one.

It declares a toy pretext task, ``flip`` (was the image mirrored left-right?), and a mask
source pruning by IMP on it, registers both, then validates, plans and runs a small sweep
on digits through the real planner and worker. No other file knows about ``flip``: see
``docs/extending/mask-source.md``.
"""
from __future__ import annotations

import functools

import pytest

from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import validate_spec
from orchestrator.state.workspace import materialise
from workers.stages.paths import stage_dir
from workers import catalog
from workers.tasks import registry as task_registry
from workers.stages.artifacts import read_done
from workers.entry import run_stage
from workers.pruning.mask_sources import MASK_SOURCES, ImpSource, register_mask_source
from workers.tasks.registry import TaskDeclaration

# ---- the whole mask source (as docs/extending/mask-source.md shows it) ------------------

TASK = TaskDeclaration("flip", f"{__name__}:flip_task")
SOURCE = ImpSource("flip", "flip")


@functools.cache
def flip_task():
    """Predict whether an image was mirrored left-right; torch is imported only when a stage trains."""
    import torch

    from workers.tasks.objectives import Task

    def batch(images, labels):
        targets = torch.arange(2, device=images.device).repeat_interleave(images.shape[0])
        return torch.cat([images, images.flip(dims=(3,))]), targets

    return Task("flip", lambda spec: 2, batch)

# ---------------------------------------------------------------------------------------

RECIPE = {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.01}
SWEEP = {
    "name": "flip", "workspace": "ws", "dataset": {"name": "digits"}, "arch": {"name": "small_cnn", "width": 4},
    "recipes": {"labels": RECIPE, "flip": RECIPE},
    "pruning": {"fractions": [0.8, 0.64]}, "rewind": [0], "mask_source": ["flip"],
    "init": ["winning_ticket", "reinit"], "seeds": [0],
}


@pytest.fixture
def flip_registered():
    register_mask_source(SOURCE, TASK)
    try:
        yield
    finally:  # the other tests see the built-in registries only
        del MASK_SOURCES["flip"], task_registry.TASKS["flip"]


def test_an_unregistered_source_is_refused():
    assert "flip" not in catalog.MASK_SOURCES
    with pytest.raises(Exception, match="flip"):
        validate_spec(SWEEP, "flip.yaml")


def test_a_mask_source_in_one_module_plans_and_runs_through_the_real_worker(flip_registered, tmp_path):
    assert "flip" in catalog.TASKS and "flip" in catalog.MASK_SOURCES  # the torch-free catalog sees it
    plan = plan_sweep(validate_spec(SWEEP, "flip.yaml"))
    assert dict(plan.counts_by_kind()) == {"dense": 1, "imp": 1, "eval": 4}
    materialise(tmp_path, list(plan.stages.values()))
    for key in plan.stages:  # in dependency order, as a backend would
        run_stage(stage_dir(tmp_path, key))
    dense = next(key for key, stage in plan.stages.items() if stage.kind == "dense")
    assert plan.stages[dense].config["task"] == "flip"
    assert read_done(stage_dir(tmp_path, dense))["metrics"]["task_accuracy"] > 0.6  # it learnt to see flips
    assert {(cell.init, cell.level) for cell in plan.cells} == {(init, level) for init in ("winning_ticket", "reinit")
                                                               for level in (1, 2)}
    for cell in plan.cells:
        metrics = read_done(stage_dir(tmp_path, cell.stage_key))["metrics"]
        assert metrics["top1"] > 0.3 and metrics["fraction_remaining"] == pytest.approx(cell.nominal_fraction, abs=0.01)


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_mask_source(ImpSource("labels", "rotnet"))
    with pytest.raises(ValueError, match="already registered"):
        task_registry.register_task(TaskDeclaration("labels", "workers.tasks.objectives:ROTNET"))
