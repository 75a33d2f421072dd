"""``launch`` writes its stage folders in one batch (issue 16) with the same crash safety:
killed at any point, every ``stage.json`` on disk is complete, the ledger names only stages
whose folders are written, and the next launch finishes the job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from orchestrator.state.ledger import Ledger
from orchestrator.planning.stage_identity import Stage
from orchestrator.state.workspace import materialise
from workers.stages.paths import STAGES_DIR, STAGE_FILE, stage_dir
from workers.stages.artifacts import read_stage

N = 3000

_LAUNCH = """
import sys
from orchestrator.state.ledger import Ledger
from orchestrator.planning.stage_identity import Stage
from orchestrator.state.workspace import materialise
stages = [Stage("dense", {"seed": i}, {"seed": i, "pad": "x" * 400}, label=f"dense {i}", epochs=1)
          for i in range(int(sys.argv[2]))]
materialise(sys.argv[1], stages)            # as driver.launch: folders first, durable on return
Ledger(sys.argv[1]).register("s", "s.yaml", "{}", {}, stages, [])   # then the ledger
print("registered", flush=True)
"""


def _stages(n: int = N) -> list[Stage]:
    return [Stage("dense", {"seed": i}, {"seed": i, "pad": "x" * 400}, label=f"dense {i}", epochs=1) for i in range(n)]


def _launch(workspace, wait_for_folders: int) -> subprocess.Popen:
    """Start a launch's write phase and SIGKILL it once ``wait_for_folders`` stage folders exist
    (0: once the first ``stage.json`` is renamed into place, in the middle of the renames)."""
    first = stage_dir(workspace, _stages(1)[0].key) / STAGE_FILE
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(workspace), str(N)], env=env,
                               stdout=subprocess.PIPE, text=True)
    folders = workspace / STAGES_DIR
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if wait_for_folders == 0 and first.exists():
            break
        if wait_for_folders and folders.is_dir() and sum(1 for _ in os.scandir(folders)) >= wait_for_folders:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process


def _check_consistent(workspace) -> tuple[int, int]:
    """Every stage.json present is complete and right; the ledger names only written stages."""
    expected = {stage.key: stage.to_json() for stage in _stages()}
    written = 0
    for key, content in expected.items():
        path = stage_dir(workspace, key) / STAGE_FILE
        if path.exists():
            assert json.loads(path.read_bytes()) == content, key
            written += 1
    registered = 0
    if (workspace / "ledger.sqlite").exists():
        ledger = Ledger(workspace)
        try:
            keys = [row["key"] for row in ledger.stages()]
        finally:
            ledger.close()
        assert all((stage_dir(workspace, key) / STAGE_FILE).exists() for key in keys)
        registered = len(keys)
    return written, registered


@pytest.mark.parametrize("kill_at", [1, N // 2, N, 0],
                         ids=["first folders", "half the folders", "all folders", "while renaming"])
def test_a_launch_killed_while_writing_its_folders_leaves_nothing_half_written(tmp_path, kill_at):
    _launch(tmp_path, kill_at)
    written, registered = _check_consistent(tmp_path)
    assert registered in (0, N) and (registered == 0 or written == N)
    # the next launch writes what is missing and keeps what is there
    materialise(tmp_path, _stages())
    Ledger(tmp_path).register("s", "s.yaml", "{}", {}, _stages(), [])
    assert _check_consistent(tmp_path) == (N, N)
    leftovers = [entry.name for folder in os.scandir(tmp_path / STAGES_DIR) for entry in os.scandir(folder.path)
                 if entry.name != STAGE_FILE]
    assert leftovers == []


def test_existing_stage_files_are_left_as_they_are(tmp_path):
    stages = _stages(3)
    materialise(tmp_path, stages)
    path = stage_dir(tmp_path, stages[0].key) / STAGE_FILE
    path.write_text(json.dumps({**read_stage(path.parent), "note": "kept"}))
    materialise(tmp_path, stages)
    assert read_stage(path.parent)["note"] == "kept"
    assert read_stage(stage_dir(tmp_path, stages[2].key)) == stages[2].to_json()


def test_stage_files_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        materialise(tmp_path, _stages(2))
    finally:
        os.umask(old)
    modes = {(stage_dir(tmp_path, s.key) / STAGE_FILE).stat().st_mode & 0o777 for s in _stages(2)}
    assert modes == {0o640}


def test_a_symbolic_link_in_place_of_the_temp_file_is_not_followed(tmp_path):
    stage = _stages(1)[0]
    folder = stage_dir(tmp_path, stage.key)
    folder.mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("not ours")
    (folder / f".{STAGE_FILE}.tmp").symlink_to(target)
    with pytest.raises(OSError):
        materialise(tmp_path, [stage])
    assert target.read_text() == "not ours" and not (folder / STAGE_FILE).exists()
