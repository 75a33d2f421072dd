"""``prunesweep preflight`` on the real local Ray cluster: the one stage runs as a Ray task with its kind's resources."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, TINY

pytestmark = pytest.mark.ray


def test_the_preflight_runs_on_the_ray_cluster_of_the_sweep(ray_cluster, tmp_path):
    sweep = dict(TINY, workspace=str(tmp_path / "ws"), backend="ray", mask_source=["labels"],
                 ray={"address": ray_cluster.dashboard})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    # from a node of the cluster, as on a head node: Ray finds the cluster from RAY_ADDRESS
    env = dict(ray_cluster.env, PYTHONPATH=str(ROOT), RAY_ADDRESS=ray_cluster.address)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "preflight", str(path), "--timeout", "300"],
                          capture_output=True, text=True, env=env, timeout=420)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "small_cnn/labels/digits  checkpoint resume  ok      bit-identical" in done.stdout, done.stdout
    record = json.loads(sorted((tmp_path / "ws" / "preflight").glob("*.json"))[-1].read_text())
    assert record["passed"] is True and record["fingerprint"]["backend"] == "ray"
    assert not (tmp_path / "ws" / "ray").exists()  # no driver job: the preflight's one task ran from here
