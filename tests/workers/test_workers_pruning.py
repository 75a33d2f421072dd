"""Masks: global magnitude rounds, one-shot, random masks, and masks kept exact in training."""
from __future__ import annotations

import math

import pytest
import torch

from test_workers_support import DIGITS
from workers.data.datasets import load_split
from workers.models import build_model
from workers.pruning.masks import (MaskEnforcer, apply_mask, count, full_mask, is_subset,
                             kept_after_rounds, prunable_names, prune_count, prune_global_round,
                             prune_one_shot, random_mask)
from workers.pruning.rules import derive_mask
from workers.tasks.objectives import get_task
from workers.training.loop import train

CONV_WEIGHTS = ["features.0.weight", "features.3.weight", "features.7.weight",
                "features.10.weight"]


def model(seed=0, width=8):
    return build_model({"name": "small_cnn", "width": width}, 10, 1, seed)


def test_prunable_weights_are_the_conv_and_linear_weights_but_not_the_head():
    net = model()
    assert prunable_names(net) == CONV_WEIGHTS
    mask = full_mask(net)
    assert list(mask) == CONV_WEIGHTS
    assert all(m.dtype == torch.bool and m.all() for m in mask.values())
    kept, total = count(mask)
    assert kept == total == sum(dict(net.named_parameters())[n].numel() for n in CONV_WEIGHTS)
    zero = {name: torch.zeros_like(m) for name, m in mask.items()}
    untouched = {n: p.clone() for n, p in net.named_parameters() if n not in CONV_WEIGHTS}
    assert "head.weight" in untouched and "head.bias" in untouched
    assert any(n.endswith(".bias") and "features" in n for n in untouched)  # BN biases
    apply_mask(net, zero)
    for name, param in net.named_parameters():
        if name in CONV_WEIGHTS:
            assert not param.any()
        else:
            assert torch.equal(param, untouched[name]), name


def test_one_round_prunes_ceil_rate_of_survivors_globally():
    net = model()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    weights["features.10.weight"] *= 0.01  # one layer of tiny weights: a global round empties it first
    mask = full_mask(net)
    _, total = count(mask)
    new = prune_global_round(weights, mask, 0.2)
    assert count(new)[0] == total - math.ceil(0.2 * total)
    assert not new["features.10.weight"].all()
    assert new["features.0.weight"].all()  # the large layers are untouched: not layer-wise
    pruned = torch.cat([weights[n].abs()[~new[n]] for n in new])
    kept = torch.cat([weights[n].abs()[new[n]] for n in new])
    assert pruned.max() <= kept.min()


def test_rounds_nest_and_match_kept_after_rounds():
    net = model()
    mask = full_mask(net)
    _, total = count(mask)
    generator = torch.Generator().manual_seed(0)
    for level in range(1, 8):
        # weights change between rounds, as after retraining; pruned ones stay 0
        weights = {n: torch.randn(p.shape, generator=generator) * mask[n]
                   for n, p in net.named_parameters() if n in mask}
        new = prune_global_round(weights, mask, 0.2)
        assert is_subset(new, mask)
        assert count(new)[0] == kept_after_rounds(total, 0.2, level)
        mask = new


def test_prune_count_is_not_fooled_by_float_noise():
    assert 0.07 * 100 > 7  # 7.000000000000001
    assert prune_count(100, 0.07) == 7
    assert prune_count(101, 0.07) == 8
    assert prune_count(35, 0.2) == 7 and prune_count(36, 0.2) == 8
    assert kept_after_rounds(100, 0.07, 1) == 93
    assert kept_after_rounds(1000, 0.2, 0) == 1000
    with pytest.raises(ValueError):
        prune_count(10, 1.5)


def test_ties_are_broken_by_position():
    weights = {"a": torch.ones(4), "b": torch.ones(4)}
    mask = {"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    new = prune_global_round(weights, mask, 0.25)  # ceil(0.25 * 8) = 2: the first two
    assert new["a"].tolist() == [False, False, True, True] and new["b"].all()


def test_one_shot_keeps_round_fraction_largest():
    net = model()
    state = net.state_dict()
    names = prunable_names(net)
    total = sum(state[n].numel() for n in names)
    for fraction in (0.01, 0.05, 0.5):
        mask = prune_one_shot(state, fraction, names=names)
        assert list(mask) == names
        assert count(mask)[0] == round(fraction * total)
        kept = torch.cat([state[n].abs()[mask[n]] for n in names])
        dropped = torch.cat([state[n].abs()[~mask[n]] for n in names])
        assert dropped.max() <= kept.min()


def test_random_mask_has_the_exact_count_and_depends_on_the_seed():
    net = model()
    _, total = count(full_mask(net))
    keep = kept_after_rounds(total, 0.2, 5)
    a, b, c = random_mask(net, keep, 1), random_mask(net, keep, 1), random_mask(net, keep, 2)
    assert count(a) == count(c) == (keep, total)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    shapes = {n: p.shape for n, p in net.named_parameters() if n in a}
    assert all(torch.equal(random_mask(shapes, keep, 1)[n], a[n]) for n in a)


def test_mask_rules_reject_other_scopes_and_kinds():
    net = model()
    with pytest.raises(ValueError, match="scope 'layerwise' is not supported"):
        derive_mask({"kind": "prune_round", "rate": 0.2, "scope": "layerwise"}, net, {}, 0)
    with pytest.raises(ValueError, match="unknown mask rule kind"):
        derive_mask({"kind": "snip"}, net, {}, 0)
    with pytest.raises(ValueError, match="keep must be"):
        derive_mask({"kind": "random", "keep": {"rate": 0.2}}, net, {}, 0)
    mask = derive_mask({"kind": "random", "keep": {"fraction": 0.05}}, net, {}, 0)
    assert count(mask)[0] == round(0.05 * count(mask)[1])


@pytest.mark.parametrize("recipe", [
    {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-3, "nesterov": True},
    {"optimizer": "adam", "lr": 1e-2, "weight_decay": 5e-3},
])
def test_masked_training_keeps_pruned_weights_exactly_zero(recipe):
    net = model(seed=3)
    mask = random_mask(net, count(full_mask(net))[0] // 10, seed=4)
    # pruned weights start nonzero: training must zero them and keep them zero
    train(net, get_task("labels"), load_split(DIGITS),
          {"epochs": 1, "batch_size": 128, **recipe}, seed=0, mask=mask)
    params = dict(net.named_parameters())
    for name, keep in mask.items():
        assert not params[name].detach()[~keep].any(), name
        assert params[name].detach()[keep].ne(0).float().mean() > 0.99
    assert net.head.weight.ne(0).all()


def test_enforcer_beats_momentum_and_weight_decay():
    net = model(seed=5)
    mask = random_mask(net, 100, seed=6)
    apply_mask(net, mask)
    enforcer = MaskEnforcer(net, mask)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    images = load_split(DIGITS).train_images[:32]
    for _ in range(3):
        optimizer.zero_grad()
        net(images).square().mean().backward()
        enforcer.zero_pruned_grads()
        for name, keep in mask.items():
            assert not dict(net.named_parameters())[name].grad[~keep].any()
        optimizer.step()
        enforcer.reapply()
        assert all(not dict(net.named_parameters())[n].detach()[~k].any() for n, k in mask.items())
