"""Each extension guide of docs/extending/, done exactly as it says on a copy of the source tree: the
guide's own code and edits, nothing else, and the result works through the real commands.

The results-column guide is done so by ``tests/unit/test_store_migrations.py`` (the results package's
three files) and here (all five source files and the pinned test, through a real evaluation); the
backend guide by ``tests/workers/test_backend_registry.py``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT

GUIDES = ROOT / "docs" / "extending"
PACKAGES = ("orchestrator", "workers", "results")


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def _blocks(guide: Path, language: str) -> list[str]:
    """The fenced ``language`` blocks of ``guide`` in order, less the indentation of their fence (a block
    inside a list item); the indentation of the code itself is the file's it goes into."""
    found = re.findall(rf"^([ \t]*)```{language}\n(.*?)^[ \t]*```$", guide.read_text(), flags=re.M | re.S)
    return ["".join(line[len(fence):] for line in block.splitlines(keepends=True)) for fence, block in found]


def _prunesweep(tree: Path, cwd: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree), CUDA_VISIBLE_DEVICES="", **environ)
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


# ---- a mask source ------------------------------------------------------------------------------------

RECIPE = {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.01}
FLIP_SWEEP = {"name": "flip", "workspace": "ws", "dataset": {"name": "digits"},
              "arch": {"name": "small_cnn", "width": 4}, "recipes": {"labels": RECIPE, "flip": RECIPE},
              "pruning": {"fractions": [0.8]}, "rewind": [0], "mask_source": ["flip"], "init": ["winning_ticket"],
              "seeds": [0]}


def test_a_mask_source_is_the_guides_module_plus_one_registry_line_plus_the_docs_list(tmp_path):
    guide = GUIDES / "mask-source.md"
    tree = _copy_tree(tmp_path)
    # 1. the module, as the guide writes it
    module = _blocks(guide, "python")[0]
    assert 'TaskDeclaration("flip"' in module and 'ImpSource("flip", "flip")' in module
    (tree / "workers" / "pruning" / "mask_sources" / "flip.py").write_text(module)
    # 2. the registry line
    registry = tree / "workers" / "pruning" / "mask_sources" / "__init__.py"
    text, count = re.subn(r'^(BUILTIN = \(.*)\)$', r'\1, "flip")', registry.read_text(), count=1, flags=re.M)
    assert count == 1
    registry.write_text(text)

    (tmp_path / "flip.yaml").write_text(yaml.safe_dump(FLIP_SWEEP))
    planned = _prunesweep(tree, tmp_path, "plan", "flip.yaml")
    assert planned.returncode == 0, planned.stderr
    launched = _prunesweep(tree, tmp_path, "launch", "flip.yaml", "--no-progress")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    stages = {json.loads((folder / "stage.json").read_text())["label"]: folder
              for folder in (tmp_path / "ws" / "stages").iterdir()}
    assert sorted(stages) == ["dense flip seed=0", "eval flip winning_ticket seed=0 k=0 f=0.8"]
    dense = json.loads((stages["dense flip seed=0"] / "DONE.json").read_text())
    assert dense["metrics"]["task_accuracy"] > 0.6  # it learnt to see flips
    shown = _prunesweep(tree, tmp_path, "results", "ws", "--csv", str(tmp_path / "rows.csv"))
    assert shown.returncode == 0, shown.stderr
    rows = (tmp_path / "rows.csv").read_text().splitlines()
    assert len(rows) == 2 and ",flip," in rows[1], rows

    # 3. the allowed list of the sweep file's example error (docs/sweep-file.md, run by test_docs_examples.py)
    refused = _prunesweep(tree, tmp_path, "plan", "flip.yaml", "mask_source=[labels,simclr]")
    documented = next(line for line in (ROOT / "docs" / "sweep-file.md").read_text().splitlines()
                      if "unknown mask source 'simclr'" in line)
    allowed = re.search(r"allowed: ([^(]*) \(", documented).group(1)
    assert refused.returncode == 2 and f"allowed: {allowed}, flip (" in refused.stderr, refused.stderr


# ---- a results column -----------------------------------------------------------------------------------

