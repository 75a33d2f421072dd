"""The registry of mask sources: where a pruning mask comes from.

A source either trains a dense network and an IMP chain on a task (``labels``,
``rotnet``) or draws a random global mask with the same number of weights kept
(``random``). New pretext tasks (exemplar, ...) are one more entry here plus the task in
the worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class MaskSource:
    """One way of finding a mask."""

    name: str
    #: the task the dense run and the IMP chain train on; None for a random mask.
    task: Optional[str]
    #: the inits this source's cells are evaluated with; a random mask has no early
    #: iterate of its own, so it is always freshly re-initialised (the paper's baseline).
    inits: tuple[str, ...] = ("winning_ticket", "reinit")

    @property
    def is_random(self) -> bool:
        """True for sources that draw their mask at random instead of training."""
        return self.task is None


MASK_SOURCES = {
    source.name: source
    for source in (
        MaskSource("labels", "labels"),
        MaskSource("rotnet", "rotnet"),
        MaskSource("random", None, inits=("reinit",)),
    )
}

INITS = ("winning_ticket", "reinit")
