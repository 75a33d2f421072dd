"""MLflow tracking (issue 27) against a real MLflow tracking server on 127.0.0.1, started by the project's own
tests/cluster/mlflow.sh: a tiny sweep with `tracking: {mlflow: {uri: ...}}` gives one run per training stage,
named after its stage key, tagged with sweep, cell and seed, whose metric history is the stage's epochs.jsonl;
a server that is down never fails a stage."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml
from conftest import ROOT, TINY, ledger_states

from workers.stages.epochs import read_epochs

pytestmark = pytest.mark.mlflow

SWEEP = dict(TINY, mask_source=["labels", "random"], init=["winning_ticket", "reinit"], pruning={"fractions": [0.8]})


def launch(path, sweep):
    path.write_text(yaml.safe_dump(sweep))
    done = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(path), "--no-progress"],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    return {key: row for key, row in ledger_states(sweep["workspace"]).items() if row["kind"] in ("dense", "imp",
                                                                                                    "eval")}


def test_one_run_per_training_stage_with_its_epochs(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    name = f"prunesweep-{uuid.uuid4().hex[:12]}"  # the server may keep the runs of earlier sessions
    sweep = dict(SWEEP, name="mlflow-tiny", workspace=str(tmp_path / "ws"),
                 tracking={"mlflow": {"uri": mlflow_server, "experiment": name}})
    stages = launch(tmp_path / "s.yaml", sweep)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(name)
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id], max_results=100)}
    assert set(runs) == set(stages)
    for key, run in runs.items():
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["sweep"] == "mlflow-tiny" and tags["seed"] == "0" and tags["stage_key"] == key
        assert tags["stage_kind"] == stages[key]["kind"] and tags["workspace"] == str((tmp_path / "ws").resolve())
        if stages[key]["kind"] == "eval":  # one cell each; a dense run serves many
            assert tags["cell"].endswith("/ 80% / seed 0") and tags["cell"].split(" / ")[0] in ("labels", "random")
        epochs = read_epochs(tmp_path / "ws" / "stages" / key)
        for metric in ("train_loss", "train_accuracy", "lr"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [(m.step, m.value) for m in history] == [(e["epoch"], pytest.approx(e[metric])) for e in epochs]
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_top1")] == [
            (2, pytest.approx(epochs[-1]["test_top1"]))]


def test_a_server_that_is_down_never_fails_a_stage(tmp_path):
    free = subprocess.run([sys.executable, "-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
                                                 "print(s.getsockname()[1])"], capture_output=True, text=True)
    uri = f"http://127.0.0.1:{free.stdout.strip()}"  # nothing listens there
    sweep = dict(SWEEP, name="mlflow-down", workspace=str(tmp_path / "ws"), init=["reinit"], mask_source=["labels"],
                 tracking={"mlflow": {"uri": uri}})
    stages = launch(tmp_path / "s.yaml", sweep)
    assert stages and all(row["state"] == "done" for row in stages.values())
    for key in stages:
        folder = tmp_path / "ws" / "stages" / key
        assert "tracking: no MLflow run" in (folder / "log.txt").read_text()
        assert [entry["epoch"] for entry in read_epochs(folder)] == [1, 2]


def test_the_same_stage_in_another_workspace_is_another_run(mlflow_server, tmp_path):
    """Stage keys are the same in every workspace of the same sweep: each workspace's stage gets its own run,
    never the metrics of the other appended to its history."""
    from mlflow.tracking import MlflowClient

    name = f"prunesweep-{uuid.uuid4().hex[:12]}"
    sweep = dict(SWEEP, name="mlflow-twice", init=["reinit"], mask_source=["random"],
                 tracking={"mlflow": {"uri": mlflow_server, "experiment": name}})
    first = launch(tmp_path / "a.yaml", dict(sweep, workspace=str(tmp_path / "a")))
    second = launch(tmp_path / "b.yaml", dict(sweep, workspace=str(tmp_path / "b")))
    assert set(first) == set(second)
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=100)
    assert sorted(run.info.run_name for run in runs) == sorted([*first, *second])
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
