"""One worker training epoch vs a plain PyTorch loop on the same model and data.

The plain loop is the textbook one: a ``DataLoader`` over a ``TensorDataset`` with
shuffling, ``torch.optim.Adam``, forward/backward/step. The worker path is
``workers.training.loop.train`` for one epoch (on-device batches by index, per-step learning
rate, epoch checkpoint written), without and with a 5%-remaining mask kept exact.
Both run in this process on one thread, alternating, best of ``--repeats``.

    python bench/worker_epoch.py [--repeats 5] [--task labels|rotnet]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from workers.data.datasets import dataset_spec, load_split  # noqa: E402
from workers.models import build_model  # noqa: E402
from workers.pruning.masks import kept_after_rounds, random_mask, count, full_mask  # noqa: E402
from workers.tasks.objectives import get_task  # noqa: E402
from workers.training.loop import train  # noqa: E402

DATASET = {"name": "digits"}
ARCH = {"name": "small_cnn", "width": 16}
RECIPE = {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.01}


def plain_epoch(task, data) -> float:
    """Seconds for one epoch of the textbook loop."""
    model = build_model(ARCH, task.num_outputs(dataset_spec(DATASET)), 1, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    loader = DataLoader(TensorDataset(data.train_images, data.train_labels), batch_size=RECIPE["batch_size"],
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    model.train()
    for images, labels in loader:
        inputs, targets = task.make_batch(images, labels)
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def worker_epoch(task, data, mask=None) -> float:
    """Seconds for one epoch of the worker's training path."""
    model = build_model(ARCH, task.num_outputs(dataset_spec(DATASET)), 1, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train(model, task, data, RECIPE, seed=0, mask=mask, checkpoint_path=Path(tmp) / "checkpoint.pt")
        return time.perf_counter() - started


def main() -> None:
    """Print best-of-N epoch times and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--task", default="labels", choices=["labels", "rotnet"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = get_task(args.task)
    data = load_split(DATASET)
    model = build_model(ARCH, task.num_outputs(dataset_spec(DATASET)), 1, seed=0)
    total = count(full_mask(model))[1]
    mask = random_mask(model, kept_after_rounds(total, 0.2, 13), seed=0)
    plain_epoch(task, data), worker_epoch(task, data), worker_epoch(task, data, mask)  # warm-up
    plain, worker, masked = [], [], []
    for _ in range(args.repeats):
        plain.append(plain_epoch(task, data))
        worker.append(worker_epoch(task, data))
        masked.append(worker_epoch(task, data, mask))
    best = {name: min(times) for name, times in (("plain", plain), ("worker", worker), ("masked", masked))}
    print(f"one {args.task} epoch on digits ({data.train_images.shape[0]} images, batch {RECIPE['batch_size']}), "
          f"small_cnn width 16, 1 thread, best of {args.repeats}:")
    print(f"  plain PyTorch loop (DataLoader, torch.optim.Adam): {best['plain'] * 1000:7.1f} ms")
    print(f"  worker path, no mask:                              {best['worker'] * 1000:7.1f} ms  "
          f"({best['plain'] / best['worker']:.2f}x the plain loop's speed)")
    print(f"  worker path, 5.5% remaining, mask kept exact:      {best['masked'] * 1000:7.1f} ms  "
          f"(mask cost {100 * (best['masked'] / best['worker'] - 1):+.0f}%)")


if __name__ == "__main__":
    main()
