"""The sweep file: a validated description of one pruning study.

``load_spec(path, overrides)`` reads YAML, applies dotted command-line overrides and
validates everything with pydantic. Any problem raises :class:`SpecError` naming the
file, the key path and what is allowed; nothing is written before validation passes.
"""
from __future__ import annotations

import math
import os
import re
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from workers import catalog

from .backends import BACKENDS, settings_model
# the backends' sections live with their backends; their models are named from here as before
from .backends.local.settings import LocalSettings as LocalBackend
from .backends.ray.settings import RayResources, RayRuntimeEnv, RaySettings, RayStageResources  # noqa: F401
from .backends.settings_base import KeyedError as _KeyedError
from .backends.slurm.settings import SlurmRanks, SlurmSettings  # noqa: F401
from .errors import SpecError
from .sources import INITS, MASK_SOURCES
from .yaml_input import YamlInputError, load_yaml

#: bounds on what a sweep may ask for: each is far above any real study and keeps a typo
#: (an extra zero or two) from allocating what the machine does not have.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_WIDTH = 4096
MAX_IMAGE_SIZE = 4096
#: seeds seed numpy (below 2**32) and are stored in SQLite (64-bit).
MAX_SEED = 2**32 - 1
#: the smallest pruning rate (fraction of the remaining weights pruned per IMP round).
MIN_RATE = 1e-6
#: the most stages ``plan``/``launch`` build unless ``--max-stages`` says otherwise.
DEFAULT_MAX_STAGES = 100_000


#: what Linux allows: a path of 4096 bytes, a name (one component) of 255.
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255


def checked_path(text: str) -> str:
    """``text`` with ``~`` expanded; ValueError for control characters (NUL too) or names too long."""
    if _CONTROL_CHARACTER.search(text):
        raise ValueError(f"a path may not hold control characters (such as NUL or a newline), got {text!r}")
    path = os.path.expanduser(text)
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ValueError(f"the path is longer than {MAX_PATH_BYTES} bytes")
    for name in Path(path).parts:
        if len(os.fsencode(name)) > MAX_NAME_BYTES:
            raise ValueError(f"the name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes, "
                             "the most a file system allows")
    return path


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class _Strict(BaseModel):
    # strict: a boolean or a numeric string is not a number; no NaN or infinity anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Schedule(_Strict):
    """Learning-rate schedule; milestones are epochs where the rate is multiplied by gamma."""

    kind: Literal["constant", "step", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)


class Recipe(_Strict):
    """How one task is trained."""

    epochs: int = Field(gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(gt=0, le=MAX_BATCH_SIZE)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    schedule: Schedule = Field(default_factory=Schedule)

    @model_validator(mode="after")
    def _schedule_fits(self) -> Recipe:
        for i, milestone in enumerate(self.schedule.milestones):
            if not 0 < milestone < self.epochs:
                raise _KeyedError(("schedule", "milestones", i), f"must be an epoch in 1..{self.epochs - 1}, got {milestone}")
        if self.schedule.warmup_epochs >= self.epochs:
            raise _KeyedError(("schedule", "warmup_epochs"), f"must be below epochs ({self.epochs}), got {self.schedule.warmup_epochs}")
        return self


class DatasetSubset(_Strict):
    """A reproducible part of the training split: ``fraction`` of the images of every class
    (``images_per_class``) or of the classes, with all their images (``classes``)."""

    kind: Literal["images_per_class", "classes"] = "images_per_class"
    fraction: float = Field(0.1, gt=0, le=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class Dataset(_Strict):
    """Which dataset the sweep trains on: ``digits``; ``cifar10`` (``root``: the folder holding
    torchvision's ``cifar-10-batches-py``); ``imagenet``, ``places205``, ``voc07``,
    ``image_folder`` (``root``: ``train/`` and ``val/`` with one folder per class;
    ``image_size``, default 224); ``subset`` (not for digits). The folder is checked here.

    ``root`` is stored absolute (relative to the directory prunesweep runs from).
    """

    name: str
    root: Optional[str] = None
    image_size: Optional[int] = Field(None, gt=0, le=MAX_IMAGE_SIZE)
    subset: Optional[DatasetSubset] = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in catalog.DATASETS:
            raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(catalog.DATASETS))}")
        return name

    @field_validator("root")
    @classmethod
    def _absolute(cls, root: Optional[str]) -> Optional[str]:
        return None if root is None else str(Path(checked_path(root)).absolute())

    @model_validator(mode="after")
    def _folder_is_there(self) -> Dataset:
        allowed = catalog.DATASET_OPTIONS[self.name]
        for key in ("root", "image_size", "subset"):
            if getattr(self, key) is not None and key not in allowed:
                raise _KeyedError((key,), f"dataset {self.name} takes no {key}; allowed here: "
                                          f"{', '.join(('name', *allowed))}")
        if "root" in allowed and self.root is None:
            raise _KeyedError(("root",), f"required for {self.name}: the local folder holding the dataset "
                                         "(nothing is downloaded)")
        try:
            catalog.dataset_facts(self.model_dump())
        except catalog.DataFolderError as err:
            raise _KeyedError(("root",), str(err)) from None
        return self

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler):
        return {key: value for key, value in handler(self).items() if value is not None}

    @property
    def facts(self) -> dict:
        """``{"num_classes", "in_channels", "train_size", "test_size"}`` read from the folder (cached)."""
        return catalog.dataset_facts(self.model_dump())


