"""The registry of mask sources: where a pruning mask comes from.

A source is one of three kinds:

- ``imp``: trains a dense network and an IMP chain on a task (``labels``, ``rotnet``,
  ``exemplar``, ``s4l``, ``labels_10pct``);
- ``random``: a random global mask with the same number of weights kept (``random``);
- ``adjusted_random``: the CIFAR-10 baseline of the paper: the weights the dense ``labels``
  run of the same seed drove to exactly zero are pruned first, the rest of the pruning is
  random among the non-zero weights (``adjusted_random``).

Random masks have no early iterate of their own, so they are always freshly
re-initialised (the paper's baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional


@dataclass(frozen=True)
class MaskSource:
    """One way of finding a mask."""

    name: str
    #: the task the dense run (and, for ``imp`` sources, the IMP chain) trains on; None for
    #: a plain random mask.
    task: Optional[str]
    #: the inits this source's cells are evaluated with.
    inits: tuple[str, ...] = ("winning_ticket", "reinit")
    kind: Literal["imp", "random", "adjusted_random"] = "imp"

    @property
    def is_random(self) -> bool:
        """True for sources that draw their mask at random instead of by IMP."""
        return self.kind != "imp"


MASK_SOURCES = {
    source.name: source
    for source in (
        MaskSource("labels", "labels"),
        MaskSource("rotnet", "rotnet"),
        MaskSource("exemplar", "exemplar"),
        MaskSource("s4l", "s4l"),
        MaskSource("labels_10pct", "labels_10pct"),
        MaskSource("random", None, inits=("reinit",), kind="random"),
        MaskSource("adjusted_random", "labels", inits=("reinit",), kind="adjusted_random"),
    )
}

INITS = ("winning_ticket", "reinit")
