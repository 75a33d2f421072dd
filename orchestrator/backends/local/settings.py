"""The ``local:`` section of a sweep file (pydantic only: planning imports no backend)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from orchestrator.backends.settings_base import KeyedError as _KeyedError
from orchestrator.backends.settings_base import SettingsModel as _Strict
from workers import catalog

#: the most worker processes one machine runs; more is a typo (the command line's --workers has the same bound).
MAX_WORKERS = 1024


class LocalSettings(_Strict):
    """Settings of the local backend."""

    workers: Optional[int] = Field(None, gt=0, le=MAX_WORKERS)
    #: with GPUs, the default number of workers on each one (each worker runs one stage at a time).
    stages_per_gpu: int = Field(1, gt=0)
    #: processes (DDP ranks) per stage of a kind, e.g. {dense: 4}; each holds one worker slot.
    ranks: dict[str, int] = Field(default_factory=dict)

    @field_validator("ranks")
    @classmethod
    def _ranks_per_kind(cls, ranks: dict) -> dict:
        for kind, count in ranks.items():
            if kind not in catalog.STAGE_KINDS:
                raise _KeyedError((kind,), f"unknown stage kind; allowed: {', '.join(catalog.STAGE_KINDS)}")
            if count < 1:
                raise _KeyedError((kind,), f"a stage needs at least 1 rank, got {count}")
        return ranks


#: the model of this backend's section of the sweep file (the registry reads it).
SETTINGS = LocalSettings
