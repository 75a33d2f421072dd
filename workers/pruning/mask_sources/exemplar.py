"""``exemplar``: IMP on instance discrimination (two augmented views, triplet loss)."""
from workers.pruning.mask_sources.base import ImpSource
from workers.tasks.registry import TaskDeclaration

TASK = TaskDeclaration("exemplar", "workers.tasks.objectives:EXEMPLAR", samples_per_image=2,
                       recipe_options=("batch_counts",))
SOURCE = ImpSource("exemplar", "exemplar")
