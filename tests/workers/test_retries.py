"""Retries and one live process per stage on the local backend (issue 11, sections 2, 3 and 6).

The smallest real sweep (a dense stage and the IMP stage after it, two epochs each). A worker
SIGKILLed mid-training (a node lost) is retried automatically and ends with the very files
of an undisturbed run; a stage that raises is not retried; a driver killed alone takes its
workers with it, and `resume` finishes; a stage whose lock a live process holds is reported
running with that process and is never started beside it.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY, ledger_states
from waiting import wait_for

from orchestrator import backends, driver
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from workers.stages.artifacts import atomic_write_json
from workers.stages.lock import holder
from workers.stages.paths import CHECKPOINT_FILE, DONE_FILE, LOG_FILE, stage_dir

HERE = Path(__file__).resolve().parent
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
RUNNER = "dying_runner:run_stage"
SMALL = dict(TINY, mask_source=["labels"], init=["winning_ticket"], pruning={"fractions": [0.8]})

#: the driver with the test runner (tests/workers/dying_runner.py), as `python -m orchestrator`.
DRIVER_WITH_TEST_RUNNER = textwrap.dedent(f"""
    import functools, sys
    from orchestrator import backends, driver
    driver.get_backend = functools.partial(backends.get_backend, runner={RUNNER!r})
    from orchestrator.cli import main
    sys.exit(main())
