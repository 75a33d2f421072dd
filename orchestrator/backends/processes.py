"""What every backend does to start a stage process: find the runner, set its math threads, pick a port.

One place for each, so the local, SLURM and Ray backends (and their distributed stages)
start stages the same way.
"""
from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable

#: the math libraries' thread variables; a stage gets one value for all of them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def split_runner(runner: str) -> tuple[str, str]:
    """``"package.module:function"`` -> (module name, function name); ValueError if it is not that shape."""
    module_name, sep, function_name = runner.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"a runner is named 'module:function', got {runner!r}")
    return module_name, function_name


def resolve_runner(runner: str) -> Callable:
    """Import the runner's module and return its function."""
    module_name, function_name = split_runner(runner)
    return getattr(importlib.import_module(module_name), function_name)


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a stage process ``threads`` math threads."""
    return {variable: str(threads) for variable in THREAD_VARIABLES}


def free_port(host: str = "") -> int:
    """A TCP port nothing listens on now on ``host`` (every interface by default), for a rendezvous."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rank_env(rank: int, world: int, local_rank: int, local_world: int, master_addr: str,
             master_port: int) -> dict[str, str]:
    """torch's environment variables for one rank of a distributed stage (read by ``workers.training.distributed``)."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(local_world), "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)}
