"""The training batches of an epoch: the data order drawn from the seed and the epoch, the
augmentation drawn after it, and each rank's shard of every batch.

Tensors held on the training device (digits, CIFAR-10) are indexed and augmented there, with
no per-step host work; image folders (:class:`workers.data.image_folder.LazyImages`) go
through a DataLoader with worker processes and pinned memory (``PRUNESWEEP_LOADER_WORKERS=N``
sets its processes).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from workers.data.augment import draw_flip_crop, flip_crop
from workers.data.datasets import DataSplit
from workers.data.image_folder import LazyImages, train_loader
from workers.training import distributed

DATA_ORDER_STRIDE = 1_000_003


def epoch_batches(data: DataSplit, seed: int, epoch: int, batch_size: int, first_step: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches ``(images, labels)`` of ``epoch`` from step ``first_step`` on.

    The order is the permutation of ``torch.Generator().manual_seed(seed * 1_000_003 +
    epoch)``; the same batches come out whatever ``first_step`` is (a mid-epoch resume).
    In a distributed stage each rank gets its shard of every batch
    (:func:`workers.training.distributed.shard`): the shards of all ranks make the whole batch.
    """
    images, labels = data.train_images, data.train_labels
    n_train = images.shape[0]
    generator = torch.Generator().manual_seed(int(seed) * DATA_ORDER_STRIDE + epoch)
    order = torch.randperm(n_train, generator=generator)
    if isinstance(images, LazyImages):
        yield from train_loader(images, labels, order, batch_size, first_step, seed, epoch, device,
                                shard=distributed.shard)
        return
    params = None
    if data.augment == "flip_crop":  # drawn after the order: the order is the same as without
        params = draw_flip_crop(n_train, generator).to(device)
    elif data.augment is not None:
        raise ValueError(f"unknown augmentation {data.augment!r}")
    order = order.to(device)
    for start in range(first_step * batch_size, n_train, batch_size):
        batch = distributed.shard(order[start:start + batch_size])
        inputs = images[batch]
        if params is not None:
            # pads with 0, the mean colour of the normalised images
            inputs = flip_crop(inputs, distributed.shard(params[start:start + batch_size]))
        yield inputs, labels[batch]


def check_shards(n_train: int, batch_size: int, world_size: int) -> None:
    """Refuse a batch that some rank would get no image of (it could not take part in a step)."""
    last = n_train % batch_size or batch_size
    if min(batch_size, last) < world_size:
        raise ValueError(f"recipe.batch_size {batch_size} on {n_train} training images leaves a batch of "
                         f"{min(batch_size, last)} images, fewer than the {world_size} ranks: every rank needs "
                         "at least one image of every batch; choose another batch_size or fewer ranks")
