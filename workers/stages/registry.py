"""The registry of stage kinds: kind -> its function (``"module:function"``), config model
and metrics model (:mod:`workers.stages.contract`). Torch-free: the function's module is
imported only when a stage of that kind runs. Pydantic-free until a stage is parsed: the
built-in kinds name their models (``"module:Class"``), imported when first used, so the
commands that only read the kinds' names (``status``, ``plan``) load no models.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from pydantic import ValidationError

    from workers.stages import contract


def _imported(target: Union[type, str]) -> Any:
    """``target`` itself, or the object its ``"module:name"`` names (its module imported)."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class StageKind:
    """One stage kind: what runs it, what it reads and what it reports.

    ``config`` and ``metrics`` are the kind's models (a :class:`~workers.stages.contract.StageConfig`
    and a :class:`~workers.stages.contract.StageMetrics` subclass) or their ``"module:Class"`` names;
    :meth:`config_model` and :meth:`metrics_model` give the classes.
    """

    name: str
    #: ``"module:function"``; the function takes a StageContext and returns a StageOutcome.
    function: str
    config: Union[type[contract.StageConfig], str]
    metrics: Union[type[contract.StageMetrics], str]

    def load(self) -> Callable[[contract.StageContext], contract.StageOutcome]:
        """The kind's function (imports its module, and so torch)."""
        return _imported(self.function)

    def config_model(self) -> type[contract.StageConfig]:
        """The model of this kind's ``config`` (imports its module, and so pydantic)."""
        return _imported(self.config)

    def metrics_model(self) -> type[contract.StageMetrics]:
        """The model of this kind's metrics (imports its module, and so pydantic)."""
        return _imported(self.metrics)


def _contract(name: str) -> str:
    return f"workers.stages.contract:{name}"


STAGE_KINDS: dict[str, StageKind] = {
    kind.name: kind
    for kind in (
        StageKind("dense", "workers.stages.kinds:run_dense", _contract("DenseConfig"), _contract("TrainedMetrics")),
        StageKind("rewind", "workers.stages.kinds:run_rewind", _contract("RewindConfig"), _contract("RewindMetrics")),
        StageKind("imp", "workers.stages.kinds:run_imp", _contract("ImpConfig"), _contract("TrainedMetrics")),
        StageKind("random_mask", "workers.stages.kinds:run_random_mask", _contract("RandomMaskConfig"),
                  _contract("RandomMaskMetrics")),
        StageKind("eval", "workers.stages.kinds:run_eval", _contract("EvalConfig"), _contract("EvalMetrics")),
        StageKind("features", "workers.stages.transfer:run_features", _contract("FeaturesConfig"),
                  _contract("FeaturesMetrics")),
        StageKind("linear_eval", "workers.stages.transfer:run_linear_eval", _contract("LinearEvalConfig"),
                  _contract("LinearEvalMetrics")),
        StageKind("finetune", "workers.stages.transfer:run_finetune", _contract("FinetuneConfig"),
                  _contract("FinetuneMetrics")),
        StageKind("preflight", "workers.stages.preflight:run_preflight", _contract("PreflightConfig"),
                  _contract("PreflightMetrics")),
    )
}


class StageContractError(ValueError):
    """A stage.json config or a kind's metrics that break the kind's contract."""


def register_stage_kind(kind: StageKind) -> None:
    """Register a stage kind (the same one twice is harmless, another under a taken name is not)."""
    if STAGE_KINDS.get(kind.name, kind) != kind:
        raise ValueError(f"stage kind {kind.name!r} is already registered as {STAGE_KINDS[kind.name]}")
    STAGE_KINDS[kind.name] = kind


def stage_kind(kind: Any, key: str) -> StageKind:
    """The registered kind ``kind`` of stage ``key``; ``ValueError`` naming the known kinds."""
    if kind not in STAGE_KINDS:
        raise StageContractError(f"stage {key}: unknown kind {kind!r}; known: {sorted(STAGE_KINDS)}")
    return STAGE_KINDS[kind]


def _problems(error: ValidationError, where: str) -> str:
    return "; ".join(f"{where}.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" if item["loc"]
                     else f"{where}: {item['msg']}" for item in error.errors())


def parse_config(kind: Any, key: str, config: Mapping[str, Any]) -> Any:
    """The config of stage ``key`` parsed with its kind's model; :class:`StageContractError`
    naming the stage, each key path and the problem otherwise."""
    from pydantic import ValidationError

    try:
        return stage_kind(kind, key).config_model().model_validate(dict(config))
    except ValidationError as error:
        raise StageContractError(f"stage {key} ({kind}): {_problems(error, 'config')}") from None


def check_metrics(kind: str, key: str, metrics: Mapping[str, Any]) -> contract.StageMetrics:
    """``metrics`` checked against the kind's metrics model (a broken kind fails, naming the key)."""
    from pydantic import ValidationError

    try:
        return stage_kind(kind, key).metrics_model().model_validate(dict(metrics))
    except ValidationError as error:
        raise StageContractError(f"stage {key} ({kind}): {_problems(error, 'metrics')}") from None
