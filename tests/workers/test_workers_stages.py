"""Stage kinds through the entry point: artifacts, metrics, rewinding, skip, damage, kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_workers_support import COMMON, PRUNE_ROUND, ROOT, SMALL_ARCH, UNTRAINED, load, make_stage, run

from workers.stages.artifacts import CorruptArtifact, verify_done
from workers.entry import run_stage
from workers.models import build_model, redraw_head
from workers.pruning.masks import count, is_subset, kept_after_rounds
from workers.training.seeds import derive_seed

DENSE_KEYS = {"task_accuracy", "test_top1", "kept", "total", "fraction_remaining", "zero_fraction",
              "epochs", "iterations", "wall_time_s"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A labels dense run with captures at 0 and 5, and two IMP levels rewound to 5."""
    root = tmp_path_factory.mktemp("ws")
    labels = {**COMMON, "task": "labels"}
    run(root, "dense", "dense", {**labels, "capture_iterations": [0, 5]})
    run(root, "imp1", "imp", {**labels, "rewind_iteration": 5, "mask_rule": PRUNE_ROUND},
        {"previous": "dense", "rewind": "dense"})
    run(root, "imp2", "imp", {**labels, "rewind_iteration": 5, "mask_rule": PRUNE_ROUND},
        {"previous": "imp1", "rewind": "dense"})
    return root


def metrics(stage_dir):
    return json.loads((stage_dir / "metrics.json").read_text())


def test_dense_writes_its_artifacts_and_metrics(workspace):
    dense = workspace / "dense"
    manifest = json.loads((dense / "DONE.json").read_text())
    assert set(manifest["files"]) == {"final.pt", "rewind_0.pt", "rewind_5.pt", "metrics.json"}
    assert set(manifest["metrics"]) == DENSE_KEYS
    assert metrics(dense) == manifest["metrics"]
    m = manifest["metrics"]
    assert m["test_top1"] == m["task_accuracy"] > 0.5
    assert m["kept"] == m["total"] and m["fraction_remaining"] == 1.0 and m["zero_fraction"] == 0.0
    assert m["epochs"] == 2 and m["iterations"] == 22
    assert not (dense / "checkpoint.pt").exists()
    assert "stage dense (dense) done" in (dense / "log.txt").read_text()
    assert "epoch 2/2" in (dense / "log.txt").read_text()
    init = build_model(SMALL_ARCH, 10, 1, seed=0).state_dict()
    assert all(torch.equal(load(dense / "rewind_0.pt")[k], v) for k, v in init.items())


def test_rewind_stage_reproduces_the_dense_capture_bit_for_bit(workspace):
    manifest = run(workspace, "rewind5", "rewind", {**COMMON, "task": "labels", "rewind_iteration": 5})
    assert manifest["metrics"] == {"iteration": 5}
    assert set(manifest["files"]) == {"rewind_5.pt", "metrics.json"}
    assert (workspace / "rewind5" / "rewind_5.pt").read_bytes() == \
        (workspace / "dense" / "rewind_5.pt").read_bytes()


