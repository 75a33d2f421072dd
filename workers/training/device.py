"""The training device: which one (a distributed rank's own GPU, else the CPU), how model and
data move there, and what the forward pass calls (DDP for a distributed stage, compiled on request).

On a GPU the forward pass and loss run under bf16 autocast, the model is channels-last
and cuDNN picks its fastest kernels (so GPU runs are not bit-reproducible; CPU runs are).
Environment switches: ``PRUNESWEEP_COMPILE=1`` trains a ``torch.compile``-d model;
``PRUNESWEEP_BF16=0`` keeps fp32 on the GPU (``=1`` autocasts on the CPU too);
``PRUNESWEEP_DETERMINISTIC=1`` asks cuDNN for deterministic kernels.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from workers.data.datasets import DataSplit
from workers.training import distributed


def pick_device() -> torch.device:
    """The first CUDA device when one is visible (a distributed rank's own GPU), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    ranks = distributed.current()
    return torch.device("cuda", ranks.local_rank % torch.cuda.device_count()) if ranks else torch.device("cuda")


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "")


def prepare_device(model: nn.Module, data: DataSplit) -> tuple[torch.device, DataSplit, bool]:
    """Move model and data to the training device; returns the device, the data there and whether bf16 is on."""
    device = pick_device()
    if device.type == "cuda":
        deterministic = _flag("PRUNESWEEP_DETERMINISTIC", False)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
    model.to(device=device, memory_format=torch.channels_last)  # ~20% faster convs on CPU
    # bf16 autocast: on by default on a GPU; PRUNESWEEP_BF16=1 turns it on on the CPU too (CI runs the GPU's branch)
    return device, data.to(device), _flag("PRUNESWEEP_BF16", device.type == "cuda")


def forward_module(model: nn.Module, device: torch.device, ranks: distributed.Ranks | None,
                    mask: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """What the forward pass calls: the model, wrapped in DDP for a distributed stage, compiled on request."""
    wrapped = model
    if ranks is not None:
        if mask is not None:
            distributed.check_identical(mask)
        from torch.nn.parallel import DistributedDataParallel  # rank 0's weights reach every rank here

        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(wrapped) if _flag("PRUNESWEEP_COMPILE", False) else wrapped
