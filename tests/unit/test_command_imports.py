"""What each bookkeeping command imports, seen in ``sys.modules`` of a real run (issue 16).

``plan``, ``launch``, ``status``, ``resume`` and ``cancel`` never need pandas, pyarrow or
matplotlib (a third of a second and 85 MB per command); only ``results`` loads them. The
commands that only read a workspace (``status``, ``cancel``, ``resume --dry-run``) need no
pydantic either (a tenth of a second: it validates sweep files and stage configs). Each
command runs in a fresh interpreter on a copy of the committed finished workspace, so
``launch`` and ``resume`` find every stage done and train nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
HEAVY = ("pandas", "pyarrow", "matplotlib")

_PROBE = """
import json, sys
from orchestrator.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"code": code, "loaded": sorted(m for m in sys.modules if m.split('.')[0] in {!r})}}),
      file=open(sys.argv[1], "w"))
""".format(HEAVY + ("torch", "pydantic"))


def _loaded(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    """Run ``prunesweep ARGV`` in a new interpreter; its exit code and the heavy packages it loaded."""
    out = tmp_path / "probe.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", _PROBE, str(out), *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.exists(), run.stderr
    found = json.loads(out.read_text())
    return found["code"], {name.split(".")[0] for name in found["loaded"]}


@pytest.fixture
def workspace(tmp_path):
    """A finished workspace and its sweep file (every stage done: launching runs nothing)."""
    shutil.copytree(FIXTURES / "workspace_v1", tmp_path / "workspace_v1")
    shutil.copy(FIXTURES / "workspace_v1.yaml", tmp_path / "sweep.yaml")
    return tmp_path


@pytest.mark.parametrize("argv", [
    ("plan", "sweep.yaml"),
    ("launch", "sweep.yaml", "--no-progress"),
    ("status", "workspace_v1"),
    ("resume", "workspace_v1", "--no-progress"),
    ("resume", "workspace_v1", "--dry-run"),
    ("cancel", "workspace_v1"),
], ids=lambda argv: " ".join(argv))
def test_bookkeeping_commands_never_import_pandas_pyarrow_or_matplotlib(workspace, argv):
    code, loaded = _loaded(workspace, *argv)
    assert code == 0
    assert not loaded & set(HEAVY), loaded
    if argv[0] in ("plan", "status", "cancel") or "--dry-run" in argv:
        assert "torch" not in loaded  # planning and reading never load torch either
    if argv[0] in ("status", "cancel") or "--dry-run" in argv:
        assert "pydantic" not in loaded  # reading a workspace validates no sweep file


def test_the_probe_sees_what_results_imports(workspace):
    """The same probe on ``results`` finds pandas: the check above can fail."""
    code, loaded = _loaded(workspace, "results", "workspace_v1")
    assert code == 0 and "pandas" in loaded


def test_the_prunesweep_process_runs_without_pydantic_plugins_unless_kept(monkeypatch, capsys):
    """The console entry point leaves pydantic's plugin search (the metadata of every installed
    distribution) off for the process and its workers; an explicit empty setting keeps it."""
    from orchestrator import cli

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)  # what a plan ends with, made catchable here
    monkeypatch.setattr(sys, "argv", ["prunesweep", "plan", str(ROOT / "sweeps" / "digits.yaml")])
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "")  # recorded as it was, restored after the test
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    with pytest.raises(SystemExit) as stop:
        cli.console()
    assert stop.value.code == 0 and os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "")
    with pytest.raises(SystemExit):
        cli.console()
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == ""
    assert "trainings:" in capsys.readouterr().out
