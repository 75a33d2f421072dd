"""The nodes of the simulated cluster (``bench/campaign_model.py``): which GPUs a job gets.

A job that fits in one node takes GPUs of the first node with enough free ones (SLURM's
``select/cons_tres`` fills nodes in order); a larger one takes that many whole free nodes.
A node is *bad* (every attempt on it fails), *drained* (no new job) or *down* (an outage).
"""
from __future__ import annotations

from typing import Any, Optional

from campaign_model import NODE_FAILURE

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


class NodeEvents:
    """What happens to nodes in the campaign model's event loop (mixed into its ``Simulation``): a bad
    node (the first: the one that takes jobs first), its drain and repair, a partition outage."""

    cluster: Cluster
    model: Any
    now: float

    def _bad_node(self) -> None:
        self.cluster.bad.add(0)
        self._at(self.now + self.model.drain_after_s, "drain")

    def _drain(self) -> None:
        self.cluster.drained.add(0)
        if self.model.repair_s is not None:
            self._at(self.now + self.model.repair_s, "repaired")

    def _repaired(self) -> None:
        self.cluster.drained.discard(0)
        self.cluster.bad.discard(0)

    def _outage(self) -> None:
        """Every node down: each running stage fails as on a node failure; nothing starts until it is over."""
        self.cluster.down = True
        for job in [job for job in self.jobs if job.state == "running"]:
            stage = self.stages[job.key]
            if stage.state != "running":
                continue  # ending anyway (blocked, or done and leaving)
            job.token += 1
            stage.progress = self._checkpoint(stage)
            self.out.failures[NODE_FAILURE] += 1
            self._process_died(job) if self.model.policy == "per_stage" else self._node_failed(job)
        self._at(self.now + self.model.outage_s, "outage_over")

    def _outage_over(self) -> None:
        self.cluster.down = False

    # provided by the event loop
    jobs: list
    stages: dict
    out: Any

    def _at(self, time: float, what: str, job: Any = None, detail: str = "") -> None:
        raise NotImplementedError

    def _checkpoint(self, stage: Any) -> float:
        raise NotImplementedError

    def _process_died(self, job: Any) -> None:
        raise NotImplementedError

    def _node_failed(self, job: Any) -> None:
        raise NotImplementedError
