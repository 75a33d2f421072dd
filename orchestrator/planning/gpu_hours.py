"""Expected device-hours of a plan, from the measured throughput table ``throughput.json``.

A training stage processes ``epochs x training images x views`` samples (RotNet and S4L
feed 4 rotations of every image, Exemplar 2 views; labels_10pct trains on its subset; a
fine-tuning on the target's images). Its hours are those samples over the measured
samples/s of the sweep's network on that dataset and device. Feature extraction and
linear classifiers are left out (a forward pass over the target, and a linear layer).
When the table has no entry for the pair, the estimate is unknown and says why: no
figure is ever made up.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from orchestrator.planning.planner import Plan
from orchestrator.spec import SweepSpec
from workers.stages.paths import PREFLIGHT_DIR

TABLE_FILE = Path(__file__).with_name("throughput.json")
#: largest record read back (a record is a few kB).
_MAX_RECORD_BYTES = 4 << 20
DEFAULT_DEVICE = "H100"
#: the GPU models' short names under which ``bench/throughput_table.py`` records a GPU (one whose
#: name holds none of them is recorded under its full name); a CPU is ``cpu-<threads>thread``.
SHORT_NAMES = ("GH200", "GB200", "B200", "H200", "H100", "A100", "A10G", "A10", "L40S", "L40", "L4", "V100", "T4")
_CPU_NAME = re.compile(r"cpu-[1-9][0-9]{0,3}thread")
#: samples per training image of each task's batches.
VIEWS = {"rotnet": 4, "s4l": 4, "exemplar": 2}
#: stage kinds whose cost is not counted (forward passes or a linear layer).
NOT_COUNTED = ("features", "linear_eval", "random_mask")


@dataclass(frozen=True)
class Estimate:
    """Device-hours planned and for the naive grid, or why there is no estimate."""

    device: str
    hours: Optional[float]
    naive_hours: Optional[float]
    reason: str = ""

    def describe(self) -> str:
        """One line for ``prunesweep plan``."""
        if self.hours is None:
            return f"GPU-hours: unknown ({self.reason})"
        unit = "CPU-hours" if self.device.startswith("cpu") else "GPU-hours"
        return (f"{unit} on {self.device}: {self.hours:,.1f} planned vs ~{self.naive_hours:,.1f} naive "
                f"(naive scaled by epochs; feature extraction and linear classifiers not counted)")


def load_table(path: Path = TABLE_FILE) -> list[dict]:
    """The measured entries of the throughput table."""
    return json.loads(Path(path).read_text())["entries"]


def preflight_records(workspace: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The records of the workspace's preflights (``prunesweep preflight``), newest first; unreadable ones skipped."""
    folder = Path(workspace) / PREFLIGHT_DIR
    if not folder.is_dir() or folder.is_symlink():
        return
    from workers.stages.workspace_files import read_json

    for path in sorted(folder.glob("*.json"), reverse=True):  # newest first (names are times)
        try:  # no link followed, no FIFO waited on, bounded: a record is read like input
            record = read_json(path, root=workspace, limit=_MAX_RECORD_BYTES)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("fingerprint"), dict):
            yield path, record


def _valid_entry(entry: Any) -> bool:
    """Whether a throughput entry read back from a record has the table's shape (a record is read like input)."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("arch", "dataset", "device")):
        return False
    rate = entry.get("samples_per_s")
    return isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0


def workspace_throughput(workspace: Path) -> tuple[list[dict[str, Any]], Optional[str]]:
    """The throughput entries measured by the workspace's passing preflights, and the device of the newest."""
    entries: list[dict[str, Any]] = []
    device = None
    for _, record in preflight_records(workspace):
        if record.get("passed") is not True or not isinstance(record.get("throughput"), list):
            continue
        for entry in record["throughput"]:
            if not _valid_entry(entry):
                continue
            triple = (entry["arch"], entry["dataset"], entry["device"])
            if not any((e["arch"], e["dataset"], e["device"]) == triple for e in entries):  # the newest wins
                entries.append(entry)
                device = device or entry["device"]
    return entries, device


def table_for(workspace: Path) -> list[dict]:
    """The throughput table for a workspace: what its passing preflights measured, then the shipped table."""
    return workspace_throughput(workspace)[0] + load_table()
def check_device(name: str, table: Optional[list[dict]] = None) -> str:
    """``name`` if the table holds it or could (a GPU short name, ``cpu-<N>thread``); else a
    ``ValueError`` listing the names it knows, with the nearest one for a typo."""
    table = load_table() if table is None else table
    measured = list(dict.fromkeys(str(entry["device"]) for entry in table))
    if name in measured or name in SHORT_NAMES or _CPU_NAME.fullmatch(name):
        return name
    known = list(dict.fromkeys([*measured, *SHORT_NAMES]))
    by_folded = {known_name.casefold(): known_name for known_name in known}
    nearest = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=0.6)
    hint = f"; did you mean {by_folded[nearest[0]]}?" if nearest else ""
    raise ValueError(f"{name[:40]!r} is not a device of the throughput table; allowed: "
                     f"{', '.join(measured) or 'none'} (measured), {', '.join(SHORT_NAMES)} or cpu-<N>thread "
                     f"(not measured yet: GPU-hours unknown){hint}")


def measured_rate(arch: str, dataset: str, device: str, table: list[dict]) -> Optional[float]:
    """Samples/s measured for (network, dataset, device), or None."""
    for entry in table:
        if (entry["arch"], entry["dataset"], entry["device"]) == (arch, dataset, device):
            return float(entry["samples_per_s"])
    return None


def _train_images(dataset) -> Optional[int]:
    """Training images of a spec's dataset section (read from its folder where it has one)."""
    try:
        return dataset.facts["train_size"]
    except ValueError:  # a folder that cannot be read: no estimate
        return None


def estimate(spec: SweepSpec, plan: Plan, device: str = DEFAULT_DEVICE, table: Optional[list[dict]] = None) -> Estimate:
    """Device-hours of ``plan`` on ``device``; unknown (with the reason) when not measured."""
    table = load_table() if table is None else table
    arch, dataset = spec.arch.name, spec.dataset.name
    rate = measured_rate(arch, dataset, device, table)
    if rate is None:
        return Estimate(device, None, None, f"no measured throughput for {arch} on {dataset} on {device}")
    samples = 0.0
    for stage in plan.stages.values():
        if stage.kind in NOT_COUNTED or not stage.epochs:
            continue
        config = stage.config
        if stage.kind == "finetune":
            target = config["target"]["name"]
            target_rate = measured_rate(arch, target, device, table)
            assert spec.transfer is not None  # a finetune stage comes from the transfer section
            images = _train_images(spec.transfer.dataset)
            if target_rate is None or images is None:
                return Estimate(device, None, None, f"no measured throughput for {arch} on {target} on {device}")
            samples += stage.epochs * images * rate / target_rate  # in units of the sweep dataset's samples
            continue
        task = config.get("task", "labels")
        images = _train_images(spec.dataset)
        if images is None:
            return Estimate(device, None, None, f"the training-set size of {dataset} is not known before reading it")
        if task == "labels_10pct":
            images = spec.labelled_subset_size() or max(1, round(spec.label_subset.fraction * images))
        samples += stage.epochs * images * VIEWS.get(task, 1)
    hours = samples / rate / 3600
    naive = hours * plan.naive_epochs / plan.total_epochs if plan.total_epochs else 0.0
    return Estimate(device, hours, naive)
