"""Distributed stages on the local backend (``local.ranks``): two gloo ranks per stage."""
from __future__ import annotations

import copy
import json
import os
import time

import pytest
from conftest import TINY, ledger_states

from orchestrator.cli import main
from orchestrator.errors import SpecError
from orchestrator.spec import load_spec


def _sweep(write_sweep, **local):
    sweep = copy.deepcopy(TINY)
    sweep.update(mask_source=["labels"], init=["winning_ticket"], local=local)
    sweep["pruning"] = {"fractions": [0.8]}
    return write_sweep(sweep)


def fail_on_rank_one(folder):
    """A stage runner for the failure test: rank 1 raises, rank 0 would train for long."""
    if os.environ["RANK"] == "1":
        raise ValueError("rank 1 cannot go on")
    time.sleep(120)


def test_a_sweep_with_two_rank_stages_finishes_and_only_rank_zero_writes(write_sweep, tmp_path, capsys):
    path = _sweep(write_sweep, ranks={"dense": 2, "imp": 2})
    assert main(["launch", str(path), "--no-progress", "--workers", "2"]) == 0
    workspace = tmp_path / "ws"
    states = ledger_states(workspace)
    assert {row["state"] for row in states.values()} == {"done"} and len(states) == 2  # dense, imp (its labels ticket)
    imp_dir = next(workspace.glob("stages/imp-*"))
    log = (imp_dir / "log.txt").read_text()
    assert "starting on 2 ranks" in log and "mask identical on 2 ranks" in log
    assert log.count(" done in ") == 1  # one writer: rank 0
    assert not list(workspace.glob("stages/*/.*.tmp"))
    metrics = json.loads((imp_dir / "metrics.json").read_text())
    assert 0.1 < metrics["test_top1"] <= 1.0
    main(["results", str(workspace)])
    assert "winning_ticket" in capsys.readouterr().out


def test_a_failing_rank_fails_its_stage_stops_the_others_and_resume_finishes(write_sweep, tmp_path):
    from orchestrator.backends.local.backend import LocalBackend

    path = _sweep(write_sweep, ranks={"dense": 2})
    workspace = tmp_path / "ws"
    original = LocalBackend.__init__

    def with_failing_runner(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "runner": "test_local_ranks:fail_on_rank_one"})

    LocalBackend.__init__ = with_failing_runner
    try:
        started = time.monotonic()
        assert main(["launch", str(path), "--no-progress", "--workers", "2"]) == 1
        assert time.monotonic() - started < 100  # rank 0 did not sleep its 120 s out
    finally:
        LocalBackend.__init__ = original
    dense = next(row for row in ledger_states(workspace).values() if row["kind"] == "dense")
    assert dense["state"] == "failed" and dense["error_class"] == "ValueError"
    assert "rank 1 of 2" in dense["error_message"] and "rank 1 cannot go on" in dense["error_message"]
    assert main(["resume", str(workspace), "--no-progress"]) == 0
    assert {row["state"] for row in ledger_states(workspace).values()} == {"done"}


@pytest.mark.parametrize("ranks,key_path,needle", [
    ({"training": 2}, "local.ranks.training", "allowed: dense"),
    ({"eval": 0}, "local.ranks.eval", "at least 1 rank"),
])
def test_bad_local_ranks_name_the_key(write_sweep, sweep_dict, ranks, key_path, needle):
    sweep_dict["local"] = {"ranks": ranks}
    with pytest.raises(SpecError) as info:
        load_spec(write_sweep(sweep_dict))
    assert info.value.key_path == key_path and needle in info.value.problem, str(info.value)
