"""pytest plugin: the session fixture ``slurm_cluster``, a real single-node SLURM on localhost.

Load it from tests/conftest.py with ``pytest_plugins = ["cluster.slurm_fixture"]``; it registers
the ``slurm`` marker. The fixture runs ``tests/cluster/slurm.sh install`` and ``start`` (real
accounting: slurmdbd + MariaDB), and at the end of the session ``stop`` -- only when this
session started the cluster; a cluster that was already up is left running (its accounting
mode is put back if a test switched it).

For the whole session ``os.environ["SLURM_CONF"]`` points at the cluster, so code that calls
sbatch/sacct/... with the inherited environment (submitit does) reaches it; ``cluster.env`` is
that environment as a dict for ``subprocess`` calls.

When the cluster cannot exist here (not Linux, no dpkg/apt-get, not root) the fixture skips
with the reason -- but fails when ``CI=true``, so CI never passes by skipping. Any other
failure (apt, a daemon that does not start) fails with the script's output and log tails.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().with_name("slurm.sh")
IMPOSSIBLE = 3  # slurm.sh's exit code for "cannot run on this machine"
_TIMINGS: dict[str, float] = {}  # this session's phases, printed in the terminal summary


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slurm: runs against the real local SLURM cluster of tests/cluster/slurm.sh "
        "(installs and starts it; deselect with -m 'not slurm')",
    )


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _TIMINGS.items())
        terminalreporter.write_line(f"local SLURM cluster: {phases}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _cannot(reason: str):
    message = f"local SLURM cluster unavailable: {reason}"
    if _in_ci():
        pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


class SlurmError(RuntimeError):
    pass


def _script(*args: str, env: dict | None = None, timeout: float = 300):
    started = time.monotonic()
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"slurm.sh {' '.join(args)} took over {timeout} s:\n{exc.stderr or ''}") from exc
    return proc, time.monotonic() - started


def _check(proc, args) -> None:
    if proc.returncode == IMPOSSIBLE:
        _cannot(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "slurm.sh exit 3")
    if proc.returncode != 0:
        pytest.fail(
            f"tests/cluster/slurm.sh {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout}{proc.stderr}",
            pytrace=False,
        )


def _exports(stdout: str) -> dict[str, str]:
    """The `export NAME=VALUE` lines slurm.sh prints."""
    env = {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


class SlurmCluster:
    """What the tests get: the cluster's environment and a few helpers."""

    def __init__(self, exports: dict[str, str], accounting_enabled: bool, timings: dict[str, float]):
        self.exports = exports  # SLURM_CONF, PRUNESWEEP_SLURM_DIR
        self.dir = Path(exports["PRUNESWEEP_SLURM_DIR"])
        self.conf = Path(exports["SLURM_CONF"])
        self.env = {**os.environ, **exports}
        self.accounting_enabled = accounting_enabled
        self.timings = timings  # seconds per phase: install, start, accounting switches
        self.max_array_size = self._max_array_size()

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM command (sbatch, sacct, ...) against this cluster."""
        proc = subprocess.run(
            [str(a) for a in args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(map(str, args))} exit {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def _max_array_size(self) -> int:
        for line in self.run("scontrol", "show", "config").stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "MaxArraySize":
                return int(value.strip())
        raise SlurmError("scontrol show config has no MaxArraySize")

    def _switch(self, enabled: bool) -> None:
        if enabled == self.accounting_enabled:
            return
        args = ("start",) if enabled else ("start", "--no-accounting")
        proc, seconds = _script(*args, env=self.env)
        if proc.returncode != 0:
            raise SlurmError(f"slurm.sh {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        self.accounting_enabled = enabled
        self.timings[f"accounting {'on' if enabled else 'off'}"] = seconds

    def accounting(self, enabled: bool) -> "_AccountingSwitch":
        """Switch real accounting (slurmdbd) on or off now (restarts slurmctld, ~3 s).

        Used as a context manager it puts the previous mode back on exit:
        ``with cluster.accounting(False): ...``.
        """
        previous = self.accounting_enabled
        self._switch(enabled)
        return _AccountingSwitch(self, previous)


class _AccountingSwitch:
    def __init__(self, cluster: SlurmCluster, previous: bool):
        self.cluster, self.previous = cluster, previous

    def __enter__(self) -> SlurmCluster:
        return self.cluster

    def __exit__(self, *exc) -> None:
        self.cluster._switch(self.previous)


@pytest.fixture(scope="session")
def slurm_cluster():
    if not sys.platform.startswith("linux"):
        _cannot(f"needs Linux (Debian/Ubuntu), this is {sys.platform}")
    timings = _TIMINGS
    proc, timings["install"] = _script("install", timeout=900)
    _check(proc, ["install"])

    status, _ = _script("status")
    was_up = status.returncode == 0
    was_accounting = "accounting_storage/slurmdbd" in status.stdout

    proc, timings["start"] = _script("start")
    _check(proc, ["start"])
    cluster = SlurmCluster(_exports(proc.stdout), accounting_enabled=True, timings=timings)

    saved = {name: os.environ.get(name) for name in cluster.exports}
    os.environ.update(cluster.exports)
    try:
        yield cluster
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not was_up:
            proc, timings["stop"] = _script("stop", env=cluster.env)
            if proc.returncode != 0:
                raise SlurmError(f"slurm.sh stop failed:\n{proc.stdout}{proc.stderr}")
        elif cluster.accounting_enabled != was_accounting:
            cluster._switch(was_accounting)
