"""The helpers every backend starts stage processes with (orchestrator/backends/processes.py)."""
from __future__ import annotations

import os
import socket

import pytest

from orchestrator.backends.processes import free_port, process_alive, rank_env, resolve_runner, split_runner, thread_env


def test_a_runner_is_module_colon_function():
    assert resolve_runner("os.path:join") is os.path.join
    assert split_runner("workers.entry:run_stage") == ("workers.entry", "run_stage")
    for bad in ("workers.entry", ":run_stage", "workers.entry:", ""):
        with pytest.raises(ValueError, match="module:function"):
            split_runner(bad)


def test_thread_env_sets_every_math_library_alike():
    assert thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3"}


def test_a_free_port_can_be_bound():
    port = free_port("127.0.0.1")
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))


def test_rank_env_is_what_torch_reads():
    assert rank_env(3, 4, 1, 2, "node0", 29500) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                                    "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node0",
                                                    "MASTER_PORT": "29500"}


def test_process_alive():
    assert process_alive(os.getpid())
    assert not process_alive(2 ** 22 + 12345)  # above the kernel's pid_max
