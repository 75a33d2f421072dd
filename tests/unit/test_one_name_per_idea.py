"""One name per idea: the twins issue 22 found (one word for two ideas, or one idea under two names)
stay merged or renamed, read from the source."""
from __future__ import annotations

import ast
from collections import defaultdict

from conftest import ROOT

PACKAGES = ("orchestrator", "workers", "results")


def _definitions() -> dict[str, list[str]]:
    """Public top-level function and class names -> the modules defining them."""
    found = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text(), str(path)).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                    found[node.name].append(str(path.relative_to(ROOT)))
    return found


def test_the_merged_twins_are_defined_once():
    # failure_class: of an error class (failure_classes) vs of an exit status (slurm: exit_failure_class);
    # dataset_facts: for planning (known_datasets) vs from the folder (datasets.folder_facts); subset_size:
    # the exact one (folders); columns_needed: of a query (query) vs of the page (report.page_columns);
    # Checks: the backends' protocol vs reconcile's answers (_LedgerChecks); Failure: an attempt's failure
    # (failure_classes) vs a failed stage on the report page (report.FailedStage)
    defined = _definitions()
    twins = {name: defined.get(name, []) for name in
             ("failure_class", "dataset_facts", "subset_size", "columns_needed", "curve_grouping", "Checks", "Failure")}
    assert {name: len(modules) for name, modules in twins.items()} == dict.fromkeys(twins, 1), twins


def test_a_full_disk_is_disk_full_in_both_packages_that_write():
    """results imports nothing from workers, so each keeps its own class, under one name (OutOfSpace was results')."""
    defined = _definitions()
    assert sorted(defined["DiskFull"]) == ["results/atomic_files.py", "workers/stages/disk_space.py"]
    assert "OutOfSpace" not in defined


def test_no_two_modules_share_a_file_name_for_two_ideas():
    """Two ``npid.py`` were the mask source and its training objective: the objective is now
    ``workers/tasks/instance_discrimination.py``; a mask source's module alone carries the source's name."""
    names = defaultdict(list)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names[path.name].append(str(path.relative_to(ROOT)))
    sources = {path.stem for path in (ROOT / "workers" / "pruning" / "mask_sources").glob("*.py")}
    sources -= {"__init__", "base"}
    shared = {name: paths for name, paths in names.items() if name[:-3] in sources and len(paths) > 1}
    assert not shared, shared


def test_task_is_the_training_objective_only():
    """The backends' unit of work is a StageToRun; "Task" names the training objective (workers/tasks) alone."""
    defined = _definitions()
    assert defined["Task"] == ["workers/tasks/objectives.py"] and defined["StageToRun"] == ["orchestrator/backends/base.py"]
