"""Pruning masks over a model's prunable weights.

A mask is a ``dict`` from parameter name to a ``bool`` tensor of that parameter's shape
(``True`` = kept). Only the *prunable* weights have an entry: the ``.weight`` of every
convolution and linear layer except ``head.weight``. BatchNorm parameters, biases and
the head are never masked. Masks live on the CPU; :class:`MaskEnforcer` keeps device
copies for training.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from workers.pruning.counts import kept_after_rounds, prune_count  # noqa: F401 (kept_after_rounds: re-exported)

Mask = dict[str, torch.Tensor]

_PRUNABLE_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
HEAD_NAME = "head"


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the prunable weights in module order: conv/linear ``.weight`` but not the head's."""
    return [f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, _PRUNABLE_MODULES) and name != HEAD_NAME]


def first_conv_names(model: nn.Module, layers: int | None) -> list[str]:
    """The prunable weights a layer-wise rule prunes: the first ``layers`` convolutions.

    ``None`` means every prunable weight (:func:`prunable_names`). Layers are counted in
    module order (conv1 first), so ``layers: 1`` prunes only the first convolution.
    """
    names = prunable_names(model)
    if layers is None:
        return names
    modules = dict(model.named_modules())
    convs = [n for n in names if isinstance(modules[n[: -len(".weight")]], (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not 1 <= int(layers) <= len(convs):
        raise ValueError(f"layers must be in 1..{len(convs)} (the network's convolutions), got {layers}")
    return convs[: int(layers)]


def prunable_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Shape of every prunable weight, in :func:`prunable_names` order."""
    params = dict(model.named_parameters())
    return {name: params[name].shape for name in prunable_names(model)}


def full_mask(model: nn.Module) -> Mask:
    """A mask keeping every prunable weight."""
    return {name: torch.ones(shape, dtype=torch.bool)
            for name, shape in prunable_shapes(model).items()}


def count(mask: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(kept, total)`` numbers of weights of a mask."""
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    return kept, total


def _split_like(flat: torch.Tensor, shapes: Mapping[str, torch.Size]) -> Mask:
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = flat[start:start + size].reshape(shape).clone()
        start += size
    return out


def _drop_smallest(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
                   n_drop: int) -> Mask:
    """Unset the ``n_drop`` surviving entries of smallest magnitude, globally across layers.

    Ties are broken by position in the concatenation of the layers in ``mask`` order.
    """
    names = list(mask)
    missing = [name for name in names if name not in weights]
    if missing:
        raise ValueError(f"weights lack the masked parameters {missing}")
    for name in names:
        if tuple(weights[name].shape) != tuple(mask[name].shape):
            raise ValueError(f"{name}: weight shape {tuple(weights[name].shape)} "
                             f"!= mask shape {tuple(mask[name].shape)}")
    magnitudes = torch.cat([weights[n].detach().cpu().abs().flatten().float() for n in names])
    alive = torch.cat([mask[n].cpu().flatten().bool() for n in names])
    alive_idx = alive.nonzero().flatten()
    if n_drop > alive_idx.numel():
        raise ValueError(f"cannot drop {n_drop} of {alive_idx.numel()} surviving weights")
    order = torch.sort(magnitudes[alive_idx], stable=True).indices
    new_alive = alive.clone()
    new_alive[alive_idx[order[:n_drop]]] = False
    return _split_like(new_alive, {n: mask[n].shape for n in names})


def prune_global_round(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor],
                       rate: float) -> Mask:
    """One global magnitude round: drop ``ceil(rate * kept)`` surviving weights of smallest |w|.

    ``weights`` is a state dict (extra entries such as BatchNorm are ignored); only the
    names in ``mask`` are pruned. The result is a subset of ``mask``.
    """
    kept, _ = count(mask)
    return _drop_smallest(weights, mask, prune_count(kept, rate))


def prune_one_shot(weights: Mapping[str, torch.Tensor], fraction: float,
                   names: Iterable[str] | None = None) -> Mask:
    """Keep the ``round(fraction * total)`` largest-magnitude weights among ``names``.

    ``names`` defaults to every entry of ``weights``; pass :func:`prunable_names` when
    ``weights`` is a whole state dict.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    names = list(weights) if names is None else list(names)
    start = {n: torch.ones(weights[n].shape, dtype=torch.bool) for n in names}
    total = sum(m.numel() for m in start.values())
    keep = int(round(fraction * total))
    return _drop_smallest(weights, start, total - keep)


def random_mask(model_or_shapes: nn.Module | Mapping[str, torch.Size], keep_count: int,
                seed: int) -> Mask:
    """Keep ``keep_count`` prunable weights chosen uniformly at random over all layers.

    One global permutation from a ``torch.Generator`` seeded with ``seed``; the first
    ``keep_count`` positions of it are kept.
    """
    shapes = (prunable_shapes(model_or_shapes) if isinstance(model_or_shapes, nn.Module)
              else {n: torch.Size(s) for n, s in model_or_shapes.items()})
    total = sum(math.prod(s) for s in shapes.values())
    if not 0 <= keep_count <= total:
        raise ValueError(f"keep_count must be in [0, {total}], got {keep_count}")
    generator = torch.Generator().manual_seed(int(seed))
    permutation = torch.randperm(total, generator=generator)
    flat = torch.zeros(total, dtype=torch.bool)
    flat[permutation[:keep_count]] = True
    return _split_like(flat, shapes)


def adjusted_random_mask(weights: Mapping[str, torch.Tensor], names: Iterable[str], keep_count: int,
                         seed: int) -> Mask:
    """The adjusted random baseline: prune the weights that are exactly zero in ``weights``
    first, then random ones among the non-zero weights, until ``keep_count`` remain.

    One global permutation from ``torch.Generator().manual_seed(seed)`` orders the weights;
    zeros are pruned before any non-zero weight (if fewer weights than zeros must go, a
    random subset of the zeros is pruned).
    """
    names = list(names)
    shapes = {n: weights[n].shape for n in names}
    flat = torch.cat([weights[n].detach().cpu().flatten() for n in names])
    total = flat.numel()
    if not 0 <= keep_count <= total:
        raise ValueError(f"keep_count must be in [0, {total}], got {keep_count}")
    generator = torch.Generator().manual_seed(int(seed))
    priority = torch.rand(total, generator=generator) + (flat != 0).float()  # non-zero ranks above every zero
    kept = torch.zeros(total, dtype=torch.bool)
    kept[torch.argsort(priority, descending=True, stable=True)[:keep_count]] = True
    return _split_like(kept, shapes)


def check_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> Mask:
    """Return ``mask`` as bool CPU tensors after checking it matches the model's prunable weights."""
    shapes = prunable_shapes(model)
    if set(mask) != set(shapes):
        raise ValueError(f"mask covers {sorted(mask)}, model's prunable weights are "
                         f"{sorted(shapes)}")
    out = {}
    for name, shape in shapes.items():
        if tuple(mask[name].shape) != tuple(shape):
            raise ValueError(f"mask {name} has shape {tuple(mask[name].shape)}, "
                             f"weight has {tuple(shape)}")
        out[name] = mask[name].detach().cpu().bool()
    return out


def is_subset(inner: Mapping[str, torch.Tensor], outer: Mapping[str, torch.Tensor]) -> bool:
    """True when every weight kept by ``inner`` is kept by ``outer``."""
    return set(inner) == set(outer) and all(
        not bool((inner[n].bool() & ~outer[n].bool()).any()) for n in inner)


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights of ``model`` in place."""
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        params[name].mul_(keep.to(device=params[name].device, dtype=params[name].dtype))


class MaskEnforcer:
    """Keeps a mask exact during training.

    Call :meth:`zero_pruned_grads` after ``backward()`` and :meth:`reapply` after
    ``optimizer.step()``: momentum, weight decay or Adam can then never revive a pruned
    weight. The (parameter, mask) pairs are resolved once, on the parameters' device.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self.pairs = [(params[name], keep.to(device=params[name].device, dtype=params[name].dtype))
                      for name, keep in mask.items()]

    @torch.no_grad()
    def zero_pruned_grads(self) -> None:
        """Multiply the gradients of the masked weights by the mask."""
        for param, keep in self.pairs:
            if param.grad is not None:
                param.grad.mul_(keep)

    @torch.no_grad()
    def reapply(self) -> None:
        """Multiply the masked weights by the mask."""
        for param, keep in self.pairs:
            param.mul_(keep)
