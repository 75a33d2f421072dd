"""``npid``: IMP on non-parametric instance discrimination with a memory bank (Wu et al. 2018).

The task (a 128-d normalised embedding, NCE against ``recipes.npid.negatives`` negatives,
4,096 unless given, from a memory bank of one vector per training image, temperature 0.07,
bank momentum 0.5) is built by
:func:`workers.tasks.instance_discrimination.npid_task` (the objective; this module is the mask
source), imported when a stage trains; a fresh task object per stage, since it serves the model
it is attached to.
"""
from workers.pruning.mask_sources.base import ImpSource
from workers.tasks.registry import TaskDeclaration

TASK = TaskDeclaration("npid", "workers.tasks.instance_discrimination:npid_task", recipe_options=("negatives",))
SOURCE = ImpSource("npid", "npid")
