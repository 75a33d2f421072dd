"""``status --watch``: its summary line and its ETA from measured stage durations (no scheduler needed)."""
from __future__ import annotations

from orchestrator.commands.status_watch import Snapshot, estimate_eta, format_duration


def _row(key, kind, state):
    return {"key": key, "kind": kind, "state": state}


def test_eta_is_the_mean_duration_per_kind_times_what_is_left_over_how_many_run_at_once():
    stages = [_row("d1", "dense", "done"), _row("d2", "dense", "done"), _row("d3", "dense", "running"),
              _row("i1", "imp", "planned"), _row("e1", "eval", "planned"), _row("e2", "eval", "done"),
              _row("x", "imp", "failed"), _row("y", "eval", "blocked")]
    durations = {"d1": 10.0, "d2": 30.0, "e2": 4.0}
    # left: d3 (dense mean 20) + i1 (no imp done: mean of all, 44/3) + e1 (eval mean 4); failed/blocked never run
    assert estimate_eta(stages, durations, in_parallel=1) == 20 + 44 / 3 + 4
    assert estimate_eta(stages, durations, in_parallel=2) == (20 + 44 / 3 + 4) / 2
    assert estimate_eta(stages, durations, in_parallel=0) == estimate_eta(stages, durations, in_parallel=1)
    assert estimate_eta(stages, {}, in_parallel=3) is None


def test_durations_read_short():
    assert [format_duration(s) for s in (None, 0.4, 45, 725, 12000, 190000)] == [
        "?", "0s", "45s", "12m05s", "3h20m", "2d04h"]


def test_the_summary_line_counts_states_and_gives_the_eta_while_anything_is_active():
    busy = Snapshot(total=17, counts={"done": 13, "failed": 1, "blocked": 1}, queued=1, running=1, eta_s=80)
    assert busy.active
    assert busy.line(0).split("  ", 1)[1] == "done 13/17  running 1  queued 1  failed 1  blocked 1  ETA ~1m20s"
    idle = Snapshot(total=17, counts={"done": 15, "failed": 1, "blocked": 1}, queued=0, running=0, eta_s=None)
    assert not idle.active and "ETA" not in idle.line(0)
    unknown = Snapshot(total=3, counts={}, queued=3, running=0, eta_s=None)
    assert unknown.line(0).endswith("ETA unknown (no stage done yet)")


def test_a_stage_lasts_from_its_start_to_its_end_as_the_ledger_saw_them():
    from orchestrator.commands.status_watch import wall_seconds

    assert wall_seconds({"started_at": 100.0, "ended_at": 130.5}) == 30.5
    for started, ended in ((None, 130.0), (100.0, None), (130.0, 100.0), (0.0, 1e300), (True, 5.0),
                           (float("nan"), 5.0), ("100", 130.0)):
        assert wall_seconds({"started_at": started, "ended_at": ended}) is None
    assert wall_seconds(None) is None
