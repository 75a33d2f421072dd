"""Ray: one stage as ``ranks`` processes in a placement group, and whether a cluster can hold it.

A stage of a kind with ``ranks > 1`` runs as one coordinator task (no resources of its
own) that, per attempt: creates a placement group of ``ranks`` bundles of the kind's
resources; starts one actor per bundle; asks rank 0 for its node's address and a free
port; starts the runner on every rank with the torch environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); and waits. The first rank that
fails ends the attempt: the other ranks are killed and the placement group is removed
(always). A rank that raised fails the stage with its error; a rank whose process or node
died makes the whole stage run again, up to ``retries`` times.
"""
from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from orchestrator.backends.processes import free_port, rank_env, resolve_runner, thread_env
from orchestrator.backends.ray.job_client import one_line
from orchestrator.errors import UserError
from workers.stages.artifacts import LOG_FILE, open_regular

#: seconds between two checks that a placement group still waiting could be placed at all.
PLACEMENT_CHECK_S = 10
#: seconds the other ranks get, once one failed, to show whether a rank died (the cause) rather than raised.
PEER_GRACE_S = 5
#: lines of a rank's traceback kept with a failure.
TRACEBACK_LINES = 12


class StageRankError(Exception):
    """A rank of a distributed stage failed: ``kind`` is the error class to record."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __reduce__(self):
        return StageRankError, (self.kind, self.message)


def bundle_of(resources: Mapping[str, Any]) -> dict[str, float]:
    """The Ray resources one rank asks for (``num_cpus``/``num_gpus``/``custom``), zeros left out."""
    bundle = {"CPU": float(resources.get("num_cpus", 1)), "GPU": float(resources.get("num_gpus", 0)),
              **{name: float(amount) for name, amount in (resources.get("custom") or {}).items()}}
    return {name: amount for name, amount in bundle.items() if amount > 0}


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> int:
    """How many ``bundle`` fit in a node's total resources."""
    counts = [math.floor(node.get(name, 0) / amount + 1e-9) for name, amount in bundle.items()]
    return min(counts) if counts else 1 << 30


def placeable(bundle: Mapping[str, float], ranks: int, strategy: str, nodes: Sequence[Mapping[str, float]]) -> int:
    """How many of ``ranks`` bundles the nodes' totals can hold under ``strategy`` (== ranks: all)."""
    per_node = [_fits(bundle, node) for node in nodes]
    if strategy == "STRICT_PACK":
        return min(ranks, max(per_node, default=0))
    if strategy == "STRICT_SPREAD":
        return min(ranks, sum(count > 0 for count in per_node))
    return min(ranks, sum(per_node))


def _node_totals() -> list[dict]:
    """The total resources of every alive node (the caller is connected to Ray)."""
    import ray

    return [dict(node["Resources"], address=node.get("NodeManagerAddress", "?")) for node in ray.nodes()
            if node["Alive"]]


def _describe(nodes: list[dict]) -> str:
    shown = []
    for node in nodes:
        amounts = {name: amount for name, amount in node.items()
                   if name in ("CPU", "GPU") or not (name.startswith("node:") or name in (
                       "address", "memory", "object_store_memory") or name.startswith("accelerator_type"))}
        shown.append(f"{node['address']} {{{', '.join(f'{k}: {v:g}' for k, v in sorted(amounts.items()))}}}")
    return "; ".join(shown) or "no alive node"


def check_cluster_fits(settings: Mapping[str, Any]) -> None:
    """Raise UserError (exit 2) naming ``ray.resources.<kind>`` when a configured stage kind asks
    for more than the cluster's alive nodes have in total: Ray would wait for it forever."""
    nodes = _node_totals()
    strategy = settings.get("placement_strategy", "PACK")
    resources = settings.get("resources") or {}
    for kind, chosen in resources.items():
        if not chosen:
            continue
        ranks = int(chosen.get("ranks", 1))
        bundle = bundle_of(chosen)
        fit = placeable(bundle, ranks, strategy, nodes)
        if fit < ranks:
            asked = ", ".join(f"{name}: {amount:g}" for name, amount in bundle.items())
            raise UserError(f"ray.resources.{kind}: {ranks} rank(s) of {{{asked}}} each cannot be placed "
                            f"({strategy}) on this cluster; at most {fit} fit. Alive nodes: {_describe(nodes)}. "
                            f"Lower ranks/num_cpus/num_gpus there or add nodes")


# ---- what runs on the cluster ----------------------------------------------------------------

def log_line(folder: str, text: str) -> None:
    """Append one line to the stage's log (the backend's own notes: where a task or rank ran)."""
    with open_regular(Path(folder) / LOG_FILE) as log:
        log.write(text + "\n")


