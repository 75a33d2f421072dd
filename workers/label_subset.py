"""The labelled 10% of a training set used by the ``s4l`` and ``labels_10pct`` tasks.

Two kinds, both chosen reproducibly from a seed:

- ``images_per_class``: a fraction of the images of every class. The per-class quotas are
  ``fraction * n_c`` rounded by the largest-remainder method so that they add up to
  exactly ``round(fraction * N)``: the subset's size is known from ``N`` alone, which the
  planner needs to turn ``'30ep'`` into optimizer steps without reading the data.
- ``classes``: ``round(fraction * C)`` classes (at least one) with all their images.

Within a class (or among classes) the choice is a permutation drawn from
``torch.Generator().manual_seed(seed)``.
"""
from __future__ import annotations

import math

SUBSET_KINDS = ("images_per_class", "classes")


def _quotas(counts: list[int], fraction: float) -> list[int]:
    """Largest-remainder rounding of ``fraction * count`` per class to ``round(fraction * sum)``."""
    exact = [fraction * n for n in counts]
    quotas = [math.floor(x) for x in exact]
    short = int(round(fraction * sum(counts))) - sum(quotas)
    by_remainder = sorted(range(len(counts)), key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in by_remainder[:max(short, 0)]:
        quotas[c] += 1
    return quotas


def subset_size(train_size: int, kind: str, fraction: float) -> int | None:
    """Images in the subset when it is known from the training-set size alone, else ``None``."""
    if kind == "images_per_class":
        return int(round(fraction * train_size))
    if kind == "classes":
        return None  # depends on which classes are drawn
    raise ValueError(f"unknown subset kind {kind!r}; allowed: {', '.join(SUBSET_KINDS)}")


def subset_indices(labels, kind: str, fraction: float, seed: int):
    """Sorted indices (int64 tensor) of the labelled subset of a training set with ``labels``."""
    import torch

    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
    labels = labels.detach().cpu().long()
    classes = torch.unique(labels).tolist()
    generator = torch.Generator().manual_seed(int(seed))
    if kind == "classes":
        n_classes = max(1, int(round(fraction * len(classes))))
        chosen = torch.tensor(classes)[torch.randperm(len(classes), generator=generator)[:n_classes]]
        picked = torch.isin(labels, chosen).nonzero().flatten()
        return picked.sort().values
    if kind != "images_per_class":
        raise ValueError(f"unknown subset kind {kind!r}; allowed: {', '.join(SUBSET_KINDS)}")
    members = [(labels == c).nonzero().flatten() for c in classes]
    quotas = _quotas([len(m) for m in members], fraction)
    picked = [m[torch.randperm(len(m), generator=generator)[:q]] for m, q in zip(members, quotas)]
    return torch.cat(picked).sort().values
