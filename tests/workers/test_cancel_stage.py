"""``prunesweep cancel WS --stage KEY`` on the local backend, and the pid ``status`` shows (issue 27, point 4).

A real sweep on digits (two seeds: a dense stage and the IMP stage after it, each) with one
worker: the seed-0 dense stage waits after its first checkpoint. ``status`` shows the pid of
that stage's own process (a process group of its own, not the pool worker), ``cancel --stage``
with a short prefix of its key stops it: it ends cancelled, its IMP stage is blocked with the
cause "cancelled", the seed-1 stages run on in the same worker, in a process of their own,
and ``resume`` runs the two left. Bad keys exit 2 with one line.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from conftest import ROOT, TINY, ledger_states
from waiting import wait_for

from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from orchestrator.state.workspace import stage_dir
from workers.stages.artifacts import CHECKPOINT_FILE, DONE_FILE
from workers.stages.lock import holder

HERE = Path(__file__).resolve().parent
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
#: the driver with the test runner (tests/workers/dying_runner.py: it holds the stages the hold file names).
DRIVER = textwrap.dedent("""
    import functools, sys
    from orchestrator import backends, driver
    driver.get_backend = functools.partial(backends.get_backend, runner="dying_runner:run_stage")
    from orchestrator.cli import main
    sys.exit(main())
""")


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600)


def _wait_for(condition, what: str, timeout: float = 300):
    return wait_for(condition, what, timeout)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` lives (a zombie nobody reaped yet counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _held_at_checkpoint(folder: Path):
    return (folder / CHECKPOINT_FILE).exists() and holder(folder)


def test_cancel_one_stage_blocks_its_dependents_and_the_sweep_goes_on(tmp_path):
    workspace = tmp_path / "ws"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**TINY, "workspace": str(workspace), "seeds": [0, 1], "mask_source": ["labels"],
                                    "init": ["winning_ticket"], "pruning": {"fractions": [0.8]}}))
    stages = plan_sweep(load_spec(path)).stages
    dense = {stage.config["seed"]: key for key, stage in stages.items() if stage.kind == "dense"}
    imp = {stage.config["seed"]: key for key, stage in stages.items() if stage.kind == "imp"}
    assert len(stages) == 4
    hold = tmp_path / "hold"
    hold.write_text(f"{dense[0]},{dense[1]}")
    launch = subprocess.Popen([sys.executable, "-c", DRIVER, "launch", str(path), "--workers", "1", "--no-progress"],
                              env=dict(ENV, PRUNESWEEP_TEST_HOLD=str(hold)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first, second = stage_dir(workspace, dense[0]), stage_dir(workspace, dense[1])
        # the seed-1 stage comes first or second: whichever the one worker runs now is held
        running = _wait_for(lambda: (_held_at_checkpoint(first) and (first, 0)) or
                            (_held_at_checkpoint(second) and (second, 1)), "a held dense stage")
        folder, seed = running
        shown = holder(folder)
        status = _cli("status", workspace).stdout
        assert f"pid {shown.pid} on " in status and "running (1):" in status
        # the stage's own process, leading its own group: not the pool worker (the driver's child)
        worker = _parent(shown.pid)
        assert os.getpgid(shown.pid) == shown.pid and worker != launch.pid and _parent(worker) == launch.pid

        victim = dense[seed]
        cancelled = _cli("cancel", workspace, "--stage", victim[:len("dense-") + 6])  # a short unique prefix
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert f"{victim}: cancelled (signalled process group {shown.pid}" in cancelled.stdout
        assert not _alive(shown.pid)

        # the other seed's stage runs next, in the same worker but a process of its own
        other = dense[1 - seed]
        following = _wait_for(lambda: _held_at_checkpoint(stage_dir(workspace, other)), "the other dense stage")
        assert following.pid != shown.pid and os.getpgid(following.pid) == following.pid
        assert _parent(following.pid) == worker  # the same pool worker forked both
        hold.unlink()
        output, _ = launch.communicate(timeout=600)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, 9)
            launch.wait()
        hold.unlink(missing_ok=True)
    assert launch.returncode == 1, output
    assert "2 done, 0 failed, 1 blocked, 1 cancelled" in output, output

    rows = ledger_states(workspace)
    assert rows[victim]["state"] == "cancelled" and rows[victim]["attempts"] == 1 and not rows[victim]["retried"]
    assert "prunesweep cancel --stage" in rows[victim]["error_message"]
    blocked = imp[seed]
    assert (rows[blocked]["state"], rows[blocked]["error_class"]) == ("blocked", "DependencyCancelled")
    assert {rows[other]["state"], rows[imp[1 - seed]]["state"]} == {"done"}

    status = _cli("status", workspace)
    assert status.returncode == 0
    assert "cancelled stages (1):" in status.stdout and f"  {victim}  " in status.stdout
    assert f"1 blocked: dependency {victim} was cancelled ({blocked})" in status.stdout
    assert f"next: `prunesweep resume {workspace}`" in status.stdout

    # bad input: one line each, exit 2
    for args, expected in [
        ((victim,), f"--stage {victim}: it is cancelled, not running"),
        ((other,), f"--stage {other}: it is done, not running"),
        ((victim[:-1] + ("0" if victim[-1] != "0" else "1"),), f"did you mean {victim}?"),
        (("dense-",), "the prefix matches 2 stages"),
    ]:
        refused = _cli("cancel", workspace, "--stage", *args)
        assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    resumed = _cli("resume", workspace, "--no-progress")
    assert resumed.returncode == 0 and "ran 2 stage(s)" in resumed.stdout and "4 done, 0 failed" in resumed.stdout, \
        resumed.stdout
    assert all((stage_dir(workspace, key) / DONE_FILE).exists() for key in stages)
    assert not (stage_dir(workspace, victim) / "cancel.json").exists()