def test_imp_rewinds_to_w_k_times_mask_and_nests_masks(workspace):
    imp1, imp2 = workspace / "imp1", workspace / "imp2"
    total = metrics(workspace / "dense")["total"]
    for level, stage in ((1, imp1), (2, imp2)):
        m = metrics(stage)
        assert m["kept"] == kept_after_rounds(total, 0.2, level) == count(load(stage / "mask.pt"))[0]
        assert m["fraction_remaining"] == pytest.approx(m["kept"] / total)
        assert m["zero_fraction"] >= 1 - m["fraction_remaining"] - 1e-12
        assert m["test_top1"] == m["task_accuracy"]
    assert is_subset(load(imp2 / "mask.pt"), load(imp1 / "mask.pt"))
    final = load(imp2 / "final.pt")
    mask = load(imp2 / "mask.pt")
    assert all(not final[n][~mask[n]].any() for n in mask)

    # with 0 epochs the stage's final weights are its starting weights: W_k * mask exactly
    start = make_stage(workspace, "imp2_start", "imp",
                       {**COMMON, "task": "labels", "recipe": {**COMMON["recipe"], "epochs": 0},
                        "rewind_iteration": 5, "mask_rule": PRUNE_ROUND},
                       {"previous": "imp1", "rewind": "rewind5_for_start"})
    run(workspace, "rewind5_for_start", "rewind", {**COMMON, "task": "labels", "rewind_iteration": 5})
    run_stage(start)
    w_k = load(workspace / "dense" / "rewind_5.pt")
    started = load(start / "final.pt")
    assert torch.equal(load(start / "mask.pt")["features.0.weight"], mask["features.0.weight"])
    for name, tensor in w_k.items():
        expected = tensor * mask[name] if name in mask else tensor
        assert torch.equal(started[name], expected), name


def test_a_done_stage_is_skipped(workspace):
    dense = workspace / "dense"
    before = {p.name: p.stat().st_mtime_ns for p in dense.iterdir()}
    manifest = run_stage(dense)
    assert manifest == json.loads((dense / "DONE.json").read_text())
    assert {p.name: p.stat().st_mtime_ns for p in dense.iterdir()} == before


def test_damage_is_detected_and_a_dependent_refuses_it(tmp_path):
    labels = {**COMMON, "task": "labels", "recipe": {**COMMON["recipe"], "epochs": 1}}
    dense = make_stage(tmp_path, "dense", "dense", {**labels, "capture_iterations": [0]})
    run_stage(dense)
    original = (dense / "final.pt").read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    (dense / "final.pt").write_bytes(bytes(damaged))
    ok, reason = verify_done(dense)
    assert not ok and "final.pt" in reason
    imp = make_stage(tmp_path, "imp", "imp", {**labels, "rewind_iteration": 0, "mask_rule": PRUNE_ROUND},
                     {"previous": "dense", "rewind": "dense"})
    with pytest.raises(CorruptArtifact, match="^dense: final.pt"):
        run_stage(imp)
    assert "CorruptArtifact" in (imp / "log.txt").read_text()
    assert not (imp / "DONE.json").exists()
    # rerunning the damaged stage recomputes it, identically
    run_stage(dense)
    assert verify_done(dense) == (True, "")
    assert (dense / "final.pt").read_bytes() == original
    assert "was damaged" in (dense / "log.txt").read_text()
    run_stage(imp)
    assert verify_done(imp)[0]


def test_eval_winning_ticket_from_rotnet_gets_a_fresh_ten_way_head(workspace):
    rotnet = {**COMMON, "task": "rotnet"}
    dense = run(workspace, "rot_dense", "dense", {**rotnet, "capture_iterations": [0]})
    assert "test_top1" not in dense["metrics"] and dense["metrics"]["task_accuracy"] > 0.4
    assert load(workspace / "rot_dense" / "final.pt")["head.weight"].shape == (4, 16)
    config = {**COMMON, "recipe": {**COMMON["recipe"], "epochs": 0}, "init": "winning_ticket",
              "source_task": "rotnet", "rewind_iteration": 0, "mask_rule": {"kind": "given"}}
    manifest = run(workspace, "eval_start", "eval", config, {"rewind": "rot_dense", "mask": "imp2"})
    assert set(manifest["metrics"]) == {"top1", "test_top1", "kept", "total", "fraction_remaining",
                                        "epochs", "iterations", "wall_time_s"}
    started = load(workspace / "eval_start" / "final.pt")
    w0 = load(workspace / "rot_dense" / "rewind_0.pt")
    mask = load(workspace / "imp2" / "mask.pt")
    head = build_model(SMALL_ARCH, 10, 1, seed=0)
    redraw_head(head, derive_seed(0, "head"))
    assert started["head.weight"].shape == (10, 16)
    assert torch.equal(started["head.weight"], head.head.weight.detach())
    assert torch.equal(started["head.bias"], head.head.bias.detach())
    for name, tensor in w0.items():
        if not name.startswith("head."):
            assert torch.equal(started[name], tensor * mask[name] if name in mask else tensor), name

    trained = run(workspace, "eval_wt", "eval", {**config, "recipe": COMMON["recipe"]},
                  {"rewind": "rot_dense", "mask": "imp2"})
    assert trained["metrics"]["top1"] == trained["metrics"]["test_top1"] > 0.5
    assert trained["metrics"]["kept"] == metrics(workspace / "imp2")["kept"]