class Arch(_Strict):
    """Which network: ``small_cnn`` (``width`` scales its channels), ``resnet18`` and ``vgg19``
    (the CIFAR variants), ``resnet50``, ``alexnet`` (torchvision's definitions)."""

    name: str
    width: int = Field(16, gt=0, le=MAX_WIDTH)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in catalog.ARCHITECTURES:
            raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(sorted(catalog.ARCHITECTURES))}")
        return name

    @model_validator(mode="after")
    def _options_of_the_network(self) -> Arch:
        allowed = catalog.ARCHITECTURES[self.name]
        for key in self.model_fields_set - {"name"} - set(allowed):
            raise _KeyedError((key,), f"{self.name} takes no {key}; allowed here: {', '.join(('name', *allowed))}")
        return self

    @model_serializer(mode="wrap")
    def _only_its_options(self, handler):
        allowed = catalog.ARCHITECTURES[self.name]
        return {key: value for key, value in handler(self).items() if key == "name" or key in allowed}


class Pruning(_Strict):
    """Which fractions of the prunable weights to report and how to get there."""

    fractions: list[float] = Field(min_length=1)
    #: at least MIN_RATE: below it 1 - rate rounds to 1 and no number of rounds reaches a fraction
    rate: float = Field(0.2, ge=MIN_RATE, lt=1)
    scope: Literal["global"] = "global"
    one_shot: bool = False
    #: prune only the first n convolutions (the layer-wise experiment); None: every prunable weight.
    layers: Optional[int] = Field(None, gt=0)

    @field_validator("fractions")
    @classmethod
    def _in_unit_interval(cls, fractions: list[float]) -> list[float]:
        for i, fraction in enumerate(fractions):
            if not 0 < fraction <= 1:
                raise _KeyedError((i,), f"a fraction remaining must be in (0, 1], got {fraction}")
        if len(set(fractions)) != len(fractions):
            raise ValueError("fractions must not repeat")
        return fractions


class LabelSubset(_Strict):
    """The labelled subset of ``s4l`` and ``labels_10pct``: 10% of the images of every class
    (``images_per_class``) or 10% of the classes with all their images (``classes``)."""

    kind: Literal["images_per_class", "classes"] = "images_per_class"
    fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class LinearTransfer(_Strict):
    """A linear classifier on the frozen pooled features; ``metric``: top1, or map (mean over
    classes of the one-vs-rest average precision, as for VOC07)."""

    recipe: Recipe
    metric: Literal["top1", "map"] = "top1"


