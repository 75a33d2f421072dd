"""Where a stage's per-epoch metrics go besides ``epochs.jsonl``: TensorBoard event files, an MLflow run.

What a stage sends is said by its ``tracking.json`` (written by the driver from the sweep
file's ``tracking:`` section; never part of a stage's identity)::

    {"sweep": "digits", "cells": ["labels / winning_ticket / rewind 0 / 51.2% / seed 0"],
     "tensorboard": true, "mlflow": {"uri": "http://127.0.0.1:5000", "experiment": "digits"}}

- **TensorBoard**: event files in ``STAGE/tensorboard/`` (``tensorboard --logdir WORKSPACE/stages``
  shows one run per stage), one scalar per metric of ``epochs.jsonl`` at step = epoch, written by
  ``torch.utils.tensorboard`` (the ``tensorboard`` extra);
- **MLflow** (the ``mlflow`` extra): one run per stage in the experiment (the sweep's name unless
  given), named after the stage key and tagged with ``sweep``, ``cell``, ``seed``, ``stage_key``,
  ``stage_kind``, ``stage_label`` and ``workspace`` (and a digest of its path, ``workspace_id``); a
  resumed attempt continues the run of the earlier one in the same workspace.
  ``uri`` absent: ``MLFLOW_TRACKING_URI`` of the worker's environment.

A tracker that cannot start (package missing, server down) is logged in ``log.txt`` and left
out: tracking never fails or slows a stage by more than a few seconds.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from workers.stages.paths import TENSORBOARD_DIR
from workers.training.distributed import is_writer

log = logging.getLogger(__name__)

#: the longest tag value sent to MLflow (its server refuses longer ones).
MAX_TAG = 5000


class Tracker(Protocol):
    """One destination of per-epoch metrics."""

    name: str

    def log(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


def open_trackers(stage_dir: Path, stage: dict[str, Any], settings: dict[str, Any]) -> list[Tracker]:
    """The trackers ``settings`` (a ``tracking.json``) asks for that can start here; none on a rank but 0."""
    if not settings or not is_writer():
        return []
    trackers: list[Tracker] = []
    if settings.get("tensorboard"):
        try:
            trackers.append(TensorBoardTracker(Path(stage_dir) / TENSORBOARD_DIR))
        except Exception as error:  # noqa: BLE001 - a missing package or a bad folder only costs the curves
            log.warning("tracking: no TensorBoard event files (%s: %s); install the extra: "
                        "pip install 'prunesweep[tensorboard]'", type(error).__name__, error)
    mlflow = settings.get("mlflow")
    if isinstance(mlflow, dict):
        try:
            trackers.append(MlflowTracker(mlflow, stage, settings))
        except Exception as error:  # noqa: BLE001 - the server may be down: the stage trains anyway
            log.warning("tracking: no MLflow run (%s: %s)", type(error).__name__, error)
    return trackers


class TensorBoardTracker:
    """Scalars in TensorBoard event files, step = epoch."""

    name = "TensorBoard"

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        for metric, value in metrics.items():
            self.writer.add_scalar(metric, value, global_step=epoch)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


def cell_tag(cells: Any) -> str:
    """The ``cell`` tag: the cells the stage serves, or what it is when it serves many (a dense run)."""
    cells = [str(cell) for cell in cells] if isinstance(cells, list) else []
    if len(cells) > 3:
        return f"{len(cells)} cells: {cells[0]}; ..."
    return "; ".join(cells) or "-"


class MlflowTracker:
    """One MLflow run per stage, named after its key; metrics at step = epoch."""

    name = "MLflow"

    def __init__(self, options: dict[str, Any], stage: dict[str, Any], settings: dict[str, Any]):
        # a server that is down costs a few seconds, not the client's default minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.tracking import MlflowClient  # the mlflow extra

        uri = options.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ValueError("tracking.mlflow has no uri and MLFLOW_TRACKING_URI is not set")
        self.client = MlflowClient(tracking_uri=str(uri))
        experiment = str(options.get("experiment") or settings.get("sweep") or "prunesweep")
        experiment_id = self._experiment(experiment)
        key = str(stage["key"])
        workspace = str(Path(stage["dir"]).resolve().parent.parent)
        # the same stage key in another workspace (a copy, a rerun elsewhere) is another run
        workspace_id = hashlib.sha256(workspace.encode()).hexdigest()[:16]
        tags = {"sweep": str(settings.get("sweep", "-")), "cell": cell_tag(settings.get("cells")),
                "seed": str(stage.get("seed", "-")), "stage_key": key, "stage_kind": str(stage.get("kind", "-")),
                "stage_label": str(stage.get("label", "-")), "workspace": workspace, "workspace_id": workspace_id}
        tags = {name: value[:MAX_TAG] for name, value in tags.items()}
        earlier = self.client.search_runs(
            [experiment_id], filter_string=f"tags.stage_key = '{key}' and tags.workspace_id = '{workspace_id}'",
            max_results=1)
        if earlier:  # an earlier attempt of this stage: its run goes on
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=key, tags=tags).info.run_id
        log.info("tracking: MLflow run %s (experiment %s at %s)", self.run_id, experiment, uri)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 - another stage created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, value, now, epoch) for name, value in metrics.items()])

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