def test_eval_from_labels_keeps_the_whole_ticket_and_reinit_differs(workspace):
    base = {**COMMON, "recipe": {**COMMON["recipe"], "epochs": 0},
            "mask_rule": {"kind": "prune_round", "rate": 0.2, "scope": "global"}}
    run(workspace, "eval_lt", "eval", {**base, "init": "winning_ticket", "source_task": "labels",
                                       "rewind_iteration": 5},
        {"rewind": "dense", "previous": "imp1"})
    run(workspace, "eval_re", "eval", {**base, "init": "reinit"}, {"previous": "imp1"})
    ticket, reinit = load(workspace / "eval_lt" / "final.pt"), load(workspace / "eval_re" / "final.pt")
    w5 = load(workspace / "dense" / "rewind_5.pt")
    assert torch.equal(ticket["head.weight"], w5["head.weight"])
    # same rule on the same previous stage: the same mask as imp2
    assert all(torch.equal(load(workspace / "eval_lt" / "mask.pt")[n], m)
               for n, m in load(workspace / "imp2" / "mask.pt").items())
    fresh = build_model(SMALL_ARCH, 10, 1, derive_seed(0, "reinit")).state_dict()
    assert torch.equal(reinit["head.weight"], fresh["head.weight"])
    assert not torch.equal(reinit["head.weight"], ticket["head.weight"])


def test_random_mask_stage_and_one_shot_eval(workspace):
    rule = {"kind": "random", "keep": {"rate": 0.2, "level": 3}}
    manifest = run(workspace, "rand", "random_mask", {**UNTRAINED, "mask_rule": rule})
    total = metrics(workspace / "dense")["total"]
    assert manifest["metrics"] == {"kept": kept_after_rounds(total, 0.2, 3), "total": total,
                                   "fraction_remaining": kept_after_rounds(total, 0.2, 3) / total}
    assert set(manifest["files"]) == {"mask.pt", "metrics.json"}
    other = run(workspace, "rand_seed1", "random_mask", {**UNTRAINED, "seed": 1, "mask_rule": rule})
    assert other["metrics"]["kept"] == manifest["metrics"]["kept"]
    assert not torch.equal(load(workspace / "rand" / "mask.pt")["features.10.weight"],
                           load(workspace / "rand_seed1" / "mask.pt")["features.10.weight"])
    one_shot = run(workspace, "eval_one_shot", "eval",
                   {**COMMON, "recipe": {**COMMON["recipe"], "epochs": 0}, "init": "reinit",
                    "mask_rule": {"kind": "one_shot", "fraction": 0.05, "scope": "global"}},
                   {"previous": "dense"})
    assert one_shot["metrics"]["kept"] == round(0.05 * total)


def test_bad_config_fails_with_a_clear_error_in_the_log(tmp_path):
    stage = make_stage(tmp_path, "bad", "eval",
                       {**COMMON, "init": "reinit", "mask_rule": {"kind": "random", "keep": {"fraction": 0.1}},
                        "recipe": {**COMMON["recipe"], "epochs": 0}})
    run_stage(stage)  # a valid one first
    bad = make_stage(tmp_path, "bad2", "random_mask",
                     {**UNTRAINED, "mask_rule": {"kind": "one_shot", "fraction": 0.1, "scope": "layer"}})
    with pytest.raises(ValueError, match="kind 'random'"):
        run_stage(bad)
    assert "Traceback" in (bad / "log.txt").read_text()
    unknown = make_stage(tmp_path, "bad3", "distill", COMMON)
    with pytest.raises(ValueError, match="unknown kind 'distill'"):
        run_stage(unknown)


