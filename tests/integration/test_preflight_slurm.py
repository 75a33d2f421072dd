"""``prunesweep preflight`` as a job of the real local SLURM cluster: it passes, and names what differs on the node."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY
from data_folders import write_image_folder

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


#: the user the job of the next test runs as (``sbatch --uid``, root only): a system account without a home.
JOB_USER = "psweeptest"


@pytest.fixture
def job_user():
    """``JOB_USER``, created when missing, allowed to pass through ``/root`` (where the interpreter may live,
    mode 0700) by an ACL entry of its own that the fixture removes afterwards (``acl`` apt-installed if needed)."""
    if shutil.which("setfacl") is None:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "acl"], check=True,
                       capture_output=True, timeout=300)
    if subprocess.run(["id", JOB_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", JOB_USER],
                       check=True, capture_output=True)
    opened = [folder for folder in map(Path, ("/root",)) if sys.executable.startswith(f"{folder}/")]
    for folder in opened:
        subprocess.run(["setfacl", "-m", f"u:{JOB_USER}:x", str(folder)], check=True)
    try:
        probe = subprocess.run(["runuser", "-u", JOB_USER, "--", sys.executable, "-c", "import torch"],
                               capture_output=True, text=True, cwd="/")
        assert probe.returncode == 0, f"{JOB_USER} cannot run {sys.executable}: {probe.stderr[-500:]}"
        yield JOB_USER
    finally:
        for folder in opened:
            subprocess.run(["setfacl", "-x", f"u:{JOB_USER}", str(folder)], check=True)


def test_a_data_folder_only_the_submitting_user_reads_fails_the_data_check(slurm_cluster, job_user):
    """The job runs as another user (``extra_sbatch: {uid: ...}``); the data folder, which the planning side
    reads, is the submitting user's alone (mode 0700): the node cannot read it, and the preflight says so."""
    base = Path(tempfile.mkdtemp(prefix="prunesweep-other-user-"))
    try:
        os.chmod(base, 0o755)
        code = base / "code"  # the job user's copy of the code: the checkout may lie where it cannot read
        for package in ("orchestrator", "workers", "results"):
            shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
        data = write_image_folder(base / "private-data")
        os.chmod(data, 0o700)
        (base / "ws").mkdir(mode=0o777)
        os.chmod(base / "ws", 0o777)
        dataset = {"name": "image_folder", "root": str(data), "image_size": 16}
        sweep = dict(TINY, workspace=str(base / "ws"), backend="slurm", dataset=dataset, mask_source=["labels"],
                     slurm={"extra_sbatch": {"uid": job_user}})
        (base / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        # the job user's process writes into the workspace the driver made; no coverage data file it cannot write
        env = {name: value for name, value in slurm_cluster.env.items() if not name.startswith("COVERAGE_")}
        done = subprocess.run([sys.executable, "-m", "orchestrator", "preflight", str(base / "sweep.yaml"),
                               "--timeout", "300"], capture_output=True, text=True, timeout=420, cwd=base,
                              env=dict(env, PYTHONPATH=str(code)), preexec_fn=lambda: os.umask(0))
        assert done.returncode == 1, done.stdout + done.stderr
        data_rows = [line for line in done.stdout.splitlines() if " data " in f" {line} " and "FAIL" in line]
        assert data_rows and "PermissionError" in done.stdout and str(data) in done.stdout, done.stdout
        assert "readable from the compute nodes" in done.stdout
        assert "preflight FAILED (data)" in done.stderr
        job_uid = pwd.getpwnam(job_user).pw_uid  # the job did run as that user: it wrote files of its own
        assert any(path.stat().st_uid == job_uid for path in (base / "ws").rglob("*")), done.stdout
        print(done.stdout)
    finally:
        shutil.rmtree(base, ignore_errors=True)
