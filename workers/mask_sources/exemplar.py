"""``exemplar``: IMP on instance discrimination (two augmented views, triplet loss)."""
from workers.mask_sources.base import ImpSource
from workers.task_registry import TaskDeclaration

TASK = TaskDeclaration("exemplar", "workers.tasks:EXEMPLAR")
SOURCE = ImpSource("exemplar", "exemplar")