class FinetuneTransfer(_Strict):
    """The whole pruned network fine-tuned on the target with its mask kept exact;
    ``compare_prune_during`` adds the dense network fine-tuned, pruned to the same count and
    fine-tuned again (pruning during transfer)."""

    recipe: Recipe
    compare_prune_during: bool = False


class Transfer(_Strict):
    """Transfer evaluations of the pruned pretext-trained networks of the IMP mask sources."""

    #: the target, described like the sweep's own ``dataset:``.
    dataset: Dataset
    linear: Optional[LinearTransfer] = None
    finetune: Optional[FinetuneTransfer] = None
    #: the IMP mask sources evaluated (default: every IMP mask source of the sweep).
    mask_source: Optional[list[str]] = Field(None, min_length=1)

    @model_validator(mode="after")
    def _something(self) -> Transfer:
        if self.linear is None and self.finetune is None:
            raise ValueError("a transfer section needs linear: and/or finetune:")
        return self


_REWIND = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


class RewindPoint(BaseModel):
    """A rewinding point k, as written (``500it``, ``1ep`` or ``0``)."""

    model_config = ConfigDict(frozen=True)
    text: str
    amount: int
    unit: Literal["it", "ep"]

    def iterations(self, iterations_per_epoch: int) -> int:
        """k in optimizer steps for a recipe with the given steps per epoch."""
        return self.amount * iterations_per_epoch if self.unit == "ep" else self.amount


def parse_rewind(value: Any) -> RewindPoint:
    """Parse ``0``, ``500it`` or ``1ep``; raise ValueError with what is allowed."""
    allowed = "allowed: 0 (the original initialisation), '<n>it' (iterations) or '<n>ep' (epochs), n >= 0"
    if isinstance(value, bool):
        raise ValueError(f"cannot read {value!r} as a rewinding point; {allowed}")
    if isinstance(value, int):
        if value != 0:
            raise ValueError(f"a bare number must be 0, got {value}; write '{value}it' or '{value}ep'; {allowed}")
        return RewindPoint(text="0", amount=0, unit="it")
    match = _REWIND.match(str(value))
    if not match:
        raise ValueError(f"cannot read {value!r} as a rewinding point; {allowed}")
    amount, unit = int(match.group(1)), match.group(2)
    return RewindPoint(text="0" if amount == 0 else f"{amount}{unit}", amount=amount, unit=unit)


