"""The stage contract: one model per stage kind for its ``config`` and one for its metrics.

The planner builds every stage from these models (:func:`workers.stages.identity.plan_stage`): each
model declares in ``identity_fields`` which of its fields the stage's key hashes, and how, so that a
value is written once and its config and identity both follow. The planner writes the config into
``stage.json``; :func:`workers.entry.run_stage` parses it with the kind's config model (unknown or
missing keys fail loudly, naming the stage and the key) before the kind's function runs, and checks
the metrics it returns with the kind's metrics model before writing ``metrics.json``. Only a stage
about to run is parsed: a done stage (a verified ``DONE.json``) is never re-read, so the workspaces of
older versions keep their done stages.

Nested settings (``dataset``, ``arch``, ``recipe``, ``mask_rule``, ``target``,
``task_options``) stay plain dicts: the sweep file's validation (``orchestrator/spec.py``)
and the functions reading them (data, models, training, mask rules) own their shapes.

Torch-free: :mod:`workers.catalog` and the planner import it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from workers.pruning.mask_sources import task_declaration
from workers.stages.identity import Key
from workers.stages.paths import CHECKPOINT_FILE

EVAL_INITS = ("winning_ticket", "reinit")
#: the network's identity: the dataset but where it lives (moving a dataset keeps every key), the arch.
_NETWORK_KEYS = {"dataset": Key(leave_out=("root",)), "arch": Key()}


class StageConfig(BaseModel):
    """The settings every kind's config shares the shape of: exact keys, JSON types, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    #: field -> how it enters the stage's identity (its key); the fields not named are config alone.
    identity_fields: ClassVar[dict[str, Key]] = {}


class NetworkConfig(StageConfig):
    """A stage that builds the sweep's network on its dataset from ``seed``."""

    dataset: dict[str, Any]
    arch: dict[str, Any]
    seed: int


class TaskConfig(NetworkConfig):
    """A stage whose network was (or is being) trained on a registered task."""

    task: str
    #: the labelled subset of a subset task (``{"label_subset": {...}}``); absent otherwise.
    task_options: dict[str, Any] | None = None

    @field_validator("task")
    @classmethod
    def _registered(cls, task: str) -> str:
        task_declaration(task)
        return task


class DenseConfig(TaskConfig):
    """``dense``: train from ``seed`` with ``recipe``, capturing W_k at ``capture_iterations``."""

    recipe: dict[str, Any]
    capture_iterations: list[int] = []

    #: the captures are not: one dense run serves every rewinding point.
    identity_fields: ClassVar[dict[str, Key]] = {**_NETWORK_KEYS, "task": Key(), "recipe": Key(), "seed": Key(),
                                                 "task_options": Key(spread=True)}


class RewindConfig(TaskConfig):
    """``rewind``: replay the dense training for exactly ``rewind_iteration`` steps."""

    recipe: dict[str, Any]
    rewind_iteration: int

    #: besides the dense run it replays (``refs``: ``dense``).
    identity_fields: ClassVar[dict[str, Key]] = {"rewind_iteration": Key("iteration")}


class ImpConfig(TaskConfig):
    """``imp``: one IMP level (``level``), mask from ``mask_rule``, weights rewound to W_k."""

    recipe: dict[str, Any]
    rewind_iteration: int
    mask_rule: dict[str, Any]
    #: the level in its chain (the planner writes it for people reading stage.json; nothing reads it).
    level: int | None = None

    #: the rule's settings that are not at their defaults, besides the previous level and W_k (``refs``).
    identity_fields: ClassVar[dict[str, Key]] = {"mask_rule": Key(spread=True)}


class RandomMaskConfig(NetworkConfig):
    """``random_mask``: draw ``mask_rule`` (kind ``random`` or ``adjusted_random``)."""

    mask_rule: dict[str, Any]
    task: str = "labels"

    #: the rule's ``keep`` and ``layers`` (and, ``refs``, the dense run whose zeros an adjusted mask prunes).
    identity_fields: ClassVar[dict[str, Key]] = {**_NETWORK_KEYS, "seed": Key(), "mask_rule": Key(spread=True)}

    @field_validator("mask_rule")
    @classmethod
    def _random(cls, rule: dict[str, Any]) -> dict[str, Any]:
        if rule.get("kind") not in ("random", "adjusted_random"):
            raise ValueError(f"random_mask needs a mask_rule of kind 'random' or 'adjusted_random', "
                             f"got {rule.get('kind')!r}")
        return rule


