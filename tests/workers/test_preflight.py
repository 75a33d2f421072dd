"""``prunesweep preflight`` on the CPU through the local backend: what passes, and each failure it must name."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import yaml
from data_folders import write_image_folder

from orchestrator.commands.preflight import job_failure_row

DIGITS = {
    "name": "pre", "dataset": {"name": "digits"}, "arch": {"name": "small_cnn", "width": 8},
    "recipes": {"labels": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.01}},
    "pruning": {"fractions": [0.8, 0.05]}, "rewind": [0], "mask_source": ["labels"], "init": ["reinit"],
    "seeds": [0],
}


def _sweep(tmp_path: Path, **changes) -> Path:
    sweep = {**DIGITS, "workspace": str(tmp_path / "ws"), **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _prunesweep(*args, env=None, limit_as=None, timeout=600):
    def limits():
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, preexec_fn=limits, timeout=timeout)


def _rows(out: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(target, check) -> (result, figure) of the printed table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split("  ")
        parts = [part.strip() for part in parts if part.strip()]
        if len(parts) >= 3 and parts[2] in ("ok", "FAIL", "-"):
            rows[(parts[0], parts[1])] = (parts[2], parts[3] if len(parts) > 3 else "")
    return rows


def test_a_passing_preflight_checks_every_target_records_its_throughput_and_lets_launch_through(tmp_path):
    sweep = _sweep(tmp_path, mask_source=["labels", "rotnet"], local={"ranks": {"dense": 2, "imp": 2}},
                   recipes={"labels": DIGITS["recipes"]["labels"], "rotnet": DIGITS["recipes"]["labels"]})
    refused = _prunesweep("launch", sweep, "--require-preflight", "--no-progress")
    assert refused.returncode == 2 and "no passing preflight" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "ws" / "ledger.sqlite").exists()

    done = _prunesweep("preflight", sweep, "--timeout", "300")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done.stdout)
    for target in ("small_cnn/labels/digits x2", "small_cnn/rotnet/digits x2", "small_cnn/labels/digits"):
        for check in ("data", "training steps", "mask exact", "checkpoint resume", "throughput"):
            assert rows[(target, check)][0] == "ok", (target, check, done.stdout)
        assert rows[(target, "checkpoint resume")][1] == "bit-identical"
    assert rows[("small_cnn/labels/digits x2", "distributed")] == ("ok", "2 ranks (gloo)")
    assert rows[("small_cnn/labels/digits", "distributed")][0] == "-"
    assert rows[("node", "packages")][0] == "ok"

    records = sorted((tmp_path / "ws" / "preflight").glob("*.json"))
    record = json.loads(records[-1].read_text())
    assert record["passed"] is True and record["fingerprint"]["backend"] == "local"
    device = record["environment"]["device_key"]
    assert device.startswith("cpu-") and {e["device"] for e in record["throughput"]} == {device}

    plan = _prunesweep("plan", sweep)
    assert plan.returncode == 0 and f"CPU-hours on {device}: " in plan.stdout, plan.stdout
    assert "unknown" not in plan.stdout.split(f"CPU-hours on {device}")[1].splitlines()[0]

    noted = _prunesweep("launch", sweep, "seeds=[0]", "pruning.fractions=[0.8]", "mask_source=[labels]",
                        "--require-preflight", "--no-progress")
    assert noted.returncode == 0 and "no passing preflight" not in noted.stderr, noted.stderr

    record["fingerprint"]["packages"]["torch"] = "0.0.1"  # a preflight of other packages counts as none
    records[-1].write_text(json.dumps(record))
    stale = _prunesweep("launch", sweep, "--require-preflight", "--no-progress")
    assert stale.returncode == 2 and "no passing preflight" in stale.stderr


def test_a_corrupt_image_fails_the_data_check_naming_the_file(tmp_path):
    root = write_image_folder(tmp_path / "images", classes=2, train_per_class=4, val_per_class=1, size=(20, 20))
    broken = sorted((root / "train" / "n0001").glob("*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:40])
    sweep = _sweep(tmp_path, dataset={"name": "image_folder", "root": str(root), "image_size": 16},
                   recipes={"labels": {**DIGITS["recipes"]["labels"], "batch_size": 4}})
    done = _prunesweep("preflight", sweep, "--timeout", "300")
    assert done.returncode == 1
    assert _rows(done.stdout)[("small_cnn/labels/image_folder", "data")][0] == "FAIL"
    assert str(broken) in done.stdout and "fix: replace or remove the unreadable image" in done.stdout
    assert "preflight FAILED (data)" in done.stderr
    record = json.loads(sorted((tmp_path / "ws" / "preflight").glob("*.json"))[-1].read_text())
    assert record["passed"] is False and record["throughput"] == []


def _peak_kib_of_a_small_training() -> int:
    code = ("import torch, workers.stages.preflight_steps; from workers.models import build_model; "
            "m = build_model({'name': 'small_cnn', 'width': 8}, 10, 1, 0); m(torch.zeros(64, 1, 8, 8)).sum().backward(); "
            "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_a_batch_beyond_the_jobs_memory_limit_is_named_with_the_largest_that_fits(tmp_path):
    # the job's address space is capped (a scheduler's memory limit): a batch of 4096 wide activations
    # does not fit in 1.2 GiB above what torch itself maps; halving finds one that does
    limit = (_peak_kib_of_a_small_training() << 10) + (1200 << 20)
    sweep = _sweep(tmp_path, arch={"name": "small_cnn", "width": 128}, pruning={"fractions": [0.5]},
                   recipes={"labels": {**DIGITS["recipes"]["labels"], "batch_size": 4096}})
    done = _prunesweep("preflight", sweep, "--timeout", "400", limit_as=limit)
    assert done.returncode == 1, done.stdout + done.stderr
    result, figure = _rows(done.stdout)[("small_cnn/labels/digits", "memory")]
    fits = int(figure.split()[1])
    assert result == "FAIL" and 1 <= fits < 4096 and figure == f"batch {fits} per device fits"
    assert f"a recipe.batch_size of at most {fits} over 1 rank(s)" in done.stdout
    assert _rows(done.stdout)[("small_cnn/labels/digits", "training steps")][0] == "ok"


def test_ranks_that_cannot_meet_fail_the_distributed_check_with_the_fix(tmp_path):
    sweep = _sweep(tmp_path, local={"ranks": {"dense": 2, "imp": 2}}, init=["winning_ticket"])
    done = _prunesweep("preflight", sweep, "--timeout", "120", env={"GLOO_SOCKET_IFNAME": "nonexistent0"})
    assert done.returncode == 1
    assert _rows(done.stdout)[("job 0 (dense, 2 ranks)", "distributed")] == ("FAIL", "2 ranks")
    assert "nonexistent0" in done.stdout and "GLOO_SOCKET_IFNAME" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_the_time_limit_stops_the_job_and_says_so(tmp_path):
    sweep = _sweep(tmp_path, arch={"name": "small_cnn", "width": 64},
                   recipes={"labels": {**DIGITS["recipes"]["labels"], "batch_size": 1024}})
    done = _prunesweep("preflight", sweep, "--timeout", "2", timeout=120)
    assert done.returncode == 1
    assert _rows(done.stdout)[("job 0 (dense, 1 rank)", "job")] == ("FAIL", "timed out")


def _worker_preflight(tmp_path: Path, target_changes: dict, packages: dict) -> list[dict]:
    """The preflight stage run by the worker entry point itself, as a backend runs it on a node."""
    folder = tmp_path / "stage"
    folder.mkdir()
    target = {"label": "t", "dataset": {"name": "digits"}, "arch": {"name": "small_cnn", "width": 4},
              "task": "labels", "recipe": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.1},
              "fraction": 0.1, **target_changes}
    (folder / "stage.json").write_text(json.dumps({"kind": "preflight", "key": "pf", "deps": {},
                                                   "config": {"targets": [target], "packages": packages}}))
    subprocess.run([sys.executable, "-m", "workers", str(folder)], check=True, capture_output=True, timeout=300)
    return json.loads((folder / "preflight.json").read_text())["rows"]


def test_packages_that_differ_on_the_node_are_named(tmp_path):
    from workers.stages.preflight import installed_versions

    submitted = {**installed_versions(), "torch": "0.0.1"}
    rows = {row["check"]: row for row in _worker_preflight(tmp_path, {}, submitted)}
    assert rows["packages"]["ok"] is False
    assert "torch: submitted with 0.0.1, node has" in rows["packages"]["detail"]
    assert rows["training steps"]["ok"] is True


def test_a_data_folder_missing_on_the_node_fails_the_data_check(tmp_path):
    missing = {"name": "image_folder", "root": str(tmp_path / "only-on-the-login-node"), "image_size": 16}
    rows = _worker_preflight(tmp_path, {"dataset": missing}, {})
    data = next(row for row in rows if row["check"] == "data")
    assert data["ok"] is False and "only-on-the-login-node" in data["detail"]
    assert "readable from the compute nodes" in data["fix"]
    assert [row["check"] for row in rows if row["target"] == "t"] == ["data"]  # nothing trains without data


def test_job_failures_are_read_from_their_messages():
    nccl = "Traceback...\ntorch.distributed.DistNetworkError: Connection refused (127.0.0.1:29500)"
    assert job_failure_row("j", "failed", nccl, 4)["check"] == "distributed"
    assert "Connection refused" in job_failure_row("j", "failed", nccl, 4)["detail"]
    assert job_failure_row("j", "failed", nccl, 1)["check"] == "job"  # one rank has no peers to miss
    assert job_failure_row("j", "failed", "timed out after 5 s (--timeout)", 1)["figure"] == "timed out"
    assert job_failure_row("j", "failed", "", 1)["detail"] == "no report"


def test_the_gpus_bf16_autocast_branch_runs_on_the_cpu_with_masks_kept_exact(monkeypatch):
    import math

    import torch

    from workers.data.datasets import load_split
    from workers.models import build_model
    from workers.pruning.masks import random_mask
    from workers.tasks.objectives import get_task
    from workers.training.loop import train

    data, task = load_split({"name": "digits"}), get_task("labels")
    recipe = {"epochs": 1, "batch_size": 128, "optimizer": "sgd", "lr": 0.1}
    trained = {}
    for bf16 in ("0", "1"):
        monkeypatch.setenv("PRUNESWEEP_BF16", bf16)
        model = build_model({"name": "small_cnn", "width": 8}, 10, 1, 0)
        mask = random_mask(model, 300, 0)
        result = train(model, task, data, recipe, 0, mask=mask, stop_at_iteration=4)
        assert math.isfinite(result.last_loss)
        assert all(int((model.get_parameter(n).detach()[~m] != 0).sum()) == 0 for n, m in mask.items())
        assert model.get_parameter("head.weight").dtype == torch.float32  # autocast keeps fp32 master weights
        trained[bf16] = result.last_loss
    assert trained["0"] != trained["1"]  # bf16 arithmetic ran: the losses are not fp32's
