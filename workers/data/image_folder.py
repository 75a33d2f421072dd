"""ImageFolder images read from disk on demand, and the DataLoader that trains on them.

:class:`LazyImages` stands in for an image tensor in a :class:`workers.data.datasets.DataSplit`
when the images do not fit in memory (ImageNet):

- ``images[a:b]`` (a slice) decodes those images with the evaluation transform (resize,
  central crop, normalise; in :func:`loader_workers` threads) and returns a float tensor
  on the images' device, so the evaluation and feature-extraction loops, which slice,
  work unchanged;
- :func:`eval_batches` yields consecutive evaluation batches (for the accuracy and the
  feature extraction): slices of a tensor, or for lazy images their central crops
  decoded by a ``DataLoader`` with worker processes and pinned memory, so decoding
  overlaps the forward passes;
- ``images[index_tensor]`` returns a *lazy* view of those images (a labelled subset
  stays on disk);
- :func:`train_loader` yields the training batches of one epoch through a
  ``DataLoader`` with worker processes and pinned memory; the random-resized crop and
  flip of the image at position ``p`` of epoch ``e`` come from a generator seeded with
  ``(seed, e, p)``, so a run resumed mid-epoch sees the same views.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from workers.data.augment import center_crop, random_resized_crop_flip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: per-image augmentation seeds: seed * stride + epoch, then * stride + position.
_VIEW_STRIDE = 1_000_003


def _to_tensor(image, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms import functional as TF

    return (TF.pil_to_tensor(image).float().div_(255) - mean) / std


class LazyImages:
    """Images of an ImageFolder split, decoded when sliced (see the module docstring)."""

    def __init__(self, root: Path, files: Sequence[str], size: int, channels: int = 3,
                 device: torch.device | str = "cpu"):
        self.root, self.files, self.size, self.channels = Path(root), tuple(files), int(size), int(channels)
        self.device = torch.device(device)
        self.mean = torch.tensor(IMAGENET_MEAN[:channels] if channels == 3 else (0.5,)).view(-1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD[:channels] if channels == 3 else (0.25,)).view(-1, 1, 1)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, C, size, size)``, like the tensor these images stand for."""
        return (len(self.files), self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def to(self, device: torch.device | str) -> LazyImages:
        """The same images, decoded onto ``device`` from now on."""
        return LazyImages(self.root, self.files, self.size, self.channels, device)

    def open(self, position: int):
        """The PIL image at ``position``, in RGB (or L for one channel)."""
        from PIL import Image

        with Image.open(self.root / self.files[position]) as image:
            return image.convert("RGB" if self.channels == 3 else "L")

    def eval_view(self, position: int) -> torch.Tensor:
        """The normalised central crop of the image at ``position`` (CPU)."""
        return _to_tensor(center_crop(self.open(position), self.size), self.mean, self.std)

    def train_view(self, position: int, view_seed: int) -> torch.Tensor:
        """The normalised random-resized, randomly flipped crop of the image at ``position`` (CPU)."""
        generator = torch.Generator().manual_seed(int(view_seed))
        return _to_tensor(random_resized_crop_flip(self.open(position), self.size, generator), self.mean, self.std)

    def __getitem__(self, index):
        if isinstance(index, slice):
            positions = range(*index.indices(len(self.files)))
            if not positions:
                return torch.empty(0, *self.shape[1:], device=self.device)
            with ThreadPoolExecutor(max(1, loader_workers())) as pool:  # PIL decodes without the GIL
                return torch.stack(list(pool.map(self.eval_view, positions))).to(self.device)
        positions = torch.as_tensor(index).flatten().tolist()
        return LazyImages(self.root, [self.files[p] for p in positions], self.size, self.channels, self.device)


class _TrainViews(torch.utils.data.Dataset):
    """Items are ``(position, view_seed)`` pairs chosen by the batch sampler."""

    def __init__(self, images: LazyImages, labels: torch.Tensor):
        self.images, self.labels = images, labels.cpu()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        position, view_seed = item
        return self.images.train_view(position, view_seed), self.labels[position]


class _EvalViews(torch.utils.data.Dataset):
    """Item ``p`` is the evaluation view of the image at position ``p``."""

    def __init__(self, images: LazyImages):
        self.images = images.to("cpu")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> torch.Tensor:
        return self.images.eval_view(position)


def eval_batches(images: torch.Tensor | LazyImages, batch_size: int) -> Iterator[torch.Tensor]:
    """The images in order, ``batch_size`` at a time, on the images' device.

    A tensor is sliced; :class:`LazyImages` are decoded (central crops) by a DataLoader
    with :func:`loader_workers` processes and pinned memory on CUDA.
    """
    if not isinstance(images, LazyImages):
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size]
        return
    workers = loader_workers()
    loader = torch.utils.data.DataLoader(
        _EvalViews(images), batch_size=batch_size, shuffle=False, num_workers=workers,
        pin_memory=images.device.type == "cuda", prefetch_factor=4 if workers else None)
    for batch in loader:
        yield batch.to(images.device, non_blocking=True)


def loader_workers() -> int:
    """DataLoader worker processes: ``PRUNESWEEP_LOADER_WORKERS`` if set, else the usable
    cores minus one (at most 16)."""
    if "PRUNESWEEP_LOADER_WORKERS" in os.environ:
        return max(0, int(os.environ["PRUNESWEEP_LOADER_WORKERS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(16, cores - 1))


def epoch_view_seed(seed: int, epoch: int) -> int:
    """The seed from which the views of epoch ``epoch`` are derived."""
    return int(seed) * _VIEW_STRIDE + int(epoch)


def train_loader(images: LazyImages, labels: torch.Tensor, order: torch.Tensor, batch_size: int,
                 first_step: int, seed: int, epoch: int, device: torch.device,
                 shard: Callable[[list], list] = lambda batch: batch) \
        -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``first_step, first_step + 1, ...`` of an epoch whose image order is ``order``
    (each cut down by ``shard``: a distributed rank's share).

    Decoding and augmentation run in :func:`loader_workers` processes; batches come in
    pinned memory and are copied to ``device`` without blocking.
    """
    base = epoch_view_seed(seed, epoch) * _VIEW_STRIDE
    order = order.cpu().tolist()
    batches = [shard([(order[p], base + p) for p in range(start, min(start + batch_size, len(order)))])
               for start in range(first_step * batch_size, len(order), batch_size)]
    workers = loader_workers()
    loader = torch.utils.data.DataLoader(
        _TrainViews(images, labels), batch_sampler=batches, num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
        persistent_workers=False)
    for inputs, targets in loader:
        yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
