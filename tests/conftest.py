"""Shared fixtures: a valid sweep as a dict and a writer for sweep files."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

# real local SLURM and Ray clusters, a headless Chromium, a PostgreSQL and an MLflow server (tests/cluster/)
pytest_plugins = ["cluster.slurm_fixture", "cluster.ray_fixture", "cluster.chromium", "cluster.postgres_fixture",
                  "cluster.mlflow_fixture"]

ROOT = Path(__file__).resolve().parent.parent

BASE_SWEEP = {
    "name": "t",
    "workspace": "ws",
    "dataset": {"name": "digits"},
    "arch": {"name": "small_cnn", "width": 8},
    "recipes": {
        "labels": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.003},
        "rotnet": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": 0.003},
    },
    "pruning": {"fractions": [0.8, 0.512]},
    "rewind": [0],
    "mask_source": ["labels", "rotnet", "random"],
    "init": ["winning_ticket", "reinit"],
    "seeds": [0],
}


#: the smallest real grid the end-to-end tests run (17 stages, a few seconds each).
TINY = {
    **BASE_SWEEP,
    "name": "tiny",
    "arch": {"name": "small_cnn", "width": 4},
    "recipes": {
        "labels": {"epochs": 2, "batch_size": 256, "optimizer": "adam", "lr": 0.01},
        "rotnet": {"epochs": 2, "batch_size": 256, "optimizer": "adam", "lr": 0.01},
    },
}


def ledger_states(workspace) -> dict:
    """key -> the ledger row of every stage of a workspace."""
    from orchestrator.state.ledger import Ledger

    ledger = Ledger(workspace)
    try:
        return {row["key"]: row for row in ledger.stages()}
    finally:
        ledger.close()


def results_row(**overrides) -> dict:
    """One valid results-table row; its stage key is derived from the cell's settings."""
    row = dict(
        sweep="digits", stage_key="k", dataset="digits", arch="lenet",
        mask_source="labels", init="winning_ticket", rewind="0", rewind_iteration=0,
        level=None, nominal_fraction=0.512, measured_fraction=0.512, seed=0, top1=0.9,
        epochs=20, wall_time_s=1.0,
    )
    row.update(overrides)
    row["stage_key"] = "|".join(
        str(row[c]) for c in ("sweep", "mask_source", "init", "rewind", "level", "nominal_fraction", "seed")
    )
    return row


@pytest.fixture
def sweep_dict():
    """A fresh copy of a small valid sweep."""
    return copy.deepcopy(BASE_SWEEP)


@pytest.fixture
def write_sweep(tmp_path):
    """Write a sweep dict (or raw text) to a YAML file whose workspace lies in tmp_path."""

    def write(content, name="sweep.yaml"):
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            content = copy.deepcopy(content)
            content["workspace"] = str(tmp_path / content.get("workspace", "ws"))
            path.write_text(yaml.safe_dump(content))
        return path

    return write


#: the test tiers, by folder: run one with `python -m pytest -m unit` (or workers, integration).
TIERS = {
    "unit": "no training and no cluster: the sweep file, planning, stores, queries, the CLI's refusals",
    "workers": "trains on the CPU: the worker, the local backend end to end, the docs' examples",
    "integration": "against real local SLURM and Ray clusters (tests/cluster/)",
}


def pytest_configure(config):
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
