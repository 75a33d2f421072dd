"""Expand a sweep's grid into a DAG of shared stages.

Stage kinds and what each is keyed by:

- ``dense``: dataset, arch, task, recipe, seed. Trains the dense network and captures
  W_k for every rewinding point the sweep needs (the capture list is *not* in the key:
  one dense run serves every rewind point).
- ``rewind``: a dense stage and k. Only planned when a dense run already exists on disk
  without W_k (a later sweep added a rewinding point): replays its first k steps.
- ``imp``: the previous level's stage, the dense run and k, the pruning rate. Prunes one
  round from the previous level's trained weights, resets survivors to W_k, retrains.
- ``random_mask``: dataset, arch, the number of weights kept, seed.
- ``eval``: the mask's provenance, the init, the eval recipe, seed. Retrains on labels.
- ``features``: a pruned pretext-trained network (an IMP level or the dense run) and the
  target dataset. Extracts its pooled features of the target's images once.
- ``linear_eval``: the features stage, the classifier recipe, the metric, seed (SVMs on a
  multi-label target: how they read difficult-only images when ``ignore``). Trains a
  linear classifier on the cached features; top-1 or mAP on the target's test split.
- ``finetune``: the pruned pretext-trained network, the target, the recipe, seed (and, for
  pruning during transfer, the dense run whose weights are fine-tuned then pruned).

Both evaluation kinds on a multi-label target add the average precision they report
(:data:`MULTI_LABEL_AP`), which changed in issue 28: stages of earlier versions stay theirs.

The subset tasks (s4l and labels_10pct, declared with ``label_subset``) add the labelled
subset to their dense identity; a layer-wise sweep (``pruning.layers``) adds ``layers`` to
every mask it prunes or draws; the adjusted random baseline keys its mask by the dense
labels run whose zeros it prunes.

An IMP chain serves every fraction: a cell at level L reads the mask pruned from level
L-1. A ``labels`` + ``winning_ticket`` cell *is* the labels IMP training at that level
when the eval recipe equals the labels recipe, so it maps to that ``imp`` stage.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import BaseModel

from orchestrator.planning.stage_identity import Cell, Stage, canonical_json
from orchestrator.spec import RewindPoint, SweepSpec
from results.row import NO_REWIND  # the rewind label of cells that need no rewinding point
from workers import catalog
from workers.pruning.mask_sources import MASK_SOURCES, subset_tasks
from workers.stages.identity import Setting

DEFAULT_RATE = 0.2
DEFAULT_SCOPE = "global"
#: the average precision a multi-label target's evaluations report (issue 28): part of their identity,
#: so none is the stage of an earlier version that reported the devkit's 11-point AP alone.
MULTI_LABEL_AP = "benchmark"  # the worker's name for it (workers.stages.contract.MultiLabelAP)


@dataclass
class Plan:
    """The stages (in dependency order) and grid cells of one sweep."""

    sweep: str
    stages: dict[str, Stage] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    naive_trainings: int = 0
    naive_epochs: float = 0

    def counts_by_kind(self) -> Counter:
        """How many stages of each kind."""
        return Counter(stage.kind for stage in self.stages.values())

    @property
    def trainings(self) -> int:
        """Stages that train a network."""
        return sum(stage.is_training for stage in self.stages.values())

    @property
    def total_epochs(self) -> float:
        """Epochs of training over all stages."""
        return sum(stage.epochs for stage in self.stages.values())

    def add(self, stage: Stage) -> str:
        """Add a stage unless an identical one is there; return its key."""
        key = stage.key
        self.stages.setdefault(key, stage)
        return key


def settings_fingerprint(spec: SweepSpec) -> str:
    """A digest of everything but the grid axes: a sweep name stands for one of these."""
    settings = {
        "dataset": spec.dataset.model_dump(exclude={"root"}),
        "arch": spec.arch.model_dump(),
        "recipes": {name: recipe.model_dump() for name, recipe in spec.recipes.items()},
        "pruning": spec.pruning.model_dump(exclude={"fractions"}),
    }
    if spec.pruning.layers is None:  # settings added later: omitted at their defaults, so old names still match
        del settings["pruning"]["layers"]
    if spec.label_subset != type(spec.label_subset).model_validate({}):
        settings["label_subset"] = spec.label_subset.model_dump()
    if spec.transfer is not None:
        settings["transfer"] = spec.transfer.model_dump(exclude={"mask_source": True, "dataset": {"root"}})
        linear = settings["transfer"].get("linear") or {}
        if linear.get("classifier") == "sgd":
            del linear["classifier"]
        if linear.get("difficult") == "negative":
            del linear["difficult"]
        if spec.transfer.dataset.name in catalog.MULTI_LABEL_DATASETS:
            # top1 holds the benchmark's AP there since issue 28, the 11-point AP before: a name launched
            # before stands for the 11-point one (its rows and these are never one sweep's)
            settings["transfer"]["average_precision"] = MULTI_LABEL_AP
    return canonical_json(settings)


def depth_lines(spec: SweepSpec, fraction_text: Callable[[float], str] = lambda f: f"{f:g}",
                number_text: Callable[[float], str] = lambda v: f"{v:.4g}") -> list[str]:
    """What ``plan`` prints after the counts: the IMP round of each fraction (iterative pruning), then
    one line per training task of ``spec`` with the step k of each rewinding point; for a task of
    several samples per image, k under the other reading of its ``batch_size`` follows (``batch_counts``)."""
    lines = []
    if not spec.pruning.one_shot:
        levels = sorted({(f, spec.level_for(f)) for f in spec.pruning.fractions}, reverse=True)
        lines.append("fractions -> IMP rounds: " + ", ".join(
            f"{fraction_text(f)} -> {level} ({number_text((1 - spec.pruning.rate) ** level)})" for f, level in levels))
    for task in spec.tasks:
        recipe = spec.recipes[task]
        per_epoch = spec.iterations_per_epoch(task)
        steps = ", ".join(f"{point.text} = {point.iterations(per_epoch):,}" for point in spec.rewind_points)
        line = f"rewind step k, {task}: {steps} ({per_epoch:,} steps per epoch"
        if catalog.samples_per_image(task) > 1:
            other = "samples" if recipe.batch_counts == "images" else "images"
            try:
                other_epoch = spec.iterations_per_epoch(task, other)
                read_so = ", ".join(f"{point.text} = {point.iterations(other_epoch):,}" for point in spec.rewind_points)
            except ValueError:
                read_so = f"impossible ({recipe.batch_size} is not a multiple of {catalog.samples_per_image(task)})"
            line += (f"; batch_size {recipe.batch_size:,} counts {recipe.batch_counts} (batch_counts); "
                     f"read as {other}: {read_so}")
        lines.append(line + ")")
    return lines


def setting(model: BaseModel) -> Setting:
    """A section of the sweep file as a stage takes it: whole in its config, its defaults left out of its
    identity (so that an option added with a default renames nothing)."""
    return Setting(model.model_dump(), model.model_dump(exclude_defaults=True))


def plan_sweep(spec: SweepSpec, captured: Callable[[str], Optional[list[int]]] = lambda key: None) -> Plan:
    """Expand ``spec`` into a Plan.

    ``captured(dense_key)`` returns the rewind iterations an existing dense stage folder
    captures (None when the stage is new); rewinding points it lacks get a ``rewind``
    stage instead of renaming the dense run.
    """
    return _Planner(spec, captured).build()


class _Planner:
    def __init__(self, spec: SweepSpec, captured: Callable[[str], Optional[list[int]]]):
        self.spec = spec
        self.captured = captured
        self.plan = Plan(sweep=spec.name)
        # where the data lives is not what it is (the contract leaves the dataset's root out of every
        # identity): moving a dataset keeps every stage's key; a workspace holds one copy of each dataset name
        self.settings: dict[int, Setting] = {}  # id of a section of the spec (which outlives the planner) -> it
        self.network: dict[str, Any] = {"dataset": setting(spec.dataset), "arch": setting(spec.arch)}
        pruning = spec.pruning
        self.rule_id = {
            name: value
            for name, value, default in (("rate", pruning.rate, DEFAULT_RATE), ("scope", pruning.scope, DEFAULT_SCOPE),
                                         ("layers", pruning.layers, None))
            if value != default
        }
        self.layers_id = {} if pruning.layers is None else {"layers": pruning.layers}
        self.eval_recipe = spec.eval_recipe
        # the labels IMP training at level L is the labels winning-ticket eval at L
        self.labels_chain_is_eval = self.eval_recipe == spec.recipes["labels"]
        self.levels = sorted({spec.level_for(f) for f in pruning.fractions})

    def setting(self, model) -> Setting:
        """:func:`setting` of a section of the sweep file, made once per section (dumping one is not cheap)."""
        made = self.settings.get(id(model))
        if made is None:
            made = self.settings[id(model)] = setting(model)
        return made

    # ---- the trunk: dense runs, rewind points, IMP chains ---------------------------
    def dense(self, task: str, seed: int) -> tuple[str, dict[int, str]]:
        """Plan the dense run of ``task``; return its key and k -> stage holding W_k."""
        recipe = self.spec.recipes[task]
        needed = sorted({point.iterations(self.spec.iterations_per_epoch(task)) for point in self.spec.rewind_points})
        trained = {**self.network, "task": task, "recipe": self.setting(recipe), "seed": seed, **self.task_config(task)}
        existing = self.captured(Stage.planned("dense", **trained).key)  # the captures are no part of the key
        capture = sorted(existing) if existing is not None else needed
        dense_key = self.plan.add(Stage.planned("dense", **trained, capture_iterations=capture,
                                                label=f"dense {task} seed={seed}", epochs=recipe.epochs))
        providers = {}
        ipe = self.spec.iterations_per_epoch(task)
        for k in needed:
            if k in capture:
                providers[k] = dense_key
            else:
                providers[k] = self.plan.add(Stage.planned(
                    "rewind", refs={"dense": dense_key}, **trained, rewind_iteration=k,
                    label=f"rewind {task} seed={seed} k={k}", epochs=k / ipe))
        return dense_key, providers

    def chain(self, task: str, seed: int, point: RewindPoint, top_level: int):
        """Plan IMP levels 1..top_level.

        Returns the dense key, k -> W_k provider, the keys by level (0 = dense) and k.
        """
        dense_key, providers = self.dense(task, seed)
        k = point.iterations(self.spec.iterations_per_epoch(task))
        recipe = self.spec.recipes[task]
        keys = [dense_key]
        for level in range(1, top_level + 1):
            keys.append(self.plan.add(Stage.planned(
                "imp", refs={"previous": keys[-1], "rewind": {"dense": dense_key, "iteration": k}},
                deps={"previous": keys[-1], "rewind": providers[k]}, **self.network, task=task,
                recipe=self.setting(recipe), seed=seed, rewind_iteration=k, level=level, mask_rule=self.prune_rule(),
                **self.task_config(task), label=f"imp {task} seed={seed} k={point.text} level={level}",
                epochs=recipe.epochs)))
        return dense_key, providers, keys, k

    def prune_rule(self) -> Setting:
        """The rule of an IMP round: whole in the config, its settings off their defaults in the identity."""
        return Setting({"kind": "prune_round", "rate": self.spec.pruning.rate, "scope": self.spec.pruning.scope,
                        **self.layers_id}, self.rule_id)

    def task_config(self, task: str) -> dict:
        """``task_options`` of a training on ``task``: the labelled subset of s4l and labels_10pct (none for
        the tasks that need none)."""
        if task in subset_tasks():
            return {"task_options": {"label_subset": self.spec.label_subset.model_dump()}}
        return {}

    # ---- evaluations ------------------------------------------------------------------
    def evaluation(self, seed: int, mask_id, mask_rule: dict | Setting, mask_deps: dict, init: str,
                   rewind_ref: Optional[tuple[str, str, int]], source_task: Optional[str], label: str) -> str:
        """Plan one retraining on labels; ``rewind_ref`` = (dense key, W_k provider key, k)."""
        fields: dict[str, Any] = {**self.network, "task": "labels", "recipe": self.setting(self.eval_recipe),
                                  "seed": seed, "init": init, "mask_rule": mask_rule}
        if self.layers_id:
            fields["pruned_layers"] = self.spec.pruning.layers
        deps = dict(mask_deps)
        if init == "winning_ticket":
            assert rewind_ref is not None, "a winning ticket needs its rewinding point"
            dense_key, provider, k = rewind_ref
            fields.update(init=Setting(init, {init: {"dense": dense_key, "iteration": k}}), rewind_iteration=k,
                          source_task=source_task)
            deps["rewind"] = provider
        return self.plan.add(Stage.planned("eval", refs={"mask": mask_id}, deps=deps, label=label,
                                           epochs=self.eval_recipe.epochs, **fields))

    def imp_source_cells(self, source: str) -> None:
        spec = self.spec
        task = MASK_SOURCES[source].task
        assert task is not None, f"mask source {source!r} prunes by IMP, so it trains on a task"
        inits = [init for init in spec.init if init in MASK_SOURCES[source].inits]
        one_shot = spec.pruning.one_shot
        for point in spec.rewind_points:
            for seed in spec.seeds:
                top = 0 if one_shot else max(self.levels)
                chain_to_eval = task == "labels" and "winning_ticket" in inits and self.labels_chain_is_eval
                transfers = source in spec.transfer_sources  # evaluates the trained network at every level
                dense_key, providers, chain, k = self.chain(
                    task, seed, point, top if chain_to_eval or transfers else max(top - 1, 0))
                if transfers:
                    self.transfer_cells(source, task, seed, point, k, chain)
                for fraction in spec.pruning.fractions:
                    level = None if one_shot else spec.level_for(fraction)
                    for init in inits:
                        label = f"eval {source} {init} seed={seed} k={point.text} f={fraction}"
                        if init == "winning_ticket" and task == "labels" and self.labels_chain_is_eval \
                                and level is not None and (level > 0 or k == 0):
                            key = chain[level]  # the IMP training on labels is this evaluation
                        elif one_shot:
                            key = self.evaluation(
                                seed, {"one_shot": dense_key, "fraction": fraction, **self.rule_id},
                                {"kind": "one_shot", "fraction": fraction, "scope": spec.pruning.scope},
                                {"previous": dense_key}, init, (dense_key, providers[k], k), task, label)
                        elif level == 0:
                            key = self.evaluation(seed, "full", {"kind": "full"}, {}, init,
                                                  (dense_key, providers[k], k), task, label)
                        else:
                            assert level is not None  # not one-shot
                            key = self.evaluation(
                                seed, {"prune_round": chain[level - 1], **self.rule_id}, self.prune_rule(),
                                {"previous": chain[level - 1]}, init, (dense_key, providers[k], k), task, label)
                        self.plan.cells.append(Cell(source, init, point.text, k, fraction, level, seed, key))
                        # naive: the cell's own chain from scratch (dense + L rounds), then its evaluation,
                        # unless the chain's last training is the evaluation (labels winning tickets)
                        own_eval = key not in chain
                        self.plan.naive_trainings += 1 + (level or 0) + own_eval
                        self.plan.naive_epochs += (spec.recipes[task].epochs * (1 + (level or 0))
                                                   + self.eval_recipe.epochs * own_eval)

    def random_cells(self, source: str) -> None:
        spec = self.spec
        adjusted = MASK_SOURCES[source].prunes_dense_zeros
        for seed in spec.seeds:
            for fraction in spec.pruning.fractions:
                if spec.pruning.one_shot:
                    level, keep = None, {"fraction": fraction}
                else:
                    level = spec.level_for(fraction)
                    keep = {"rate": spec.pruning.rate, "level": level}
                label = f"eval {source} reinit seed={seed} f={fraction}"
                if keep.get("level") == 0 or keep.get("fraction") == 1.0:
                    key = self.evaluation(seed, "full", {"kind": "full"}, {}, "reinit", None, None, label)
                else:
                    refs, deps = {}, {}
                    if adjusted:  # the zeros of the dense labels run of this seed are pruned first
                        dense_key, _ = self.dense("labels", seed)
                        refs["zeros_of"] = deps["previous"] = dense_key
                    rule = {"kind": "adjusted_random" if adjusted else "random", "keep": keep, **self.layers_id}
                    mask_key = self.plan.add(Stage.planned(
                        "random_mask", refs=refs, deps=deps, **self.network, seed=seed,
                        mask_rule=Setting(rule, {"keep": keep, **self.layers_id}),
                        label=f"random_mask {'adjusted ' if adjusted else ''}seed={seed} f={fraction}"))
                    key = self.evaluation(seed, {"given": mask_key}, {"kind": "given"}, {"mask": mask_key}, "reinit",
                                          None, None, label)
                self.plan.cells.append(Cell(source, "reinit", NO_REWIND, None, fraction, level, seed, key))
                self.plan.naive_trainings += 1
                self.plan.naive_epochs += self.eval_recipe.epochs

    # ---- transfer evaluations ---------------------------------------------------------
    def transfer_cells(self, source: str, task: str, seed: int, point: RewindPoint, k: int, chain: list[str]) -> None:
        """Linear and fine-tuning transfer of the pretext-trained network at each fraction's level."""
        spec, transfer = self.spec, self.spec.transfer
        assert transfer is not None, "only a sweep with transfer settings has transfer sources"
        target = self.setting(transfer.dataset)
        multi_label = transfer.dataset.name in catalog.MULTI_LABEL_DATASETS
        ap_id = {"average_precision": MULTI_LABEL_AP} if multi_label else {}
        difficult = transfer.svm_difficult()
        common = {**self.network, "task": task, "seed": seed, "target": target, **self.task_config(task)}
        if self.layers_id:
            common["pruned_layers"] = spec.pruning.layers
        for fraction in spec.pruning.fractions:
            level = spec.level_for(fraction)
            model_key = chain[level]
            where = f"{source} seed={seed} k={point.text} f={fraction}"
            planned = []
            if transfer.linear is not None:
                features = self.plan.add(Stage.planned(
                    "features", refs={"model": model_key}, deps={"model": model_key}, **common,
                    label=f"features {where}"))
                recipe = transfer.linear.recipe
                linear: dict[str, Any] = {"target": target, "metric": transfer.linear.metric, "seed": seed, **ap_id}
                if recipe is not None:
                    linear["recipe"] = self.setting(recipe)
                if transfer.linear.classifier != "sgd":  # absent at its default: the stage.json of sgd stages stays
                    linear["classifier"] = transfer.linear.classifier
                if difficult is not None:
                    linear["difficult"] = difficult
                planned.append(("linear", Stage.planned(
                    "linear_eval", refs={"features": features}, deps={"features": features}, **linear,
                    label=f"linear_eval {where}", epochs=recipe.epochs if recipe is not None else 0)))
            if transfer.finetune is not None:
                recipe = transfer.finetune.recipe
                finetune = {**common, "recipe": self.setting(recipe), **ap_id}
                planned.append(("finetune", Stage.planned(
                    "finetune", refs={"model": model_key}, deps={"model": model_key}, **finetune, mode="pruned",
                    label=f"finetune {where}", epochs=recipe.epochs)))
                if transfer.finetune.compare_prune_during:
                    planned.append(("finetune_prune_during", Stage.planned(
                        "finetune", refs={"model": chain[0], "kept_as": model_key},
                        deps={"model": chain[0], "mask": model_key}, **finetune, mode="prune_during",
                        label=f"finetune prune_during {where}", epochs=2 * recipe.epochs)))
            for evaluation, stage in planned:
                key = self.plan.add(stage)
                self.plan.cells.append(Cell(source, "pretrained", point.text, k, fraction, level, seed, key,
                                            transfer=evaluation))
                self.plan.naive_trainings += 2 + level
                self.plan.naive_epochs += spec.recipes[task].epochs * (1 + level) + stage.epochs

    def build(self) -> Plan:
        for source in self.spec.mask_source:
            MASK_SOURCES[source].plan_cells(self)  # the source picks its planning rules
        return self.plan