class _SweepFields(_Strict):
    """One sweep file, but for its backend sections (added from the backend registry below)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    workspace: str = Field(min_length=1)
    dataset: Dataset
    arch: Arch
    recipes: dict[str, Recipe]
    pruning: Pruning
    rewind: list[Union[int, str]] = Field(min_length=1)
    mask_source: list[str] = Field(min_length=1)
    init: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    label_subset: LabelSubset = Field(default_factory=LabelSubset)
    transfer: Optional[Transfer] = None

    @field_validator("workspace")
    @classmethod
    def _workspace_path(cls, workspace: str) -> str:
        return checked_path(workspace)

    @field_validator("recipes")
    @classmethod
    def _recipe_names(cls, recipes: dict[str, Recipe]) -> dict[str, Recipe]:
        allowed = (*catalog.TASKS, "eval")
        for name in recipes:
            if name not in allowed:
                raise _KeyedError((name,), f"unknown recipe; allowed: {', '.join(allowed)}")
        if "labels" not in recipes:
            raise ValueError("a 'labels' recipe is required (evaluations retrain on labels)")
        return recipes

    @field_validator("rewind")
    @classmethod
    def _rewind_points(cls, points: list) -> list:
        texts = []
        for i, point in enumerate(points):
            try:
                texts.append(parse_rewind(point).text)
            except ValueError as err:
                raise _KeyedError((i,), str(err)) from None
        if len(set(texts)) != len(texts):
            raise ValueError("rewinding points must not repeat")
        return points

    @field_validator("mask_source")
    @classmethod
    def _sources(cls, sources: list[str]) -> list[str]:
        return _members(sources, MASK_SOURCES, "mask source")

    @field_validator("init")
    @classmethod
    def _inits(cls, inits: list[str]) -> list[str]:
        return _members(inits, INITS, "init")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        for i, seed in enumerate(seeds):
            if not 0 <= seed <= MAX_SEED:
                raise _KeyedError((i,), f"a seed must be in 0..{MAX_SEED} (it seeds numpy), got {seed}")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must not repeat")
        return seeds

    @model_validator(mode="after")
    def _transfer_sources(self) -> SweepSpec:
        if self.transfer is not None:
            for i, source in enumerate(self.transfer_sources):
                if source not in self.mask_source or MASK_SOURCES[source].is_random:
                    allowed = [s for s in self.mask_source if not MASK_SOURCES[s].is_random]
                    raise _KeyedError(("transfer", "mask_source", i),
                                      f"{source!r} is not an IMP mask source of this sweep; allowed: {', '.join(allowed)}")
        if self.transfer is not None and self.pruning.one_shot:
            raise _KeyedError(("transfer",), "transfer evaluates the networks of IMP chains: it needs one_shot: false")
        if self.pruning.layers is not None and self.pruning.one_shot:
            raise _KeyedError(("pruning", "layers"), "the layer-wise option needs iterative pruning (one_shot: false)")
        convolutions = catalog.CONVOLUTIONS[self.arch.name]
        if self.pruning.layers is not None and self.pruning.layers > convolutions:
            raise _KeyedError(("pruning", "layers"), f"{self.arch.name} has {convolutions} convolutions: "
                                                     f"layers must be in 1..{convolutions}, got {self.pruning.layers}")
        subset_only = [task for task in self.tasks if task in catalog.SUBSET_ONLY_TASKS]
        if subset_only and self.labelled_subset_size() is None:
            for i, point in enumerate(self.rewind_points):
                if point.unit == "ep" and point.amount:
                    raise _KeyedError(("rewind", i), f"the size of label_subset (kind 'classes') of {self.dataset.name} "
                                                     f"is only known once its data is read: give {', '.join(subset_only)} "
                                                     "rewinding points in iterations ('<n>it')")
        return self

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo) -> SweepSpec:
        limit = (info.context or {}).get("max_stages")
        if limit is not None:
            bound, culprit = self.stage_bound()
            if bound > limit:
                raise _KeyedError((culprit,), f"this sweep would plan up to {bound:,} stages, above the limit of "
                                              f"{limit:,}; check {culprit}, or raise the limit with --max-stages")
        return self

    def stage_bound(self) -> tuple[int, str]:
        """An upper bound on the stages this sweep plans, computed without planning, and the key that drives it."""
        chains = len(self.tasks) * len(self.seeds) * len(self.rewind)
        rounds = 1 if self.pruning.one_shot else max(self.level_for(f) for f in self.pruning.fractions)
        cells = len(self.mask_source) * len(self.init) * len(self.rewind) * len(self.pruning.fractions) * len(self.seeds)
        transfer = 4 * cells if self.transfer is not None else 0  # features, linear, finetune, prune-during
        chain_stages = chains * (rounds + 2)  # the dense run, a rewind replay and the IMP levels
        axes = {"seeds": len(self.seeds), "rewind": len(self.rewind), "pruning.fractions": len(self.pruning.fractions),
                "mask_source": len(self.mask_source), "init": len(self.init)}
        culprit = "pruning.rate" if rounds > 100 else max(axes, key=lambda axis: axes[axis])
        return chain_stages + cells + transfer, culprit

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for source in self.mask_source:
            task = MASK_SOURCES[source].task
            if task is not None and task not in self.recipes:
                raise _KeyedError(("recipes",), f"mask source {source!r} trains on task {task!r}: add a recipes.{task} section")
        for i, point in enumerate(self.rewind_points):
            for task in self.tasks:
                recipe = self.recipes[task]
                ipe = self.iterations_per_epoch(task)
                if point.iterations(ipe) > recipe.epochs * ipe:
                    raise _KeyedError(
                        ("rewind", i),
                        f"rewinding point {point.text} is beyond the {task} training "
                        f"({recipe.epochs} epochs = {recipe.epochs * ipe} iterations)",
                    )
        return self

    # ---- derived views -------------------------------------------------------------
    @property
    def rewind_points(self) -> list[RewindPoint]:
        """The rewinding points, parsed."""
        return [parse_rewind(point) for point in self.rewind]

    @property
    def tasks(self) -> list[str]:
        """The training tasks the mask sources of this sweep need, in a fixed order."""
        return sorted({MASK_SOURCES[s].task for s in self.mask_source if MASK_SOURCES[s].task})

    @property
    def transfer_sources(self) -> list[str]:
        """The IMP mask sources the transfer evaluations cover (none without a transfer section)."""
        if self.transfer is None:
            return []
        if self.transfer.mask_source is not None:
            return list(self.transfer.mask_source)
        return [s for s in self.mask_source if not MASK_SOURCES[s].is_random]

    @property
    def eval_recipe(self) -> Recipe:
        """The recipe of retraining on labels (``recipes.eval``, else ``recipes.labels``)."""
        return self.recipes.get("eval", self.recipes["labels"])

    def iterations_per_epoch(self, task: str) -> int:
        """Optimizer steps per epoch of a task's recipe on this dataset."""
        train_size = self.dataset.facts["train_size"]
        if task in catalog.SUBSET_ONLY_TASKS:  # trains on the labelled subset only
            # where its size is unknown (validation then allows rewinding in steps only) the expected one stands in
            train_size = self.labelled_subset_size() or max(1, round(self.label_subset.fraction * train_size))
        return catalog.iterations_per_epoch(train_size, self.recipes[task].batch_size)

    def labelled_subset_size(self) -> Optional[int]:
        """Training images of the labelled subset (``label_subset``), None where unknown before reading the data.

        Exact from the folder's labels where the dataset takes a ``subset`` of its own (the
        same choice, :func:`workers.folders.subset_positions`); else ``images_per_class``
        holds ``round(fraction * N)`` images by construction and ``classes`` is unknown.
        """
        subset = self.label_subset
        if self.dataset.subset is None and "subset" in catalog.DATASET_OPTIONS.get(self.dataset.name, ()):
            return catalog.dataset_facts({**self.dataset.model_dump(), "subset": subset.model_dump()})["train_size"]
        if subset.kind == "images_per_class":
            return max(1, round(subset.fraction * self.dataset.facts["train_size"]))
        return None

    def level_for(self, fraction: float) -> int:
        """The number of IMP rounds whose kept fraction is nearest (in log) to ``fraction``."""
        return max(0, round(math.log(fraction) / math.log1p(-self.pruning.rate)))


