"""GPU discovery and the GPU each local worker slot gets (this machine has no GPU: the
discovery runs against a stand-in ``nvidia-smi``; the pinning is checked end to end in
tests/workers/test_local_end_to_end.py through CUDA_VISIBLE_DEVICES)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.backends import StageToRun, get_backend
from orchestrator.backends.local.gpus import least_used_gpu, visible_gpus
from orchestrator.errors import SpecError
from orchestrator.spec import load_spec


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


def test_workers_spread_evenly_over_the_gpus():
    gpus = ["0", "1"]
    assert least_used_gpu(gpus, []) == "0"
    assert least_used_gpu(gpus, ["0"]) == "1"
    assert least_used_gpu(gpus, ["0", "1", "1"]) == "0"
    assert least_used_gpu([], [None]) is None


def record_visible_gpu(folder):
    """A stage runner for the test below: notes the GPU its worker process was given."""
    time.sleep(0.5)  # long enough for the four stages to hold four workers at once
    (Path(folder) / "gpu.txt").write_text(f"{os.environ.get('CUDA_VISIBLE_DEVICES')} {os.getpid()}")


class _Recorder:
    def __init__(self):
        self.finished_keys = []

    def started(self, key, host, pid, job_id=None):
        pass

    def finished(self, key):
        self.finished_keys.append(key)
        return True

    def failed(self, key, error_class, message):
        raise AssertionError(f"{key} failed: {message}")

    blocked = interrupted = failed


def test_each_local_worker_sees_one_gpu_and_stages_per_gpu_workers_share_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what an allocation of two GPUs shows
    backend = get_backend("local", settings={"stages_per_gpu": 2}, runner="test_local_gpus:record_visible_gpu")
    assert backend.gpus == ["0", "1"] and backend.workers == 4
    tasks = [StageToRun(f"s{i}", tmp_path / f"s{i}", (), 0.0) for i in range(4)]
    for task in tasks:
        task.folder.mkdir()
    events = _Recorder()
    backend.run(tasks, events)
    seen = [(tmp_path / f"s{i}" / "gpu.txt").read_text().split() for i in range(4)]
    assert sorted(gpu for gpu, _ in seen) == ["0", "0", "1", "1"]
    assert len({pid for _, pid in seen}) == 4 and len(events.finished_keys) == 4
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert get_backend("local").workers == len(os.sched_getaffinity(0))  # no GPU: one worker per core


def test_stages_per_gpu_is_validated(write_sweep, sweep_dict):
    sweep = {**sweep_dict, "local": {"stages_per_gpu": 0}}
    with pytest.raises(SpecError) as info:
        load_spec(write_sweep(sweep))
    assert info.value.key_path == "local.stages_per_gpu"
