"""DistributedDataParallel inside one stage: two gloo ranks on the CPU against one process."""
from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from workers.training import distributed
from workers.data.datasets import load_split
from workers.pruning.masks import random_mask
from workers.tasks.objectives import get_task
from workers.training.batches import check_shards
from workers.training.loop import train

RECIPE = {"epochs": 2, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _model_and_mask(mask_seed: int = 0):
    """A BatchNorm-free network (so one process and two ranks compute the same thing)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return model, random_mask(model, 1000, seed=mask_seed)


def _train(model, mask):
    # digits: 1347 training images, so the last batch of 67 splits 34 / 33 between two ranks
    train(model, get_task("labels"), load_split({"name": "digits"}), RECIPE, seed=3, mask=mask)


def _rank_main(rank: int, world: int, port: int, out: str, mask_seed_of_rank_1: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PRUNESWEEP_DIST_TIMEOUT_S="60")
    torch.set_num_threads(1)
    model, mask = _model_and_mask(mask_seed_of_rank_1 if rank == 1 else 0)
    try:
        with distributed.process_group():
            _train(model, mask)
    except RuntimeError as error:
        Path(out, f"error{rank}.txt").write_text(str(error))
        raise SystemExit(1)
    torch.save(model.state_dict(), Path(out, f"rank{rank}.pt"))


def _run_ranks(tmp_path, world: int = 2, mask_seed_of_rank_1: int = 0) -> list[int]:
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_rank_main, args=(rank, world, port, str(tmp_path), mask_seed_of_rank_1))
                 for rank in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    return [process.exitcode for process in processes]


def test_two_ranks_train_what_one_process_trains_and_keep_the_mask_exact(tmp_path):
    assert _run_ranks(tmp_path) == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    model, mask = _model_and_mask()
    _train(model, mask)
    single = model.state_dict()
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # every rank holds the same weights
        assert torch.allclose(ranks[0][name], value, atol=1e-5), name  # the shards add up to the batch
    for name, keep in mask.items():
        assert not ranks[0][name][~keep].any()
    assert not torch.equal(single["1.weight"], _model_and_mask()[0].state_dict()["1.weight"])  # it trained


def test_ranks_with_different_masks_refuse_to_train(tmp_path):
    rank0, rank1 = _run_ranks(tmp_path, mask_seed_of_rank_1=1)
    # rank 0 refuses with the message; rank 1 refuses too, or gloo aborts it (SIGABRT) when rank 0 has gone first
    assert rank0 == 1 and rank1 in (1, -signal.SIGABRT), (rank0, rank1)
    assert "mask differs between rank 0 and rank 1: first at 1.weight" in (tmp_path / "error0.txt").read_text()
    assert not list(tmp_path.glob("rank*.pt"))  # neither rank trained


def test_the_environment_is_checked():
    assert distributed.ranks_from_environment({}) is None
    assert distributed.ranks_from_environment({"WORLD_SIZE": "1"}) is None
    good = {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert distributed.ranks_from_environment(good) == distributed.Ranks(1, 2, 1)
    for broken, needle in (({**good, "RANK": "2"}, "RANK must be in 0..1"),
                           ({k: v for k, v in good.items() if k != "RANK"}, "RANK is not set"),
                           ({k: v for k, v in good.items() if k != "MASTER_PORT"}, "MASTER_PORT is not set"),
                           ({**good, "WORLD_SIZE": "two"}, "must be integers")):
        with pytest.raises(ValueError, match=needle):
            distributed.ranks_from_environment(broken)
    assert distributed.is_writer() and distributed.current() is None  # outside a distributed stage


def test_a_batch_some_rank_would_get_nothing_of_is_refused():
    check_shards(1347, 128, 8)  # last batch 67 images: enough for 8 ranks
    with pytest.raises(ValueError, match="leaves a batch of 3 images, fewer than the 4 ranks"):
        check_shards(131, 128, 4)
    with pytest.raises(ValueError, match="batch of 2 images"):
        check_shards(100, 2, 4)
