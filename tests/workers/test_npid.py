"""NPID (instance discrimination with a memory bank): the NCE loss by hand, the bank update,
a bit-identical resume after a crash at the end of an epoch and after a preemption inside
one, and a digits sweep with ``mask_source: [labels, npid]`` and a linear transfer through
``prunesweep launch``."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, TINY
from test_workers_support import DIGITS, SMALL_ARCH, load
from test_workers_training import states_equal

import results
from workers.training import loop as training
from workers.data.datasets import dataset_spec, load_split
from workers.models import build_model
from workers.tasks.instance_discrimination import (
    EMBEDDING_DIM,
    NEGATIVES,
    TEMPERATURE,
    NpidHead,
    bank_scores,
    chunk_rows,
    nce_loss,
    updated_rows,
)
from workers.training.preemption import save_progress
from workers.tasks.objectives import get_task

SPEC = dataset_spec(DIGITS)
RECIPE = {"epochs": 3, "batch_size": 128, "optimizer": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4}


def npid_model(seed=0):
    """A fresh npid task and the small CNN attached to it (its head holds the bank)."""
    task = get_task("npid")
    model = build_model(SMALL_ARCH, task.num_outputs(SPEC), SPEC.in_channels, seed)
    task.attach(model, SPEC, seed)
    return task, model


def test_nce_loss_equals_a_hand_computation():
    scores = [[2.0, 0.5, -1.0], [0.0, 1.5, 3.0]]  # per row: the positive, then m = 2 negatives
    bank_size, m = 4, 2
    z = bank_size * sum(math.exp(s) for row in scores for s in row) / 6
    noise = m / bank_size  # m * P_n

    def h(s):
        return math.exp(s) / z / (math.exp(s) / z + noise)

    expected = sum(-math.log(h(row[0])) - sum(math.log(1 - h(s)) for s in row[1:]) for row in scores) / 2
    assert nce_loss(torch.tensor(scores, dtype=torch.float64), bank_size).item() == pytest.approx(expected, rel=1e-12)


def test_the_memory_bank_moves_half_way_to_the_new_embeddings_and_stays_unit():
    memory = F.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    new = F.normalize(torch.randn(2, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    rows = updated_rows(memory, torch.tensor([3, 1]), new)
    for i, row in enumerate((3, 1)):
        mean = 0.5 * memory[row] + 0.5 * new[i]
        assert torch.allclose(rows[i], mean / mean.norm())
    assert torch.allclose(rows.norm(dim=1), torch.ones(2))


def test_one_training_step_scores_its_positive_against_seeded_negatives_and_updates_the_bank():
    task, model = npid_model()
    head = model.head
    assert isinstance(head, NpidHead) and head.memory.shape == (SPEC.train_size, EMBEDDING_DIM)
    assert torch.allclose(head.memory.norm(dim=1), torch.ones(SPEC.train_size))
    data = task.prepare(load_split(DIGITS), {})
    assert torch.equal(data.train_labels, torch.arange(SPEC.train_size))  # the labels are the positions
    positions = torch.tensor([5, 17, 1000])
    before = head.memory.clone()
    outputs = model(data.train_images[positions])
    embedding = F.normalize(head.embedding.detach(), dim=1)
    # float32 renormalizing moves a score by up to ~1e-6 (AVX-512 here): an absolute tolerance, since a
    # score near 0 leaves the relative one nothing
    assert torch.allclose(outputs, embedding @ before.t() / TEMPERATURE, atol=1e-5)
    torch.manual_seed(11)
    loss = task.loss(outputs, positions)
    torch.manual_seed(11)
    negatives = torch.randint(SPEC.train_size, (3, NEGATIVES))
    columns = torch.cat([positions[:, None], negatives], dim=1)
    expected = nce_loss((embedding[:, None, :] * before[columns]).sum(dim=2) / TEMPERATURE, SPEC.train_size)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.equal(head.memory, before)  # the bank changes with the step, not with the loss
    task.after_step()
    others = torch.ones(SPEC.train_size, dtype=torch.bool)
    others[positions] = False
    assert torch.equal(head.memory[others], before[others])
    assert torch.allclose(head.memory[positions], updated_rows(before, positions, embedding))


def _bank_case(batch=7, bank=50, negatives=9, dim=16):
    """Embeddings from a linear layer (so the gradient reaches weights), a bank, columns with repeats."""
    generator = torch.Generator().manual_seed(4)
    layer = torch.nn.Linear(6, dim, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(dim, 6, generator=generator, dtype=torch.float64))
    inputs = torch.randn(batch, 6, generator=generator, dtype=torch.float64)
    memory = F.normalize(torch.randn(bank, dim, generator=generator, dtype=torch.float64), dim=1)
    columns = torch.randint(bank, (batch, 1 + negatives), generator=generator)
    columns[0, 3] = columns[0, 0]  # a negative that is the positive's own row
    return layer, inputs, memory, columns


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 100])
def test_chunked_scores_give_the_loss_and_gradients_of_the_unchunked_ones(rows):
    layer, inputs, memory, columns = _bank_case()
    found = []
    for chunk in (None, rows):
        layer.zero_grad()
        embedding = F.normalize(layer(inputs), dim=1)
        loss = nce_loss(bank_scores(embedding, memory, columns, chunk), memory.shape[0])
        loss.backward()
        found.append((loss.detach(), layer.weight.grad.clone(), layer.bias.grad.clone()))
    (loss_a, weight_a, bias_a), (loss_b, weight_b, bias_b) = found
    assert weight_a.abs().sum() > 0  # there is a gradient to agree on
    assert torch.allclose(loss_a, loss_b, rtol=1e-13, atol=0)
    assert torch.allclose(weight_a, weight_b, rtol=1e-12, atol=1e-15)
    assert torch.allclose(bias_a, bias_b, rtol=1e-12, atol=1e-15)


def _largest_tensor_made_in_backward(rows):
    """The most elements of one tensor any operation makes while the scores' gradient is computed."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        most = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    Largest.most = max(Largest.most, tensor.numel())
            return out

    # 2-d embeddings: no copy of the bank (300 x 2) is as large as the score gradients measured
    layer, inputs, memory, columns = _bank_case(batch=12, bank=300, negatives=4, dim=2)
    embedding = F.normalize(layer(inputs), dim=1)
    scores = bank_scores(embedding, memory, columns, rows)
    with Largest():
        scores.backward(torch.ones_like(scores))
    return Largest.most