def _insert_after(path: Path, anchor: str, text: str, start: str = "") -> None:
    """Put ``text`` (lines) after the first line holding ``anchor`` (after ``start``, if given)."""
    source = path.read_text()
    at = source.index(anchor, source.index(start) if start else 0)
    end = source.index("\n", at) + 1
    path.write_text(source[:end] + text.rstrip("\n") + "\n" + source[end:])


def _insert_before_closing(path: Path, anchor: str, text: str) -> None:
    """Put ``text`` before the closing bracket (at column 0) of the sequence that opens at ``anchor``."""
    source = path.read_text()
    at = source.index(anchor)
    end = min(i for i in (source.find("\n)", at), source.find("\n]", at)) if i >= 0) + 1
    path.write_text(source[:end] + text.rstrip("\n") + "\n" + source[end:])


_PINNED = ("import sys; sys.path.insert(0, sys.argv[1]); import test_results_table as pinned; "
           "pinned.test_schema_constant_is_the_documented_one()")


def test_a_results_column_is_the_guides_five_source_files_and_the_pinned_test(tmp_path):
    guide = GUIDES / "results-column.md"
    blocks = _blocks(guide, "python")
    row_lines, fill, migration, central, field, report, pinned = blocks
    tree = _copy_tree(tmp_path)
    tests = tree / "pinned_tests"
    tests.mkdir()
    shutil.copy(ROOT / "tests" / "unit" / "test_results_table.py", tests)
    # 1. the definition and the line of build_row that fills it
    column = row_lines.splitlines()[-2]
    assert '"device"' in column and '"device"' in fill
    _insert_after(tree / "results" / "row.py", row_lines.splitlines()[0].strip(), column)
    _insert_after(tree / "results" / "row.py", '"eval_dataset": metrics.get("eval_dataset")', fill,
                  start="def build_row")
    # 2. and 3. the workspace's migration, the central database's
    _insert_before_closing(tree / "results" / "migrations.py", "MIGRATIONS: tuple[",
                           "\n".join(migration.splitlines()[:-1]))
    _insert_before_closing(tree / "results" / "central_migrations.py", "CENTRAL_MIGRATIONS: list[",
                           "\n".join(central.splitlines()[:-1]))
    # 4. and 5. the metrics model and the kind that measures it
    _insert_after(tree / "workers" / "stages" / "contract.py", "    test_top1: float", field, start="class EvalMetrics")
    source = (tree / "workers" / "stages" / "kinds.py").read_text()
    returned = source.index("    return StageOutcome", source.index("def run_eval"))
    (tree / "workers" / "stages" / "kinds.py").write_text(source[:returned] + report + source[returned:])

    env = dict(os.environ, PYTHONPATH=str(tree))
    before = subprocess.run([sys.executable, "-c", _PINNED, str(tests)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert before.returncode != 0 and "AssertionError" in before.stderr, before.stderr  # the pin notices
    # 6. the pinned test
    _insert_after(tests / "test_results_table.py", '"map_11point",', pinned, start="def test_schema_constant")
    pinned_test = tests / "test_results_table.py"
    pinned_test.write_text(pinned_test.read_text().replace('        "map_11point",\n' + pinned, pinned, 1))
    after = subprocess.run([sys.executable, "-c", _PINNED, str(tests)], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
    assert after.returncode == 0, after.stderr

    sweep = dict(FLIP_SWEEP, name="device", recipes={"labels": RECIPE}, mask_source=["labels"], init=["reinit"])
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(sweep))
    central = f"sqlite:///{tmp_path / 'central.sqlite'}"
    launched = _prunesweep(tree, tmp_path, "launch", "device.yaml", "--no-progress", PRUNESWEEP_RESULTS_DB=central)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    for source_args, name in ((("ws",), "workspace.csv"), (("--db", central), "central.csv")):
        shown = _prunesweep(tree, tmp_path, "results", *source_args, "--csv", str(tmp_path / name))
        assert shown.returncode == 0, shown.stderr
        header, *rows = (tmp_path / name).read_text().splitlines()
        values = [dict(zip(header.split(","), row.split(","))) for row in rows]
        assert len(values) == 1 and values[0]["device"] == "cpu", (name, header, rows)
