"""The local backend end to end on a tiny real grid: launch, share, fail, block, kill, resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import results
from conftest import ROOT, TINY
from orchestrator.state.ledger import Ledger
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from workers.stages.paths import DONE_FILE, stage_dir
from workers.stages.artifacts import atomic_write_json

ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _sweep(tmp_path, name="tiny.yaml", workspace="ws", **changes):
    sweep = dict(TINY, workspace=str(tmp_path / workspace), **changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(sweep))
    return path


def cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args), *(["--no-progress"] if args[0] in ("launch", "resume") else [])],
                            capture_output=True, text=True, env=ENV, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _done_times(workspace):
    return {p.parent.name: p.stat().st_mtime_ns for p in (workspace / "stages").glob(f"*/{DONE_FILE}")}


def _top1_by_cell(workspace, seeds=(0,)):
    frame = results.load(workspace)
    return {(r.mask_source, r.init, r.rewind, r.nominal_fraction, r.seed): r.top1 for r in frame.itertuples()
            if r.seed in seeds}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of the tiny grid."""
    tmp_path = tmp_path_factory.mktemp("reference")
    path = _sweep(tmp_path)
    result = cli("launch", path)
    return tmp_path / "ws", path, result


def test_launch_completes_every_cell(reference):
    workspace, path, result = reference
    plan = plan_sweep(load_spec(path))
    assert f"ran {len(plan.stages)} stage(s)" in result.stdout
    frame = results.load(workspace)
    assert len(frame) == len(plan.cells) == 10
    assert frame["top1"].between(0, 1).all() and frame["measured_fraction"].between(0, 1).all()
    status = cli("status", workspace).stdout
    assert "10 of 10 done, 0 missing" in status
    pivot = cli("results", workspace, "--pivot").stdout
    assert "labels / winning_ticket" in pivot and "80.0%" in pivot


def test_relaunch_reruns_nothing_and_new_seed_runs_only_new_stages(reference, tmp_path):
    workspace, path, _ = reference
    before = _done_times(workspace)
    assert "ran 0 stage(s)" in cli("launch", path).stdout
    assert _done_times(workspace) == before
    bigger = plan_sweep(load_spec(path, ["seeds=[0,1]"]))
    new = [key for key in bigger.stages if key not in before]
    assert new and all(bigger.stages[key].config["seed"] == 1 for key in new)
    assert f"ran {len(new)} stage(s)" in cli("launch", path, "seeds=[0,1]").stdout
    after = _done_times(workspace)
    assert {key: after[key] for key in before} == before
    assert len(results.load(workspace)) == 20


def test_failed_stage_blocks_only_its_dependents_and_resume_finishes(tmp_path, reference):
    path = _sweep(tmp_path)
    workspace = tmp_path / "ws"
    plan = plan_sweep(load_spec(path))
    victim = next(k for k, s in plan.stages.items() if s.kind == "imp" and s.config["task"] == "labels"
                  and s.config["level"] == 1)
    broken = plan.stages[victim].to_json()
    broken["config"]["recipe"]["optimizer"] = "no-such-optimizer"
    atomic_write_json(stage_dir(workspace, victim) / "stage.json", broken)

    result = cli("launch", path, check=False)
    assert result.returncode == 1
    ledger = Ledger(workspace)
    states = {row["key"]: row["state"] for row in ledger.stages()}
    ledger.close()
    assert states[victim] == "failed"
    downstream = {k for k, s in plan.stages.items() if s.deps.get("previous") and
                  (s.deps["previous"] == victim or plan.stages.get(s.deps["previous"], None) and
                   plan.stages[s.deps["previous"]].deps.get("previous") == victim)}
    assert downstream and all(states[k] == "blocked" for k in downstream)
    others = set(plan.stages) - downstream - {victim}
    assert all(states[k] == "done" for k in others)
    status = cli("status", workspace).stdout
    assert "no-such-optimizer" in status and victim in status and "missing" in status

    atomic_write_json(stage_dir(workspace, victim) / "stage.json", plan.stages[victim].to_json())  # the fix
    before = _done_times(workspace)
    dry = cli("resume", workspace, "--dry-run").stdout
    assert victim in dry and not any(key in dry for key in before)
    assert f"ran {len(downstream) + 1} stage(s)" in cli("resume", workspace).stdout
    assert {k: v for k, v in _done_times(workspace).items() if k in before} == before
    assert _top1_by_cell(workspace) == _top1_by_cell(reference[0])


def test_sigkill_of_the_process_group_then_resume(tmp_path, reference):
    path = _sweep(tmp_path)
    workspace = tmp_path / "ws"
    launch = subprocess.Popen([sys.executable, "-m", "orchestrator", "launch", str(path), "--no-progress"],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and launch.poll() is None:
        if (workspace / "stages").exists() and len(_done_times(workspace)) >= 6:
            break
        time.sleep(0.2)
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait()
    before = _done_times(workspace)
    assert 0 < len(before) < 17, "the kill should land mid-sweep"
    cli("status", workspace)  # reconciles: the killed stages are no longer running
    ledger = Ledger(workspace)
    assert not [row for row in ledger.stages() if row["state"] == "running"]
    ledger.close()
    result = cli("resume", workspace)
    assert f"ran {17 - len(before)} stage(s)" in result.stdout
    assert {k: v for k, v in _done_times(workspace).items() if k in before} == before
    assert _top1_by_cell(workspace) == _top1_by_cell(reference[0])


def test_results_are_recorded_once(reference):
    workspace, path, _ = reference
    cli("status", workspace)
    cli("results", workspace)
    frame = results.load(workspace)
    keys = ["sweep", "mask_source", "init", "rewind", "nominal_fraction", "seed"]
    assert not frame.duplicated(keys).any()


def _all_gone(pids, within_s):
    def alive(pid):
        try:
            return "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    deadline = time.time() + within_s
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    return not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("stop", [
    pytest.param("ctrl-c", marks=pytest.mark.xfail(strict=False, reason=(
        "known flake, cause not found: in full CI-like runs the launch sometimes ends 0 after the group's SIGINT; "
        "passes alone and under added load (docs/not-yet-here.md)"))),
    "kill"])
def test_ctrl_c_or_kill_stops_cleanly_and_resume_finishes(tmp_path, reference, stop):
    path = _sweep(tmp_path)
    workspace = tmp_path / "ws"
    # one worker, so the 16 stages left after the first one cannot all end before the signal on a loaded machine
    launch = subprocess.Popen([sys.executable, "-m", "orchestrator", "launch", str(path), "--no-progress",
                               "--workers", "1"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and launch.poll() is None:
        if (workspace / "stages").exists() and len(_done_times(workspace)) >= 1:
            break
        time.sleep(0.05)
    assert launch.poll() is None, "the launch ended before the test could stop it"
    workers = [int(pid) for pid in Path(f"/proc/{launch.pid}/task/{launch.pid}/children").read_text().split()]
    if stop == "ctrl-c":
        os.killpg(launch.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    else:
        os.kill(launch.pid, signal.SIGTERM)  # `kill PID`: the driver alone; it must stop its workers
    _, stderr = launch.communicate(timeout=120)
    assert launch.returncode == 130, stderr
    assert workers and _all_gone(workers, within_s=15)
    assert f"prunesweep resume {workspace}" in stderr and "Traceback" not in stderr
    ledger = Ledger(workspace)
    assert not [row for row in ledger.stages() if row["state"] == "running"]
    ledger.close()
    cli("resume", workspace)
    assert _top1_by_cell(workspace) == _top1_by_cell(reference[0])