class EvalConfig(NetworkConfig):
    """``eval``: retrain a masked labels model from a winning ticket or a re-initialisation."""

    task: Literal["labels"] = "labels"
    recipe: dict[str, Any]
    init: Literal["winning_ticket", "reinit"]
    mask_rule: dict[str, Any]
    #: the winning ticket's W_k and the task it was trained on (``init: winning_ticket``).
    rewind_iteration: int | None = None
    source_task: str = "labels"
    #: the convolutions a layer-wise sweep prunes (what the mask counts cover).
    pruned_layers: int | None = None

    #: the init's identity names its W_k (``winning_ticket``); the mask's is in ``refs``.
    identity_fields: ClassVar[dict[str, Key]] = {"init": Key(), "recipe": Key(), **_NETWORK_KEYS, "seed": Key()}


class FeaturesConfig(TaskConfig):
    """``features``: the pooled features of ``target``'s images under the ``model`` dependency."""

    target: dict[str, Any]
    pruned_layers: int | None = None

    #: besides the network it extracts from (``refs``: ``model``).
    identity_fields: ClassVar[dict[str, Key]] = {"target": Key(leave_out=("root",))}


#: what a transfer stage on a multi-label target reports in ``top1`` (:mod:`workers.stages.average_precision`):
#: the benchmark's mAP, the 11-point one beside it (the planner writes it), or, in a stage.json planned
#: before issue 28 (hence the default), the devkit's 11-point mAP alone.
MultiLabelAP = Literal["benchmark", "voc07_11point"]


class LinearEvalConfig(StageConfig):
    """``linear_eval``: a linear classifier on the cached features of ``target``: a linear layer
    trained with ``recipe`` (``classifier: sgd``) or per-class linear SVMs (``svm``, no recipe)."""

    target: dict[str, Any]
    recipe: dict[str, Any] | None = None
    metric: Literal["top1", "map"] = "top1"
    classifier: Literal["sgd", "svm"] = "sgd"
    seed: int
    #: how the SVMs train on a multi-label target's difficult-only images (:mod:`workers.stages.svm`):
    #: the planner writes it; a stage.json planned before it existed left them out, hence the default.
    difficult: Literal["negative", "ignore"] = "ignore"
    average_precision: MultiLabelAP = "voc07_11point"

    #: settings added later are left out at the value that kept the keys before them (``refs``: ``features``).
    identity_fields: ClassVar[dict[str, Key]] = {
        "seed": Key(), "recipe": Key(), "classifier": Key(omit="sgd"), "metric": Key(omit="top1"),
        "average_precision": Key(), "difficult": Key(omit="negative")}

    @model_validator(mode="after")
    def _recipe_for_sgd(self) -> LinearEvalConfig:
        if (self.recipe is None) != (self.classifier == "svm"):
            raise ValueError("linear_eval needs a recipe with classifier 'sgd' and none with 'svm'")
        return self


class FinetuneConfig(TaskConfig):
    """``finetune``: fine-tune the pruned network on ``target`` (or prune during fine-tuning)."""

    target: dict[str, Any]
    recipe: dict[str, Any]
    mode: Literal["pruned", "prune_during"] = "pruned"
    pruned_layers: int | None = None
    average_precision: MultiLabelAP = "voc07_11point"

    #: the mode is not (``refs``: the ``model``, and the mask it keeps while pruning during fine-tuning).
    identity_fields: ClassVar[dict[str, Key]] = {"target": Key(leave_out=("root",)), "recipe": Key(), "seed": Key(),
                                                 "average_precision": Key()}


