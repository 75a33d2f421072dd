"""``rotnet``: IMP on predicting which of four rotations was applied to an image."""
from workers.mask_sources.base import ImpSource
from workers.task_registry import TaskDeclaration

TASK = TaskDeclaration("rotnet", "workers.tasks:ROTNET")
SOURCE = ImpSource("rotnet", "rotnet")
