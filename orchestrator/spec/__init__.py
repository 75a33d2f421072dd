"""The sweep file: a validated description of one pruning study.

``load_spec(path, overrides)`` reads YAML, applies dotted command-line overrides and
validates everything with pydantic. Any problem raises :class:`SpecError` naming the
file, the key path and what is allowed; nothing is written before validation passes.

Modules: :mod:`.bounds` (limits and path checks), :mod:`.sections` (recipes, dataset,
network, pruning, transfer), :mod:`.rewind` (rewinding points), :mod:`.sweep` (the whole
file, its cross-checks and the views the planner reads), :mod:`.loading` (YAML, overrides,
validation), :mod:`.messages` (pydantic errors as one line). Each backend's section lives
with its backend (``orchestrator/backends/<name>/settings.py``).
"""
from __future__ import annotations

from orchestrator.backends.local.settings import LocalSettings as LocalBackend
from orchestrator.backends.ray.settings import RayResources, RayRuntimeEnv, RaySettings, RayStageResources
from orchestrator.backends.slurm.settings import SlurmRanks, SlurmSettings
from orchestrator.spec.bounds import (
                     DEFAULT_MAX_STAGES,
                     MAX_BATCH_SIZE,
                     MAX_EPOCHS,
                     MAX_IMAGE_SIZE,
                     MAX_LEVELS,
                     MAX_SEED,
                     MAX_WIDTH,
                     MIN_RATE,
                     checked_path,
)
from orchestrator.spec.loading import apply_override, load_spec, validate_spec
from orchestrator.spec.rewind import RewindPoint, parse_rewind
from orchestrator.spec.sections import (
                     Arch,
                     Dataset,
                     DatasetSubset,
                     FinetuneTransfer,
                     LabelSubset,
                     LinearTransfer,
                     Pruning,
                     Recipe,
                     Schedule,
                     Tracking,
                     Transfer,
)
from orchestrator.spec.sweep import SweepSpec

__all__ = ["load_spec", "validate_spec", "apply_override", "SweepSpec", "RewindPoint", "parse_rewind", "Recipe",
           "Schedule", "Dataset", "DatasetSubset", "Arch", "Pruning", "LabelSubset", "LinearTransfer",
           "FinetuneTransfer", "Transfer", "Tracking", "checked_path", "DEFAULT_MAX_STAGES", "MAX_EPOCHS",
           "MAX_BATCH_SIZE", "MAX_WIDTH", "MAX_IMAGE_SIZE", "MAX_SEED", "MAX_LEVELS", "MIN_RATE", "LocalBackend",
           "SlurmSettings",
           "SlurmRanks", "RaySettings", "RayResources", "RayStageResources", "RayRuntimeEnv"]
