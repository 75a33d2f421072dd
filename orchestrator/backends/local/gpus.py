"""Which GPUs this machine shows, and which one each local worker gets.

Found without importing torch (the driver never initialises CUDA): the ids listed by
``CUDA_VISIBLE_DEVICES`` when it is set (a scheduler's allocation), else the GPUs that
``nvidia-smi -L`` lists, else none. Each local worker process is pinned to one GPU by
setting ``CUDA_VISIBLE_DEVICES`` to that id before it starts; the workers spread evenly
over the GPUs (``local.stages_per_gpu`` on each by default: small stages that use a
fraction of a GPU share it).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from typing import Optional

_NVIDIA_SMI_GPU = re.compile(r"^GPU (\d+):", re.MULTILINE)


def visible_gpus(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """The ids of the GPUs a process started from here may use (empty: none)."""
    listed = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        answer = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return _NVIDIA_SMI_GPU.findall(answer.stdout) if answer.returncode == 0 else []


def least_used_gpu(gpus: list[str], in_use: list[Optional[str]]) -> Optional[str]:
    """The GPU of ``gpus`` that the fewest running workers (``in_use``: their GPUs) hold,
    the first listed on a tie; ``None`` when there is no GPU."""
    if not gpus:
        return None
    return min(gpus, key=lambda gpu: (in_use.count(gpu), gpus.index(gpu)))
