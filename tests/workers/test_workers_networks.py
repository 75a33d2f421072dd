"""The paper's networks: head, prunable weights, shapes, and masks kept exact by real
optimizer steps (SGD with momentum and weight decay) at tiny input sizes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from test_workers_support import ROOT  # noqa: F401  (puts the project on sys.path)
from workers.data.datasets import DataSplit
from workers.models import build_model
from workers.pruning.masks import prunable_names, random_mask
from workers.tasks.objectives import get_task
from workers.training.loop import train

# name -> (smallest convenient input side, first prunable weight, number of prunable weights)
NETWORKS = {
    "resnet18": (16, "conv1.weight", 20),  # 17 3x3 convs + 3 downsample 1x1
    "vgg19": (32, "features.0.weight", 16),
    "resnet50": (32, "conv1.weight", 53),
    "alexnet": (64, "features.0.weight", 7),  # 5 convs + the first two FC layers
}
SGD = {"epochs": 1, "batch_size": 4, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
       "weight_decay": 5e-4, "nesterov": True}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_head_and_prunable_weights(name):
    side, first, count = NETWORKS[name]
    model = build_model({"name": name}, num_outputs=7, in_channels=3, seed=0)
    names = prunable_names(model)
    assert names[0] == first and len(names) == count
    assert "head.weight" not in names and isinstance(model.head, nn.Linear) and model.head.out_features == 7
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n.rsplit(".", 1)[0]], (nn.Conv2d, nn.Linear)) for n in names)  # no BN, no bias
    same = build_model({"name": name}, num_outputs=7, in_channels=3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    assert model(torch.randn(2, 3, side, side)).shape == (2, 7)
    one_channel = build_model({"name": name}, num_outputs=4, in_channels=1, seed=0)
    assert one_channel(torch.randn(2, 1, side, side)).shape == (2, 4)


def test_the_cifar_stem_and_the_single_fc():
    resnet = build_model({"name": "resnet18"}, 10, 3, seed=0)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, nn.Identity)
    vgg = build_model({"name": "vgg19"}, 10, 3, seed=0)
    assert [type(m) for m in vgg.modules()].count(nn.Linear) == 1 and vgg.head.in_features == 512
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 16
    alexnet = build_model({"name": "alexnet"}, 10, 3, seed=0)
    assert alexnet.head.in_features == 4096 and alexnet.features[0].kernel_size == (11, 11)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_masks_stay_exact_through_sgd_with_momentum_and_weight_decay(name):
    torch.manual_seed(0)
    side = NETWORKS[name][0]
    model = build_model({"name": name}, num_outputs=10, in_channels=3, seed=1)
    mask = random_mask(model, sum(p.numel() for n, p in model.named_parameters()
                                       if n in prunable_names(model)) // 5, seed=2)
    images = torch.randn(8, 3, side, side)
    split = DataSplit(images, torch.arange(8) % 10, images[:2], torch.arange(2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(model, get_task("labels"), split, SGD, seed=0, mask=mask)
    assert result.iterations == 2
    params = dict(model.named_parameters())
    for weight_name, keep in mask.items():
        weight = params[weight_name].detach().cpu()
        assert torch.count_nonzero(weight[~keep]) == 0, weight_name  # pruned: exactly zero
    kept_moved = any(not torch.equal(params[n].detach().cpu()[mask[n]], before[n][mask[n]]) for n in mask)
    assert kept_moved and not torch.equal(params["head.weight"].detach().cpu(), before["head.weight"])