def test_the_stage_contract_fails_loudly_on_unknown_or_missing_keys_of_a_stage_that_runs(tmp_path):
    typo = make_stage(tmp_path, "typo", "dense", {**COMMON, "task": "labels", "capture_iteration": [0]})
    with pytest.raises(ValueError, match=r"^stage typo \(dense\): config.capture_iteration: Extra inputs"):
        run_stage(typo)
    missing = make_stage(tmp_path, "missing", "imp", {**COMMON, "task": "labels", "mask_rule": PRUNE_ROUND})
    with pytest.raises(ValueError, match=r"config.rewind_iteration: Field required"):
        run_stage(missing)
    wrong = make_stage(tmp_path, "wrong", "dense", {**COMMON, "task": "flip", "seed": "0"})
    with pytest.raises(ValueError, match=r"config.seed: Input should be a valid integer.*config.task: .*unknown task"):
        run_stage(wrong)
    assert not (missing / "DONE.json").exists() and "Field required" in (missing / "log.txt").read_text()


def test_a_done_stage_is_not_parsed_again(tmp_path):
    """Done stages of older workspaces stay done whatever their config: only a stage that runs is parsed."""
    rule = {"kind": "random", "keep": {"fraction": 0.5}}
    stage = make_stage(tmp_path, "rand", "random_mask", {**UNTRAINED, "mask_rule": rule})
    manifest = run_stage(stage)
    stage_file = stage / "stage.json"
    stage_file.write_text(json.dumps({**json.loads(stage_file.read_text()), "config": {"from": "an older version"}}))
    assert run_stage(stage) == manifest


def subprocess_env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start_worker(stage_dir):
    return subprocess.Popen([sys.executable, "-m", "workers", str(stage_dir)], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_then_rerun_ends_bit_identical(tmp_path):
    config = {**COMMON, "task": "labels", "capture_iterations": [0, 100],
              "recipe": {"epochs": 6, "batch_size": 32, "optimizer": "sgd", "lr": 0.05,
                         "momentum": 0.9, "weight_decay": 5e-4,
                         "schedule": {"kind": "cosine", "warmup_epochs": 1}}}
    reference = make_stage(tmp_path, "reference", "dense", config)
    run_stage(reference)  # uninterrupted, in this process (also one thread)
    victim = make_stage(tmp_path, "victim", "dense", config)
    process = start_worker(victim)
    deadline = time.monotonic() + 120
    while not (victim / "checkpoint.pt").exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (victim / "DONE.json").exists(), "the stage finished before it could be killed"
    epoch_at_kill = torch.load(victim / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= epoch_at_kill < 6

    rerun = start_worker(victim)
    assert rerun.wait(timeout=300) == 0, rerun.communicate()
    assert f"resumed from checkpoint.pt at epoch {epoch_at_kill}" in (victim / "log.txt").read_text()
    for name in ("final.pt", "rewind_0.pt", "rewind_100.pt"):
        assert (victim / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (victim / "checkpoint.pt").exists()
    assert verify_done(victim)[0]


def test_module_entry_exits_1_with_the_traceback_tail(tmp_path):
    stage = make_stage(tmp_path, "broken", "imp", {**COMMON, "task": "labels", "rewind_iteration": 0,
                                                   "mask_rule": PRUNE_ROUND},
                       {"previous": "missing", "rewind": "missing"})
    result = subprocess.run([sys.executable, "-m", "workers", str(stage)], cwd=ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "CorruptArtifact: missing: not run" in result.stderr
    assert "Traceback" in (stage / "log.txt").read_text()
