"""Measure the throughput table behind `prunesweep plan --gpu` on this machine's device.

For every (network, dataset) pair the shipped paper sweeps train (``sweeps/paper/*.yaml``:
their networks on their datasets and fine-tuning targets), times the worker's training
path (``workers.training.loop.train``: bf16 autocast and channels-last on a GPU, exact masks
off) on synthetic tensors of the dataset's image shape held on the device, and prints
samples/s. The data loading of image folders (JPEG decoding) is not included: on a node
whose DataLoader cannot keep up, real stages are slower than these figures.

``--write`` adds the figures to ``orchestrator/planning/throughput.json`` under the device's short
name (``H100``, ``H200``, ... from ``torch.cuda.get_device_name``; ``cpu-<n>thread`` on a
CPU), replacing earlier entries of the same (network, dataset, device). Each figure is the
best of ``--repeats`` timed epochs of ``--steps`` optimizer steps after one warm-up epoch.

    python bench/throughput_table.py [--steps 20] [--repeats 3] [--batch N] [--write]
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from orchestrator.planning.gpu_hours import SHORT_NAMES, TABLE_FILE  # noqa: E402
from workers.stages.artifacts import atomic_write_json  # noqa: E402
from workers.data.datasets import DataSplit  # noqa: E402
from workers.models import build_model  # noqa: E402
from workers.tasks.objectives import get_task  # noqa: E402
from workers.training.device import pick_device  # noqa: E402
from workers.training.loop import train  # noqa: E402

#: image side and classes of each dataset the paper sweeps use.
SHAPES = {"cifar10": (32, 10), "imagenet": (224, 1000), "places205": (224, 205), "voc07": (224, 20)}
_SHORT_NAME = re.compile(rf"\b({'|'.join(SHORT_NAMES)})\b")


def paper_pairs() -> list[tuple[str, str, int]]:
    """(network, dataset, per-device batch) of every training the paper sweeps plan."""
    pairs: dict[tuple[str, str], int] = {}
    for path in sorted((ROOT / "sweeps" / "paper").glob("*.yaml")):
        sweep = yaml.safe_load(path.read_text())
        arch = sweep["arch"]["name"]
        batch = min(256, min(recipe["batch_size"] for recipe in sweep["recipes"].values()))
        pairs.setdefault((arch, sweep["dataset"]["name"]), batch)
        target = (sweep.get("transfer") or {}).get("dataset", {}).get("name")
        if target and (sweep["transfer"].get("finetune")):
            pairs.setdefault((arch, target), batch)
    return [(arch, dataset, batch) for (arch, dataset), batch in sorted(pairs.items())]


def device_key(device: torch.device) -> str:
    """The table's name for ``device``: a GPU model's short name, or ``cpu-<threads>thread``."""
    if device.type != "cuda":
        return f"cpu-{torch.get_num_threads()}thread"
    name = torch.cuda.get_device_name(device)
    found = _SHORT_NAME.search(name)
    return found.group(1) if found else name


def epoch_seconds(arch: str, classes: int, split: DataSplit, batch: int, device: torch.device) -> float:
    """Seconds for one epoch of the worker's training path over ``split``."""
    model = build_model({"name": arch}, classes, 3, seed=0)
    recipe = {"epochs": 1, "batch_size": batch, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
              "weight_decay": 1e-4}
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    train(model, get_task("labels"), split, recipe, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    """Print (and with ``--write`` record) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (default: the sweeps', at most 256)")
    parser.add_argument("--only", default=None, help="only this network (e.g. resnet18)")
    parser.add_argument("--write", action="store_true", help="record the figures in orchestrator/planning/throughput.json")
    args = parser.parse_args()
    device = pick_device()
    key = device_key(device)
    print(f"device: {key} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}); "
          f"torch {torch.__version__}")
    measured = []
    for arch, dataset, batch in paper_pairs():
        if args.only and arch != args.only:
            continue
        batch = args.batch or batch
        side, classes = SHAPES[dataset]
        n = batch * args.steps
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(n, 3, side, side, generator=generator)
        labels = torch.randint(0, classes, (n,), generator=generator)
        split = DataSplit(images, labels, images[:batch], labels[:batch],
                          augment="flip_crop" if dataset == "cifar10" else None)
        epoch_seconds(arch, classes, split, batch, device)  # warm-up: allocator, cuDNN autotuning
        best = min(epoch_seconds(arch, classes, split, batch, device) for _ in range(args.repeats))
        rate = n / best
        print(f"  {arch:<9} {dataset:<10} 3x{side}x{side}, batch {batch:>4}: {rate:10.1f} samples/s")
        measured.append({"arch": arch, "dataset": dataset, "device": key, "samples_per_s": round(rate, 1),
                         "measured": f"{datetime.date.today()}, bench/throughput_table.py (batch {batch}, "
                                     f"{args.steps} steps, best of {args.repeats}, synthetic tensors on the device, "
                                     f"decoding not included; torch {torch.__version__})"})
    if args.write and measured:
        table = json.loads(TABLE_FILE.read_text())
        fresh = {(entry["arch"], entry["dataset"], entry["device"]) for entry in measured}
        table["entries"] = [entry for entry in table["entries"]
                            if (entry["arch"], entry["dataset"], entry["device"]) not in fresh] + measured
        atomic_write_json(TABLE_FILE, table)
        print(f"wrote {len(measured)} entries for {key} to {TABLE_FILE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
