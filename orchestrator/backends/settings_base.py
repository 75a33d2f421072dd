"""What every backend's settings model builds on: a strict section and keyed validation errors."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model

from orchestrator.backends.failure_classes import DEFAULT_RETRIES, MAX_RETRIES


class SettingsModel(BaseModel):
    """A section of the sweep file: unknown keys are errors, values are frozen once validated.

    Strict like the rest of the sweep file: a boolean or a numeric string is not a number, and
    no number is NaN or infinite.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, defer_build=True)


class KeyedError(ValueError):
    """A validation error that knows the key path below the field being validated.

    The sweep file's loader turns it into one line naming the full key path.
    """

    def __init__(self, sub_path: tuple, message: str):
        super().__init__(message)
        self.sub_path = sub_path
        self.message = message


def with_retries(model: type[SettingsModel]) -> type[SettingsModel]:
    """``model`` with the ``retries`` setting every backend shares (see :mod:`orchestrator.backends.failure_classes`).

    The registry applies it to every backend's settings model, so a backend need not declare it;
    one that declares ``retries`` itself is returned as it is.
    """
    if "retries" in model.model_fields:
        return model
    cached = _WITH_RETRIES.get(model)
    if cached is None:
        cached = _WITH_RETRIES[model] = create_model(
            model.__name__, __base__=model, __module__=model.__module__, __doc__=model.__doc__,
            retries=(int, Field(DEFAULT_RETRIES, ge=0, le=MAX_RETRIES,
                                description="automatic reruns of a stage after an infrastructure failure")))
    return cached  # type: ignore[return-value]


_WITH_RETRIES: dict[type[SettingsModel], type[SettingsModel]] = {}
