"""Paired comparisons (results.compare, `prunesweep results --compare`): statistics against scipy and a
hand computation on frames loaded from real tables, and the command on a real tiny workspace with two
seeds, also read together with a second workspace."""
from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, results_row
from scipy import stats

import results
from orchestrator.state.artifact_stamps import SETTLED_S
from results.comparison import format_comparison, parse_compare

make_row = partial(results_row, sweep="cmp")


def loaded(tmp_path, rows):
    assert results.record(tmp_path, rows) == len(rows)
    return results.load(tmp_path)


@pytest.fixture
def grid(tmp_path):
    """labels vs rotnet, winning_ticket vs reinit, at 2 fractions, 5 seeds; top-1 made up but fixed."""
    rng = random.Random(13)
    rows = []
    for fraction in (0.8, 0.21):
        for init in ("winning_ticket", "reinit"):
            for seed in range(5):
                base = rng.uniform(0.6, 0.9)
                for mask_source, shift in (("labels", 0.04 if fraction < 0.5 else 0.0), ("rotnet", 0.0)):
                    rows.append(make_row(mask_source=mask_source, init=init, nominal_fraction=fraction,
                                         measured_fraction=fraction, seed=seed,
                                         top1=base + shift + rng.gauss(0, 0.01)))
    return loaded(tmp_path, rows)


def _side(df, **where):
    keep = pd.Series(True, index=df.index)
    for column, value in where.items():
        keep &= df[column] == value
    return df[keep].sort_values("seed")["top1"].to_numpy(dtype=float)


def test_matches_scipy_paired_t_test(grid):
    result = results.compare(grid, "mask_source", "labels", "rotnet")
    assert len(result) == 4 and result.attrs["unpaired"] == 0
    assert list(result.columns)[-10:] == ["top1_a", "top1_b", "diff", "diff_se", "n", "t", "p", "p_holm",
                                          "significant", "measured_fraction"]
    assert "mask_source" not in result.columns and "seed" not in result.columns
    # sorted as summarize() sorts: by setting, fractions from largest to smallest
    assert result[["init", "nominal_fraction"]].values.tolist() == [
        ["reinit", 0.8], ["reinit", 0.21], ["winning_ticket", 0.8], ["winning_ticket", 0.21]]
    for row in result.itertuples():
        a = _side(grid, mask_source="labels", init=row.init, nominal_fraction=row.nominal_fraction)
        b = _side(grid, mask_source="rotnet", init=row.init, nominal_fraction=row.nominal_fraction)
        expected = stats.ttest_rel(a, b)
        assert row.n == 5
        assert row.diff == pytest.approx((a - b).mean())
        assert row.diff_se == pytest.approx(stats.sem(a - b))
        assert row.t == pytest.approx(float(expected.statistic))
        assert row.p == pytest.approx(float(expected.pvalue))
        assert row.significant == (row.p_holm < 0.05)
        assert row.top1_a == pytest.approx(a.mean()) and row.top1_b == pytest.approx(b.mean())
    # the 4-point shift at 21% is found, the 80% rows are noise
    assert result.loc[result["nominal_fraction"] == 0.21, "significant"].all()
    assert not result.loc[result["nominal_fraction"] == 0.8, "significant"].any()


