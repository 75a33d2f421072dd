"""A file system a test mounts for itself, in a mount namespace of its own.

Nothing is mounted on the machine: a process started with :func:`private_mounts` has its own
copy of the mount table, where a tmpfs can be put over a folder (an empty view of a workspace,
or a small disk that fills). Where mount(2) is allowed (root with CAP_SYS_ADMIN) that is a mount
namespace alone; where it is not (an unprivileged container's root, a user), a user namespace
that maps us to its root, in which a tmpfs may be mounted. When neither works the caller skips,
or fails under ``CI=true``: CI never passes by skipping (:func:`cannot`).

:class:`SmallDisk` keeps such a namespace open with a small tmpfs in it: the commands under test
run in it (``prefix``), and the test reads and writes the same disk through
``/proc/PID/root`` (``view``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: ``unshare`` arguments of a private mount namespace, without and with a user namespace of its own.
MOUNT_ONLY = ("unshare", "--mount", "--propagation", "private")
WITH_USER = ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def cannot(reason: str) -> None:
    """Skip with ``reason``, or fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def private_mounts() -> tuple[tuple[str, ...], str]:
    """The ``unshare`` prefix of a mount namespace in which a tmpfs can be mounted here (``()`` if
    none can) and why not."""
    if not shutil.which("unshare"):
        return (), "unshare(1) is missing (util-linux)"
    why = []
    with tempfile.TemporaryDirectory() as folder:
        for prefix in (MOUNT_ONLY, WITH_USER):
            probe = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', folder],
                                   capture_output=True, text=True, timeout=30)
            if probe.returncode == 0:
                return prefix, ""
            why.append(f"`{' '.join(prefix)}`: {probe.stderr.strip() or f'exit {probe.returncode}'}")
    return (), "cannot mount a tmpfs in a mount namespace of our own (" + "; ".join(why) + ")"


class SmallDisk:
    """A tmpfs of ``size`` over the empty folder ``path``, seen only in a namespace kept open for it.

    ``prefix`` runs a command in that namespace, where the disk is at ``path`` (the paths a
    command prints name it there); this process reads and writes the disk at ``view``
    (``/proc/PID/root/path``; give it to plain file operations, not to code that resolves
    links). Closing stops the namespace's one process, and so the tmpfs and what it holds.
    """

    def __init__(self, path: Path, size: str = "4m"):
        unshare, why = private_mounts()
        if not unshare:
            cannot(f"a small disk needs a tmpfs of our own: {why}")
        if not shutil.which("nsenter"):
            cannot("a small disk needs nsenter(1) (util-linux) to run commands where it is mounted")
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.holder = subprocess.Popen(
            [*unshare, "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$0" && echo mounted && exec sleep 86400',
             str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "mounted":
            self.holder.wait(timeout=30)
            assert self.holder.stderr is not None
            raise RuntimeError(f"mounting the small disk failed: {self.holder.stderr.read()}")
        enter = ["--user", "--preserve-credentials"] if "--user" in unshare else []
        self.prefix = ("nsenter", f"--target={self.holder.pid}", *enter, "--mount", f"--wd={os.getcwd()}", "--")
        self.view = Path(f"/proc/{self.holder.pid}/root{path}")
        assert self.view.stat().st_dev != path.stat().st_dev, "the view is not the small disk"

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(timeout=30)
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream is not None:
                stream.close()