def _with_backend_sections(base: type[_SweepFields]) -> type[_SweepFields]:
    """``base`` plus ``backend:`` (a registered name) and one section per registered backend, named like it."""
    sections: dict[str, Any] = {name: (settings_model(name), Field(default_factory=settings_model(name)))
                                for name in BACKENDS}
    return create_model("SweepSpec", __base__=base, __module__=__name__, __doc__="One sweep file.",
                        backend=(Literal[tuple(BACKENDS)], "local"), **sections)


if TYPE_CHECKING:  # what the registry gives today, for type checkers
    class SweepSpec(_SweepFields):
        """One sweep file."""

        backend: str
        local: LocalBackend
        slurm: SlurmSettings
        ray: RaySettings
else:
    SweepSpec = _with_backend_sections(_SweepFields)


def _members(values: list[str], allowed, what: str) -> list[str]:
    for i, value in enumerate(values):
        if value not in allowed:
            raise _KeyedError((i,), f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}s must not repeat")
    return values




# ---- loading -------------------------------------------------------------------------

def load_spec(path: Union[str, Path], overrides: Optional[list[str]] = None,
              max_stages: Optional[int] = DEFAULT_MAX_STAGES) -> SweepSpec:
    """Read, override and validate a sweep file; raise SpecError on any problem.

    A sweep that would plan more than ``max_stages`` stages is refused before anything is built.
    """
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(source, "", "no such sweep file") from None
    except OSError as err:
        raise SpecError(source, "", f"cannot read the file ({err.strerror})") from None
    if not data.strip():
        raise SpecError(source, "", "the file is empty; a sweep file is a mapping of keys (see sweeps/digits.yaml)")
    try:
        raw = load_yaml(data)
    except YamlInputError as err:
        raise SpecError(source, "", str(err)) from None
    if not isinstance(raw, dict):
        raise SpecError(source, "", f"the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    overridden = {}
    for override in overrides or []:
        key_path = apply_override(raw, override, source)
        overridden[key_path] = override
    return validate_spec(raw, source, overridden, max_stages=max_stages)


def apply_override(raw: dict, override: str, source: str) -> str:
    """Apply one ``a.b.c=value`` override (value read as YAML) to ``raw`` in place."""
    if "=" not in override:
        raise SpecError(source, override, "an override must look like key.path=value (e.g. pruning.rate=0.5)")
    key_path, _, text = override.partition("=")
    keys = key_path.strip().split(".")
    if not all(keys):
        raise SpecError(source, key_path, f"override {_shown(override)}: empty key in the key path")
    try:
        value = load_yaml(text) if text.strip() else None
    except YamlInputError as err:
        raise SpecError(source, key_path, f"override {_shown(override)}: the value is not valid YAML ({err})") from None
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            prefix = ".".join(keys[: depth + 1])
            raise SpecError(source, prefix, f"override {_shown(override)}: {prefix} is not a section, it holds {child!r}")
        node = child
    node[keys[-1]] = value
    return ".".join(keys)


def validate_spec(raw: dict, source: str, overridden: Optional[dict] = None,
                  max_stages: Optional[int] = None) -> SweepSpec:
    """Validate a raw mapping; turn the first pydantic error into a SpecError."""
    try:
        return SweepSpec.model_validate(raw, context={"max_stages": max_stages})
    except ValidationError as err:
        first = err.errors()[0]
        key_path, problem = _describe(first)
        extra = len(err.errors()) - 1
        if extra:
            problem += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        for override_key, override in (overridden or {}).items():
            if _within(key_path, override_key) or _within(override_key, key_path):
                problem += f" (from the command-line override {_shown(override)})"
        raise SpecError(source, key_path, problem) from None


def _shown(override: str, limit: int = 80) -> str:
    """An override as an error message quotes it: cut to ``limit`` characters, so one line stays readable."""
    return repr(override if len(override) <= limit else override[:limit] + "...")


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def _describe(error: dict) -> tuple[str, str]:
    loc = list(error["loc"])
    context_error = (error.get("ctx") or {}).get("error")
    if isinstance(context_error, _KeyedError):
        loc += list(context_error.sub_path)
        return _format_loc(loc), context_error.message
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return _format_loc(loc), f"unknown key; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return _format_loc(loc), "required key is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind not in ("value_error",) and "input" in error and not isinstance(error["input"], (dict, list)):
        message += f", got {error['input']!r}"
    return _format_loc(loc), message


def _format_loc(loc: list) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a problem with a mapping's key, not its value
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _allowed_keys(loc: list) -> list[str]:
    """Field names of the model found by walking ``loc`` from the top of the spec."""
    model: Any = SweepSpec
    inside_recipes = False
    for part in loc:
        if isinstance(part, int):
            continue
        if inside_recipes:
            model, inside_recipes = Recipe, False
            continue
        if model is SweepSpec and part == "recipes":
            inside_recipes = True
            continue
        if isinstance(model, _MappingOf):  # the part is a key of a dict of sections
            model = model.value
            continue
        annotation = getattr(model.model_fields.get(part), "annotation", None)
        optional = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(optional) == 1:  # Optional[Section]
            annotation = optional[0]
        if typing.get_origin(annotation) is dict:  # dict[str, Section]
            value = typing.get_args(annotation)[1]
            if isinstance(value, type) and issubclass(value, BaseModel):
                model = _MappingOf(value)
                continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


class _MappingOf(typing.NamedTuple):
    """While walking a key path: inside a ``dict[str, value]`` whose values are sections."""

    value: type