class _Rank:
    """One rank of a distributed stage: an actor holding its bundle's resources."""

    def where(self, with_port: bool) -> tuple[str, list[str], Optional[int]]:
        """(node id, this actor's GPU ids, a free port on this node when asked)."""
        import ray

        gpus = [str(gpu) for gpu in ray.get_gpu_ids()]
        return ray.get_runtime_context().get_node_id(), gpus, free_port() if with_port else None

    def run(self, runner: str, folder: str, key: str, env: dict, threads: int, reporter) -> None:
        """Set the rank's environment, say where it runs, then call the runner on the folder."""
        import ray

        os.environ.update(env)
        os.environ.update(thread_env(threads))
        log_line(folder, f"ray: rank {env['RANK']} of {env['WORLD_SIZE']} on {socket.gethostname()} pid {os.getpid()} "
                         f"MASTER_ADDR={env['MASTER_ADDR']} MASTER_PORT={env['MASTER_PORT']} "
                         f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
        if env["RANK"] == "0":
            ray.get(reporter.started.remote(key, socket.gethostname(), os.getpid()))
        resolve_runner(runner)(Path(folder))


class _Died(Exception):
    """A rank's process or node died during one attempt."""


def _rank_envs(places: list[tuple], world: int, master_addr: str) -> list[dict]:
    """The torch environment of every rank from where each one landed (rank 0's node and port)."""
    by_node: dict[str, list[int]] = {}
    for rank, (node, *_rest) in enumerate(places):
        by_node.setdefault(node, []).append(rank)
    master_port = places[0][2]
    envs = []
    for rank, (node, gpus, _port) in enumerate(places):
        local = by_node[node]
        env = rank_env(rank, world, local.index(rank), len(local), master_addr, master_port)
        if gpus:  # every rank of a node sees the node's ranks' GPUs, its own at position LOCAL_RANK
            env["CUDA_VISIBLE_DEVICES"] = ",".join(places[r][1][0] for r in local)
        envs.append(env)
    return envs


def _wait_placed(pg, bundle: dict, ranks: int, strategy: str, key: str) -> None:
    """Block until the placement group is placed; StageRankError once the cluster cannot hold it."""
    import ray

    ready = pg.ready()
    while not ray.wait([ready], timeout=PLACEMENT_CHECK_S)[0]:
        nodes = _node_totals()
        fit = placeable(bundle, ranks, strategy, nodes)
        if fit < ranks:
            raise StageRankError("Unplaceable", f"stage {key}: {ranks} rank(s) of {bundle} each cannot be placed "
                                                f"({strategy}); at most {fit} fit on the alive nodes: "
                                                f"{_describe(nodes)}")


def _failure(rank: int, ref, ranks: int) -> Optional[Exception]:
    """None when the rank returned; StageRankError when it raised; _Died when its process or node died."""
    import ray

    try:
        ray.get(ref)
        return None
    except ray.exceptions.RayTaskError as error:  # the rank raised: the stage fails with its error
        cause = error.cause if getattr(error, "cause", None) is not None else error
        lines = str(error).rstrip().splitlines()
        return StageRankError(type(cause).__name__, f"rank {rank} of {ranks} raised {type(cause).__name__}: "
                              f"{one_line(cause)}\n" + "\n".join(lines[-TRACEBACK_LINES:]))
    except ray.exceptions.RayError as error:
        return _Died(type(error).__name__, f"rank {rank} of {ranks} died: {one_line(error)}")


def _attempt(runner: str, folder: str, key: str, resources: Mapping[str, Any], ranks: int, strategy: str,
             reporter) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = bundle_of(resources)
    pg = placement_group([dict(bundle) or {"CPU": 0.001} for _ in range(ranks)], strategy=strategy)
    actors = []
    try:
        _wait_placed(pg, bundle, ranks, strategy, key)
        rank_class = ray.remote(_Rank)
        for index in range(ranks):
            actors.append(rank_class.options(
                num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0),
                resources=dict(resources.get("custom") or {}), max_restarts=0, max_task_retries=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index),
            ).remote())
        try:
            places = ray.get([actor.where.remote(index == 0) for index, actor in enumerate(actors)])
        except ray.exceptions.RayError as error:
            raise _Died(type(error).__name__, f"a rank died before it started: {one_line(error)}") from None
        # rank 0's node as Ray addresses it (the address its raylet was started with)
        master_addr = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}[places[0][0]]
        threads = max(1, int(resources.get("num_cpus", 1)))
        envs = _rank_envs(places, ranks, master_addr)
        pending = {actor.run.remote(runner, folder, key, env, threads, reporter): rank
                   for rank, (actor, env) in enumerate(zip(actors, envs, strict=True))}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            failure = _failure(pending.pop(done[0]), done[0], ranks)
            if failure is None:
                continue
            # a rank that died makes its peers raise in their next collective: report the death, the cause
            rest, _ = ray.wait(list(pending), num_returns=len(pending), timeout=PEER_GRACE_S) if pending else ([], [])
            deaths = [f for f in (_failure(pending[ref], ref, ranks) for ref in rest) if isinstance(f, _Died)]
            raise (failure if isinstance(failure, _Died) or not deaths else deaths[0])
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        remove_placement_group(pg)


def run_ranks(runner: str, folder: str, key: str, resources: Mapping[str, Any], ranks: int, strategy: str,
              retries: int, reporter) -> None:
    """Body of a distributed stage's coordinator task: attempts until one succeeds, a rank raises,
    or ``retries`` reruns after deaths are used up (then StageRankError with Ray's reason)."""
    for attempt in range(retries + 1):
        try:
            _attempt(runner, folder, key, resources, ranks, strategy, reporter)
            return
        except _Died as died:
            kind, message = died.args
            log_line(folder, f"ray: {message} ({kind})")
            if attempt == retries:
                raise StageRankError(kind, f"{message}; the stage was rerun {retries} time(s) (retries)") from None
        except StageRankError as error:  # the ledger keeps the log's tail: say there why the stage ended
            log_line(folder, f"ray: the stage failed: {error.message.splitlines()[0]}")
            raise
