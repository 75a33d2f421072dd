"""A training stage's per-epoch metrics: ``epochs.jsonl`` in its folder, and the trackers it feeds.

One JSON object per line, one line per epoch of the stage's training, in order: ``epoch``,
``iteration``, ``train_loss``, ``train_accuracy`` (of the task trained on), ``lr``,
``seconds`` (training time so far, over every attempt) and, on the epoch where the stage
measures it, ``test_top1`` (a head that predicts labels) or ``test_accuracy`` (another
task's own accuracy). The file is rewritten atomically after each epoch (a few hundred
lines at most), so a reader never sees half a line, and a resumed attempt replaces the
epochs its checkpoint did not keep instead of appending them twice.

It is written beside ``log.txt`` and, like it, is no artifact: ``DONE.json`` never lists it
(stages made before it existed have none and stay done), and a damaged or missing one never
makes a stage rerun. The training loop calls :meth:`EpochRecorder.record`; the recorder
also hands every epoch to the trackers that ``tracking.json`` asks for
(:mod:`workers.stages.trackers`: TensorBoard event files, an MLflow run).

Torch-free: the report reads the file through :func:`read_epochs`.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.stages.artifacts import atomic_write_bytes
from workers.stages.paths import EPOCHS_FILE, TRACKING_FILE
from workers.stages.workspace_files import read_bytes, read_json

if TYPE_CHECKING:
    from workers.stages.trackers import Tracker

log = logging.getLogger(__name__)

#: what the driver writes into the folder of a stage about to run when the sweep asks for tracking
#: (``tracking:`` in the sweep file): the sweep, the cells the stage serves and the trackers.
#: the largest ``epochs.jsonl`` read back (a file beyond it is no file of ours).
MAX_EPOCHS_BYTES = 4 << 20


def read_tracking(stage_dir: Path) -> dict[str, Any]:
    """The stage's ``tracking.json`` (empty when there is none or it cannot be read: tracking is off)."""
    try:
        settings = read_json(Path(stage_dir) / TRACKING_FILE, limit=1 << 20)
    except (OSError, ValueError, RecursionError):
        return {}
    return settings if isinstance(settings, dict) else {}


def read_epochs(stage_dir: Path) -> list[dict[str, Any]]:
    """The lines of a stage's ``epochs.jsonl`` (objects with an integer ``epoch``), in epoch order;
    empty when the stage has none (made before the file existed, or not a training)."""
    try:
        text = read_bytes(Path(stage_dir) / EPOCHS_FILE, limit=MAX_EPOCHS_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return []
    entries = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and type(entry.get("epoch")) is int:
            entries[entry["epoch"]] = entry
    return [entries[epoch] for epoch in sorted(entries)]


@contextmanager
def recording(stage_dir: Path, key: str, seed: int) -> Iterator[EpochRecorder]:
    """An :class:`EpochRecorder` for the block, its trackers closed after it with how it ended."""
    recorder = EpochRecorder(stage_dir, key, seed)
    try:
        yield recorder
    except BaseException as error:
        recorder.close("KILLED" if isinstance(error, (SystemExit, KeyboardInterrupt)) else "FAILED")
        raise
    recorder.close()


class EpochRecorder:
    """Writes ``epochs.jsonl`` of one stage's training and feeds the trackers of its ``tracking.json``.

    The trackers name and tag their run with the stage's ``key`` and ``seed`` and the ``kind`` and
    ``label`` of its ``stage.json``. A tracker that fails is logged and dropped; it never fails the stage.
    """

    def __init__(self, stage_dir: Path, key: str, seed: int):
        self.path = Path(stage_dir) / EPOCHS_FILE
        self.entries = read_epochs(stage_dir)  # a resumed attempt keeps the epochs before its checkpoint
        self.trackers: list[Tracker] = []
        settings = read_tracking(stage_dir)
        if settings:
            from workers.stages.artifacts import read_stage
            from workers.stages.trackers import open_trackers

            stage = read_stage(Path(stage_dir))
            self.trackers = open_trackers(Path(stage_dir), {"key": key, "seed": seed, "kind": stage.get("kind"),
                                                            "label": stage.get("label"), "dir": str(stage_dir)},
                                          settings)

    def record(self, entry: Mapping[str, Any]) -> None:
        """One whole epoch: replaces what an earlier attempt wrote for it and for every later epoch."""
        entry = {key: value for key, value in entry.items() if value is not None}
        self.entries = [old for old in self.entries if old["epoch"] < entry["epoch"]] + [entry]
        self._write()
        for tracker in list(self.trackers):
            self._feed(tracker, entry)

    def measured(self, accuracy: float, label_head: bool) -> None:
        """The test accuracy the stage measured after its last epoch: top-1 when the head predicts labels."""
        name = "test_top1" if label_head else "test_accuracy"
        if not self.entries:  # no epoch trained (zero epochs): the measurement is of the initial weights
            self.entries = [{"epoch": 0, "iteration": 0}]
        self.entries[-1] = {**self.entries[-1], name: accuracy}
        self._write()
        for tracker in list(self.trackers):
            self._feed(tracker, {"epoch": self.entries[-1]["epoch"], name: accuracy})

    def close(self, status: str = "FINISHED") -> None:
        """Flush and close the trackers (their failures are logged, never raised); ``status``: how the
        training ended, as MLflow says it (``FINISHED``, ``FAILED``, ``KILLED``: stopped to resume later)."""
        for tracker in self.trackers:
            try:
                tracker.close(status)
            except Exception as error:  # noqa: BLE001 - a tracker never fails a stage
                log.warning("tracking: %s could not be closed: %s", tracker.name, error)
        self.trackers = []

    def _write(self) -> None:
        data = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in self.entries).encode()
        atomic_write_bytes(self.path, data)

    def _feed(self, tracker: Tracker, entry: Mapping[str, Any]) -> None:
        metrics = {name: float(value) for name, value in entry.items()
                   if name not in ("epoch", "iteration") and isinstance(value, (int, float))}
        try:
            tracker.log(int(entry["epoch"]), metrics)
        except Exception as error:  # noqa: BLE001 - a tracker that is down never fails a stage
            log.warning("tracking: %s failed (%s: %s); this stage stops sending it metrics", tracker.name,
                        type(error).__name__, error)
            self.trackers.remove(tracker)
            try:
                tracker.close("FAILED")
            except Exception:  # noqa: BLE001 - it failed already: nothing more to say
                pass
