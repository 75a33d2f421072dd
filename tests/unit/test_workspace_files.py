"""Workspace files are read and written one safe way (issue 25): the safe module's rules, and a check
over the source that no other code opens, reads, writes or renames a path itself."""
from __future__ import annotations

import ast
import errno
import os
import threading
from pathlib import Path

import pytest
from conftest import ROOT

from workers.stages import workspace_files as files
from workers.stages.new_files import atomic_write_new_files

#: the modules every read and write of a workspace file goes through.
SAFE_MODULES = {
    "workers/stages/workspace_files.py",
    "workers/stages/new_files.py",  # many new stage.json at once (issue 16), built on workspace_files
    # the results package imports nothing from workers (docs/design.md): its own copy of the atomic
    # writer, for exports (whose target orchestrator/commands/results.py checks first)
    "results/atomic_files.py",
}

#: (file, function, call) that touch no workspace file, each with the reason. Keep it short: a workspace
#: file belongs behind workers/stages/workspace_files.py.
ALLOWED = {
    ("orchestrator/cli.py", "_drop_stdout", "os.open"): "/dev/null, for a closed stdout",
    ("orchestrator/spec/loading.py", "load_spec", ".read_bytes"): "the user's sweep file",
    ("orchestrator/state/central_results.py", "_from_config", ".read_bytes"): "the user's config file",
    ("orchestrator/planning/gpu_hours.py", "load_table", ".read_text"): "throughput.json, package data",
    ("orchestrator/state/workspace.py", "file_system_type", ".read_text"): "/proc/self/mountinfo",
    ("workers/stages/disk_space.py", "process_umask", ".read_text"): "/proc/self/status",
    ("orchestrator/backends/slurm/backend.py", "snapshot_code", ".read_bytes"): "the package's own source files",
    ("workers/stages/provenance.py", "code_digest", ".read_bytes"): "the package's own source files",
    ("workers/stages/provenance.py", "cpu_model", ".read_text"): "/proc/cpuinfo",
    ("orchestrator/commands/results.py", "summary_text", ".rename"): "a DataFrame's columns, no file",
    # a dataset's files (read by the worker), not a workspace's
    ("workers/data/folders.py", "read_cifar_batch", "open"): "a CIFAR batch file",
    ("workers/data/image_folder.py", "open", ".open"): "an image, through PIL",
    ("workers/data/places.py", "read_list", ".read_text"): "a split list",
    ("workers/data/voc.py", "read_image_set", ".read_text"): "an image set list",
    ("workers/data/voc.py", "parse_annotation", ".read_bytes"): "an annotation",
    ("workers/data/voc.py", "_check_class_list", ".read_text"): "the class list",
}

_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "open", "rename"}
_MODULE_CALLS = {("os", "open"), ("os", "rename"), ("os", "replace"), ("os", "renames"), ("shutil", "move"),
                 ("shutil", "copy"), ("shutil", "copy2"), ("shutil", "copyfile"), ("io", "open")}


