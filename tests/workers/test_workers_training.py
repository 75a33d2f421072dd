"""Training: schedules, captures at exact iterations, resume after a crash."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from test_workers_support import DIGITS, SMALL_ARCH
from workers.training import loop as training
from workers.data.datasets import load_split
from workers.models import build_model
from workers.training.schedule import iterations_per_epoch, learning_rate_at
from workers.tasks.objectives import get_task
from workers.training.checkpoints import cpu_state_dict
from workers.training.loop import train, validate_recipe
from workers.stages.paths import rewind_file

RECIPE = {"epochs": 3, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
          "weight_decay": 5e-4, "schedule": {"kind": "step", "milestones": [2], "gamma": 0.1}}


def fresh_model(seed=0, outputs=10):
    return build_model(SMALL_ARCH, outputs, 1, seed)


def states_equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_schedules():
    assert iterations_per_epoch(1347, 64) == 22
    assert learning_rate_at(0.1, {"kind": "constant"}, 500, 22, 20) == 0.1
    step = {"kind": "step", "milestones": [2, 4], "gamma": 0.5}
    assert [learning_rate_at(1.0, step, i * 10, 10, 6) for i in range(6)] == [1, 1, .5, .5, .25, .25]
    cosine = {"kind": "cosine"}
    assert learning_rate_at(1.0, cosine, 0, 10, 2) == 1.0
    assert learning_rate_at(1.0, cosine, 10, 10, 2) == pytest.approx(0.5)
    warm = {"kind": "cosine", "warmup_epochs": 1}
    assert learning_rate_at(1.0, warm, 0, 10, 3) == pytest.approx(0.1)
    assert learning_rate_at(1.0, warm, 9, 10, 3) == pytest.approx(1.0)
    assert learning_rate_at(1.0, warm, 20, 10, 3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule.kind"):
        learning_rate_at(1.0, {"kind": "poly"}, 0, 10, 3)
    with pytest.raises(ValueError, match="unknown keys"):
        validate_recipe({**RECIPE, "lr_decay": 2})




def test_captures_equal_a_run_stopped_at_that_iteration(tmp_path):
    data, task = load_split(DIGITS), get_task("labels")
    full = fresh_model()
    result = train(full, task, data, RECIPE, seed=1, capture_iterations=[0, 7, 11, 33],
                   capture_dir=tmp_path)
    assert result.iterations == 3 * 11 == 33 and result.epochs == 3
    for k in (0, 7, 11):
        stopped = fresh_model()
        stopped_result = train(stopped, task, data, RECIPE, seed=1, stop_at_iteration=k)
        assert stopped_result.iterations == k
        captured = torch.load(tmp_path / rewind_file(k), weights_only=True)
        assert states_equal(captured, cpu_state_dict(stopped)), k
    assert states_equal(torch.load(tmp_path / rewind_file(33), weights_only=True),
                        cpu_state_dict(full))
    assert states_equal(torch.load(tmp_path / rewind_file(0), weights_only=True),
                        fresh_model().state_dict())
    with pytest.raises(ValueError, match="outside"):
        train(fresh_model(), task, data, RECIPE, seed=1, capture_iterations=[34],
              capture_dir=tmp_path)


def test_training_depends_on_seed_only_through_data_order():
    data, task = load_split(DIGITS), get_task("labels")
    recipe = {**RECIPE, "epochs": 1}
    a, b, c = fresh_model(), fresh_model(), fresh_model()
    train(a, task, data, recipe, seed=1)
    train(b, task, data, recipe, seed=1)
    train(c, task, data, recipe, seed=2)
    assert states_equal(a.state_dict(), b.state_dict())
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


class Crash(Exception):
    pass


@pytest.mark.parametrize("optimizer,lose_capture", [("sgd", False), ("adam", False), ("sgd", True)])
def test_resume_after_a_crash_is_bit_identical(tmp_path, monkeypatch, optimizer, lose_capture):
    """Crash right after the epoch-2 checkpoint; with ``lose_capture`` the capture at 5,
    which the checkpoint has passed, is deleted too: training must then start over."""
    data, task = load_split(DIGITS), get_task("rotnet")
    recipe = {**RECIPE, "epochs": 4, "optimizer": optimizer, "lr": 0.01 if optimizer == "adam" else 0.05}
    reference = fresh_model(outputs=4)
    train(reference, task, data, recipe, seed=3, capture_iterations=[5, 25], capture_dir=tmp_path / "ref")

    save = training.save_checkpoint
    calls = []

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(args[4])
        if len(calls) == 2:
            raise Crash

    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoint.pt"
    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(fresh_model(outputs=4), task, data, recipe, seed=3, checkpoint_path=checkpoint,
              capture_iterations=[5, 25], capture_dir=run_dir)
    monkeypatch.setattr(training, "save_checkpoint", save)
    assert calls == [1, 2] and checkpoint.exists()
    assert (run_dir / rewind_file(5)).exists() and not (run_dir / rewind_file(25)).exists()

    if lose_capture:
        (run_dir / rewind_file(5)).unlink()
    resumed = fresh_model(seed=99 if not lose_capture else 0, outputs=4)  # seed 99: all from the checkpoint
    result = train(resumed, task, data, recipe, seed=3, checkpoint_path=checkpoint,
                   capture_iterations=[5, 25], capture_dir=run_dir)
    assert result.epochs == 4 and result.iterations == 44
    assert states_equal(resumed.state_dict(), reference.state_dict())
    for k in (5, 25):
        assert (run_dir / rewind_file(k)).read_bytes() == (tmp_path / "ref" / rewind_file(k)).read_bytes()


def test_a_checkpoint_of_another_recipe_is_ignored(tmp_path):
    data, task = load_split(DIGITS), get_task("labels")
    checkpoint = tmp_path / "checkpoint.pt"
    train(fresh_model(), task, data, {**RECIPE, "epochs": 1}, seed=0, checkpoint_path=checkpoint)
    fresh, reference = fresh_model(), fresh_model()
    train(fresh, task, data, {**RECIPE, "epochs": 1, "lr": 0.01}, seed=0, checkpoint_path=checkpoint)
    train(reference, task, data, {**RECIPE, "epochs": 1, "lr": 0.01}, seed=0)
    assert states_equal(fresh.state_dict(), reference.state_dict())
    checkpoint.write_bytes(b"not a checkpoint")
    damaged = fresh_model()
    train(damaged, task, data, {**RECIPE, "epochs": 1, "lr": 0.01}, seed=0, checkpoint_path=checkpoint)
    assert states_equal(damaged.state_dict(), reference.state_dict())


def test_zero_epochs_leave_the_model_as_it_was(tmp_path):
    model = fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, get_task("labels"), load_split(DIGITS), {**RECIPE, "epochs": 0}, seed=0,
                   capture_iterations=[0], capture_dir=tmp_path)
    assert result.iterations == 0 and math.isclose(result.epochs, 0)
    assert states_equal(model.state_dict(), before)
    assert states_equal(torch.load(tmp_path / rewind_file(0), weights_only=True), before)


def test_training_seconds_add_up_over_a_resume(tmp_path):
    """A resumed training reports the seconds its checkpoint had cost plus its own."""
    data, task = load_split(DIGITS), get_task("labels")
    checkpoint = tmp_path / "checkpoint.pt"
    first = train(fresh_model(), task, data, RECIPE, seed=0, checkpoint_path=checkpoint,
                  stop_at_iteration=iterations_per_epoch(data.train_images.shape[0], RECIPE["batch_size"]))
    state = torch.load(checkpoint, weights_only=True)
    assert first.epochs == 1 and 0 < state["seconds"] <= first.seconds
    state["seconds"] = 1000.0  # as if the first attempt had run for a long time
    torch.save(state, checkpoint)
    resumed = train(fresh_model(), task, data, RECIPE, seed=0, checkpoint_path=checkpoint)
    assert resumed.epochs == 3 and 1000.0 < resumed.seconds < 1060.0
    assert torch.load(checkpoint, weights_only=True)["seconds"] == pytest.approx(resumed.seconds, abs=1.0)


@pytest.mark.parametrize("batch_counts, images_per_step", [("images", 128), ("samples", 32)])
def test_a_rotnet_batch_size_counts_images_or_samples_as_the_recipe_says(sweep_dict, batch_counts, images_per_step):
    """``batch_counts: samples`` reads RotNet's batch_size 128 as 128 rotated samples, 32 images a step,
    and the planner counts the same steps per epoch (so the rewind step k is the one the worker takes)."""
    from orchestrator.spec import validate_spec

    recipe = {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.01, "batch_counts": batch_counts}
    seen = []
    task = get_task("rotnet")
    counting = dataclasses.replace(task, make_batch=lambda images, labels: (
        seen.append(images.shape[0]) or task.make_batch(images, labels)))
    data = load_split(DIGITS)
    result = train(fresh_model(outputs=4), counting, data, recipe, seed=0)
    n = data.train_images.shape[0]
    assert result.iterations == math.ceil(n / images_per_step) and seen[0] == images_per_step
    assert sum(seen) == n and all(count <= images_per_step for count in seen)
    sweep_dict["recipes"]["rotnet"] = recipe
    assert validate_spec(sweep_dict, "t.yaml").iterations_per_epoch("rotnet") == result.iterations
    assert training.total_iterations(recipe, n, "rotnet") == result.iterations
