"""The sections of a sweep file: recipes, dataset, network, pruning, label subset, transfer, tracking."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from orchestrator.backends.settings_base import KeyedError as _KeyedError
from orchestrator.spec.bounds import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_NEGATIVES,
    MAX_SEED,
    MAX_WIDTH,
    MIN_RATE,
    checked_path,
)
from workers import catalog


class StrictSection(BaseModel):
    # strict: a boolean or a numeric string is not a number; no NaN or infinity anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, defer_build=True)


class Schedule(StrictSection):
    """Learning-rate schedule; milestones are epochs where the rate is multiplied by gamma."""

    kind: Literal["constant", "step", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)


class Recipe(StrictSection):
    """How one task is trained. ``negatives`` and ``batch_counts`` belong to the tasks that
    declare them (``recipes.npid``; ``recipes.rotnet``, ``s4l``, ``exemplar``); a recipe
    leaves them and ``eval_every`` out of what it writes at their defaults, so they change no
    stage key there."""

    epochs: int = Field(gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(gt=0, le=MAX_BATCH_SIZE)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, le=1)
    #: an absent section is its defaults (equal to Schedule(), which would build Schedule's own validator
    #: at startup: the sweep's validator already checks a given one)
    schedule: Schedule = Field(default_factory=Schedule.model_construct)
    #: NPID: negatives drawn from the memory bank per positive (the paper: 16,384).
    negatives: int = Field(catalog.DEFAULT_NEGATIVES, gt=0, le=MAX_NEGATIVES)
    #: a task of several samples per image: whether ``batch_size`` counts images or samples.
    batch_counts: Literal["images", "samples"] = "images"
    #: the test set's accuracy also after every this many epochs, in ``epochs.jsonl`` and the trackers
    #: (0: only after the last epoch, as the stage measures it anyway).
    eval_every: int = Field(0, ge=0, le=MAX_EPOCHS)

    @model_serializer(mode="wrap")
    def _task_options_at_defaults_left_out(self, handler):
        defaults = {**catalog.TASK_RECIPE_OPTIONS, "eval_every": 0}
        return {key: value for key, value in handler(self).items() if key not in defaults or value != defaults[key]}

    def check_task_options(self, task: Optional[str]) -> None:
        """``_KeyedError`` (relative to the recipe) for a task option ``task`` does not take
        (``None``: a transfer recipe, which takes none) or a batch that ``batch_counts: samples``
        cannot split into whole images."""
        allowed = catalog.recipe_options(task) if task is not None else ()
        for key in sorted(self.model_fields_set & set(catalog.TASK_RECIPE_OPTIONS) - set(allowed)):
            owners = [name for name in catalog.TASKS if key in catalog.recipe_options(name)]
            reader = "a transfer recipe" if task is None else f"task {task}"
            raise _KeyedError((key,), f"a setting of the recipes of {', '.join(owners)} only; {reader} does not "
                                      "read it")
        if task is not None and self.batch_counts == "samples":
            per_image = catalog.samples_per_image(task)
            if self.batch_size % per_image:
                raise _KeyedError(("batch_size",), f"with batch_counts: samples, must be a multiple of the "
                                                   f"{per_image} samples {task} makes of each image, got "
                                                   f"{self.batch_size}")

    @model_validator(mode="after")
    def _schedule_fits(self) -> Recipe:
        for i, milestone in enumerate(self.schedule.milestones):
            if not 0 < milestone < self.epochs:
                raise _KeyedError(("schedule", "milestones", i),
                                  f"must be an epoch in 1..{self.epochs - 1}, got {milestone}")
        if self.schedule.warmup_epochs >= self.epochs:
            raise _KeyedError(("schedule", "warmup_epochs"),
                              f"must be below epochs ({self.epochs}), got {self.schedule.warmup_epochs}")
        return self


class DatasetSubset(StrictSection):
    """A reproducible part of the training split: ``fraction`` of the images of every class
    (``images_per_class``) or of the classes, with all their images (``classes``)."""

    kind: Literal["images_per_class", "classes"] = "images_per_class"
    fraction: float = Field(0.1, gt=0, le=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class Dataset(StrictSection):
    """Which dataset the sweep trains on: ``digits``; ``cifar10`` (``root``: the folder holding
    torchvision's ``cifar-10-batches-py``); ``imagenet``, ``image_folder`` (``root``:
    ``train/`` and ``val/`` with one folder per class; ``image_size``, default 224);
    ``voc07`` (VOCdevkit layout, multi-label) and ``places205`` (its list files), which also
    take ``channels`` (1 reads the images in grey); ``subset`` (not for digits nor voc07).
    The folder is checked here.

    ``root`` is stored absolute (relative to the directory prunesweep runs from).
    """

    name: str
    root: Optional[str] = None
    image_size: Optional[int] = Field(None, gt=0, le=MAX_IMAGE_SIZE)
    subset: Optional[DatasetSubset] = None
    channels: Optional[Literal[1, 3]] = None

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
        for key in ("root", "image_size", "subset", "channels"):
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


class Arch(StrictSection):
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


class Pruning(StrictSection):
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


class LabelSubset(StrictSection):
    """The labelled subset of ``s4l`` and ``labels_10pct``: 10% of the images of every class
    (``images_per_class``) or 10% of the classes with all their images (``classes``)."""

    kind: Literal["images_per_class", "classes"] = "images_per_class"
    fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class LinearTransfer(StrictSection):
    """A linear classifier on the frozen pooled features; ``metric``: top1, or map (mean over
    classes of the one-vs-rest average precision; on VOC07 the benchmark's, as the paper).
    ``classifier``: ``sgd`` (a linear layer trained with ``recipe``) or ``svm`` (per-class linear
    SVMs, cost chosen by 3-fold cross-validation as in Goyal et al. 2019; no recipe).
    ``difficult`` (``svm`` on a multi-label target only): the difficult-only images of a class
    are SVM training ``negative``s (the default, as Goyal et al.'s benchmark and the paper) or
    left out (``ignore``); the test ignores them either way."""

    recipe: Optional[Recipe] = None
    metric: Literal["top1", "map"] = "top1"
    classifier: Literal["sgd", "svm"] = "sgd"
    difficult: Optional[Literal["negative", "ignore"]] = None

    @model_serializer(mode="wrap")
    def _difficult_only_when_given(self, handler):
        return {key: value for key, value in handler(self).items() if key != "difficult" or value is not None}

    @model_validator(mode="after")
    def _recipe_for_sgd(self) -> LinearTransfer:
        if self.recipe is not None:
            within_recipe(self.recipe, None, ("recipe",))
        if self.classifier == "sgd" and self.recipe is None:
            raise _KeyedError(("recipe",), "required with classifier: sgd (how the linear layer is trained)")
        if self.classifier == "svm" and self.recipe is not None:
            raise _KeyedError(("recipe",), "not used with classifier: svm (its cost is cross-validated); remove it")
        if self.classifier != "svm" and self.difficult is not None:
            raise _KeyedError(("difficult",), "a setting of classifier: svm only (how its SVMs train); remove it")
        return self


class FinetuneTransfer(StrictSection):
    """The whole pruned network fine-tuned on the target with its mask kept exact;
    ``compare_prune_during`` adds the dense network fine-tuned, pruned to the same count and
    fine-tuned again (pruning during transfer)."""

    recipe: Recipe
    compare_prune_during: bool = False

    @model_validator(mode="after")
    def _plain_recipe(self) -> FinetuneTransfer:
        within_recipe(self.recipe, None, ("recipe",))
        return self


class Transfer(StrictSection):
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
        multi_label = self.dataset.name in catalog.MULTI_LABEL_DATASETS
        if self.linear is not None and multi_label and self.linear.metric != "map":
            raise _KeyedError(("linear", "metric"), f"{self.dataset.name} is multi-label: its metric is map")
        if self.linear is not None and self.linear.difficult is not None and not multi_label:
            raise _KeyedError(("linear", "difficult"), f"{self.dataset.name} has no difficult-only labels: only a "
                                                       f"multi-label target ({', '.join(catalog.MULTI_LABEL_DATASETS)})"
                                                       " takes it")
        return self

    def svm_difficult(self) -> Optional[str]:
        """How the SVMs train on difficult-only images (``negative`` unless the file says ``ignore``);
        None where there are none (no SVMs, or a single-label target)."""
        if self.linear is None or self.linear.classifier != "svm" or \
                self.dataset.name not in catalog.MULTI_LABEL_DATASETS:
            return None
        return self.linear.difficult or "negative"


def within_recipe(recipe: Recipe, task: Optional[str], path: tuple) -> None:
    """:meth:`Recipe.check_task_options`, its error's key path led by ``path`` (where the recipe is)."""
    try:
        recipe.check_task_options(task)
    except _KeyedError as error:
        raise _KeyedError((*path, *error.sub_path), error.message) from None


class MlflowTracking(StrictSection):
    """An MLflow tracking server (the ``mlflow`` extra): ``uri`` (default: the workers'
    ``MLFLOW_TRACKING_URI``) and ``experiment`` (default: the sweep's name)."""

    uri: Optional[str] = Field(None, min_length=1, pattern=r"^(https?|file|sqlite|postgresql|databricks)[:+]")
    experiment: Optional[str] = Field(None, min_length=1, max_length=500)


class Tracking(StrictSection):
    """Where the training stages also send their per-epoch metrics (``epochs.jsonl`` is always written).

    Never part of a stage's identity or of the sweep's settings: turning it on or off renames
    nothing and may change under one sweep name.
    """

    tensorboard: bool = False
    mlflow: Optional[MlflowTracking] = None

    @property
    def on(self) -> bool:
        """Whether any tracker is asked for."""
        return self.tensorboard or self.mlflow is not None


def members(values: list[str], allowed, what: str) -> list[str]:
    for i, value in enumerate(values):
        if value not in allowed:
            raise _KeyedError((i,), f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what}s must not repeat")
    return values
