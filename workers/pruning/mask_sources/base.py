"""What a mask source declares: its task, the inits its cells use and its planning rules.

The planner asks each source of a sweep to plan its cells (:meth:`MaskSource.plan_cells`)
with the building blocks of :class:`CellPlanner`; a source picks and parametrises them
instead of the planner testing source names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

INITS = ("winning_ticket", "reinit")


class CellPlanner(Protocol):
    """The planner's building blocks a mask source plans its cells with."""

    def imp_source_cells(self, source: str) -> None:
        """Cells of a source whose masks come from IMP on its task (and its transfer cells)."""

    def random_cells(self, source: str) -> None:
        """Cells of a source whose masks are drawn at random."""


@dataclass(frozen=True)
class MaskSource:
    """One way of finding a mask."""

    name: str
    #: the task the dense run (and, for IMP sources, the IMP chain) trains on; None for
    #: a plain random mask.
    task: str | None
    #: the inits this source's cells are evaluated with.
    inits: tuple[str, ...] = INITS
    kind: Literal["imp", "random", "adjusted_random"] = "imp"

    @property
    def is_random(self) -> bool:
        """True for sources that draw their mask at random instead of by IMP."""
        return self.kind != "imp"

    @property
    def prunes_dense_zeros(self) -> bool:
        """Whether the dense ``labels`` run's zeros are pruned before a random draw (``adjusted_random``)."""
        return self.kind == "adjusted_random"

    def plan_cells(self, planner: CellPlanner) -> None:
        """Add this source's stages and cells to a plan."""
        raise NotImplementedError


@dataclass(frozen=True)
class ImpSource(MaskSource):
    """Masks from an IMP chain trained on ``task``; evaluated from a winning ticket or re-initialised."""

    def plan_cells(self, planner: CellPlanner) -> None:
        """The dense run, the IMP chain, one evaluation per init x fraction (and transfers)."""
        planner.imp_source_cells(self.name)


@dataclass(frozen=True)
class RandomSource(MaskSource):
    """A random mask keeping as many weights as IMP would; always re-initialised.

    ``kind="adjusted_random"`` first prunes the weights the dense ``labels`` run of the
    same seed drove to exactly zero (``task`` is then ``labels``).
    """

    inits: tuple[str, ...] = ("reinit",)
    kind: Literal["imp", "random", "adjusted_random"] = "random"

    def plan_cells(self, planner: CellPlanner) -> None:
        """One random mask and one re-initialised evaluation per fraction x seed."""
        planner.random_cells(self.name)
