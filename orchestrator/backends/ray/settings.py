"""The ``ray:`` section of a sweep file (pydantic only: planning imports no ray)."""
from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from orchestrator.backends.settings_base import KeyedError as _KeyedError
from orchestrator.backends.settings_base import SettingsModel as _Strict

_RAY_ADDRESS = re.compile(r"^(auto|ray://[^\s/:]+:\d+|https?://[^\s/:]+(:\d+)?/?)$")
#: names Ray reserves for its own resources (set them with num_cpus / num_gpus instead).
_RAY_RESERVED = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def _ray_quantity(value: float, what: str) -> float:
    # Ray refuses fractional amounts above 1 (a fraction is a share of one device).
    if value > 1 and value != int(value):
        raise ValueError(f"{what} above 1 must be a whole number (a fraction shares one unit), got {value}")
    return value


class RayResources(_Strict):
    """What one stage asks Ray for: CPUs, GPUs (fractions share one GPU) and custom resources."""

    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)
    #: processes of one stage (a placement group of this many bundles); the amounts above are per rank.
    ranks: int = Field(1, ge=1)

    @field_validator("num_cpus", "num_gpus")
    @classmethod
    def _whole_above_one(cls, value: float, info) -> float:
        return _ray_quantity(value, info.field_name)

    @field_validator("custom")
    @classmethod
    def _custom(cls, custom: dict) -> dict:
        for name, amount in custom.items():
            if name in _RAY_RESERVED or not name.strip():
                raise _KeyedError((name,), f"not a custom resource name; use num_cpus / num_gpus for "
                                           f"{', '.join(sorted(_RAY_RESERVED))}")
            if amount <= 0:
                raise _KeyedError((name,), f"a resource amount must be > 0, got {amount}")
            try:
                _ray_quantity(amount, "an amount")
            except ValueError as err:
                raise _KeyedError((name,), str(err)) from None
        return custom

    @model_validator(mode="after")
    def _one_gpu_per_rank(self) -> RayResources:
        # each rank trains on cuda:LOCAL_RANK, so a rank needs exactly one GPU of its own (or none)
        if self.ranks > 1 and self.num_gpus not in (0, 1):
            raise _KeyedError(("num_gpus",), f"with ranks > 1 each rank needs num_gpus 0 or 1 (one GPU of its own), "
                                             f"got {self.num_gpus:g}")
        return self


class RayStageResources(_Strict):
    """Resources per stage kind; a kind not given uses ``default``.

    (Kinds are typed ``RayResources`` with a None default rather than Optional so that an
    unknown key below them lists the resource keys in the error message.)
    """

    default: RayResources = Field(default_factory=RayResources.model_construct)
    dense: RayResources = None  # type: ignore[assignment]  # None: use default
    imp: RayResources = None  # type: ignore[assignment]  # None: use default
    random_mask: RayResources = None  # type: ignore[assignment]  # None: use default
    eval: RayResources = None  # type: ignore[assignment]  # None: use default
    rewind: RayResources = None  # type: ignore[assignment]  # None: use default
    features: RayResources = None  # type: ignore[assignment]  # None: use default
    linear_eval: RayResources = None  # type: ignore[assignment]  # None: use default
    finetune: RayResources = None  # type: ignore[assignment]  # None: use default


class RayRuntimeEnv(_Strict):
    """Ray's runtime environment for the driver job and its stages."""

    working_dir: Optional[str] = None
    pip: list[str] = Field(default_factory=list)
    env_vars: dict[str, str] = Field(default_factory=dict)


class RaySettings(_Strict):
    """Settings of the Ray backend (``backend: ray``)."""

    #: None: a Ray started for the sweep on this machine (blocking); else the cluster to submit the
    #: driver to: 'auto', 'ray://HOST:PORT' or the dashboard 'http://HOST:PORT'.
    address: Optional[str] = None
    resources: RayStageResources = Field(default_factory=RayStageResources.model_construct)
    #: Ray's name for the shared ``retries`` (reruns of a stage whose worker process or node died, from its
    #: last epoch checkpoint); when given it wins, else ``retries`` (default 2) applies.
    max_retries: Optional[int] = Field(None, ge=0)
    runtime_env: RayRuntimeEnv = Field(default_factory=RayRuntimeEnv.model_construct)
    #: CPUs of the Ray started for the sweep when there is no address (default: every core).
    num_cpus: Optional[int] = Field(None, gt=0)
    #: seconds the driver job may take to start and see the workspace before launch gives up.
    attach_timeout_s: float = Field(300, gt=0)
    #: how the bundles (ranks) of a stage with ranks > 1 are placed on nodes (Ray's placement strategies).
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"

    @field_validator("address")
    @classmethod
    def _address(cls, address: Optional[str]) -> Optional[str]:
        if address is not None and not _RAY_ADDRESS.match(address):
            raise ValueError("allowed: auto, ray://HOST:PORT (Ray client) or http://HOST:DASHBOARD_PORT "
                             f"(job submission); leave it out to start a Ray for the sweep; got {address!r}")
        return address


#: the model of this backend's section of the sweep file (the registry reads it).
SETTINGS = RaySettings
