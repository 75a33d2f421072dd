"""Exports write regular files only, into folders that exist, never onto a workspace's own state."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "workspace_v1"


def _results(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", "results", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture
def workspace(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "ws")
    return tmp_path / "ws"


@pytest.mark.parametrize("option,target,needle", [
    ("--csv", "folder", "is a folder"),
    ("--csv", "missing/x.csv", "does not exist; create it first"),
    ("--csv", "link.csv", "is a symbolic link"),
    ("--csv", "fifo", "not a regular file"),
    ("--parquet", "ws/results.sqlite", "own state"),
    ("--csv", "ws/ledger.sqlite", "own state"),
    ("--csv", "ws/stages/x.csv", "own state"),
    ("--plot", "figure.xyz", "unknown plot format '.xyz'"),
])
def test_a_bad_export_target_exits_2_and_touches_nothing(tmp_path, workspace, option, target, needle):
    (tmp_path / "folder").mkdir()
    outside = tmp_path / "outside.csv"
    outside.write_text("precious")
    (tmp_path / "link.csv").symlink_to(outside)
    os.mkfifo(tmp_path / "fifo")
    before = {path: path.read_bytes() for path in workspace.glob("*.sqlite")}
    result = _results(workspace, option, tmp_path / target)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"prunesweep: error: {option}: ") and needle in result.stderr
    assert outside.read_text() == "precious" and not (tmp_path / "missing").exists()
    assert {path: path.read_bytes() for path in workspace.glob("*.sqlite")} == before


def test_good_exports_are_written(tmp_path, workspace):
    result = _results(workspace, "--csv", tmp_path / "rows.csv", "--plot", tmp_path / "top1.svg")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rows.csv").read_text().startswith("sweep,") and (tmp_path / "top1.svg").stat().st_size
