"""The ``sequential:`` section of a sweep file."""
from __future__ import annotations

from pydantic import Field

from orchestrator.backends.settings_base import SettingsModel


class SequentialSettings(SettingsModel):
    """Settings of the sequential test backend."""

    #: math threads of each stage process.
    threads: int = Field(1, gt=0)


SETTINGS = SequentialSettings
