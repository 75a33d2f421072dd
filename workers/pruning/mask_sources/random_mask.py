"""``random``: a random global mask keeping as many weights as IMP would (re-initialised)."""
from workers.pruning.mask_sources.base import RandomSource

SOURCE = RandomSource("random", None)
