"""What the workers offer, readable without importing torch (for validating sweep files).

- ``DATASETS``: name -> ``{"num_classes", "in_channels", "train_size", "test_size"}``, the
  values ``None`` where they depend on the folder (``cifar10``, ``imagenet``, ``places205``,
  ``voc07``, ``image_folder``): :func:`dataset_facts` gives them for a dataset config
  (``{name, root, subset?, image_size?}``) after checking its folder (a missing or malformed
  one raises :class:`DataFolderError`, a ``ValueError``, naming the file and what is expected);
- ``DATASET_OPTIONS``: name -> its keys besides ``name`` (``root``, ``subset``, ``image_size``);
- ``MULTI_LABEL_DATASETS``: those whose images carry several labels (``voc07``): transfer
  targets only, evaluated by mean average precision;
- ``SUBSET_KINDS``: the dataset ``subset.kind`` values (``images_per_class``, ``classes``);
- ``ARCHITECTURES``: name -> its keyword options and their defaults (``small_cnn``;
  ``resnet18`` and ``vgg19``, the CIFAR variants; ``resnet50`` and ``alexnet``, torchvision's);
- ``CONVOLUTIONS``: name -> its number of convolutions (what a layer-wise rule may prune);
- :func:`prunable_weights`: how many weights the pruning rules work on in a network, and
  :func:`kept_after_rounds`, how many of them IMP rounds leave;
- ``TASKS``: the training tasks; ``SUBSET_TASKS``: those that read the labelled subset,
  ``SUBSET_ONLY_TASKS``: those that train on it only (an epoch counts its images);
- ``MASK_SOURCES``: the mask sources;
- ``STAGE_KINDS`` (the kinds a sweep plans) and ``MASK_RULE_KINDS``: what a planned stage.json may ask for;
- :func:`iterations_per_epoch`: optimizer steps per epoch (the last batch may be smaller);
  :func:`images_per_step`: the images of one step of a recipe on a task (``batch_counts``);
- ``TASK_RECIPE_OPTIONS``: the recipe keys a task may own, with their defaults;
  :func:`recipe_options` and :func:`samples_per_image`: a task's keys and samples per image.

The name lists are live views of the registries (:mod:`workers.pruning.mask_sources`,
:mod:`workers.stages.registry`, :mod:`workers.pruning.rule_kinds`, all torch-free), so a mask
source registered at run time is listed too.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, overload

from workers.data.datasets import DATASETS as _FIXED
from workers.data.datasets import KINDS as _KINDS
from workers.data.folders import SUBSET_KINDS, DataFolderError
from workers.data.known_datasets import dataset_facts  # the folder's facts; published sizes while planning without it
from workers.pruning.counts import kept_after_rounds
from workers.pruning.mask_sources import DEFAULT_NEGATIVES, TASK_RECIPE_OPTIONS
from workers.pruning.mask_sources import MASK_SOURCES as _SOURCES
from workers.pruning.mask_sources import TASKS as _TASKS
from workers.pruning.mask_sources import task_declaration as _declaration
from workers.pruning.rule_kinds import MASK_RULE_KINDS as _RULES
from workers.stages.registry import STAGE_KINDS as _STAGE_KINDS
from workers.training.recipe import images_per_step
from workers.training.schedule import iterations_per_epoch


class _Names(Sequence[str]):
    """The names of a registry, read when used (a tuple taken at import would miss later registrations)."""

    def __init__(self, registry: Mapping[str, Any], only: Any = None):
        self._registry, self._only = registry, only

    def _names(self) -> tuple[str, ...]:
        return tuple(n for n, v in self._registry.items() if self._only is None or self._only(v))

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __repr__(self) -> str:
        return repr(self._names())


DATASETS: dict[str, dict[str, int | None]] = {
    name: ({"num_classes": _FIXED[name].num_classes, "in_channels": _FIXED[name].in_channels,
            "train_size": _FIXED[name].train_size, "test_size": _FIXED[name].test_size} if name in _FIXED
           else {"num_classes": None, "in_channels": 3, "train_size": None, "test_size": None})
    for name in _KINDS
}
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    name: (*(("root",) if kind.needs_root else ()), *(("subset",) if kind.takes_subset else ()), *kind.options)
    for name, kind in _KINDS.items()
}
MULTI_LABEL_DATASETS: tuple[str, ...] = tuple(name for name, kind in _KINDS.items() if kind.multi_label)
ARCHITECTURES: dict[str, dict[str, object]] = {"small_cnn": {"width": 16}, "resnet18": {}, "vgg19": {},
                                               "resnet50": {}, "alexnet": {}}
#: convolutions of each architecture (whatever its options), the bound of ``pruning.layers``.
CONVOLUTIONS: dict[str, int] = {"small_cnn": 4, "resnet18": 20, "vgg19": 16, "resnet50": 53, "alexnet": 5}
#: workers.models.VGG19_LAYOUT (not imported: torch); tests/workers/test_prunable_weight_table.py compares.
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                 512, 512, 512, 512, "M")


def _resnet_layers(in_channels: int, bottleneck: bool) -> list[tuple[bool, int]]:
    """torchvision's ResNet (CIFAR stem for ResNet-18): conv1, then each block's convolutions with
    its downsampling one last, as ``named_modules`` lists them."""
    layers = [(True, in_channels * 64 * (49 if bottleneck else 9))]
    inplanes, expansion = 64, 4 if bottleneck else 1
    blocks = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
    for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        for block in range(count):
            if bottleneck:
                layers += [(True, inplanes * planes), (True, planes * planes * 9), (True, planes * planes * 4)]
            else:
                layers += [(True, inplanes * planes * 9), (True, planes * planes * 9)]
            if block == 0 and (index > 0 or inplanes != planes * expansion):
                layers.append((True, inplanes * planes * expansion))
            inplanes = planes * expansion
    return layers


def _prunable_layers(arch: Mapping[str, Any], in_channels: int) -> list[tuple[bool, int]]:
    """(is a convolution, weights) of each prunable layer of ``arch`` in module order (as workers.models builds it)."""
    name = arch["name"]
    if name == "small_cnn":
        width = int(arch.get("width", ARCHITECTURES["small_cnn"]["width"]))
        return [(True, 9 * cin * cout) for cin, cout in
                ((in_channels, width), (width, width), (width, 2 * width), (2 * width, 2 * width))]
    if name in ("resnet18", "resnet50"):
        return _resnet_layers(in_channels, bottleneck=name == "resnet50")
    if name == "vgg19":
        channels = [in_channels, *(item for item in _VGG19_LAYOUT if item != "M")]
        return [(True, 9 * int(cin) * int(cout)) for cin, cout in zip(channels[:-1], channels[1:], strict=True)]
    if name == "alexnet":
        convs = ((in_channels, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3))
        return [(True, cin * cout * k * k) for cin, cout, k in convs] + [(False, 256 * 6 * 6 * 4096),
                                                                          (False, 4096 * 4096)]
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")


def prunable_weights(arch: Mapping[str, Any], in_channels: int, layers: Optional[int] = None) -> int:
    """How many weights the pruning rules work on in the network ``arch`` (``{"name", options}``) built
    for images of ``in_channels``: every convolution's and linear layer's weights but the head's, or
    those of the first ``layers`` convolutions (the layer-wise rule)."""
    found = _prunable_layers(arch, in_channels)
    if layers is not None:
        return sum([size for is_conv, size in found if is_conv][:layers])
    return sum(size for _, size in found)


TASKS: Sequence[str] = _Names(_TASKS)
SUBSET_TASKS: Sequence[str] = _Names(_TASKS, lambda task: task.label_subset)
SUBSET_ONLY_TASKS: Sequence[str] = _Names(_TASKS, lambda task: task.subset_only)
MASK_SOURCES: Sequence[str] = _Names(_SOURCES)
#: the kinds a sweep plans (``preflight`` runs beside a sweep, with the resources of one of these).
STAGE_KINDS: Sequence[str] = _Names(_STAGE_KINDS, only=lambda kind: kind.name != "preflight")
MASK_RULE_KINDS: Sequence[str] = _Names(_RULES)



def recipe_options(task: str) -> tuple[str, ...]:
    """The keys of :data:`TASK_RECIPE_OPTIONS` a recipe of ``task`` takes (none for an unknown name)."""
    return _declaration(task).recipe_options if task in _TASKS else ()


def samples_per_image(task: str) -> int:
    """Samples a batch of ``task`` makes of each image (RotNet 4, Exemplar 2, most tasks 1)."""
    return _declaration(task).samples_per_image


__all__ = ["DATASETS", "DATASET_OPTIONS", "MULTI_LABEL_DATASETS", "SUBSET_KINDS", "DataFolderError", "dataset_facts",
           "ARCHITECTURES", "CONVOLUTIONS", "prunable_weights", "kept_after_rounds", "TASKS", "SUBSET_TASKS",
           "SUBSET_ONLY_TASKS", "MASK_SOURCES", "STAGE_KINDS", "MASK_RULE_KINDS", "iterations_per_epoch",
           "images_per_step", "DEFAULT_NEGATIVES", "TASK_RECIPE_OPTIONS", "recipe_options", "samples_per_image"]