def test_chunking_bounds_what_the_gradient_forms_at_once():
    """Unchunked, the backward pass forms the gradient of all batch x bank scores at once; chunked,
    at most rows x bank (here 12 x 300 against 3 x 300)."""
    assert _largest_tensor_made_in_backward(None) == 12 * 300
    assert _largest_tensor_made_in_backward(3) == 3 * 300
    assert chunk_rows(300, budget=3 * 300 * 4) == 3 and chunk_rows(10**9, budget=1) == 1


def test_the_recipe_sets_the_negatives_each_positive_is_scored_against(monkeypatch):
    """``negatives`` of the recipe reaches the loss through the training loop (4,096 when absent)."""
    import workers.tasks.instance_discrimination as npid

    drawn = []
    original = npid.nce_loss
    monkeypatch.setattr(npid, "nce_loss", lambda scores, bank_size: drawn.append(scores.shape[1]) or
                        original(scores, bank_size))
    for recipe, negatives in (({**RECIPE, "epochs": 1, "negatives": 5}, 5), ({**RECIPE, "epochs": 1}, NEGATIVES)):
        drawn.clear()
        task, model = npid_model()
        result = training.train(model, task, task.prepare(load_split(DIGITS), {}), recipe, seed=0)
        assert drawn and set(drawn) == {1 + negatives} and len(drawn) == result.iterations
    assert NEGATIVES == 4096
    with pytest.raises(ValueError, match="negatives must be an integer > 0"):
        training.validate_recipe({**RECIPE, "negatives": 0})


class Crash(Exception):
    pass


def test_resume_after_a_crash_at_an_epoch_checkpoint_is_bit_identical_bank_included(tmp_path, monkeypatch):
    task, reference = npid_model(seed=3)
    training.train(reference, task, task.prepare(load_split(DIGITS), {}), RECIPE, seed=3)
    save, calls = training.save_checkpoint, []

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        calls.append(args[4])
        if len(calls) == 1:
            raise Crash

    checkpoint = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
    task, model = npid_model(seed=3)
    with pytest.raises(Crash):
        training.train(model, task, task.prepare(load_split(DIGITS), {}), RECIPE, seed=3, checkpoint_path=checkpoint)
    monkeypatch.setattr(training, "save_checkpoint", save)
    assert "head.memory" in torch.load(checkpoint, weights_only=True)["model"]
    task, resumed = npid_model(seed=99)  # another bank and weights: everything must come from the checkpoint
    result = training.train(resumed, task, task.prepare(load_split(DIGITS), {}), RECIPE, seed=3,
                            checkpoint_path=checkpoint)
    assert result.epochs == 3 and result.iterations == 33
    assert not torch.equal(resumed.head.memory, npid_model(seed=3)[1].head.memory)  # the bank did train
    assert states_equal(resumed.state_dict(), reference.state_dict())


class Preempted(Exception):
    pass


