"""``rotnet``: IMP on predicting which of four rotations was applied to an image."""
from workers.pruning.mask_sources.base import ImpSource
from workers.tasks.registry import TaskDeclaration

TASK = TaskDeclaration("rotnet", "workers.tasks.objectives:ROTNET", samples_per_image=4,
                       recipe_options=("batch_counts",))
SOURCE = ImpSource("rotnet", "rotnet")