class PreflightTarget(StageConfig):
    """One distinct (network, task, dataset, ranks) of a sweep that ``preflight`` tries on the node."""

    label: str
    dataset: dict[str, Any]
    arch: dict[str, Any]
    task: str
    task_options: dict[str, Any] | None = None
    #: the recipe of the sweep's training stages of this task (its batch size counts every rank).
    recipe: dict[str, Any]
    #: the smallest fraction of prunable weights the sweep keeps (the mask the steps train with).
    fraction: float
    #: samples per training image of the task's batches (RotNet 4, Exemplar 2, else 1).
    views: int = 1
    seed: int = 0


class PreflightConfig(StageConfig):
    """``preflight``: the checks of a sweep's code path on the node its stages get (docs/gpu.md)."""

    targets: list[PreflightTarget]
    #: optimizer steps of the training check (the checkpoint is taken after them, then one more step).
    steps: int = 3
    #: timed steps of the throughput figure (after half as many warm-up steps).
    timed_steps: int = 8
    #: at most this many images decoded from a data folder (all of them when it holds fewer).
    decode_images: int = 256
    #: distribution name -> version on the submitting side (compared with the node's).
    packages: dict[str, str] = {}


class StageMetrics(BaseModel):
    """What a kind reports in ``metrics.json``: exact keys (none missing, none unknown)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class _MaskCounts(StageMetrics):
    kept: int
    total: int
    fraction_remaining: float


class _Run(StageMetrics):
    epochs: int
    iterations: int
    wall_time_s: float


class TrainedMetrics(_MaskCounts, _Run):
    """``dense`` and ``imp``: accuracy on the task (and top-1 when its head predicts labels)."""

    task_accuracy: float
    test_top1: float | None = None
    zero_fraction: float


class RewindMetrics(StageMetrics):
    """``rewind``: the step whose weights it captured."""

    iteration: int


class RandomMaskMetrics(_MaskCounts):
    """``random_mask``: the counts of the drawn mask."""


class EvalMetrics(_MaskCounts, _Run):
    """``eval``: top-1 on the labels test split."""

    top1: float
    test_top1: float


class FeaturesMetrics(_MaskCounts):
    """``features``: the feature dimension and the time to extract them."""

    dim: int
    wall_time_s: float


class LinearEvalMetrics(_MaskCounts, _Run):
    """``linear_eval``: ``top1`` holds the value of ``metric`` (top-1 or mAP: on a multi-label
    target the benchmark's, its devkit 11-point mAP in ``map_11point``); ``test_top1`` is None on
    a multi-label target; an SVM classifier adds the cost chosen for each class."""

    top1: float
    map_11point: float | None = None
    metric: Literal["top1", "map"]
    test_top1: float | None
    eval_dataset: str
    classifier: Literal["sgd", "svm"] = "sgd"
    svm_costs: list[float | None] | None = None


class FinetuneMetrics(_MaskCounts):
    """``finetune``: top-1 on the target's test split (``metric: map``: the VOC07 mAPs as
    ``linear_eval`` reports them, ``test_top1`` None)."""

    top1: float
    map_11point: float | None = None
    test_top1: float | None
    metric: Literal["top1", "map"]
    eval_dataset: str
    mode: Literal["pruned", "prune_during"]
    epochs: int
    wall_time_s: float


class PreflightMetrics(StageMetrics):
    """``preflight``: whether every check passed; the rows are in ``preflight.json``."""

    passed: bool
    checks: int
    failed: int


Config = TypeVar("Config", bound=StageConfig, covariant=True)


@dataclass(frozen=True)
class StageContext(Generic[Config]):
    """What a stage kind gets: its folder, key, parsed config and dependency folders (verified)."""

    stage_dir: Path
    key: str
    config: Config
    deps: Mapping[str, Path] = field(default_factory=dict)

    def dep(self, role: str) -> Path:
        """The folder of dependency ``role``; ``ValueError`` if the stage has none."""
        if role not in self.deps:
            raise ValueError(f"stage {self.key}: needs a {role!r} dependency, has {sorted(self.deps)}")
        return self.deps[role]

    @property
    def checkpoint(self) -> Path:
        """Where this stage's training checkpoints."""
        return self.stage_dir / CHECKPOINT_FILE


@dataclass(frozen=True)
class StageOutcome:
    """Artifacts a stage wrote (names in its folder) and its metrics."""

    files: list[str]
    metrics: dict[str, Any]
