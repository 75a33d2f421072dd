"""One sweep file as a whole: its sections, the checks across them and the views the planner reads."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import Field, ValidationInfo, create_model, field_serializer, field_validator, model_validator

from orchestrator.backends import BACKENDS, settings_model
from orchestrator.backends.local.settings import LocalSettings
from orchestrator.backends.ray.settings import RaySettings
from orchestrator.backends.settings_base import KeyedError as _KeyedError
from orchestrator.backends.slurm.settings import SlurmSettings
from orchestrator.spec.bounds import MAX_LEVELS, MAX_SEED, MAX_SWEEP_NAME, checked_path
from orchestrator.spec.rewind import RewindPoint, parse_rewind
from orchestrator.spec.sections import (
    Arch,
    Dataset,
    LabelSubset,
    Pruning,
    Recipe,
    StrictSection,
    Tracking,
    Transfer,
    members,
    within_recipe,
)
from workers import catalog
from workers.pruning.mask_sources import INITS, MASK_SOURCES


class _SweepFields(StrictSection):
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
    label_subset: LabelSubset = Field(default_factory=LabelSubset.model_construct)  # see Recipe.schedule
    transfer: Optional[Transfer] = None
    #: the lab's central results database (results.central_db), e.g. postgresql://user@host/db
    results_db: Optional[str] = None
    #: per-epoch metrics to TensorBoard and MLflow too (no part of any stage's identity)
    tracking: Tracking = Field(default_factory=Tracking.model_construct)  # see Recipe.schedule

    @field_validator("name", mode="before")
    @classmethod
    def _short_name(cls, name: Any) -> Any:
        if isinstance(name, str) and len(name) > MAX_SWEEP_NAME:
            raise ValueError(f"a sweep name is at most {MAX_SWEEP_NAME} characters (it names the file "
                             f"sweeps/<name>.json in the workspace), got {len(name)}: {name[:40]!r}...")
        return name

    @field_validator("workspace")
    @classmethod
    def _workspace_path(cls, workspace: str) -> str:
        return checked_path(workspace)

    @field_validator("results_db")
    @classmethod
    def _database_url(cls, url: Optional[str]) -> Optional[str]:
        from results.central_db import check_url

        if url is not None:
            check_url(url)  # a ValueError names the URL with its password hidden
        return url

    @field_serializer("results_db")
    def _only_the_target(self, url: Optional[str]) -> Optional[str]:
        """A dump of the sweep (what the ledger and the sweep record keep) names the database by user,
        host, port and database: never its password (the driver takes it from the URL itself)."""
        from results.central_db import target

        return target(url) if url else url

    @field_validator("recipes", mode="before")  # before the recipes: a misspelt task explains what they lack
    @classmethod
    def _recipe_names(cls, recipes: Any) -> Any:
        if not isinstance(recipes, dict):
            return recipes  # the type check says what is wrong
        allowed = (*catalog.TASKS, "eval")
        for name in recipes:
            if name not in allowed:
                raise _KeyedError((name,), f"unknown recipe; allowed: {', '.join(allowed)}")
        if "labels" not in recipes:
            raise ValueError("a 'labels' recipe is required (evaluations retrain on labels)")
        return recipes

    @field_validator("recipes")
    @classmethod
    def _recipe_options_of_their_task(cls, recipes: dict[str, Recipe]) -> dict[str, Recipe]:
        for name, recipe in recipes.items():
            within_recipe(recipe, "labels" if name == "eval" else name, (name,))
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
        return members(sources, MASK_SOURCES, "mask source")

    @field_validator("init")
    @classmethod
    def _inits(cls, inits: list[str]) -> list[str]:
        return members(inits, INITS, "init")

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
    def _transfer_sources(self) -> _SweepFields:
        if self.transfer is not None:
            for i, source in enumerate(self.transfer_sources):
                if source not in self.mask_source or MASK_SOURCES[source].is_random:
                    allowed = [s for s in self.mask_source if not MASK_SOURCES[s].is_random]
                    raise _KeyedError(("transfer", "mask_source", i),
                                      f"{source!r} is not an IMP mask source of this sweep; "
                                      f"allowed: {', '.join(allowed)}")
        if self.dataset.name in catalog.MULTI_LABEL_DATASETS:
            raise _KeyedError(("dataset", "name"), f"{self.dataset.name} is multi-label: it is a transfer target "
                                                   "(transfer.dataset), not a dataset to prune on")
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
                    raise _KeyedError(("rewind", i), "the size of label_subset (kind 'classes') of "
                                                     f"{self.dataset.name} is only known once its data is read: "
                                                     f"give {', '.join(subset_only)} "
                                                     "rewinding points in iterations ('<n>it')")
        return self

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo) -> _SweepFields:
        limit = (info.context or {}).get("max_stages")
        if limit is not None:
            bound, culprit = self.stage_bound()
            if bound > limit:
                raise _KeyedError((culprit,), f"this sweep would plan up to {bound:,} stages, above the limit of "
                                              f"{limit:,}; check {culprit}, or raise the limit with --max-stages")
        return self

    @model_validator(mode="after")
    def _fractions_leave_weights(self) -> _SweepFields:
        """Each fraction keeps at least one prunable weight of the network, in at most MAX_LEVELS IMP rounds."""
        pruning = self.pruning
        in_channels = int(catalog.DATASETS[self.dataset.name]["in_channels"] or 3)
        total = catalog.prunable_weights(self.arch.model_dump(), in_channels, pruning.layers)
        chain = [total]  # weights left after each number of rounds, while any is left, up to MAX_LEVELS
        while not pruning.one_shot and chain[-1] and len(chain) <= MAX_LEVELS:
            chain.append(catalog.kept_after_rounds(chain[-1], pruning.rate, 1))
        deepest = max(level for level, kept in enumerate(chain) if kept)
        smallest = 1 / total if pruning.one_shot else (1 - pruning.rate) ** deepest
        for i, fraction in enumerate(pruning.fractions):
            level = 0 if pruning.one_shot else self.level_for(fraction)
            if not pruning.one_shot and level > MAX_LEVELS and chain[-1]:
                raise _KeyedError(("pruning", "fractions", i),
                                  f"{fraction:g} takes {level:,} IMP rounds at rate {pruning.rate:g}, above the limit "
                                  f"of {MAX_LEVELS:,}; raise pruning.rate or the fraction")
            kept = round(fraction * total) if pruning.one_shot else chain[level] if level < len(chain) else 0
            if kept < 1:
                layers = f" (its first {pruning.layers} convolutions)" if pruning.layers else ""
                rounds = "" if pruning.one_shot else f" after {level:,} rounds at rate {pruning.rate:g}"
                raise _KeyedError(("pruning", "fractions", i),
                                  f"{fraction:g} leaves no weight of the {total:,} prunable weights of "
                                  f"{self.arch.name}{layers}{rounds}; the smallest meaningful fraction is "
                                  f"{smallest:.4g}")
        return self

    def stage_bound(self) -> tuple[int, str]:
        """An upper bound on the stages this sweep plans, computed without planning, and the key that drives it."""
        chains = len(self.tasks) * len(self.seeds) * len(self.rewind)
        rounds = 1 if self.pruning.one_shot else max(self.level_for(f) for f in self.pruning.fractions)
        cells = (len(self.mask_source) * len(self.init) * len(self.rewind) * len(self.pruning.fractions)
                 * len(self.seeds))
        transfer = 4 * cells if self.transfer is not None else 0  # features, linear, finetune, prune-during
        chain_stages = chains * (rounds + 2)  # the dense run, a rewind replay and the IMP levels
        axes = {"seeds": len(self.seeds), "rewind": len(self.rewind), "pruning.fractions": len(self.pruning.fractions),
                "mask_source": len(self.mask_source), "init": len(self.init)}
        culprit = "pruning.rate" if rounds > 100 else max(axes, key=lambda axis: axes[axis])
        return chain_stages + cells + transfer, culprit

    @model_validator(mode="after")
    def _consistent(self) -> _SweepFields:
        for source in self.mask_source:
            task = MASK_SOURCES[source].task
            if task is not None and task not in self.recipes:
                raise _KeyedError(("recipes",),
                                  f"mask source {source!r} trains on task {task!r}: add a recipes.{task} section")
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
        return sorted({task for task in (MASK_SOURCES[s].task for s in self.mask_source) if task})

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

    def iterations_per_epoch(self, task: str, batch_counts: Optional[str] = None) -> int:
        """Optimizer steps per epoch of a task's recipe on this dataset, its ``batch_size`` read as the
        worker reads it (or as ``batch_counts`` says; ``ValueError`` if that reading cannot split it)."""
        train_size = self.dataset.facts["train_size"]
        if task in catalog.SUBSET_ONLY_TASKS:  # trains on the labelled subset only
            # where its size is unknown (validation then allows rewinding in steps only) the expected one stands in
            train_size = self.labelled_subset_size() or max(1, round(self.label_subset.fraction * train_size))
        recipe = self.recipes[task].model_dump()
        if batch_counts is not None:
            recipe["batch_counts"] = batch_counts
        return catalog.iterations_per_epoch(train_size, catalog.images_per_step(recipe, task))

    def labelled_subset_size(self) -> Optional[int]:
        """Training images of the labelled subset (``label_subset``), None where unknown before reading the data.

        Exact from the folder's labels where the dataset takes a ``subset`` of its own (the
        same choice, :func:`workers.data.folders.subset_positions`); else ``images_per_class``
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
    # an absent section is its defaults, made without building the section's own validator
    sections: dict[str, Any] = {name: (model, Field(default_factory=model.model_construct))
                                for name, model in ((name, settings_model(name)) for name in BACKENDS)}
    return create_model("SweepSpec", __base__=base, __module__=__name__, __doc__="One sweep file.",
                        backend=(Literal[tuple(BACKENDS)], "local"), **sections)


if TYPE_CHECKING:  # what the registry gives today, for type checkers
    class SweepSpec(_SweepFields):
        """One sweep file."""

        backend: str
        local: LocalSettings
        slurm: SlurmSettings
        ray: RaySettings
else:
    SweepSpec = _with_backend_sections(_SweepFields)