def test_hand_computation(tmp_path):
    """Differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1/sqrt(3), t = 2*sqrt(3); with 2 degrees of
    freedom P(|T| > t) = 1 - t / sqrt(2 + t^2) = 1 - sqrt(6/7)."""
    rows = []
    for seed, (a, b) in enumerate([(0.6, 0.5), (0.7, 0.5), (0.9, 0.6)]):
        rows += [make_row(init="winning_ticket", seed=seed, top1=a), make_row(init="reinit", seed=seed, top1=b)]
    df = loaded(tmp_path, rows)
    row = results.compare(df, "init", "winning_ticket", "reinit").iloc[0]
    assert row["n"] == 3
    assert row["diff"] == pytest.approx(0.2)
    assert row["diff_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert row["t"] == pytest.approx(2 * math.sqrt(3))
    assert row["p"] == pytest.approx(1 - math.sqrt(6 / 7))  # 0.07418: not significant at 0.05
    assert not row["significant"]
    assert results.compare(df, "init", "winning_ticket", "reinit", alpha=0.1).iloc[0]["significant"]


def test_pairs_only_the_seeds_both_sides_share(tmp_path):
    rows = [make_row(mask_source="labels", seed=s, top1=0.5 + 0.1 * s) for s in (0, 1, 2)]
    rows += [make_row(mask_source="rotnet", seed=s, top1=0.45 + 0.05 * s * s) for s in (1, 2, 3)]
    row = results.compare(loaded(tmp_path, rows), "mask_source", "labels", "rotnet").iloc[0]
    a, b = [0.6, 0.7], [0.5, 0.65]
    assert row["n"] == 2
    assert row["top1_a"] == pytest.approx(0.65) and row["top1_b"] == pytest.approx(0.575)
    assert row["p"] == pytest.approx(float(stats.ttest_rel(a, b).pvalue))


def test_fewer_than_two_pairs_or_no_spread_give_no_p_value(tmp_path):
    rows = [make_row(mask_source="labels", seed=0, top1=0.9), make_row(mask_source="rotnet", seed=0, top1=0.8),
            make_row(mask_source="labels", seed=0, nominal_fraction=0.8, top1=0.9),
            make_row(mask_source="rotnet", seed=0, nominal_fraction=0.8, top1=0.7),
            make_row(mask_source="labels", seed=1, nominal_fraction=0.8, top1=0.8),
            make_row(mask_source="rotnet", seed=1, nominal_fraction=0.8, top1=0.6)]
    result = results.compare(loaded(tmp_path, rows), "mask_source", "labels", "rotnet")
    assert result["n"].tolist() == [2, 1]  # 80% first
    assert result["diff"].tolist() == pytest.approx([0.2, 0.1])
    assert result[["diff_se", "t", "p"]].isna().all().all()
    assert not result["significant"].any()
    text = format_comparison(result)
    assert "fewer than 2 pairs (or no spread) give no p-value" in text
    assert "*" not in text.splitlines()[-1]


def test_settings_on_one_side_only_are_left_out_and_counted(tmp_path):
    rows = [make_row(init=init, seed=s, top1=0.5 + 0.01 * s + (init == "reinit") * 0.001 * s * s)
            for init in ("winning_ticket", "reinit") for s in (0, 1, 2)]
    rows += [make_row(mask_source="random", init="reinit", rewind="-", seed=s) for s in (0, 1)]
    result = results.compare(loaded(tmp_path, rows), "init", "winning_ticket", "reinit")
    assert result["mask_source"].tolist() == ["labels"]
    assert result.attrs["unpaired"] == 1
    assert "1 setting(s) with no seed on both sides are left out" in format_comparison(result)


def test_values_convert_to_the_column_dtype_and_any_column_works(tmp_path):
    rows = [make_row(nominal_fraction=f, measured_fraction=f, seed=s, top1=0.9 - f / 10 + 0.01 * s * f)
            for f in (0.8, 0.512) for s in (0, 1, 2)]
    result = results.compare(loaded(tmp_path, rows), "nominal_fraction", "80%", "0.512")
    assert result["n"].tolist() == [3]
    assert result["diff"].iloc[0] == pytest.approx(-0.0288 + 0.01 * 0.288)
    assert result["measured_fraction"].iloc[0] == pytest.approx((0.8 + 0.512) / 2)  # what both sides measured
    assert "nominal_fraction" not in result.columns


def test_by_pools_settings_and_averages_rows_of_one_seed(grid):
    result = results.compare(grid, "mask_source", "labels", "rotnet", by=["mask_source", "nominal_fraction"])
    assert list(result.columns[:1]) == ["nominal_fraction"] and result["n"].tolist() == [5, 5]
    low = grid[grid["nominal_fraction"] == 0.21]
    a = low[low["mask_source"] == "labels"].groupby("seed")["top1"].mean().to_numpy()
    b = low[low["mask_source"] == "rotnet"].groupby("seed")["top1"].mean().to_numpy()
    assert result["p"].iloc[1] == pytest.approx(float(stats.ttest_rel(a, b).pvalue))
    whole = results.compare(grid, "mask_source", "labels", "rotnet", by=["mask_source"])
    assert len(whole) == 1 and whole["n"].iloc[0] == 5


@pytest.mark.parametrize("column,a,b,needle", [
    ("colour", "x", "y", "unknown column 'colour'"), ("mask_source", "labels", "exemplar", "mask_source=exemplar"),
    ("seed", "0", "1", "pairs are made by seed"), ("top1", "0.5", "0.6", "cannot be compared"),
])
def test_bad_comparisons(grid, column, a, b, needle):
    with pytest.raises(ValueError, match=needle):
        results.compare(grid, column, a, b)


def test_parse_compare():
    assert parse_compare("mask_source=labels,rotnet") == ("mask_source", "labels", "rotnet", "two-sided")
    assert parse_compare(" init = winning_ticket , reinit ") == ("init", "winning_ticket", "reinit", "two-sided")
    assert parse_compare("init=winning_ticket>reinit") == ("init", "winning_ticket", "reinit", "greater")
    assert parse_compare("init=reinit<winning_ticket").alternative == "less"
    for bad, needle in (("mask_source", "expected COLUMN"), ("=a,b", "expected COLUMN"),
                        ("mask_source=labels", "exactly two values"), ("mask_source=a,b,c", "exactly two"),
                        ("mask_source=a,", "exactly two"), ("mask_source=a,a", "the same"),
                        ("mask_source=a>b,c", "exactly two values")):
        with pytest.raises(ValueError, match=needle):
            parse_compare(bad)


def test_format_names_the_test_and_marks_significance(grid):
    text = format_comparison(results.compare(grid, "mask_source", "labels", "rotnet"))
    lines = text.splitlines()
    assert lines[0].startswith("top-1 of mask_source=labels minus mask_source=rotnet, in percentage points")
    assert lines[1].startswith("paired t-test, two-sided; p (Holm): adjusted over the 4 setting(s) tested here; "
                               "* marks Holm-adjusted p < 0.05")
    assert "in every row: sweep=cmp" in text
    marked = [line for line in lines if line.rstrip().endswith("*")]
    assert len(marked) == 2 and all("21.0%" in line for line in marked)


# --------------------------------------------------------------------------- the command


def cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """The tiny grid with labels and random masks, 2 seeds, 1 epoch per training (20 stages); then read
    once by `results`, so that its finished stages are reconciled and recorded."""
    tmp_path = tmp_path_factory.mktemp("compare")
    recipes = {task: dict(recipe, epochs=1) for task, recipe in TINY["recipes"].items()}
    sweep = dict(TINY, workspace=str(tmp_path / "ws"), seeds=[0, 1], mask_source=["labels", "random"],
                 recipes=recipes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))
    launch = cli("launch", path, "--no-progress")
    assert launch.returncode == 0, launch.stdout + launch.stderr
    # the artifacts' stamps are kept only once settled: read after that, every stage is recorded by this
    # read and a later one has nothing left to record (else which read writes depends on timing)
    time.sleep(SETTLED_S + 0.2)
    assert cli("results", tmp_path / "ws").returncode == 0
    return tmp_path / "ws"


