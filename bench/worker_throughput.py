"""Training images/s: a plain reference loop vs the worker's path, and the cost of exact masks.

For ResNet-18 on CIFAR-shaped data and ResNet-50 on ImageNet-shaped data (synthetic
tensors, random labels), in one run:

- (a) reference: fp32, NCHW, a ``DataLoader`` over a ``TensorDataset`` (shuffled, pinned
  memory on a GPU), ``torch.optim.SGD``, forward / cross-entropy / backward / step;
- (b) worker: ``workers.training.loop.train`` (data held on the device and indexed per step,
  channels-last, bf16 autocast on a GPU, CIFAR flips + crops done on the device for the
  ResNet-18 case; ``PRUNESWEEP_COMPILE=1`` adds ``torch.compile``);
- (c) the worker path with a 5.5%-remaining random mask kept exact (gradient masked before
  and weights masked after every step) vs (b): the cost of exact masks.

Each figure is the best of ``--repeats`` timed epochs (the three paths alternating) after one
warm-up epoch each. On a CPU
the shapes are tiny (the figures only show the code runs and the ratios); on a GPU they are
the real ones. The device is printed first.

    python bench/worker_throughput.py [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from workers.data.datasets import DataSplit  # noqa: E402
from workers.models import build_model  # noqa: E402
from workers.pruning.masks import kept_after_rounds, count, full_mask, random_mask  # noqa: E402
from workers.tasks.objectives import get_task  # noqa: E402
from workers.training.device import pick_device  # noqa: E402
from workers.training.loop import train  # noqa: E402

# name -> (arch, classes, GPU (side, batch, images), CPU (side, batch, images), augment)
CASES = {
    "ResNet-18 / CIFAR-10 shape": ("resnet18", 10, (32, 512, 10240), (16, 16, 64), "flip_crop"),
    "ResNet-50 / ImageNet shape": ("resnet50", 1000, (224, 128, 2560), (32, 8, 32), None),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_epoch(arch: str, classes: int, images: torch.Tensor, labels: torch.Tensor, batch: int,
                    device: torch.device) -> float:
    """Seconds for one epoch of the textbook fp32 loop (after building the model)."""
    model = build_model({"name": arch}, classes, 3, seed=0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=True,
                        pin_memory=device.type == "cuda")
    _sync(device)
    started = time.perf_counter()
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - started


def worker_epoch(arch: str, classes: int, split: DataSplit, batch: int, masked: bool, device: torch.device) -> float:
    """Seconds for one epoch of ``workers.training.loop.train`` (no checkpoint)."""
    model = build_model({"name": arch}, classes, 3, seed=0)
    mask = None
    if masked:
        _, total = count(full_mask(model))
        mask = random_mask(model, kept_after_rounds(total, 0.2, 13), seed=0)  # 0.8^13 = 5.5% remaining
    recipe = {"epochs": 1, "batch_size": batch, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
              "weight_decay": 1e-4}
    _sync(device)
    started = time.perf_counter()
    train(model, get_task("labels"), split, recipe, seed=0, mask=mask)
    _sync(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    for case, (arch, classes, gpu_shape, cpu_shape, augment) in CASES.items():
        side, batch, n = gpu_shape if device.type == "cuda" else cpu_shape
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(n, 3, side, side, generator=generator)
        labels = torch.randint(0, classes, (n,), generator=generator)
        split = DataSplit(images, labels, images[:batch], labels[:batch], augment=augment)
        runs = {"reference": lambda: reference_epoch(arch, classes, images, labels, batch, device),
                "worker": lambda: worker_epoch(arch, classes, split, batch, False, device),
                "worker, exact 5.5% mask": lambda: worker_epoch(arch, classes, split, batch, True, device)}
        for run in runs.values():
            run()  # warm-up: allocator, cuDNN autotuning, compilation
        best = {label: float("inf") for label in runs}
        for _ in range(args.repeats):  # alternating, so a busy neighbour slows every path alike
            for label, run in runs.items():
                best[label] = min(best[label], run())
        steps = -(-n // batch)
        print(f"\n{case}: {n} images of 3x{side}x{side}, batch {batch} ({steps} steps per epoch)")
        for label, seconds in best.items():
            print(f"  {label:<26} {n / seconds:10.1f} images/s   {1000 * seconds / steps:8.1f} ms/step")
        print(f"  worker / reference: {best['reference'] / best['worker']:.2f}x images/s; exact masks cost "
              f"{100 * (best['worker, exact 5.5% mask'] / best['worker'] - 1):+.1f}% step time")


if __name__ == "__main__":
    main()
