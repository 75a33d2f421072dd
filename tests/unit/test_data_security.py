"""A data folder cannot run code: CIFAR-10 batches are read with a restricted unpickler."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import ROOT
from data_folders import CIFAR_BATCHES, write_cifar
from workers.data import folders


class _Payload:
    """Unpickling this with a plain pickle.load would run ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft(root, marker, batch="data_batch_1"):
    write_cifar(root, per_batch=10)
    path = root / "cifar-10-batches-py" / batch
    data = np.zeros((10, 3072), dtype=np.uint8)
    with open(path, "wb") as handle:
        pickle.dump({b"data": data, b"labels": [0] * 10, b"x": _Payload(marker)}, handle)
    return path


def test_a_crafted_batch_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = _craft(tmp_path / "cifar", marker)
    with pytest.raises(folders.DataFolderError, match=r"data_batch_1: not a pickled CIFAR-10 batch.*posix.system|"
                                                      r"data_batch_1: not a pickled CIFAR-10 batch.*os.system"):
        folders.read_cifar_batch(path)
    assert not marker.exists()


def test_plan_of_a_crafted_folder_exits_2_and_runs_nothing(tmp_path, sweep_dict):
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar"
    _craft(root, marker, batch="test_batch")
    sweep_dict.update(dataset={"name": "cifar10", "root": str(root)}, arch={"name": "resnet18"},
                      workspace=str(tmp_path / "ws"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep_dict))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "orchestrator", "plan", str(path)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "test_batch" in result.stderr and "refused" in result.stderr
    assert not marker.exists() and not (tmp_path / "ws").exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_real_batches_still_load_under_every_protocol(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072)
    for name in CIFAR_BATCHES:
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": [1, 2, 3, 4]}, handle, protocol=protocol)
    pixels, labels = folders.read_cifar_batch(folder / "data_batch_2")
    assert labels == [1, 2, 3, 4] and bytes(pixels) == data.tobytes()
