"""GPU discovery and the GPU each local worker slot gets (this machine has no GPU: the
discovery runs against a stand-in ``nvidia-smi``; the pinning is checked end to end in
tests/test_local_end_to_end.py through CUDA_VISIBLE_DEVICES)."""
from __future__ import annotations

import os

from orchestrator.backends.gpus import slot_gpu, visible_gpus


def test_an_allocation_s_visible_devices_win():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_nvidia_smi_lists_the_gpus_otherwise(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n"
                   "echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert visible_gpus({}) == ["0", "1"]


def test_without_nvidia_smi_there_is_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus({}) == []


def test_slots_go_round_robin_and_each_gpu_takes_its_share():
    gpus = ["0", "1"]
    assert [slot_gpu(slot, gpus, 2) for slot in range(5)] == ["0", "1", "0", "1", None]
    assert [slot_gpu(slot, gpus, 1) for slot in range(3)] == ["0", "1", None]
    assert slot_gpu(0, [], 4) is None
