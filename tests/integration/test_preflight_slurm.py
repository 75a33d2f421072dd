"""``prunesweep preflight`` as a job of the real local SLURM cluster: it passes, and names what differs on the node."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, TINY

pytestmark = pytest.mark.slurm


def _preflight(tmp_path, slurm_cluster, **slurm):
    sweep = dict(TINY, workspace=str(tmp_path / "ws"), backend="slurm", slurm=slurm, mask_source=["labels"])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return subprocess.run([sys.executable, "-m", "orchestrator", "preflight", str(path), "--timeout", "300"],
                          capture_output=True, text=True, env=dict(slurm_cluster.env, PYTHONPATH=str(ROOT)),
                          timeout=420)


def test_the_preflight_runs_as_one_slurm_job_and_records_the_node(slurm_cluster, tmp_path):
    done = _preflight(tmp_path, slurm_cluster)
    assert done.returncode == 0, done.stdout + done.stderr
    for check in ("data", "training steps", "mask exact", "checkpoint resume", "throughput"):
        assert any(line.startswith("small_cnn/labels/digits") and f" {check} " in f" {line} " and " ok " in line
                   for line in done.stdout.splitlines()), (check, done.stdout)
    record = json.loads(sorted((tmp_path / "ws" / "preflight").glob("*.json"))[-1].read_text())
    assert record["passed"] is True and record["fingerprint"]["backend"] == "slurm"
    slurm_logs = list((tmp_path / "ws" / "slurm").rglob("*_log.out"))
    assert slurm_logs, "the preflight did not run as a SLURM job"


def test_a_package_that_differs_on_the_node_fails_the_packages_check(slurm_cluster, tmp_path):
    site = tmp_path / "node-site"
    dist = site / "PyYAML-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: PyYAML\nVersion: 0.0.1\n")
    os.chmod(site, 0o755)
    done = _preflight(tmp_path, slurm_cluster, setup=[f"export PYTHONPATH={site}:$PYTHONPATH"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(line.startswith("node") and "packages" in line and "FAIL" in line for line in done.stdout.splitlines())
    assert "PyYAML: submitted with" in done.stdout and "node has 0.0.1" in done.stdout
    assert "preflight FAILED (packages)" in done.stderr
