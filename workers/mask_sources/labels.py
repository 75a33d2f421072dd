"""``labels``: IMP on the dataset's class labels (the supervised winning tickets)."""
from workers.mask_sources.base import ImpSource
from workers.task_registry import TaskDeclaration

TASK = TaskDeclaration("labels", "workers.tasks:LABELS", label_head=True)
SOURCE = ImpSource("labels", "labels")
