"""pytest plugin: the session fixture ``mlflow_server``, a real MLflow tracking server on 127.0.0.1.

Load it from tests/conftest.py with ``pytest_plugins = [..., "cluster.mlflow_fixture"]``; it
registers the ``mlflow`` marker. The fixture runs ``tests/cluster/mlflow.sh install`` and ``start``
(pip installs the ``mlflow`` extra's range when mlflow is missing; the server keeps its runs in a
SQLite file under /tmp/prunesweep-mlflow), and at the end of the session ``stop`` -- only when this
session started it.

When the server cannot exist here (not Linux, no mlflow and no pip) the fixture skips with the
reason -- but fails when ``CI=true``, so CI never passes by skipping.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().with_name("mlflow.sh")
IMPOSSIBLE = 3  # mlflow.sh's exit code for "cannot run on this machine"
_TIMINGS: dict[str, float] = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "mlflow: runs against the real local MLflow tracking server of tests/cluster/mlflow.sh "
        "(installs and starts it; deselect with -m 'not mlflow')",
    )


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _TIMINGS.items())
        terminalreporter.write_line(f"local MLflow server: {phases}")


def _cannot(reason: str):
    message = f"local MLflow server unavailable: {reason}"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(SCRIPT), *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ, PYTHON=sys.executable))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tests/cluster/mlflow.sh {' '.join(args)} took over {timeout} s:\n{exc.stderr or ''}",
                    pytrace=False)
    _TIMINGS[args[0]] = _TIMINGS.get(args[0], 0.0) + time.monotonic() - started
    if proc.returncode == IMPOSSIBLE:
        _cannot(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "mlflow.sh exit 3")
    return proc


def _check(proc: subprocess.CompletedProcess, args: str) -> None:
    if proc.returncode != 0:
        pytest.fail(f"tests/cluster/mlflow.sh {args} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}",
                    pytrace=False)


def _exports(stdout: str) -> dict[str, str]:
    env = {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """The tracking URI (``http://127.0.0.1:PORT``) of the running server."""
    if not sys.platform.startswith("linux"):
        _cannot(f"needs Linux, this is {sys.platform}")
    _check(_script("install", timeout=900), "install")
    was_up = _script("status").returncode == 0
    proc = _script("start")
    _check(proc, "start")
    uri = _exports(proc.stdout).get("PRUNESWEEP_TEST_MLFLOW_URI")
    if not uri:
        pytest.fail(f"mlflow.sh start printed no URI:\n{proc.stdout}{proc.stderr}", pytrace=False)
    try:
        yield uri
    finally:
        if not was_up:
            _check(_script("stop"), "stop")