""")


def _sweep(tmp_path: Path, name: str, **changes) -> Path:
    sweep = {**SMALL, "workspace": str(tmp_path / name), **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    extra = ["--no-progress"] if args[0] in ("launch", "resume") else []
    result = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args), *extra], capture_output=True,
                            text=True, env=ENV, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _outcome(workspace: Path) -> dict:
    """stage key -> (its files' checksums, its metrics but the wall time)."""
    outcome = {}
    for done in sorted((workspace / "stages").glob(f"*/{DONE_FILE}")):
        manifest = json.loads(done.read_text())
        metrics = {name: value for name, value in manifest["metrics"].items() if name != "wall_time_s"}
        outcome[done.parent.name] = ({name: entry["sha256"] for name, entry in manifest["files"].items()
                                      if name != "metrics.json"}, metrics)
    return outcome


def _alive(pid: int) -> bool:
    """Whether process ``pid`` lives (a zombie nobody reaped yet counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(condition, what: str, timeout: float = 120):
    return wait_for(condition, what, timeout)


def _keys(path: Path) -> tuple[str, str]:
    stages = plan_sweep(load_spec(path)).stages
    return (next(key for key, stage in stages.items() if stage.kind == "dense"),
            next(key for key, stage in stages.items() if stage.kind == "imp"))


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> dict:
    """The files and metrics of the sweep run without incident."""
    tmp_path = tmp_path_factory.mktemp("undisturbed")
    _cli("launch", _sweep(tmp_path, "ws"))
    return _outcome(tmp_path / "ws")


@pytest.fixture
def test_runner(monkeypatch, tmp_path):
    """Launch in this process with the dying runner; returns the folder of its once-only markers."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("PRUNESWEEP_TEST_MARKS", str(marks))
    monkeypatch.setattr(driver, "get_backend", functools.partial(backends.get_backend, runner=RUNNER))
    return marks


def test_a_worker_killed_mid_training_is_retried_and_ends_with_the_undisturbed_files(tmp_path, monkeypatch,
                                                                                     test_runner, undisturbed):
    path = _sweep(tmp_path, "ws")
    dense, imp = _keys(path)
    monkeypatch.setenv("PRUNESWEEP_TEST_DIE", f"{dense},{imp}")
    _, summary = driver.launch(load_spec(path), str(path), progress=False)
    assert (summary.done, summary.failed, summary.blocked) == (2, 0, 0)
    assert sorted(marker.name for marker in test_runner.iterdir()) == sorted([dense, imp])  # both were killed
    rows = ledger_states(tmp_path / "ws")
    for key in (dense, imp):
        assert rows[key]["state"] == "done" and rows[key]["attempts"] == 2
        assert "attempt 1" in rows[key]["retried"] and "WorkerDied (infrastructure)" in rows[key]["retried"]
        assert "SIGKILL" in rows[key]["retried"]
    assert _outcome(tmp_path / "ws") == undisturbed
    status = _cli("status", tmp_path / "ws").stdout
    assert "retried automatically (2):" in status and "WorkerDied (infrastructure)" in status


def test_retries_are_bounded_by_the_setting(tmp_path, monkeypatch, test_runner):
    path = _sweep(tmp_path, "ws", local={"retries": 0})
    dense, imp = _keys(path)
    monkeypatch.setenv("PRUNESWEEP_TEST_DIE", dense)
    _, summary = driver.launch(load_spec(path), str(path), progress=False)
    assert (summary.done, summary.failed, summary.blocked) == (0, 1, 1)
    rows = ledger_states(tmp_path / "ws")
    assert rows[dense]["error_class"] == "WorkerDied" and rows[dense]["attempts"] == 1 and not rows[dense]["retried"]
    assert rows[imp]["state"] == "blocked"
    assert "[WorkerDied (infrastructure), attempt 1, local on" in _cli("status", tmp_path / "ws", check=False).stdout
    # the next run has its own retries: resume finishes from the killed attempt's checkpoint
    assert "2 done, 0 failed" in _cli("resume", tmp_path / "ws").stdout


def test_a_stage_that_raises_is_not_retried_and_blocks_only_its_dependents(tmp_path):
    path = _sweep(tmp_path, "ws", seeds=[0, 1])
    stages = plan_sweep(load_spec(path)).stages
    victim = next(key for key, stage in stages.items() if stage.kind == "dense" and stage.config["seed"] == 0)
    broken = stages[victim].to_json()
    broken["config"]["recipe"]["optimizer"] = "no-such-optimizer"
    atomic_write_json(stage_dir(tmp_path / "ws", victim) / "stage.json", broken)
    assert _cli("launch", path, check=False).returncode == 1
    rows = ledger_states(tmp_path / "ws")
    assert rows[victim]["state"] == "failed" and rows[victim]["attempts"] == 1 and not rows[victim]["retried"]
    dependents = {key for key, stage in stages.items() if victim in stage.deps.values()}
    assert dependents and {key: rows[key]["state"] for key in dependents} == dict.fromkeys(dependents, "blocked")
    assert {rows[key]["state"] for key in stages if key != victim and key not in dependents} == {"done"}
    assert (stage_dir(tmp_path / "ws", victim) / "error.json").exists()
    status = _cli("status", tmp_path / "ws", check=False).stdout
    assert f"[{rows[victim]['error_class']} (deterministic), attempt 1, local" in status
    assert "retried automatically" not in status


def test_a_driver_killed_alone_takes_its_workers_and_resume_finishes(tmp_path, undisturbed):
    path = _sweep(tmp_path, "ws")
    workspace = tmp_path / "ws"
    dense, imp = _keys(path)
    hold = tmp_path / "hold"
    hold.write_text(dense)  # the dense stage's worker waits after its first checkpoint while this file exists
    launch = subprocess.Popen([sys.executable, "-c", DRIVER_WITH_TEST_RUNNER, "launch", str(path), "--no-progress"],
                              env=dict(ENV, PRUNESWEEP_TEST_HOLD=str(hold)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        folder = stage_dir(workspace, dense)
        worker = _wait_for(lambda: (folder / CHECKPOINT_FILE).exists() and holder(folder), "the first checkpoint")
        assert worker.pid != launch.pid and _alive(worker.pid)
        os.kill(launch.pid, signal.SIGKILL)  # the driver alone, not its process group
        launch.wait()
        _wait_for(lambda: not _alive(worker.pid), "the worker to die with its driver", timeout=20)
        # processes the worker forked inherit the lock's open file and keep it until they exit too
        _wait_for(lambda: holder(folder) is None, "the stage lock to be free", timeout=20)
    finally:
        if launch.poll() is None:
            launch.kill()
        hold.unlink()
    status = _cli("status", workspace).stdout
    assert "running (" not in status and "[Interrupted]" in status
    assert "ran 2 stage(s)" in _cli("resume", workspace).stdout
    logs = {key: (stage_dir(workspace, key) / LOG_FILE).read_text() for key in (dense, imp)}
    assert logs[dense].count(" starting") == 2 and logs[imp].count(" starting") == 1  # never two at once
    assert all(log.count(" done in ") == 1 for log in logs.values())
    assert _outcome(workspace) == undisturbed


ORPHAN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workers.stages.lock import hold
    with hold(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_stage_held_by_a_live_process_is_reported_running_and_never_started_beside_it(tmp_path, undisturbed):
    path = _sweep(tmp_path, "ws")
    workspace = tmp_path / "ws"
    dense, imp = _keys(path)
    folder = stage_dir(workspace, dense)
    folder.mkdir(parents=True)
    # a process of an earlier driver that still runs the dense stage (it holds the stage's lock)
    orphan = subprocess.Popen([sys.executable, "-c", ORPHAN, str(folder)], env=ENV, stdout=subprocess.PIPE, text=True)
    launch = None
    try:
        assert orphan.stdout.readline().strip() == "held"
        launch = subprocess.Popen([sys.executable, "-m", "orchestrator", "launch", str(path), "--no-progress"],
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_for(lambda: (workspace / "ledger.sqlite").exists() and ledger_states(workspace).get(dense, {})
                  and ledger_states(workspace)[dense]["state"] == "running", "the launch to see the orphan")
        status = _cli("status", workspace).stdout
        assert f"{dense}" in status and f"pid {orphan.pid} on " in status and "running (1):" in status
        time.sleep(3)  # the launch waits for the orphan: neither stage starts
        assert launch.poll() is None and not (folder / LOG_FILE).exists()
        assert not (stage_dir(workspace, imp) / LOG_FILE).exists()
        orphan.kill()
        orphan.wait()
        output, _ = launch.communicate(timeout=600)
        assert launch.returncode == 0 and "2 done, 0 failed" in output, output
    finally:
        for process in (orphan, launch):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert (folder / LOG_FILE).read_text().count(" starting") == 1
    assert _outcome(workspace) == undisturbed
