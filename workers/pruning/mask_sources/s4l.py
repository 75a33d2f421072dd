"""``s4l``: IMP on RotNet plus the labels loss on the labelled subset (semi-supervised)."""
from workers.pruning.mask_sources.base import ImpSource
from workers.tasks.registry import TaskDeclaration

TASK = TaskDeclaration("s4l", "workers.tasks.objectives:S4L", label_subset=True, samples_per_image=4,
                       recipe_options=("batch_counts",))
SOURCE = ImpSource("s4l", "s4l")
