"""The nodes of the simulated cluster (``bench/campaign_model.py``): which GPUs a job gets.

A job that fits in one node takes GPUs of the first node with enough free ones (SLURM's
``select/cons_tres`` fills nodes in order); a larger one takes that many whole free nodes.
A node is *bad* (every attempt on it fails), *drained* (no new job) or *down* (an outage).
"""
from __future__ import annotations

from typing import Optional

#: what a job holds: (node index, GPUs) pairs.
Allocation = list[tuple[int, int]]


class Cluster:
    """``gpus`` GPUs in nodes of ``per_node`` (the last node holds the remainder)."""

    def __init__(self, gpus: int, per_node: int):
        self.per_node = per_node
        self.size = [per_node] * (gpus // per_node) + ([gpus % per_node] if gpus % per_node else [])
        self.free = list(self.size)
        self.bad: set[int] = set()
        self.drained: set[int] = set()
        self.down = False

    def free_gpus(self) -> int:
        """GPUs a new job could get now."""
        if self.down:
            return 0
        return sum(free for node, free in enumerate(self.free) if node not in self.drained)

    def allocate(self, gpus: int) -> Optional[Allocation]:
        """The GPUs of a job asking for ``gpus``, taken; None when they are not free."""
        if self.down:
            return None
        usable = [node for node in range(len(self.size)) if node not in self.drained]
        if gpus <= self.per_node:
            for node in usable:
                if self.free[node] >= gpus:
                    self.free[node] -= gpus
                    return [(node, gpus)]
            return None
        whole = [node for node in usable if self.free[node] == self.size[node] == self.per_node]
        needed = -(-gpus // self.per_node)
        if len(whole) < needed:
            return None
        taken = whole[:needed]
        for node in taken:
            self.free[node] = 0
        return [(node, self.per_node) for node in taken]

    def release(self, allocation: Allocation) -> None:
        """Give a job's GPUs back."""
        for node, gpus in allocation:
            self.free[node] += gpus

    def is_bad(self, allocation: Allocation) -> bool:
        """Whether any node of the allocation fails every attempt."""
        return any(node in self.bad for node, _ in allocation)

    def largest_fit(self) -> int:
        """The most GPUs one job could get now (0: none)."""
        if self.down:
            return 0
        usable = [node for node in range(len(self.size)) if node not in self.drained]
        whole = sum(1 for node in usable if self.free[node] == self.size[node] == self.per_node)
        return max([whole * self.per_node] + [self.free[node] for node in usable])
