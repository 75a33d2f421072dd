"""SLURM time limits derived from the throughput table (no cluster needed)."""
from __future__ import annotations

import math

import yaml
from conftest import TINY

from orchestrator.backends.slurm.time_limits import MARGIN_MIN, SAFETY_FACTOR, derive, load, parse_slurm_minutes
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec


def test_slurm_time_syntax_in_minutes():
    assert [parse_slurm_minutes(t) for t in ("60", "30:00", "30:01", "2:00:00", "1-12:00:00", "2-0", "UNLIMITED",
                                             "INFINITE", "", "junk")] == [
        60, 30, 31, 120, 2160, 2880, None, None, None, None]


def _plan(tmp_path, epochs):
    recipes = {name: dict(recipe, epochs=epochs) for name, recipe in TINY["recipes"].items()}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(dict(TINY, workspace=str(tmp_path / "ws"), recipes=recipes)))
    spec = load_spec(path)
    return spec, plan_sweep(spec)


def test_limits_come_from_the_longest_stage_of_each_kind_times_a_safety_factor_capped_by_the_partition(tmp_path):
    spec, plan = _plan(tmp_path, epochs=200)
    table = [{"arch": "small_cnn", "dataset": "digits", "device": "slow", "samples_per_s": 10.0}]
    images = spec.dataset.facts["train_size"]
    limits = derive(spec, plan, {"device": "slow"}, table=table)
    # the longest dense stage is RotNet's: 4 rotations of every image per epoch
    assert limits["dense"].minutes == math.ceil(200 * images * 4 / 10.0 * SAFETY_FACTOR / 60) + MARGIN_MIN
    assert limits["dense"].source == "derived" and "on slow" in limits["dense"].why
    assert limits["random_mask"].source == "default" and limits["random_mask"].minutes == 60
    capped = derive(spec, plan, {"device": "slow", "time_min": {"imp": 7}}, table=table, partition_max=120)
    assert capped["dense"].minutes == 120 and "capped by the partition's maximum 120 min" in capped["dense"].why
    assert (capped["imp"].minutes, capped["imp"].source) == (7, "time_min")  # the sweep's own value wins
    assert derive(spec, plan, {"device": "slow", "max_time_min": 30}, table=table)["eval"].minutes == 30


def test_without_a_measured_device_the_defaults_stay_and_say_why(tmp_path):
    spec, plan = _plan(tmp_path, epochs=2)
    unset = derive(spec, plan, {"default_time_min": 45}, table=[])
    assert {limit.minutes for limit in unset.values()} == {45} and "set slurm.device" in unset["dense"].why
    unknown = derive(spec, plan, {"device": "H100"}, table=[])
    assert "no measured throughput for small_cnn on digits on H100" in unknown["dense"].why
    assert load(tmp_path / "nowhere") == {}
