"""A full disk (or an exceeded quota or file size limit) during a launch, a stage or an export: one clear
message naming the file (or the workspace) and the space left, nothing done lost, and ``resume`` after
space is freed completes the sweep with the same results.

The launch and export tests run on a real small file system: a 4 MiB tmpfs mounted in a mount
namespace of the test's own (a user namespace where mount(2) is not allowed, as in an unprivileged
container; ``tests/mount_namespace.py``), where the commands run; they skip only where no such
namespace can be made, and fail there under ``CI=true``. The stage test needs no mount: it runs the
stage under ``RLIMIT_FSIZE``, the per-process file size limit, whose writes fail as a full disk's do.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from in_process_cli import MINI, launch_mini, run_cli
from mount_namespace import SmallDisk


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_process(*args, module="orchestrator", file_size_limit=None, prefix=()):
    """``python -m module ARGS``; ``prefix`` runs it elsewhere (in the small disk's namespace)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if file_size_limit:  # coverage's own data file (pytest's --cov) could not be written under the limit either
        env = {name: value for name, value in env.items() if not name.startswith("COVERAGE_")}
    return subprocess.run([*prefix, sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env,
                          timeout=300, preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The mini sweep run with room to spare: its workspace, sweep file and results table."""
    root = tmp_path_factory.mktemp("diskfull")
    sweep = launch_mini(root)
    return root / "ws", sweep, run_cli("results", root / "ws")[1]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs of the test's own: commands run with ``prefix`` see it at ``path``, the test at ``view``
    (skips where no mount namespace can be made, fails there under ``CI=true``)."""
    disk = SmallDisk(tmp_path / "disk", size="4m")
    yield disk
    disk.close()


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with one file until ``leave`` bytes are free; return the file (delete it to free them)."""
    filler = disk / "filler"
    info = os.statvfs(disk)
    size = max(info.f_bavail * info.f_frsize - leave, 0)
    with open(filler, "wb") as handle:
        handle.truncate(0)
        block = b"\0" * (1 << 16)
        while size > 0:
            try:
                size -= handle.write(block[: min(size, len(block))])
            except OSError:
                break
    return filler


def _workspace_size(workspace: Path) -> int:
    return sum(path.stat().st_size for path in workspace.rglob("*") if path.is_file())


@pytest.mark.parametrize("share", [0.0, 0.8, 1.6])
def test_a_launch_on_a_full_disk_says_so_and_resume_finishes_with_the_same_results(reference, small_disk, share):
    """``share``: the free space left, as a share of what the finished workspace holds (nothing, about the
    databases, about the databases and the first stage): the disk fills at different writes."""
    workspace, seen = small_disk.path / "ws", small_disk.view / "ws"  # as the commands and as this test see it
    sweep = small_disk.path.parent / "mini.yaml"
    sweep.write_text(yaml.safe_dump({**MINI, "workspace": str(workspace)}))
    filler = fill(small_disk.view, int(share * _workspace_size(reference[0])))
    done = run_process("launch", sweep, "--no-progress", "--workers", "1", prefix=small_disk.prefix)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    if done.stderr.strip():  # the command's own write failed: one line naming where and the space left
        assert done.stderr.count("\n") == 1 and "free there" in done.stderr, done.stderr
        assert str(workspace) in done.stderr and "free some space, then run the command again" in done.stderr
        # as the message says: resume once the sweep is recorded, else the same launch again
        again = ("resume", workspace) if (seen / "sweeps" / "mini.json").exists() else ("launch", sweep)
        print("the launch stopped at:", done.stderr, "then:", again[0])
    else:  # a stage failed for want of space: its reason names the file and the space left
        status = run_process("status", workspace, prefix=small_disk.prefix).stdout
        assert "DiskFull" in status and "free there" in status, status
        again = ("resume", workspace)
    kept = {path: path.read_bytes() for path in seen.glob("stages/*/DONE.json")}
    filler.unlink()
    resumed = run_process(*again, "--no-progress", prefix=small_disk.prefix)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {path: path.read_bytes() for path in kept} == kept  # nothing done was lost or redone
    shown = run_process("results", workspace, prefix=small_disk.prefix)
    assert (shown.returncode, shown.stdout) == (0, reference[2]), shown.stdout + shown.stderr
    assert not [path for path in seen.rglob("*.tmp")], "a temp file outlived the resume"


def test_a_stage_over_the_file_size_limit_fails_naming_the_file_and_resume_redoes_it(reference, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(reference[0], workspace)
    stage = next(workspace.glob("stages/eval-*"))
    listed = json.loads((stage / "DONE.json").read_text())["files"]
    for name in [*listed, "DONE.json"]:
        (stage / name).unlink()
    done = run_process(stage, module="workers", file_size_limit=4096)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("workers.stages.artifacts.DiskFull: cannot write "), done.stderr
    assert str(stage) in last and "the file size limit is exceeded" in last and "free there" in last, last
    assert not (stage / "DONE.json").exists() and not list(stage.glob(".*.tmp"))
    code, out, err = run_cli("resume", workspace, "--no-progress", "--workers", "1")
    assert code == 0 and "ran 1 stage(s)" in out, out + err
    assert run_cli("results", workspace)[1] == reference[2]


def test_an_export_to_a_full_disk_says_so_and_leaves_the_old_file(reference, small_disk):
    target = small_disk.path / "rows.csv"  # where the command writes; this test reads it through the view
    (small_disk.view / "rows.csv").write_text("the previous export\n")
    fill(small_disk.view, 0)
    done = run_process("results", reference[0], "--csv", target, prefix=small_disk.prefix)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot write {target}: no space left on the device" in done.stderr and "free there" in done.stderr
    assert (small_disk.view / "rows.csv").read_text() == "the previous export\n"
    assert not list(small_disk.view.glob(".*.tmp"))


def test_a_plot_over_the_file_size_limit_says_so(reference, tmp_path):
    target = tmp_path / "top1.png"
    done = run_process("results", reference[0], "--plot", target, file_size_limit=2048)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot write {target}: the file size limit is exceeded" in done.stderr, done.stderr
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))
