"""The `ray:` section: valid settings load; bad ones stop with exit 2 naming file, key and
what is allowed, before anything is written or submitted."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from orchestrator.errors import SpecError
from orchestrator.spec import load_spec


def _write(tmp_path, sweep_dict, ray, backend="ray"):
    sweep = dict(sweep_dict, workspace=str(tmp_path / "ws"), backend=backend, ray=ray)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)


def test_a_full_ray_section_loads(tmp_path, sweep_dict):
    ray = {"address": "http://10.0.0.1:8265", "max_retries": 5,
           "resources": {"default": {"num_cpus": 2}, "eval": {"num_cpus": 1, "num_gpus": 0.25},
                         "dense": {"num_gpus": 1, "custom": {"big_memory": 1}}},
           "runtime_env": {"working_dir": ".", "pip": ["scipy"], "env_vars": {"A": "1"}}}
    spec = load_spec(_write(tmp_path, sweep_dict, ray))
    assert spec.backend == "ray" and spec.ray.max_retries == 5
    assert spec.ray.resources.eval.num_gpus == 0.25 and spec.ray.resources.imp is None
    assert spec.ray.resources.dense.custom == {"big_memory": 1}
    assert spec.ray.resources.eval.ranks == 1 and spec.ray.placement_strategy == "PACK"
    ranked = load_spec(_write(tmp_path, sweep_dict, {"placement_strategy": "SPREAD",
                                                     "resources": {"dense": {"num_gpus": 1, "ranks": 4}}}))
    assert ranked.ray.resources.dense.ranks == 4 and ranked.ray.placement_strategy == "SPREAD"


@pytest.mark.parametrize("address", [None, "auto", "ray://head:10001", "http://127.0.0.1:8265", "https://ray.lab:443"])
def test_addresses_allowed(tmp_path, sweep_dict, address):
    assert load_spec(_write(tmp_path, sweep_dict, {"address": address})).ray.address == address


@pytest.mark.parametrize("ray,key_path,needle", [
    ({"address": "headnode"}, "ray.address", "ray://HOST:PORT"),
    ({"address": "ray://head"}, "ray.address", "http://HOST:DASHBOARD_PORT"),
    ({"resources": {"dense": {"num_gpu": 1}}}, "ray.resources.dense.num_gpu", "num_cpus, num_gpus, custom"),
    ({"resources": {"gpu_stage": {}}}, "ray.resources.gpu_stage", "dense, imp, random_mask, eval, rewind"),
    ({"resources": {"eval": {"num_gpus": 1.5}}}, "ray.resources.eval.num_gpus", "whole number"),
    ({"resources": {"eval": {"num_cpus": -1}}}, "ray.resources.eval.num_cpus", "greater than or equal to 0"),
    ({"resources": {"imp": {"custom": {"GPU": 1}}}}, "ray.resources.imp.custom.GPU", "num_gpus"),
    ({"resources": {"imp": {"custom": {"tpu": 0}}}}, "ray.resources.imp.custom.tpu", "> 0"),
    ({"max_retries": -1}, "ray.max_retries", "greater than or equal to 0"),
    ({"runtime_env": {"conda": "x"}}, "ray.runtime_env.conda", "working_dir, pip, env_vars"),
    ({"adress": "auto"}, "ray.adress", "address"),
    ({"resources": {"eval": {"ranks": 0}}}, "ray.resources.eval.ranks", "greater than or equal to 1"),
    ({"resources": {"eval": {"ranks": 2, "num_gpus": 0.5}}}, "ray.resources.eval.num_gpus", "num_gpus 0 or 1"),
    ({"placement_strategy": "TIGHT"}, "ray.placement_strategy", "STRICT_PACK"),
])
def test_bad_ray_values_name_the_key_and_what_is_allowed(tmp_path, sweep_dict, ray, key_path, needle):
    path = _write(tmp_path, sweep_dict, ray)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.key_path == key_path and needle in info.value.problem and str(path) in str(info.value)


@pytest.mark.parametrize("override,needle", [
    ("ray.address=localhost:8265", "ray.address"),
    ("ray.resources.eval.num_gpus=2.5", "ray.resources.eval.num_gpus"),
    ("backend=spark", "backend"),
])
def test_bad_ray_value_exits_2_and_writes_nothing(tmp_path, sweep_dict, override, needle):
    path = _write(tmp_path, sweep_dict, {})
    result = run_cli("launch", path, override)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunesweep: error: ") and needle in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "ws").exists()


def test_an_unreachable_address_exits_2_without_a_hang(tmp_path, sweep_dict):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = _write(tmp_path, sweep_dict, {"address": f"http://127.0.0.1:{port}"})
    result = run_cli("launch", path, "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot reach the Ray cluster" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "ws" / "ray").exists()  # nothing submitted, no driver record


def test_every_stage_kind_can_have_its_own_ray_resources():
    from orchestrator.spec import RayStageResources
    from workers import catalog

    assert set(RayStageResources.model_fields) == {"default", *catalog.STAGE_KINDS}