@pytest.mark.parametrize("signal_in", ["optimizer_step", "loss"])
def test_a_preemption_inside_an_epoch_resumes_bit_identical_negatives_and_bank_included(
        tmp_path, monkeypatch, signal_in):
    """A save on request in the 7th step (inside epoch 1), in its optimizer step or right after
    its loss: either way it waits for the step's end (the checkpoint holds 7 steps, bank
    included), and the resumed run draws the negatives of the steps after the checkpoint."""
    task, reference = npid_model(seed=5)
    training.train(reference, task, task.prepare(load_split(DIGITS), {}), RECIPE, seed=5)

    def handler(signum, frame):
        save_progress()
        raise Preempted

    make_optimizer, calls = training.make_optimizer, []

    def signal_after(function):
        def then_signal(*args, **kwargs):
            result = function(*args, **kwargs)
            calls.append(1)
            if len(calls) == 7:
                os.kill(os.getpid(), signal.SIGUSR2)
            return result
        return then_signal

    def signalling_optimizer(model, spec):
        optimizer = make_optimizer(model, spec)
        optimizer.step = signal_after(optimizer.step)
        return optimizer

    previous = signal.signal(signal.SIGUSR2, handler)
    checkpoint = tmp_path / "checkpoint.pt"
    try:
        task, model = npid_model(seed=5)
        if signal_in == "optimizer_step":
            monkeypatch.setattr(training, "make_optimizer", signalling_optimizer)
        else:
            task = dataclasses.replace(task, loss=signal_after(task.loss))
        with pytest.raises(Preempted):
            training.train(model, task, task.prepare(load_split(DIGITS), {}), RECIPE, seed=5,
                           checkpoint_path=checkpoint)
    finally:
        signal.signal(signal.SIGUSR2, previous)
        monkeypatch.setattr(training, "make_optimizer", make_optimizer)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["iteration"] == 7 and saved["epoch"] == 0
    task, resumed = npid_model(seed=99)
    training.train(resumed, task, task.prepare(load_split(DIGITS), {}), RECIPE, seed=5, checkpoint_path=checkpoint)
    assert states_equal(resumed.state_dict(), reference.state_dict())


def test_npid_learns_to_retrieve_its_own_images():
    task, model = npid_model()
    data = task.prepare(load_split(DIGITS), {})
    result = training.train(model, task, data, {**RECIPE, "epochs": 8}, seed=0)
    assert result.last_accuracy > 0.2  # own bank row the nearest (chance: 1 / 1347)


def test_a_digits_sweep_with_npid_runs_end_to_end_through_launch(tmp_path):
    """labels and npid masks, winning tickets and reinits retrained on labels, and a linear
    transfer of the pruned npid networks, through the CLI and the local backend."""
    npid_recipe = {"epochs": 2, "batch_size": 128, "optimizer": "sgd", "lr": 0.03, "weight_decay": 5.0e-4}
    sweep = dict(TINY, workspace=str(tmp_path / "ws"), mask_source=["labels", "npid"],
                 recipes={"labels": TINY["recipes"]["labels"], "npid": npid_recipe},
                 transfer={"dataset": {"name": "digits"}, "mask_source": ["npid"],
                           "linear": {"recipe": {"epochs": 2, "batch_size": 256, "optimizer": "adam", "lr": 0.01}}})
    path = tmp_path / "npid.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    launched = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(path), "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=600)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    frame = results.load(tmp_path / "ws")
    npid = frame[frame.mask_source == "npid"]
    retrained = npid[npid.init.isin(["winning_ticket", "reinit"])]
    assert sorted(set(zip(retrained.init, retrained.nominal_fraction, strict=True))) == [
        ("reinit", 0.512), ("reinit", 0.8), ("winning_ticket", 0.512), ("winning_ticket", 0.8)]
    # retrained on labels with a fresh head, for the labels recipe's 2 epochs (too few to test accuracy)
    assert (retrained.epochs == 2).all() and retrained.top1.between(0, 1).all()
    transferred = npid[npid.init == "pretrained"]
    assert len(transferred) == 2 and transferred.top1.between(0, 1).all()
    carries_bank = {}
    for folder in (tmp_path / "ws" / "stages").iterdir():
        stage = json.loads((folder / "stage.json").read_text())
        if (folder / "final.pt").exists():
            carries_bank[(stage["kind"], stage["config"]["task"])] = "head.memory" in load(folder / "final.pt")
        if stage["kind"] == "dense" and stage["config"]["task"] == "npid":
            assert "head.memory" in load(folder / "rewind_0.pt")  # what the IMP levels rewind to
    # the npid networks carry their bank; the evaluations on labels (fresh head) do not
    assert carries_bank == {("dense", "npid"): True, ("imp", "npid"): True, ("dense", "labels"): False,
                            ("imp", "labels"): False, ("eval", "labels"): False}