def _call_name(call: ast.Call) -> str | None:
    """``open``, ``os.open``, ``.read_text``... when the call opens, reads, writes or renames a path; else None."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        return "open"
    if not isinstance(func, ast.Attribute):
        return None
    if isinstance(func.value, ast.Name) and (func.value.id, func.attr) in _MODULE_CALLS:
        return f"{func.value.id}.{func.attr}"
    if isinstance(func.value, ast.Name) and func.value.id in ("os", "shutil", "io", "dataclasses", "self"):
        return None  # other functions of these modules, and methods of our own classes
    if func.attr in _METHODS:
        return f".{func.attr}"
    # Path.replace(target) takes one argument; str.replace takes two
    if func.attr == "replace" and len(call.args) == 1 and not call.keywords:
        return ".replace"
    return None


def _file_accesses() -> list[tuple[str, str, str, int]]:
    found = []
    for package in ("orchestrator", "workers", "results"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in SAFE_MODULES:
                continue
            tree = ast.parse(path.read_text(), relative)
            for function in [tree, *(node for node in ast.walk(tree)
                                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
                name = getattr(function, "name", "<module>")
                body = function.body if isinstance(function, ast.Module) else [function]
                for node in (inner for top in body for inner in ast.walk(top)):
                    if isinstance(node, ast.Call) and _call_name(node):
                        found.append((relative, name, _call_name(node) or "", node.lineno))
    # a call inside a nested function counts for the innermost one
    innermost: dict[tuple[str, int, str], str] = {}
    for relative, name, call, line in found:
        innermost[(relative, line, call)] = name
    return sorted({(relative, name, call, line) for (relative, line, call), name in innermost.items()})


def test_workspace_files_are_opened_only_through_the_safe_module():
    outside = [f"{relative}:{line} {name}: {call}" for relative, name, call, line in _file_accesses()
               if (relative, name, call) not in ALLOWED]
    assert not outside, "open, read, write or rename these through workers/stages/workspace_files.py:\n" + \
        "\n".join(outside)


def test_the_allow_list_names_only_calls_that_exist():
    present = {(relative, name, call) for relative, name, call, _ in _file_accesses()}
    assert not set(ALLOWED) - present, sorted(set(ALLOWED) - present)


def test_the_check_sees_each_kind_of_access(tmp_path):
    source = ("import os, shutil\nfrom pathlib import Path\n"
              "def f(p):\n    open(p)\n    os.open(p, 0)\n    Path(p).read_text()\n    p.write_bytes(b'')\n"
              "    os.replace(p, p)\n    p.rename(p)\n    p.replace(p)\n    shutil.move(p, p)\n"
              "    'a'.replace('a', 'b')\n    os.fdopen(3)\n")
    calls = [_call_name(node) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    assert sorted(call for call in calls if call) == sorted(
        ["open", "os.open", ".read_text", ".write_bytes", "os.replace", ".rename", ".replace", "shutil.move"])


# --------------------------------------------------------------------------- the module's rules


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "ws" / "stages" / "k").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("secret")
    return tmp_path / "ws"


def test_no_link_is_followed_on_the_way_to_a_file(workspace):
    (workspace / "stages" / "k" / "log.txt").symlink_to(workspace.parent / "elsewhere" / "secret")
    (workspace / "linked").symlink_to(workspace.parent / "elsewhere")
    with pytest.raises(files.NotARegularFile, match="symbolic link"):
        files.read_bytes(workspace / "stages" / "k" / "log.txt", workspace)
    with pytest.raises(files.LinkedFolder, match="linked is a symbolic link"):
        files.read_bytes(workspace / "linked" / "secret", workspace)
    with pytest.raises(files.LinkedFolder):
        files.atomic_write_bytes(workspace / "linked" / "new", b"x", workspace)
    with pytest.raises(files.LinkedFolder):
        files.make_unique_folder(workspace / "linked", "q", workspace)
    with pytest.raises(files.LinkedFolder):
        atomic_write_new_files([(workspace / "linked" / "k" / "stage.json", b"{}")], workspace)
    assert sorted(os.listdir(workspace.parent / "elsewhere")) == ["secret"]


def test_a_fifo_is_refused_without_waiting(workspace):
    fifo = workspace / "stages" / "k" / "stage.json"
    os.mkfifo(fifo)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(_refusal(fifo, workspace)), daemon=True)
    reader.start()
    reader.join(10)
    assert result == ["not a regular file"]


def _refusal(path: Path, root: Path) -> str:
    try:
        files.read_json(path, root)
    except files.NotARegularFile as error:
        return str(error.strerror).removeprefix("is ")
    return "read"


def test_reads_are_bounded(workspace):
    big = workspace / "stages" / "k" / "DONE.json"
    big.write_bytes(b" " * 2000 + b"{}")
    with pytest.raises(files.FileTooLarge):
        files.read_json(big, workspace, limit=1000)
    log = workspace / "stages" / "k" / "log.txt"
    log.write_text("".join(f"line {n}\n" for n in range(100_000)))
    tail = files.read_tail(log, workspace, limit=100)
    assert tail.endswith("line 99999\n") and len(tail) <= 100 and tail.startswith("line ")


def test_unique_folders_and_moves_never_overwrite(workspace):
    first = files.make_unique_folder(workspace / "quarantine", "t", workspace)
    second = files.make_unique_folder(workspace / "quarantine", "t", workspace)
    assert first != second and first.is_dir() and second.is_dir()
    (workspace / "a").write_text("a")
    (workspace / "b").write_text("b")
    files.move_within(workspace / "a", first / "stages" / "x", workspace)
    with pytest.raises(FileExistsError):
        files.move_within(workspace / "b", first / "stages" / "x", workspace)
    assert (first / "stages" / "x").read_text() == "a" and (workspace / "b").read_text() == "b"


def test_a_path_outside_the_root_is_refused(workspace):
    with pytest.raises(ValueError):
        files.read_bytes(workspace / ".." / "elsewhere" / "secret", workspace)


def test_atomic_writes_leave_no_temp_file_and_replace_a_planted_link(workspace):
    target = workspace / "stages" / "k" / "stage.json"
    target.symlink_to(workspace.parent / "elsewhere" / "secret")
    files.atomic_write_bytes(target, b"{}", workspace)
    assert not target.is_symlink() and target.read_bytes() == b"{}"
    assert (workspace.parent / "elsewhere" / "secret").read_text() == "secret"
    assert os.listdir(target.parent) == ["stage.json"]


def test_an_open_error_names_the_whole_path(workspace):
    with pytest.raises(FileNotFoundError) as caught:
        files.read_bytes(workspace / "stages" / "k" / "missing.json", workspace)
    assert caught.value.errno == errno.ENOENT and str(workspace / "stages" / "k" / "missing.json") in str(caught.value)
