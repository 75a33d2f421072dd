"""``labels_10pct``: IMP on the class labels of the labelled subset only."""
from workers.pruning.mask_sources.base import ImpSource
from workers.tasks.registry import TaskDeclaration

TASK = TaskDeclaration("labels_10pct", "workers.tasks.objectives:LABELS_10PCT", label_head=True, label_subset=True,
                       subset_only=True)
SOURCE = ImpSource("labels_10pct", "labels_10pct")
