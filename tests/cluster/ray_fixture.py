"""pytest plugin: the session fixture ``ray_cluster``, a real Ray cluster on localhost.

Load it from tests/conftest.py with ``pytest_plugins = [..., "cluster.ray_fixture"]``; it
registers the ``ray`` marker. The fixture starts a head node (``ray start --head``) on
127.0.0.1 with its own short temp dir (Ray's socket paths have a length limit) and free
ports, plus a second worker node that declares one GPU it does not have (``--num-gpus=1``:
Ray then hands out that GPU, and fractions of it, and sets ``CUDA_VISIBLE_DEVICES`` for
the tasks; torch finds no CUDA and trains on CPU), and stops them at the end of the session by the PIDs of
the processes they started (never a global ``ray stop``, which would end every Ray
process of this user).

Authentication is explicit: a token of the fixture's own (``RAY_AUTH_MODE=token``,
``RAY_AUTH_TOKEN_PATH`` in the temp dir) for the nodes and for every client, so a
``~/.ray/auth_token`` left by something else can neither break nor open the cluster.
``cluster.env`` is the environment clients must run with.

When Ray cannot exist here (not Linux, not installed) the fixture skips with the reason
-- but fails when ``CI=true``, so CI never passes by skipping; a cluster that should start
but does not always fails, with Ray's output.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

#: marks every process of one fixture cluster (inherited by raylets, workers and job drivers).
MARKER = "PRUNESWEEP_RAY_FIXTURE"
_TIMINGS: dict[str, float] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: runs against the real local Ray cluster of tests/cluster/ray_fixture.py")


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in _TIMINGS.items())
        terminalreporter.write_line(f"local Ray cluster: {phases}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _cannot(reason: str):
    message = f"local Ray cluster unavailable: {reason}"
    if _in_ci():
        pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _marked_pids(tag: str, root: Path) -> list[int]:
    """PIDs of the processes whose environment carries ``MARKER=tag`` or whose command line
    names the cluster's temp dir ``root``."""
    needle = f"{MARKER}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (needle in (entry / "environ").read_bytes().split(b"\0")
                    or str(root).encode() in (entry / "cmdline").read_bytes()):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return pids


def _with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and all their descendants.

    Ray rewrites its workers' and agents' process titles, which can blank their /proc
    command line and environment, so descendants of marked processes count as marked.
    """
    found = set(pids)
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return sorted(found)


def _alive() -> set[int]:
    alive = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(int(entry.name))
            except (OSError, IndexError):
                continue
    return alive


def _terminate(pids: set[int]) -> list[int]:
    """SIGTERM, then SIGKILL, exactly ``pids`` (found before anything dies: orphans lose the
    parent link that finds them); return those still alive."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while (pids & _alive()) and time.monotonic() < deadline:
            time.sleep(0.2)
    return sorted(pids & _alive())


class RayCluster:
    """A head node (and optional worker nodes) on 127.0.0.1, owned by this process."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tag = self.root.name
        self.token_path = self.root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
                    MARKER: self.tag}
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            self.env.pop(name, None)
        self.nodes = 0
        self.timings: dict[str, float] = {}

    def _ray(self, *args: str, env: dict | None = None, prefix: tuple = ()) -> None:
        ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
        if ray is None:
            raise RuntimeError("the `ray` command is not installed next to this python")
        command = [*prefix, ray, "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                   f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                   f"--dashboard-agent-grpc-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                   "--object-store-memory=100000000"]
        proc = subprocess.run(command, env=env or self.env, capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")

    def start_head(self, num_cpus: int = 2) -> None:
        """``ray start --head`` on loopback with this cluster's temp dir, ports and token."""
        started = time.monotonic()
        self._ray("--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
                  "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                  f"--ray-client-server-port={free_port()}", f"--temp-dir={self.root / 't'}")
        self.nodes = 1
        self.timings["head"] = time.monotonic() - started

    def add_node(self, num_cpus: int = 1, prefix: tuple = (), tag: str | None = None, num_gpus: int = 0) -> None:
        """A worker node joining the head (``prefix`` wraps the command, e.g. ``unshare``).

        With a ``tag`` its processes carry their own marker, so :meth:`remove_node` can
        stop that node alone.
        """
        started = time.monotonic()
        env = dict(self.env, **{MARKER: tag}) if tag else self.env
        self._ray(f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", env=env,
                  prefix=prefix)
        self.nodes += 1
        self.wait_for_nodes(self.nodes)
        self.timings[f"node {self.nodes}"] = time.monotonic() - started

    def remove_node(self, tag: str) -> None:
        """Stop the worker node added with ``tag`` (SIGTERM: its raylet says goodbye to the head)."""
        ours = set(_with_descendants(_marked_pids(tag, Path("/nonexistent"))))
        _terminate(ours)
        self.nodes -= 1
        self.wait_for_nodes(self.nodes, exact=True)

    def wait_for_nodes(self, count: int, timeout: float = 60, exact: bool = False) -> None:
        """Block until the head lists ``count`` alive nodes (at least, or exactly)."""
        script = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
                  "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                                  timeout=120)
            alive = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
            if alive and (int(alive[0]) == count if exact else int(alive[0]) >= count):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} Ray nodes did not come up: {proc.stdout}{proc.stderr}")
            time.sleep(1)

    def pids(self) -> list[int]:
        """Every live process this cluster started (nodes, workers, agents, job drivers)."""
        return _with_descendants(_marked_pids(self.tag, self.root))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, exactly the processes of this cluster; remove its temp dir."""
        started = time.monotonic()
        left = _terminate(set(self.pids()))
        self.timings["stop"] = time.monotonic() - started
        shutil.rmtree(self.root, ignore_errors=True)
        if left:
            raise RuntimeError(f"Ray processes survived SIGKILL: {left}")


def start_cluster(nodes: int = 2, gpus: int = 1) -> RayCluster:
    """A fresh cluster: a 2-CPU head and ``nodes - 1`` one-CPU worker nodes declaring ``gpus`` GPUs each."""
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="rs", dir="/tmp")))
    try:
        cluster.start_head()
        for _ in range(nodes - 1):
            cluster.add_node(num_gpus=gpus)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def ray_cluster():
    if not sys.platform.startswith("linux"):
        _cannot(f"needs Linux, this is {sys.platform}")
    try:
        import ray  # noqa: F401
    except ImportError as error:
        _cannot(f"ray is not installed ({error})")
    try:
        cluster = start_cluster()
    except Exception as error:  # noqa: BLE001 - a cluster that should start but does not is a failure
        pytest.fail(f"local Ray cluster did not start: {error}", pytrace=False)
    _TIMINGS.update(cluster.timings)
    try:
        yield cluster
    finally:
        cluster.stop()
        _TIMINGS.update(cluster.timings)
