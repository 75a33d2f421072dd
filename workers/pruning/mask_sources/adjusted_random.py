"""``adjusted_random``: the paper's CIFAR-10 baseline. The weights the dense ``labels`` run of
the same seed drove to exactly zero are pruned first, the rest at random among the others."""
from workers.pruning.mask_sources.base import RandomSource

SOURCE = RandomSource("adjusted_random", "labels", kind="adjusted_random")
