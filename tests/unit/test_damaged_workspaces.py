"""Damaged workspaces: every command works around the damage or exits 2 in one line naming the file;
``prunesweep repair`` rebuilds the ledger and the results table from the artifacts; ``resume``
removes the temp files of killed writers."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from in_process_cli import MINI, run_cli, launch_mini

from workers.stages.artifacts import remove_temp_files, verify_done, write_done
from workers.stages.paths import DONE_FILE, METRICS_FILE, STAGE_FILE

#: the smallest real sweep: one dense run and one evaluation (about 20 s on 2 cores).
ONE_LINE_COMMANDS = (("status",), ("results",), ("resume", "--dry-run"), ("resume",), ("cancel",))


def run_process(*args):
    """``prunesweep ARGS`` as a separate process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def done_workspace(tmp_path_factory):
    """A workspace whose mini sweep ran to the end, and its summary table."""
    root = tmp_path_factory.mktemp("damaged")
    sweep = launch_mini(root)
    code, table, err = run_cli("results", root / "ws")
    assert code == 0 and "mini" in table, err
    return root / "ws", table, sweep


@pytest.fixture
def workspace(done_workspace, tmp_path):
    """A fresh copy of the done workspace, to damage."""
    copy = tmp_path / "ws"
    shutil.copytree(done_workspace[0], copy, symlinks=True)
    return copy


def _stage(workspace: Path, kind: str) -> Path:
    return next((workspace / "stages").glob(f"{kind}-*"))


def _refused_in_one_line(workspace: Path, named: Path, commands=ONE_LINE_COMMANDS) -> None:
    for command in commands:
        code, out, err = run_cli(command[0], workspace, *command[1:])
        assert code == 2, (command, code, out, err)
        assert len(err.strip().splitlines()) == 1 and str(named) in err, (command, err)
        assert "prunesweep repair" in err and "Traceback" not in err, (command, err)


def _repaired_table_is_the_same(workspace: Path, table: str) -> str:
    code, out, err = run_cli("repair", workspace)
    assert code == 0, out + err
    code, again, err = run_cli("results", workspace)
    assert code == 0 and again == table, (again, table, err)
    code, status, err = run_cli("status", workspace)
    assert code == 0 and "cells: 1 of 1 done, 0 missing" in status, status + err
    return out


def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_to_pages(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:4096])


