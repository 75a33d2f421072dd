"""What ran a stage: ``provenance.json`` in its folder, written when each attempt starts.

``code``: the git commit of the project the worker was imported from (``modified`` when its
packages differ from that commit) where that is a git checkout, and always ``digest``, the
sha256 of the worker's ``.py`` files (what a SLURM job's code snapshot, no git checkout, is
known by); ``packages``: versions of the stack; ``host``, ``cpu`` (model name), ``cpu_cores``,
``gpus`` (model names, empty on a CPU node); ``at``: when the attempt started.

Like ``log.txt`` it is no artifact (``DONE.json`` never lists it; stages made before it
existed have none). The report reads it back (:func:`read_provenance`) to say which code,
packages and machines made its numbers.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from workers.stages.artifacts import atomic_write_json
from workers.stages.paths import PROVENANCE_FILE

#: distributions named besides the training stack's (workers.stages.preflight.PACKAGES).
EXTRA_PACKAGES = ("prunesweep", "pandas", "matplotlib", "mlflow", "tensorboard")
#: the project's own packages, whose changes against the commit make it ``modified``.
PROJECT_PACKAGES = ("workers", "orchestrator", "results")


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_digest(root: Path) -> str:
    """sha256 (16 hex digits) of every ``.py`` file under ``root``, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_version(package_dir: Path) -> dict[str, Any]:
    """``commit`` (None outside a git checkout of the project), ``modified`` and ``digest`` of the code in
    ``package_dir`` (the ``workers`` package: the project is its parent folder)."""
    package_dir = Path(package_dir).resolve()
    project = package_dir.parent
    version: dict[str, Any] = {"commit": None, "modified": None, "digest": code_digest(package_dir)}
    top = _git(project, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != project:  # not a checkout of the project (an installed copy)
        return version
    commit = _git(project, "rev-parse", "HEAD")
    if commit:
        changes = _git(project, "status", "--porcelain", "--untracked-files=no", "--", *PROJECT_PACKAGES)
        version.update(commit=commit, modified=None if changes is None else bool(changes))
    return version


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.split(":", 1)[0].strip() in ("model name", "Hardware", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "-"


def gpu_models() -> list[str]:
    """The model name of every GPU this process sees (none on a CPU node)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


@functools.lru_cache(maxsize=1)
def _process_facts() -> dict[str, Any]:
    """What stays the same for every stage a worker process runs (its code is imported once)."""
    from workers.stages.preflight import installed_versions

    packages = installed_versions()
    for name in EXTRA_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers_package = Path(__file__).resolve().parent.parent  # this file is workers/stages/provenance.py
    return {"code": code_version(workers_package), "packages": packages,
            "host": socket.gethostname(), "cpu": cpu_model(), "cpu_cores": cores, "gpus": gpu_models()}


def write_provenance(stage_dir: Path) -> None:
    """Record what runs this attempt of the stage in ``stage_dir`` (code, packages, machine)."""
    atomic_write_json(Path(stage_dir) / PROVENANCE_FILE, {**_process_facts(), "at": round(time.time(), 3)})


def read_provenance(stage_dir: Path) -> Optional[dict[str, Any]]:
    """A stage's ``provenance.json``, or None when it has none (made before it existed) or it cannot be read."""
    from workers.stages.workspace_files import read_json

    try:
        record = read_json(Path(stage_dir) / PROVENANCE_FILE, limit=1 << 20)
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None
