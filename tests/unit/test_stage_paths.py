"""Every file name a stage or a workspace uses is spelt once, in workers.stages.paths, and is the
name on disk of the committed old workspaces."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

from results.central_db import STATE_FILE
from results.export import STAGES_FOLDER, WORKSPACE_STATE
from results.table import DB_FILE
from workers.stages import paths

FIXTURES = ROOT / "tests" / "fixtures"


def test_the_results_package_names_the_workspace_files_as_paths_does():
    # results imports nothing from workers, so it keeps its own spelling of these
    assert DB_FILE == paths.RESULTS_FILE and STATE_FILE == paths.CENTRAL_STATE_FILE
    assert WORKSPACE_STATE == (paths.LEDGER_FILE, paths.RESULTS_FILE, paths.CENTRAL_STATE_FILE,
                               paths.WORKSPACE_LOCK_FILE)
    assert STAGES_FOLDER == paths.STAGES_DIR


def test_the_committed_old_workspaces_hold_files_of_these_names():
    """The names are the on-disk contract: an old workspace's done stage lists them."""
    stage_files = {paths.STAGE_FILE, paths.DONE_FILE, paths.METRICS_FILE, paths.LOG_FILE}
    workspaces = [folder for folder in FIXTURES.rglob(paths.LEDGER_FILE)]
    assert workspaces, "no committed workspace under tests/fixtures"
    seen: set[str] = set()
    for ledger in workspaces:
        for stage in (ledger.parent / paths.STAGES_DIR).iterdir():
            names = {path.name for path in stage.iterdir()}
            seen |= names
            if paths.DONE_FILE in names:
                assert {paths.STAGE_FILE, paths.METRICS_FILE} <= names, (stage, names)
    assert stage_files <= seen, sorted(stage_files - seen)
    assert {paths.FINAL_FILE, paths.MASK_FILE} <= seen and any(name == paths.rewind_file(0) for name in seen)


_NAME_SUFFIXES = (".json", ".jsonl", ".pt", ".txt", ".lock", ".sqlite")


def test_no_other_module_spells_a_stage_or_workspace_file():
    """A string literal naming one of these files is in paths.py alone (results keeps its three: see above)."""
    names = {value for name, value in vars(paths).items() if name.isupper() and isinstance(value, str)}
    allowed = {ROOT / "workers" / "stages" / "paths.py", ROOT / "results" / "migrations.py",
               ROOT / "results" / "central_db.py", ROOT / "results" / "export.py"}
    #: still spelt there (the guard of `repair`): cli.py is being changed on another branch; route it
    #: through paths there
    pending = {"orchestrator/cli.py: 'ledger.sqlite'"}
    found = []
    for package in ("orchestrator", "workers", "results"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path in allowed:
                continue
            tree = ast.parse(path.read_text(), str(path))
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                        and node.value in names and node.value.endswith(_NAME_SUFFIXES):
                    found.append(f"{Path(path).relative_to(ROOT)}: {node.value!r}")
    assert not set(found) - pending, found
