"""The ``slurm:`` section of a sweep file (pydantic only: planning imports no submitit)."""
from __future__ import annotations

import re
from typing import Optional, Union

from pydantic import Field, StrictBool, field_validator, model_validator

from orchestrator.backends.settings_base import KeyedError as _KeyedError
from orchestrator.backends.settings_base import SettingsModel as _Strict
from workers import catalog

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SBATCH_OPTION = re.compile(r"^[a-z][a-z0-9_-]*$")
#: sbatch options the SLURM backend writes itself (or that have their own key).
_MANAGED_SBATCH = frozenset({"array", "dependency", "output", "error", "signal", "open-mode", "job-name", "wrap",
                             "partition", "account", "qos", "constraint", "time", "cpus-per-task", "mem",
                             "gpus-per-node"})


class SlurmRanks(_Strict):
    """How many processes (ranks) one distributed stage runs as: ``nodes`` x ``tasks_per_node``."""

    nodes: int = Field(1, ge=1)
    tasks_per_node: int = Field(1, ge=1)


class SlurmSettings(_Strict):
    """Settings of the SLURM backend (``backend: slurm``)."""

    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    #: minutes per stage kind (dense, imp, eval, random_mask, rewind); others get default_time_min.
    time_min: dict[str, int] = Field(default_factory=dict)
    default_time_min: int = Field(60, gt=0)
    gpus_per_node: Optional[int] = Field(None, ge=0)
    cpus_per_task: int = Field(1, gt=0)
    mem_gb: Optional[float] = Field(None, gt=0)
    array_parallelism: int = Field(256, gt=0)
    #: overrides the cluster's MaxArraySize (read from `scontrol show config`).
    max_array_size: Optional[int] = Field(None, gt=0)
    #: the partition's GPU as ``orchestrator/planning/throughput.json`` names it: time limits of the kinds not in
    #: ``time_min`` are then derived from the measured throughput (see time_limits.py).
    device: Optional[str] = None
    #: the cap of a derived time limit (default: the partition's MaxTime from ``scontrol show partition``).
    max_time_min: Optional[int] = Field(None, gt=0)
    #: how many times a stage is requeued after a time limit or preemption.
    max_requeues: int = Field(3, ge=0)
    #: seconds before the time limit at which a stage is signalled to checkpoint and requeue.
    signal_delay_s: int = Field(90, ge=0)
    #: extra sbatch options, e.g. {"mail-type": "FAIL", "hold": true}; true writes a bare flag.
    extra_sbatch: dict[str, Union[StrictBool, int, float, str]] = Field(default_factory=dict)
    #: shell lines run before the worker (module load, venv activation).
    setup: list[str] = Field(default_factory=list)
    #: seconds between two sbatch calls of one launch (spares a busy controller).
    submit_interval_s: float = Field(0.1, ge=0)
    #: seconds an sbatch may take before the launch gives up (a full queue makes it wait forever).
    submit_timeout_s: int = Field(120, gt=0)
    #: distributed stages: per stage kind, the nodes and tasks per node of its job (one rank per task).
    ranks: dict[str, SlurmRanks] = Field(default_factory=dict)
    #: GPU sharing: per stage kind, how many stages of one array wave run together in one job.
    stages_per_job: dict[str, int] = Field(default_factory=dict)

    @field_validator("partition", "account", "qos", "constraint", "device")
    @classmethod
    def _one_line(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and _CONTROL.search(value):
            raise ValueError("must be one line without control characters")
        return value

    @field_validator("setup")
    @classmethod
    def _setup_lines(cls, lines: list[str]) -> list[str]:
        for i, line in enumerate(lines):
            if _CONTROL.search(line):
                raise _KeyedError((i,), "each setup entry must be one shell line (no newline or control characters)")
        return lines

    @field_validator("extra_sbatch")
    @classmethod
    def _sbatch_options(cls, options: dict) -> dict:
        for name, value in options.items():
            if not _SBATCH_OPTION.match(name):
                raise _KeyedError((name,), "an sbatch option name is lowercase letters, digits and '-', "
                                           "without the leading '--' (e.g. mail-type)")
            if name.replace("_", "-") in _MANAGED_SBATCH:
                raise _KeyedError((name,), f"prunesweep sets --{name} itself; allowed here: any other sbatch "
                                           "option (partition, account, qos, constraint, time: use their own keys)")
            if isinstance(value, str) and _CONTROL.search(value):
                raise _KeyedError((name,), "the value must be one line without control characters")
        return options

    @field_validator("time_min")
    @classmethod
    def _positive_times(cls, times: dict) -> dict:
        for kind, minutes in times.items():
            if kind not in catalog.STAGE_KINDS:
                raise _KeyedError((kind,), f"unknown stage kind; allowed: {', '.join(catalog.STAGE_KINDS)}")
            if minutes <= 0:
                raise _KeyedError((kind,), f"a time limit must be a positive number of minutes, got {minutes}")
        return times

    @field_validator("ranks", "stages_per_job")
    @classmethod
    def _known_kinds(cls, per_kind: dict) -> dict:
        for kind, value in per_kind.items():
            if kind not in catalog.STAGE_KINDS:
                raise _KeyedError((kind,), f"unknown stage kind; allowed: {', '.join(catalog.STAGE_KINDS)}")
            if isinstance(value, int) and value < 1:
                raise _KeyedError((kind,), f"must be a whole number >= 1 (stages run together in one job), got {value}")
        return per_kind

    @model_validator(mode="after")
    def _ranks_or_packs(self) -> SlurmSettings:
        # a pack runs its stages as single processes; a distributed stage needs the whole job's tasks
        for kind, ranks in self.ranks.items():
            if ranks.nodes * ranks.tasks_per_node > 1 and self.stages_per_job.get(kind, 1) > 1:
                raise _KeyedError(("stages_per_job", kind), f"stages of kind {kind} are distributed (slurm.ranks."
                                  f"{kind}); allowed: stages_per_job 1 for it, or ranks of 1 task")
        return self


#: the model of this backend's section of the sweep file (the registry reads it).
SETTINGS = SlurmSettings