DAMAGES = {
    "garbage": lambda path: path.write_bytes(os.urandom(3000)),
    "text": lambda path: path.write_text("not a database\n"),
    "truncated": _truncate_half,
    "truncated to one page": _truncate_to_pages,
    "empty": lambda path: path.write_bytes(b""),
    "a folder": lambda path: (path.unlink(), path.mkdir(), (path / "x").write_text("x")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("store", ["ledger.sqlite", "results.sqlite"])
def test_a_damaged_store_is_named_in_one_line_and_repair_rebuilds_it(workspace, done_workspace, store, damage):
    path = workspace / store
    DAMAGES[damage](path)
    _refused_in_one_line(workspace, path)
    said = _repaired_table_is_the_same(workspace, done_workspace[1])
    assert f"moved {store} to quarantine/" in said, said
    moved = list((workspace / "quarantine").glob(f"*/{store}"))
    assert len(moved) == 1, said
    assert sqlite3.connect(workspace / store).execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_a_missing_ledger_is_rebuilt_from_the_stage_folders_and_the_sweep_record(workspace, done_workspace):
    (workspace / "ledger.sqlite").unlink()
    code, _, err = run_cli("status", workspace)
    assert code == 2 and "ledger.sqlite: is missing; run `prunesweep repair" in err, err
    _repaired_table_is_the_same(workspace, done_workspace[1])


def test_without_a_sweep_record_repair_takes_the_sweep_file(workspace, done_workspace):
    shutil.rmtree(workspace / "sweeps")  # a workspace made before launch kept one
    (workspace / "ledger.sqlite").write_bytes(b"junk" * 100)
    (workspace / "results.sqlite").unlink()
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and "no sweep record was found" in out and "2 stage folder(s) of no known sweep" in out, out
    code, status, _ = run_cli("status", workspace)
    row = next(line.split() for line in status.splitlines() if line.startswith("all "))
    assert code == 0 and row[1:4] == ["0", "0", "2"], status  # planned, running, done
    code, out, err = run_cli("repair", workspace, done_workspace[2])
    assert code == 0, out + err
    code, again, err = run_cli("results", workspace)
    assert again == done_workspace[1], again + err


def test_a_damaged_sqlite_page_is_named_by_every_command(workspace):
    """A header that looks right over a damaged body: SQLite's own error, still one line naming the fix."""
    path = workspace / "ledger.sqlite"
    data = bytearray(path.read_bytes())
    data[4096:8192] = os.urandom(4096)  # the second page: a table's root
    path.write_bytes(bytes(data))
    for command in (("status",), ("results",), ("resume", "--dry-run")):
        code, out, err = run_cli(command[0], workspace, *command[1:])
        assert code == 2 and len(err.strip().splitlines()) == 1 and "prunesweep repair" in err, (command, err)
    code, out, _ = run_cli("repair", workspace)
    assert code == 0 and "moved ledger.sqlite" in out, out


@pytest.mark.parametrize("text", ["", "{", "[]", '{"files": {}, "metrics": {}}', "\x00\x01"])
def test_a_malformed_manifest_is_worked_around_then_quarantined_and_rerun(workspace, done_workspace, text):
    stage = _stage(workspace, "eval")
    (stage / DONE_FILE).write_text(text)
    code, out, err = run_cli("status", workspace)  # works around it: the stage is planned again
    assert code == 0 and "cells: 0 of 1 done" in out, out + err
    (stage / DONE_FILE).write_text(text)  # status invalidated it; damage it again for repair
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and f"moved stages/{stage.name}/{DONE_FILE} to quarantine/" in out, out + err
    assert (list((workspace / "quarantine").glob(f"*/stages/{stage.name}/{DONE_FILE}"))[0].read_text() == text)
    if text == "{":  # one rerun is enough to show it gives the same numbers (each takes ~20 s)
        code, out, err = run_cli("resume", workspace, "--no-progress", "--workers", "1")
        assert code == 0 and "ran 1 stage(s)" in out and "0 failed" in out, out + err
        assert run_cli("results", workspace)[1] == done_workspace[1]


@pytest.mark.parametrize("text", ["", "{", "[]", '{"kind": "eval"}', '{"kind": 3, "key": "x", "config": {}}'])
def test_a_malformed_stage_file_is_quarantined_and_written_again_from_the_sweep(workspace, done_workspace, text):
    stage = _stage(workspace, "dense")
    good = (stage / STAGE_FILE).read_text()
    (stage / STAGE_FILE).write_text(text)
    code, out, err = run_cli("status", workspace)  # its artifacts still verify: it stays done
    assert code == 0 and "cells: 1 of 1 done" in out, out + err
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and f"moved stages/{stage.name}/{STAGE_FILE}" in out, out + err
    assert "wrote the stage.json of 1 stage(s) again" in out, out
    assert json.loads((stage / STAGE_FILE).read_text()) == json.loads(good)
    assert run_cli("results", workspace)[1] == done_workspace[1]


def test_a_manifest_whose_artifact_changed_is_moved_aside_with_its_artifacts(workspace, done_workspace):
    stage = _stage(workspace, "eval")
    with open(stage / "final.pt", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and "does not match its checksum" in out, out + err
    quarantined = next((workspace / "quarantine").glob(f"*/stages/{stage.name}"))
    assert {DONE_FILE, "final.pt", "mask.pt", METRICS_FILE} <= {p.name for p in quarantined.iterdir()}
    assert not (stage / DONE_FILE).exists() and (stage / STAGE_FILE).exists()
    code, out, err = run_cli("resume", workspace, "--no-progress", "--workers", "1")
    assert code == 0 and "ran 1 stage(s)" in out and "0 failed" in out, out + err
    assert run_cli("results", workspace)[1] == done_workspace[1]


def test_resume_removes_the_temp_files_of_killed_writers_and_nothing_else(workspace, tmp_path):
    stage = _stage(workspace, "eval")
    ours = [stage / ".final.pt.k2j_x9ab.tmp", workspace / ".results.csv.abcdefgh.tmp",
            _stage(workspace, "dense") / ".checkpoint.pt.0a1b2c3d.tmp"]
    for path in ours:
        path.write_bytes(b"half a file")
    outside = tmp_path / "precious.txt"
    outside.write_text("precious")
    kept = [stage / "notes.tmp", stage / ".final.pt.tmp", stage / ".final.pt.toolongname.tmp"]
    for path in kept:
        path.write_text("a user's file")
    link = stage / ".mask.pt.zzzzzzzz.tmp"
    link.symlink_to(outside)
    folder = stage / ".log.txt.folder00.tmp"
    folder.mkdir()
    code, out, err = run_cli("resume", workspace, "--no-progress")
    assert code == 0, out + err
    assert not any(path.exists() for path in ours)
    assert all(path.read_text() == "a user's file" for path in kept)
    assert link.is_symlink() and outside.read_text() == "precious" and folder.is_dir()


def test_temp_files_of_a_stage_still_running_are_kept(tmp_path):
    """Only what the caller says is idle is swept: :func:`remove_temp_files` works on one folder."""
    from orchestrator.state.ledger import Ledger
    from orchestrator.commands.repair import remove_leftover_temps
    from orchestrator.planning.stage_identity import Stage
    from orchestrator.state.workspace import materialise
    from workers.stages.paths import stage_dir

    stages = [Stage("dense", {"seed": i}, {"seed": i}, label=f"dense {i}", epochs=1) for i in range(2)]
    materialise(tmp_path, stages)
    ledger = Ledger(tmp_path)
    ledger.register("s", "s.yaml", "{}", {}, stages, [])
    ledger.mark_running(stages[0].key, "elsewhere", 1, "slurm", "123")
    temps = [stage_dir(tmp_path, stage.key) / ".final.pt.abcd1234.tmp" for stage in stages]
    for path in temps:
        path.write_bytes(b"x")
    assert remove_leftover_temps(tmp_path, ledger) == [temps[1]]
    assert temps[0].exists()
    ledger.close()
    assert remove_temp_files(tmp_path / "no such folder") == []


@pytest.mark.parametrize("kind,config,needed", [
    ("dense", {"capture_iterations": [0, 25]}, ["final.pt", "rewind_0.pt", "rewind_25.pt"]),
    ("rewind", {"rewind_iteration": 7}, ["rewind_7.pt"]),
    ("imp", {}, ["final.pt", "mask.pt"]),
    ("random_mask", {}, ["mask.pt"]),
    ("eval", {}, ["final.pt", "mask.pt"]),
    ("features", {}, ["features.pt"]),
    ("finetune", {}, ["final.pt", "mask.pt"]),
])
def test_a_manifest_is_done_only_when_it_lists_every_file_its_kind_produces(tmp_path, kind, config, needed):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / STAGE_FILE).write_text(json.dumps({"kind": kind, "key": "stage", "config": config, "deps": {}}))
    for name in [*needed, METRICS_FILE]:
        (stage / name).write_bytes(name.encode())
    write_done(stage, [*needed, METRICS_FILE], {"top1": 0.5})
    assert verify_done(stage) == (True, "")
    for left_out in needed:
        write_done(stage, [name for name in needed if name != left_out] + [METRICS_FILE], {"top1": 0.5})
        ok, reason = verify_done(stage)
        assert not ok and f"does not list {left_out}" in reason and f"a {kind} stage produces" in reason, reason


def test_linear_eval_needs_only_its_metrics():
    from workers.stages.paths import required_files

    assert required_files("linear_eval", {}) == set() and required_files("no such kind", None) == set()


def test_the_real_process_names_a_damaged_store_without_a_traceback(workspace):
    (workspace / "results.sqlite").write_bytes(b"\x00" * 8192)
    done = run_process("results", workspace, "--pivot")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(workspace / "results.sqlite") in done.stderr


def test_repair_refuses_a_store_of_a_newer_prunesweep_and_moves_nothing(workspace):
    with sqlite3.connect(workspace / "ledger.sqlite") as conn:
        conn.execute("PRAGMA user_version = 999")
    code, out, err = run_cli("repair", workspace)
    assert code == 2 and "newer prunesweep" in err, out + err
    assert (workspace / "ledger.sqlite").exists() and not (workspace / "quarantine").exists()


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_planning_over_a_malformed_stage_file_names_it_in_one_line(workspace, done_workspace, tmp_path, command):
    stage = _stage(workspace, "dense")
    (stage / STAGE_FILE).write_text("{ half a file")
    sweep = tmp_path / "mini.yaml"
    sweep.write_text(yaml.safe_dump({**MINI, "workspace": str(workspace)}))
    code, out, err = run_cli(command, sweep, "--no-progress") if command == "launch" else run_cli(command, sweep)
    assert code == 2 and len(err.strip().splitlines()) == 1, out + err
    assert str(stage / STAGE_FILE) in err and "prunesweep repair" in err, err
    assert (stage / STAGE_FILE).read_text() == "{ half a file"


def test_a_stage_run_over_a_malformed_stage_file_fails_naming_it(workspace):
    from workers.stages.artifacts import MalformedStageFile
    from workers.entry import run_stage

    stage = _stage(workspace, "eval")
    (stage / DONE_FILE).unlink()
    (stage / STAGE_FILE).write_text("[1, 2]")
    with pytest.raises(MalformedStageFile, match="not a mapping.*prunesweep repair"):
        run_stage(stage)


def test_repair_removes_the_rows_of_stages_whose_artifacts_it_moved_aside(workspace, done_workspace):
    import results

    stage = _stage(workspace, "eval")
    assert list(results.load(workspace)["stage_key"]) == [stage.name]
    with open(stage / "final.pt", "r+b") as handle:  # damaged behind the tool's back: status never saw it
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and "removed 1 row(s) of results.sqlite whose stage is not verified done" in out, out + err
    from orchestrator.state.ledger import Ledger

    ledger = Ledger(workspace)
    done = {row["key"] for row in ledger.stages() if row["state"] == "done"}
    ledger.close()
    assert stage.name not in done
    assert set(results.load(workspace)["stage_key"]) <= done and len(results.load(workspace)) == 0
    code, out, err = run_cli("repair", workspace)  # a second repair finds nothing more to remove
    assert code == 0 and "removed" not in out and "row(s)" not in out, out + err


def test_repair_plans_no_recorded_sweep_whose_settings_changed_meaning(workspace):
    """A sweep recorded by an earlier prunesweep whose settings plan other stages now (issue 28 gave
    VOC07's evaluations new keys): repair writes no stage of the new plan and restores no cell pointing
    at one, so resume still runs nothing; launching the file under a new name computes it anew."""
    record_path = next((workspace / "sweeps").glob("*.json"))
    record = json.loads(record_path.read_text())
    record["spec"]["recipes"]["labels"]["epochs"] += 1  # plans other stages; the recorded settings do not say so
    record_path.write_text(json.dumps(record))
    (workspace / "ledger.sqlite").unlink()
    folders = sorted(path.name for path in (workspace / "stages").iterdir())
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and f"sweep {record['name']}: its settings mean something else" in out, out + err
    assert sorted(path.name for path in (workspace / "stages").iterdir()) == folders
    code, out, err = run_cli("resume", workspace, "--dry-run")
    assert code == 0 and "would run 0 stage(s)" in out, out + err