def _snapshot(folder):
    return {path: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_compare_on_a_real_workspace(two_seeds):
    result = cli("results", two_seeds, "--compare", "init=winning_ticket,reinit")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("paired t-test, two-sided; p (Holm): adjusted over the 2 setting(s) tested here; "
                               "* marks Holm-adjusted p < 0.05")
    assert "2 setting(s) with no seed on both sides are left out" in result.stdout  # random masks: reinit only
    expected = results.compare(results.load(two_seeds), "init", "winning_ticket", "reinit")
    assert expected["n"].tolist() == [2, 2]
    assert result.stdout == format_comparison(expected) + "\n"
    for line, p in zip(lines[-2:], expected["p"], strict=True):
        assert (f"{p:.3g}" if not math.isnan(p) else "—") in line


def test_several_workspaces_read_as_one_and_write_nothing(two_seeds, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(two_seeds, other)
    assert cli("results", other).returncode == 0  # the copy's own first read, as for any workspace
    before = {**_snapshot(two_seeds), **_snapshot(other)}
    summary = cli("results", two_seeds, other)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.splitlines()[0].split()[:2] == ["workspace", "sweep"]
    labels = [line.split()[0] for line in summary.stdout.splitlines()[1:]]  # their folders' names
    assert labels == ["other"] * 6 + ["ws"] * 6 and str(tmp_path) not in summary.stdout
    out = tmp_path / "both.csv"
    compared = cli("results", two_seeds, other, "--compare", "workspace=ws,other",
                   "--where", "mask_source in labels,random and nominal_fraction<0.6")
    assert compared.returncode == 0, compared.stderr
    assert compared.stdout.count("+0.00") == 3  # a copy: every difference is zero
    exported = cli("results", two_seeds, other, "--group-by", "workspace,init", "--csv", out)
    assert exported.returncode == 0, exported.stderr
    frame = pd.read_csv(out)
    assert sorted(set(frame["workspace"])) == ["other", "ws"] and len(frame) == 24
    assert {**_snapshot(two_seeds), **_snapshot(other)} == before
    assert list(other.iterdir()) and not (two_seeds / "both.csv").exists()


def test_queries_and_grouping_on_a_real_workspace(two_seeds):
    frame = results.load(two_seeds)
    where = cli("results", two_seeds, "--where", "measured_fraction<0.6", "--where", "init in reinit")
    assert where.returncode == 0, where.stderr
    rows = where.stdout.splitlines()[1:]
    assert len(rows) == 2 and all("reinit" in row and "0.512" in row for row in rows)
    grouped = cli("results", two_seeds, "--group-by", "mask_source")
    assert grouped.returncode == 0, grouped.stderr
    assert grouped.stdout.split()[:5] == ["mask_source", "top1_mean_%", "top1_se_%", "n", "measured_fraction"]
    assert [line.split()[-2] for line in grouped.stdout.splitlines()[1:]] == [
        str((frame["mask_source"] == m).sum()) for m in ("labels", "random")]
    pivot = cli("results", two_seeds, "--pivot", "--group-by", "mask_source")
    assert pivot.returncode == 0 and "labels" in pivot.stdout.splitlines()[0]


@pytest.mark.parametrize("args,needle", [
    (["--where", "colour<3"], "--where: filter 'colour<3': unknown column 'colour'"),
    (["--where", "top1 ~ 0.9"], "--where: filter 'top1 ~ 0.9': expected COLUMN=VALUE"),
    (["--where", "top1>=x"], "--where: filter on 'top1': 'x' is not a number"),
    (["--group-by", "colour"], "--group-by: unknown column 'colour'"),
    (["--group-by", "init,,seed"], "--group-by: 'init,,seed': expected column names"),
    (["--compare", "colour=a,b"], "--compare: unknown column 'colour'"),
    (["--compare", "init=winning_ticket,rotnet"], "--compare: init=rotnet: no row has this value"),
    (["--compare", "init=reinit"], "--compare: 'init=reinit': expected exactly two values"),
    (["--compare", "init=reinit,reinit"], "the two values are the same"),
    (["--compare", "seed=0,1"], "--compare: 'seed' cannot be compared"),
])
def test_bad_input_exits_2_with_one_line(two_seeds, args, needle):
    result = cli("results", two_seeds, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and needle in result.stderr and "Traceback" not in result.stderr


def test_a_path_that_is_no_workspace_among_several(two_seeds, tmp_path):
    result = cli("results", two_seeds, tmp_path / "nowhere")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "nowhere: not a prunesweep workspace" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_several_old_workspaces_are_read_and_left_byte_identical(tmp_path, capsys):
    """Two workspaces of the unversioned code (tests/fixtures/workspace_v1): read together through the
    migrations in memory, as one alone is, and not a byte written to either."""
    from orchestrator.cli import main

    fixture = ROOT / "tests" / "fixtures" / "workspace_v1"
    first, second = (shutil.copytree(fixture, tmp_path / name) for name in ("first", "second"))

    def files():
        return {path: path.read_bytes() for folder in (first, second) for path in sorted(folder.rglob("*"))
                if path.is_file()}

    before = files()
    assert main(["results", str(first), str(second), "--compare", "workspace=first,second"]) == 0  # their labels
    out = capsys.readouterr().out
    assert out.count("+0.00") == 7 and "paired t-test" in out  # the grid and transfer cells, each once
    assert main(["results", str(first), str(second), "--pivot", "--where", "transfer=linear"]) == 0
    assert "second / rotnet / linear" in capsys.readouterr().out
    assert files() == before


def test_one_sided_tests_match_scipy_for_the_stated_direction(tmp_path):
    rows = []
    for seed, (a, b) in enumerate([(0.6, 0.5), (0.7, 0.5), (0.9, 0.6), (0.62, 0.64)]):
        rows += [make_row(init="winning_ticket", seed=seed, top1=a), make_row(init="reinit", seed=seed, top1=b)]
    df = loaded(tmp_path, rows)
    a, b = np.array([0.6, 0.7, 0.9, 0.62]), np.array([0.5, 0.5, 0.6, 0.64])
    for alternative in ("two-sided", "greater", "less"):
        row = results.compare(df, "init", "winning_ticket", "reinit", alternative=alternative).iloc[0]
        assert row["p"] == pytest.approx(float(stats.ttest_rel(a, b, alternative=alternative).pvalue))
    assert results.compare(df, "init", "winning_ticket", "reinit", alternative="greater").attrs["test"] == \
        "paired t-test, one-sided (A > B)"
    with pytest.raises(ValueError, match="alternative"):
        results.compare(df, "init", "winning_ticket", "reinit", alternative="bigger")


def test_holm_adjusts_over_the_settings_of_one_comparison():
    from results.comparison import holm

    # by hand: sorted 0.01, 0.02, 0.04 (m = 3) -> 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm(np.array([0.04, 0.01, np.nan, 0.02])).tolist()[:2] == pytest.approx([0.04, 0.03])
    assert np.isnan(holm(np.array([0.04, 0.01, np.nan, 0.02]))[2])
    assert holm(np.array([0.5, 0.9])).tolist() == pytest.approx([1.0, 1.0])  # min(1, 2 x 0.5), then monotone
    # a difference significant alone is not once twenty settings are tested together
    p = np.full(20, 0.5)
    p[0] = 0.01
    assert holm(p)[0] == pytest.approx(0.2)


def test_one_seed_in_two_workspaces_counts_once(tmp_path):
    rows = [make_row(mask_source=m, seed=s, top1=0.5 + 0.1 * s + (0.05 if m == "labels" else 0))
            for m in ("labels", "rotnet") for s in (0, 1, 2)]
    (tmp_path / "a").mkdir()
    once = loaded(tmp_path / "a", rows)
    twice = pd.concat([once.assign(workspace="a"), once.assign(workspace="b")], ignore_index=True)
    pooled = results.summarize(twice, by=["mask_source", "nominal_fraction"])
    assert pooled["n"].tolist() == [3, 3] and pooled.attrs["averaged"] == 6
    alone = results.summarize(once, by=["mask_source", "nominal_fraction"])
    assert pooled["top1_se"].tolist() == pytest.approx(alone["top1_se"].tolist())  # error bars not shrunk
    compared = results.compare(twice, "mask_source", "labels", "rotnet", by=["nominal_fraction"])
    assert compared["n"].tolist() == [3] and compared.attrs["averaged"] == 6
    per_workspace = results.compare(twice, "mask_source", "labels", "rotnet")  # (workspace, seed) pairs
    assert per_workspace["n"].tolist() == [3, 3] and per_workspace.attrs["averaged"] == 0
