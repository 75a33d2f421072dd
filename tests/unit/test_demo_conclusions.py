"""bench/demo_conclusions.py's verdicts on hand-made results: the seed sets, the one-sided
p-value (against scipy's own one-sided paired t-test) and what "holds" means for each claim."""
from __future__ import annotations

import sys

import pandas as pd
import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import demo_conclusions as dc  # noqa: E402

A = ("labels", "winning_ticket")
B = ("labels", "reinit")


def frame(top1_a: list[float], top1_b: list[float], seeds: list[int] | None = None) -> pd.DataFrame:
    """Rows of one sweep at one fraction: side A and side B per seed (B also has a level of its own)."""
    seeds = seeds if seeds is not None else list(range(len(top1_a)))
    rows = []
    for seed, a, b in zip(seeds, top1_a, top1_b, strict=True):
        rows.append(dict(sweep="digits", nominal_fraction=0.0225, measured_fraction=0.0225, seed=seed,
                         mask_source=A[0], init=A[1], level=17, top1=a))
        rows.append(dict(sweep="digits", nominal_fraction=0.0225, measured_fraction=0.0225, seed=seed,
                         mask_source=B[0], init=B[1], level=None, top1=b))
    return pd.DataFrame(rows)


def test_seed_sets_are_disjoint_runs_from_zero():
    assert dc.seed_sets(3, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_one_sided_p_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.98, 0.97, 0.99, 0.96], [0.95, 0.95, 0.95, 0.94]
    claim = dc.Conclusion("a beats b", A, B)
    result = dc.check(frame(a, b), claim, [0, 1, 2, 3])
    assert result["p"] == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue)
    assert result["holds"] and result["n"] == 4 and result["diff"] == pytest.approx(100 * (sum(a) - sum(b)) / 4)
    reverse = dc.check(frame(b, a), claim, [0, 1, 2, 3])
    assert reverse["p"] == pytest.approx(stats.ttest_rel(b, a, alternative="greater").pvalue)
    assert not reverse["holds"]


def test_only_the_sets_seeds_are_paired():
    claim = dc.Conclusion("a beats b", A, B)
    data = frame([0.9, 0.91, 0.92, 0.5, 0.5, 0.5], [0.8, 0.8, 0.81, 0.9, 0.95, 0.9])
    assert dc.check(data, claim, [0, 1, 2])["holds"]
    second = dc.check(data, claim, [3, 4, 5])
    assert second["n"] == 3 and second["diff"] < 0 and not second["holds"]


def test_no_significant_difference_is_a_two_sided_p_at_or_above_alpha():
    same = dc.Conclusion("no difference", A, B, beats=False)
    assert dc.check(frame([0.90, 0.92, 0.91], [0.91, 0.90, 0.92]), same, [0, 1, 2])["holds"]
    assert not dc.check(frame([0.95, 0.96, 0.97], [0.90, 0.90, 0.915]), same, [0, 1, 2])["holds"]
    # all differences equal: no spread, no test, so nothing is shown
    assert not dc.check(frame([0.95, 0.96, 0.97], [0.90, 0.91, 0.92]), same, [0, 1, 2])["holds"]


def test_the_stated_conclusions_compare_distinct_settings():
    assert len({(c.a, c.b) for c in dc.CONCLUSIONS}) == len(dc.CONCLUSIONS)
    assert all(c.a != c.b for c in dc.CONCLUSIONS)


def test_a_held_out_set_starts_where_asked():
    assert dc.seed_sets(1, 4, 12) == [[12, 13, 14, 15]]


def test_the_beats_claims_of_a_set_are_holm_adjusted_together():
    stats = pytest.importorskip("scipy.stats")
    claims = (dc.Conclusion("a beats b", A, B), dc.Conclusion("a beats b again", A, B),
              dc.Conclusion("no difference", A, B, beats=False))
    a, b = [0.93, 0.95, 0.94, 0.96], [0.92, 0.93, 0.94, 0.935]
    found = dc.check_set(frame(a, b), claims, [0, 1, 2, 3])
    p = stats.ttest_rel(a, b, alternative="greater").pvalue
    assert found[0]["p"] == pytest.approx(p) and found[0]["p_holm"] == pytest.approx(min(1.0, 2 * p))
    assert found[0]["holds"] == (min(1.0, 2 * p) < dc.ALPHA)
    assert found[2]["p_holm"] == found[2]["p"]  # "no difference" is not adjusted
