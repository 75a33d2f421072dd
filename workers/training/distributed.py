"""One stage trained by several processes (DistributedDataParallel).

A backend starts the ranks of a distributed stage with torch's environment variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and runs the
usual entry point in each; :func:`process_group` (entered by
:func:`workers.entry.run_stage`) joins them: NCCL on CUDA (each rank on GPU
``LOCAL_RANK`` of those it sees), gloo on the CPU. ``WORLD_SIZE`` unset or 1 is a plain
single-process stage and touches nothing of ``torch.distributed``.

Inside a distributed stage every rank runs the same stage function on a shard of every
batch; only rank 0 writes files (:func:`is_writer`, consulted by every write of
:mod:`workers.stages.artifacts`), and masks are checked identical on every rank before training.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Optional

log = logging.getLogger(__name__)

#: seconds a rank waits for the others (rendezvous, collectives) before failing.
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Ranks:
    """This process's place in a distributed stage."""

    rank: int
    world_size: int
    local_rank: int


_current: Optional[Ranks] = None


def ranks_from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[Ranks]:
    """The stage's ranks from torch's environment variables; ``None`` for one process.

    ``ValueError`` naming the variable when they are inconsistent.
    """
    environ = os.environ if environ is None else environ
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank = int(environ["RANK"])
        local = int(environ.get("LOCAL_RANK", rank))
    except KeyError as missing:
        raise ValueError(f"WORLD_SIZE is {environ['WORLD_SIZE']} but {missing.args[0]} is not set") from None
    except ValueError as error:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers: {error}") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in 0..{world - 1} (WORLD_SIZE {world}), got {rank}")
    if local < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {local}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not environ.get(name):
            raise ValueError(f"WORLD_SIZE is {world} but {name} is not set")
    return Ranks(rank, world, local)


def current() -> Optional[Ranks]:
    """The ranks of the distributed stage this process is in, or ``None``."""
    return _current


def is_writer() -> bool:
    """True unless this process is a rank other than 0 of a distributed stage."""
    return _current is None or _current.rank == 0


@contextlib.contextmanager
def process_group(environ: Optional[Mapping[str, str]] = None) -> Iterator[Optional[Ranks]]:
    """Join the stage's process group for the block when the environment asks for one."""
    global _current
    ranks = ranks_from_environment(environ)
    if ranks is None:
        yield None
        return
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=float(os.environ.get("PRUNESWEEP_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=ranks.rank,
                            world_size=ranks.world_size, timeout=timeout)
    _current = ranks
    try:
        yield ranks
    finally:
        _current = None
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing outside a distributed stage)."""
    if _current is not None:
        import torch.distributed as dist

        dist.barrier()


def broadcast_from_writer(value):
    """Rank 0's ``value`` on every rank (``value`` itself outside a distributed stage)."""
    if _current is None:
        return value
    import torch.distributed as dist

    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def check_identical(tensors: Mapping[str, Any], what: str = "mask") -> None:
    """Raise ``RuntimeError`` naming the first entry that differs between ranks."""
    if _current is None:
        return
    import torch.distributed as dist

    digests = {name: hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
               for name, tensor in sorted(tensors.items())}
    gathered: list = [None] * _current.world_size
    dist.all_gather_object(gathered, digests)
    for rank, other in enumerate(gathered):
        if other != digests:
            differing = sorted(name for name in set(digests) | set(other) if digests.get(name) != other.get(name))
            raise RuntimeError(f"the {what} differs between rank {_current.rank} and rank {rank}: "
                               f"first at {differing[0]}")
    log.info("%s identical on %d ranks", what, _current.world_size)


def shard(positions, ranks: Optional[Ranks] = None):
    """This rank's share of one global batch (every ``world_size``-th position)."""
    ranks = _current if ranks is None else ranks
    return positions if ranks is None else positions[ranks.rank::ranks.world_size]
