"""pytest plugin: the session fixture ``postgres_server``, a real PostgreSQL on 127.0.0.1.

Load it from tests/conftest.py with ``pytest_plugins = [..., "cluster.postgres_fixture"]``; it
registers the ``postgres`` marker. The fixture runs ``tests/cluster/postgres.sh install`` and
``start`` (apt-get installs Debian's ``postgresql`` when it is missing; as root the server runs
as the ``postgres`` user), and at the end of the session ``stop`` -- only when this session
started it. SQLAlchemy and psycopg, which the central results database needs, are install
requirements of prunesweep (setup.cfg).

When the server cannot exist here (not Linux, no PostgreSQL and no apt-get or not root) the
fixture skips with the reason -- but fails when ``CI=true``, so CI never passes by skipping.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().with_name("postgres.sh")
IMPOSSIBLE = 3  # postgres.sh's exit code for "cannot run on this machine"
_TIMINGS: dict[str, float] = {}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "postgres: runs against the real local PostgreSQL server of tests/cluster/postgres.sh "
        "(installs and starts it; deselect with -m 'not postgres')",
    )


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _TIMINGS.items())
        terminalreporter.write_line(f"local PostgreSQL server: {phases}")


def _cannot(reason: str):
    message = f"local PostgreSQL server unavailable: {reason}"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(SCRIPT), *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"tests/cluster/postgres.sh {' '.join(args)} took over {timeout} s:\n{exc.stderr or ''}",
                    pytrace=False)
    _TIMINGS[args[0]] = _TIMINGS.get(args[0], 0.0) + time.monotonic() - started
    if proc.returncode == IMPOSSIBLE:
        _cannot(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "postgres.sh exit 3")
    return proc


def _check(proc: subprocess.CompletedProcess, args: str) -> None:
    if proc.returncode != 0:
        pytest.fail(f"tests/cluster/postgres.sh {args} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}",
                    pytrace=False)


class PostgresServer:
    """What the tests get: the server's URL, a fresh database per test, and a way to take it down."""

    def __init__(self, url: str):
        self.url = url  # postgresql://prunesweep:PASSWORD@127.0.0.1:PORT/prunesweep
        self.password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        self.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])

    def new_database(self) -> str:
        """The URL of a new, empty database on this server."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def query(self, url: str, sql: str) -> list[tuple]:
        """Rows of ``sql`` run on the database of ``url``."""
        import psycopg

        with psycopg.connect(url) as conn:
            return list(conn.execute(sql).fetchall())

    @contextmanager
    def down(self):
        """The server stopped for the block, and started again after it."""
        _check(_script("stop"), "stop")
        try:
            yield self
        finally:
            proc = _script("start")
            _check(proc, "start")


def _exports(stdout: str) -> dict[str, str]:
    env = {}
    for line in stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


@pytest.fixture(scope="session")
def postgres_server():
    if not sys.platform.startswith("linux"):
        _cannot(f"needs Linux (Debian/Ubuntu), this is {sys.platform}")
    try:
        import psycopg  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as error:
        _cannot(f"{error.name} is not installed (pip install -e '.[test]')")
    _check(_script("install", timeout=900), "install")
    was_up = _script("status").returncode == 0
    proc = _script("start")
    _check(proc, "start")
    url = _exports(proc.stdout).get("PRUNESWEEP_TEST_PG_URL")
    if not url:
        pytest.fail(f"postgres.sh start printed no URL:\n{proc.stdout}{proc.stderr}", pytrace=False)
    try:
        yield PostgresServer(url)
    finally:
        if not was_up:
            _check(_script("stop"), "stop")
