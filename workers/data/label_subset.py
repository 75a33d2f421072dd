"""The labelled 10% of a training set used by the ``s4l`` and ``labels_10pct`` tasks.

The choice itself is :func:`workers.data.folders.subset_positions` (the one the datasets'
``subset:`` option uses, so a task's labelled subset and a dataset subset with the same
kind, fraction and seed are the same images): ``images_per_class`` takes
``fraction * n_c`` images of every class (largest-remainder rounding to exactly
``round(fraction * N)``), ``classes`` takes ``round(fraction * C)`` classes with all
their images, both ordered by a seeded hash.
"""
from __future__ import annotations

from workers.data.folders import SUBSET_KINDS, subset_positions

__all__ = ["SUBSET_KINDS", "subset_indices"]


def subset_indices(labels, kind: str, fraction: float, seed: int):
    """Sorted indices (int64 tensor) of the labelled subset of a training set with ``labels``."""
    import torch

    positions = subset_positions(labels.detach().cpu().tolist(), kind, float(fraction), int(seed))
    return torch.tensor(positions, dtype=torch.int64)
