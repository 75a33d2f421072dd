"""What every backend's settings model builds on: a strict section and keyed validation errors."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SettingsModel(BaseModel):
    """A section of the sweep file: unknown keys are errors, values are frozen once validated.

    Strict like the rest of the sweep file: a boolean or a numeric string is not a number, and
    no number is NaN or infinite.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class KeyedError(ValueError):
    """A validation error that knows the key path below the field being validated.

    The sweep file's loader turns it into one line naming the full key path.
    """

    def __init__(self, sub_path: tuple, message: str):
        super().__init__(message)
        self.sub_path = sub_path
        self.message = message
