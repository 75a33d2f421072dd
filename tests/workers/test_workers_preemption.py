"""Saving progress on a scheduler's warning signal: mid-epoch, consistent, bit-identical on resume."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from test_workers_support import DIGITS
from test_workers_training import RECIPE, fresh_model, states_equal
from workers.training import loop as training
from workers.data.datasets import load_split
from workers.training.preemption import save_progress, update_guard
from workers.tasks.objectives import EXEMPLAR_DIM, get_task


class Preempted(Exception):
    pass


@pytest.fixture
def usr2_saves_and_stops():
    """SIGUSR2 handled as the SLURM backend does: save progress, then leave the training."""
    calls = []

    def handler(signum, frame):
        calls.append(save_progress())
        raise Preempted

    previous = signal.signal(signal.SIGUSR2, handler)
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_the_update_guard_holds_the_signal_until_its_end(usr2_saves_and_stops):
    seen_inside = None
    with pytest.raises(Preempted):
        with update_guard():
            os.kill(os.getpid(), signal.SIGUSR2)
            seen_inside = list(usr2_saves_and_stops)
    assert seen_inside == [] and usr2_saves_and_stops == [False]  # nothing was training


@pytest.mark.parametrize("task_name,signal_at_step", [
    ("labels", 7),  # inside epoch 1
    ("labels", 11),  # right after its last step
    ("exemplar", 7),  # random views: the resumed run must draw the same ones
])
def test_a_signal_during_an_optimizer_step_saves_a_resumable_mid_epoch_checkpoint(
        tmp_path, monkeypatch, usr2_saves_and_stops, task_name, signal_at_step):
    data, task = load_split(DIGITS), get_task(task_name)
    outputs = EXEMPLAR_DIM if task_name == "exemplar" else 10
    recipe = {**RECIPE, "optimizer": "adam", "lr": 0.01}
    reference = fresh_model(outputs=outputs)
    training.train(reference, task, data, recipe, seed=5)

    make_optimizer = training.make_optimizer
    steps = []

    def signalling_optimizer(model, spec):
        optimizer = make_optimizer(model, spec)
        step = optimizer.step

        def step_then_signal(*args, **kwargs):
            result = step(*args, **kwargs)
            steps.append(1)
            if len(steps) == signal_at_step:  # the signal lands inside the weight update
                os.kill(os.getpid(), signal.SIGUSR2)
            return result

        optimizer.step = step_then_signal
        return optimizer

    checkpoint = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(training, "make_optimizer", signalling_optimizer)
    with pytest.raises(Preempted):
        training.train(fresh_model(outputs=outputs), task, data, recipe, seed=5, checkpoint_path=checkpoint)
    monkeypatch.setattr(training, "make_optimizer", make_optimizer)
    saved = torch.load(checkpoint, weights_only=True)
    assert usr2_saves_and_stops == [True]
    assert saved["iteration"] == signal_at_step and saved["epoch"] == 0  # 11 steps per epoch

    resumed = fresh_model(seed=99, outputs=outputs)  # everything must come from the checkpoint
    result = training.train(resumed, task, data, recipe, seed=5, checkpoint_path=checkpoint)
    assert result.iterations == 33 and result.epochs == 3
    assert states_equal(resumed.state_dict(), reference.state_dict())


def test_a_save_requested_inside_the_forward_pass_resumes_bit_identically(tmp_path):
    """The forward pass moves BatchNorm's running statistics before the weights move: the save waits for the step."""
    import dataclasses
    import os
    import signal

    import torch

    from workers.training import loop as training
    from workers.data.datasets import load_split
    from workers.models import build_model
    from workers.training.preemption import save_progress
    from workers.tasks.objectives import get_task

    recipe = {"epochs": 3, "batch_size": 128, "optimizer": "sgd", "lr": 0.03}
    task, data = get_task("labels"), load_split({"name": "digits"})
    reference = build_model({"name": "small_cnn", "width": 8}, 10, 1, 0)
    training.train(reference, task, data, recipe, seed=5)

    class Preempted(Exception):
        pass

    def handler(signum, frame):
        save_progress()
        raise Preempted

    calls = []

    def loss(outputs, targets):  # the signal arrives between the forward pass and the optimizer step
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGUSR2)
        return task.loss(outputs, targets)

    previous = signal.signal(signal.SIGUSR2, handler)
    checkpoint = tmp_path / "checkpoint.pt"
    try:
        with pytest.raises(Preempted):
            training.train(build_model({"name": "small_cnn", "width": 8}, 10, 1, 0),
                           dataclasses.replace(task, loss=loss), data, recipe, seed=5, checkpoint_path=checkpoint)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 7
    resumed = build_model({"name": "small_cnn", "width": 8}, 10, 1, 0)
    training.train(resumed, task, data, recipe, seed=5, checkpoint_path=checkpoint)
    for (name, a), b in zip(resumed.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
