"""``labels``: IMP on the dataset's class labels (the supervised winning tickets)."""
from workers.pruning.mask_sources.base import ImpSource
from workers.tasks.registry import TaskDeclaration

TASK = TaskDeclaration("labels", "workers.tasks.objectives:LABELS", label_head=True)
SOURCE = ImpSource("labels", "labels")
