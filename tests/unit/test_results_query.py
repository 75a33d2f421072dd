"""Filters, per-setting summaries and the pivot table, on frames loaded from a real table."""
from __future__ import annotations

import math
from functools import partial

import pandas as pd
import pytest
from conftest import results_row

import results
from results.conditions import text_equalities
from results.query import SETTING_COLUMNS, columns_needed, format_cell, percent_label
from results.row import COLUMN_TYPES

make_row = partial(results_row, sweep="digits-oneshot")


def loaded(tmp_path, rows):
    assert results.record(tmp_path, rows) == len(rows)
    return results.load(tmp_path)


@pytest.fixture
def grid(tmp_path):
    """labels/winning_ticket: 3 seeds at 3 fractions; rotnet/reinit: 1 seed; random/reinit: 2 seeds, 1 fraction."""
    rows = []
    measured = {1.0: 1.0, 0.512: 0.5118, 0.107: 0.1071}
    for fraction, tops in {1.0: [0.95, 0.94, 0.96], 0.512: [0.9, 0.8, 0.7], 0.107: [0.6, 0.5, 0.55]}.items():
        for seed, top1 in enumerate(tops):
            rows.append(make_row(nominal_fraction=fraction, measured_fraction=measured[fraction], seed=seed, top1=top1))
        rows.append(make_row(mask_source="rotnet", init="reinit", nominal_fraction=fraction,
                             measured_fraction=measured[fraction] + 0.0002, top1=tops[0] - 0.1))
    for seed, top1 in enumerate((0.4, 0.5)):
        rows.append(make_row(mask_source="random", init="reinit", nominal_fraction=0.512, measured_fraction=0.512,
                             seed=seed, top1=top1))
    return loaded(tmp_path, rows)


# --------------------------------------------------------------------------- filters


def test_filter_equal_and_not_equal(grid):
    labels = results.filter_rows(grid, ["mask_source=labels"])
    assert set(labels["mask_source"]) == {"labels"} and len(labels) == 9
    both = results.filter_rows(grid, ["mask_source=labels", "seed=1"])
    assert len(both) == 3 and set(both["seed"]) == {1}
    not_labels = results.filter_rows(grid, ["mask_source!=labels"])
    assert "labels" not in set(not_labels["mask_source"]) and len(not_labels) == 5
    assert results.filter_rows(grid, []).equals(grid)


def test_filter_converts_to_column_dtype(grid):
    assert len(results.filter_rows(grid, ["seed=2"])) == 3  # int column
    assert len(results.filter_rows(grid, ["seed=2.0"])) == 3
    assert len(results.filter_rows(grid, ["nominal_fraction=0.512"])) == 6  # float column
    assert len(results.filter_rows(grid, ["nominal_fraction=51.2%"])) == 6
    assert len(results.filter_rows(grid, ["top1=0.9"])) == 1
    assert len(results.filter_rows(grid, ["rewind=0"])) == len(grid)  # text column, "0" stays text
    with pytest.raises(ValueError, match="seed"):
        results.filter_rows(grid, ["seed=abc"])


def test_filter_float_tolerance(tmp_path):
    df = loaded(tmp_path, [make_row(nominal_fraction=0.8 ** 3), make_row(nominal_fraction=0.8 ** 4)])
    assert len(results.filter_rows(df, ["nominal_fraction=0.512"])) == 1


def test_filter_missing_values(tmp_path):
    df = loaded(tmp_path, [make_row(level=None), make_row(level=2), make_row(level=3)])
    assert len(results.filter_rows(df, ["level=none"])) == 1
    assert len(results.filter_rows(df, ["level!=none"])) == 2
    # != keeps the rows where the value is missing
    assert len(results.filter_rows(df, ["level!=2"])) == 2


def test_filter_unknown_column_names_the_allowed_ones(grid):
    with pytest.raises(ValueError) as error:
        results.filter_rows(grid, ["mask=labels"])
    message = str(error.value)
    assert "mask" in message and "mask_source" in message and "nominal_fraction" in message


def test_filter_malformed(grid):
    for bad in ("mask_source", "=labels", "!=labels"):
        with pytest.raises(ValueError):
            results.filter_rows(grid, [bad])


def test_filter_value_may_contain_equals(tmp_path):
    df = loaded(tmp_path, [make_row(sweep="a=b"), make_row(sweep="c")])
    assert results.filter_rows(df, ["sweep=a=b"])["sweep"].tolist() == ["a=b"]
    assert results.filter_rows(df, ["sweep!=a=b"])["sweep"].tolist() == ["c"]


def test_filter_comparisons(grid):
    assert len(results.filter_rows(grid, ["top1>=0.9"])) == len(grid[grid["top1"] >= 0.9 - 1e-12])
    assert sorted(results.filter_rows(grid, ["top1>0.9"])["top1"]) == [0.94, 0.95, 0.96]
    assert len(results.filter_rows(grid, ["measured_fraction<0.2"])) == 4  # the 10.7% rows
    assert set(results.filter_rows(grid, ["nominal_fraction<=51.2%"])["nominal_fraction"]) == {0.512, 0.107}
    assert set(results.filter_rows(grid, ["nominal_fraction<0.512"])["nominal_fraction"]) == {0.107}
    assert len(results.filter_rows(grid, ["seed>0", "seed<=1"])) == len(grid[grid["seed"] == 1])
    # text columns compare by character code: ISO times order by time
    assert len(results.filter_rows(grid, ["recorded_at>=2000-01-01"])) == len(grid)
    assert results.filter_rows(grid, ["recorded_at<2000-01-01"]).empty


def test_comparisons_use_the_float_tolerance_at_the_edge(tmp_path):
    df = loaded(tmp_path, [make_row(nominal_fraction=0.8 ** 3), make_row(nominal_fraction=0.8 ** 4)])
    assert len(results.filter_rows(df, ["nominal_fraction>=0.512"])) == 1  # 0.8**3 = 0.5120000000000001
    assert len(results.filter_rows(df, ["nominal_fraction<=0.512"])) == 2
    assert len(results.filter_rows(df, ["nominal_fraction>0.512"])) == 0
    assert len(results.filter_rows(df, ["nominal_fraction<0.512"])) == 1


def test_comparisons_never_match_missing_values(tmp_path):
    df = loaded(tmp_path, [make_row(level=None), make_row(level=2), make_row(level=3)])
    assert results.filter_rows(df, ["level>=2"])["level"].tolist() == [2, 3]
    assert results.filter_rows(df, ["level<3"])["level"].tolist() == [2]


def test_filter_sets(grid):
    both = results.filter_rows(grid, ["mask_source in labels,rotnet"])
    assert set(both["mask_source"]) == {"labels", "rotnet"} and len(both) == 12
    assert len(results.filter_rows(grid, ["mask_source in (labels, rotnet)"])) == 12
    assert set(results.filter_rows(grid, ["mask_source not in labels,rotnet"])["mask_source"]) == {"random"}
    assert set(results.filter_rows(grid, ["seed in 0,2"])["seed"]) == {0, 2}
    assert set(results.filter_rows(grid, ["nominal_fraction IN 100%,0.107"])["nominal_fraction"]) == {1.0, 0.107}


def test_sets_with_missing_values(tmp_path):
    df = loaded(tmp_path, [make_row(level=None), make_row(level=2), make_row(level=3)])
    assert len(results.filter_rows(df, ["level in none,2"])) == 2
    assert results.filter_rows(df, ["level not in 2,3"])["level"].isna().tolist() == [True]  # keeps missing


def test_conditions_joined_with_and(grid):
    one = results.filter_rows(grid, ["top1>=0.9 and mask_source in labels,random"])
    two = results.filter_rows(results.filter_rows(grid, ["top1>=0.9"]), ["mask_source in labels,random"])
    assert one.equals(two) and len(one) == 4
    assert len(results.filter_rows(grid, ["seed=0 AND nominal_fraction<0.2 and init!=reinit"])) == 1


@pytest.mark.parametrize("bad,needle", [
    ("top1>=", "needs a value"), ("top1~0.9", "expected COLUMN=VALUE"), ("mask_source in", "expected"),
    ("mask_source in labels,,rotnet", "comma-separated"), ("level<none", "needs a value"),
    ("top1>abc", "not a number"), ("seed in 1,x", "seed"), ("top1>=0.9 and", "expected"), ("and top1>=0.9", "expected"),
    ("colour<3", "unknown column 'colour'"),
])
def test_malformed_conditions_raise(grid, bad, needle):
    with pytest.raises(ValueError, match=needle):
        results.filter_rows(grid, [bad])


def test_parse_conditions():
    from results.conditions import parse_conditions

    conditions = parse_conditions(["top1 >= 0.9 and mask_source not in labels, rotnet", "sweep==a=b"],
                                  ["top1", "mask_source", "sweep"])
    assert [(c.column, c.op, c.values) for c in conditions] == [
        ("top1", ">=", ("0.9",)), ("mask_source", "not in", ("labels", "rotnet")), ("sweep", "=", ("a=b",))]


# --------------------------------------------------------------------------- several workspaces


def test_load_several_workspaces_into_one_frame(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    results.record(a, [make_row(seed=0, top1=0.5), make_row(seed=1, top1=0.7)])
    results.record(b, [make_row(seed=0, top1=0.9)])
    df = results.load([a, str(b), a])  # a named twice is read once
    assert list(df.columns) == ["workspace", *results.COLUMNS]
    assert df["workspace"].tolist() == [str(a), str(a), str(b)]
    assert df["top1"].tolist() == [0.5, 0.7, 0.9] and list(df.index) == [0, 1, 2]
    assert results.load([a]).drop(columns="workspace").equals(results.load(a))
    empty = results.load([tmp_path / "nothing"])
    assert empty.empty and "workspace" in empty.columns
    # the same setting in two workspaces is never averaged together; labels name the workspace
    summary = results.summarize(df)
    assert summary.columns[0] == "workspace"
    assert summary["n"].tolist() == [2, 1] and summary["top1_mean"].tolist() == pytest.approx([0.6, 0.9])
    assert list(results.pivot(df).columns) == [f"{a} / labels / winning_ticket", f"{b} / labels / winning_ticket"]
    assert len(results.filter_rows(df, [f"workspace={b}"])) == 1


# --------------------------------------------------------------------------- reading only what is used


@pytest.mark.parametrize("where", [
    ["sweep=b"], ["sweep in a, b=c"], ["sweep=a", "sweep in a,b"], ["sweep=a", "sweep=b"], ["sweep=none"],
    ["sweep==b and init in reinit,winning_ticket"], ["transfer=linear"], ["transfer=none", "sweep!=a"],
    ["sweep IN (a, zz)", "mask_source not in random"], ["level=3", "sweep=a"], [],
])
def test_rows_kept_by_text_equalities_are_those_the_filters_keep(tmp_path, where):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    results.record(a, [make_row(sweep=sweep, init=init, seed=seed, level=level, top1=0.1 * seed)
                       for sweep in ("a", "b", "b=c") for init in ("reinit", "winning_ticket")
                       for seed in range(3) for level in (None, 3)])
    results.record(b, [make_row(sweep="b", seed=seed, transfer="linear") for seed in range(2)])
    text = [column for column, sqltype in COLUMN_TYPES.items() if sqltype == "TEXT"]
    for workspaces in (a, [a, b]):
        whole = results.load(workspaces)
        only = text_equalities(where, whole.columns, text)
        expected = results.filter_rows(whole, where).reset_index(drop=True)
        kept = results.filter_rows(results.load(workspaces, only=only), where).reset_index(drop=True)
        pd.testing.assert_frame_equal(kept, expected)
        used = columns_needed(where, None, None, list(whole.columns))
        narrow = results.filter_rows(results.load(workspaces, only=only, columns=used), where)
        pd.testing.assert_frame_equal(narrow.reset_index(drop=True), expected[used])
        pd.testing.assert_frame_equal(results.summarize(narrow), results.summarize(expected))


def test_text_equalities_leave_the_rest_to_the_filters(grid):
    text = ["sweep", "mask_source", "init", "transfer"]
    columns = list(grid.columns)
    assert text_equalities(["mask_source in labels,rotnet", "mask_source=rotnet and init=reinit"], columns, text) == {
        "mask_source": ["rotnet"], "init": ["reinit"]}
    for where in (["level=3"], ["mask_source!=labels"], ["transfer=none"], ["init<x"], ["nope=1"], ["init"]):
        assert text_equalities(where, columns, text) == {}


def test_columns_needed(grid):
    columns = list(grid.columns)
    plain = columns_needed([], None, None, columns)
    assert set(plain) == {*SETTING_COLUMNS, "top1", "measured_fraction"} and plain == sorted(plain, key=columns.index)
    assert set(columns_needed(["epochs>3"], ["stage_key"], "init", columns)) == {*plain, "epochs", "stage_key", "seed"}
    for where, by, compared in ((["nope=1"], None, None), ([], ["top1"], None), ([], ["init", "init"], None),
                                ([], [], None), ([], ["nope"], None), ([], None, "nope")):
        assert columns_needed(where, by, compared, columns) is None


# --------------------------------------------------------------------------- group by


def test_summarize_by_pools_what_it_leaves_out(grid):
    by_mask = results.summarize(grid, by=["mask_source"])
    assert list(by_mask.columns) == ["mask_source", "top1_mean", "top1_se", "n", "measured_fraction"]
    assert by_mask["mask_source"].tolist() == ["labels", "random", "rotnet"]
    # n counts seeds: a seed's rows over the pooled fractions are averaged first (never counted twice)
    assert by_mask["n"].tolist() == [3, 2, 1] and by_mask.attrs["averaged"] == 6 + 0 + 2
    labels = grid[grid["mask_source"] == "labels"].groupby("seed")["top1"].mean()
    assert by_mask["top1_mean"].iloc[0] == pytest.approx(labels.mean())
    assert by_mask["top1_se"].iloc[0] == pytest.approx(labels.std() / 3 ** 0.5)
    by_fraction = results.summarize(grid, by=["init", "nominal_fraction"])
    assert by_fraction[["init", "nominal_fraction"]].values.tolist() == [
        ["reinit", 1.0], ["reinit", 0.512], ["reinit", 0.107],
        ["winning_ticket", 1.0], ["winning_ticket", 0.512], ["winning_ticket", 0.107]]
    assert by_fraction["n"].tolist() == [1, 2, 1, 3, 3, 3]  # reinit at 51.2%: seeds 0 (rotnet, random) and 1


@pytest.mark.parametrize("by,needle", [
    (["colour"], "unknown column 'colour'"), (["top1"], "what is summarized"),
    (["seed", "seed"], "given twice"), ([], "no column"),
])
def test_group_by_errors(grid, by, needle):
    with pytest.raises(ValueError, match=needle):
        results.summarize(grid, by=by)


def test_pivot_by(grid):
    table = results.pivot(grid, by=["init"])
    assert list(table.columns) == ["reinit", "winning_ticket"]
    # rotnet 0.8 and random 0.4 (seed 0, averaged: 0.6) and random 0.5 (seed 1): two seeds, none twice
    assert table.loc["51.2%", "reinit"] == "55.0 ± 5.0 (2)"
    assert list(results.pivot(grid, by=["nominal_fraction"]).columns) == ["all rows"]
    numbers = results.pivot(grid, numeric=True, by=["mask_source", "init"])
    assert numbers["n"].loc["51.2%", "labels / winning_ticket"] == 3


# --------------------------------------------------------------------------- summary


def test_summarize_mean_se_n(grid):
    summary = results.summarize(grid)
    assert list(summary.columns) == list(SETTING_COLUMNS) + ["top1_mean", "top1_se", "n", "measured_fraction"]
    cell = summary[(summary["mask_source"] == "labels") & (summary["nominal_fraction"] == 0.512)]
    assert len(cell) == 1
    cell = cell.iloc[0]
    assert cell["top1_mean"] == pytest.approx(0.8)
    # sample std of [0.9, 0.8, 0.7] is 0.1; 0.1 / sqrt(3) = 0.057735
    assert cell["top1_se"] == pytest.approx(0.057735, abs=1e-6)
    assert cell["n"] == 3
    assert cell["measured_fraction"] == pytest.approx(0.5118)

    two = summary[summary["mask_source"] == "random"].iloc[0]
    assert two["top1_mean"] == pytest.approx(0.45)
    assert two["top1_se"] == pytest.approx(math.sqrt(0.005) / math.sqrt(2))  # std 0.070711 / sqrt 2 = 0.05


def test_summarize_single_seed_has_no_standard_error(grid):
    summary = results.summarize(grid)
    rotnet = summary[summary["mask_source"] == "rotnet"]
    assert len(rotnet) == 3
    assert (rotnet["n"] == 1).all()
    assert rotnet["top1_se"].isna().all()


def test_summarize_keeps_one_shot_and_imp_apart(tmp_path):
    df = loaded(tmp_path, [make_row(level=None, top1=0.9), make_row(level=3, top1=0.7)])
    summary = results.summarize(df)
    assert len(summary) == 2
    assert sorted(summary["top1_mean"].round(3)) == [0.7, 0.9]


def test_summarize_sorting_and_empty(grid):
    summary = results.summarize(grid)
    labels = summary[summary["mask_source"] == "labels"]
    assert labels["nominal_fraction"].tolist() == [1.0, 0.512, 0.107]
    empty = results.summarize(grid.iloc[0:0])
    assert empty.empty and "top1_se" in empty.columns


# --------------------------------------------------------------------------- pivot


def test_pivot_layout_and_formatting(grid):
    table = results.pivot(grid)
    # rows: mean measured fraction per nominal fraction, largest first
    assert list(table.index) == ["100.0%", "51.2%", "10.7%"]
    assert list(table.columns) == ["labels / winning_ticket", "random / reinit", "rotnet / reinit"]
    assert table.loc["51.2%", "labels / winning_ticket"] == "80.0 ± 5.8 (3)"
    assert table.loc["51.2%", "random / reinit"] == "45.0 ± 5.0 (2)"
    assert table.loc["100.0%", "rotnet / reinit"] == "85.0 ± — (1)"
    assert table.loc["10.7%", "random / reinit"] == ""  # no run there


def test_pivot_numeric(grid):
    numbers = results.pivot(grid, numeric=True)
    assert list(numbers["mean"].index) == ["100.0%", "51.2%", "10.7%"]
    assert numbers["mean"].loc["51.2%", "labels / winning_ticket"] == pytest.approx(0.8)
    assert numbers["se"].loc["51.2%", "labels / winning_ticket"] == pytest.approx(0.057735, abs=1e-6)
    assert numbers["n"].loc["51.2%", "labels / winning_ticket"] == 3
    assert pd.isna(numbers["se"].loc["100.0%", "rotnet / reinit"])
    assert pd.isna(numbers["mean"].loc["10.7%", "random / reinit"])


def test_pivot_row_label_is_mean_measured_fraction(tmp_path):
    df = loaded(tmp_path, [
        make_row(mask_source="labels", measured_fraction=0.5101),
        make_row(mask_source="rotnet", measured_fraction=0.5141),
        make_row(nominal_fraction=0.8, measured_fraction=None),  # nothing measured: nominal shown
    ])
    assert list(results.pivot(df).index) == ["80.0%", "51.2%"]


def test_pivot_separates_rewind_points_and_sweeps(tmp_path):
    rows = [
        make_row(init="reinit", rewind="0", top1=0.5),
        make_row(init="reinit", rewind="1ep", rewind_iteration=100, top1=0.6),
    ]
    table = results.pivot(loaded(tmp_path, rows))
    assert list(table.columns) == ["labels / reinit / rewind 0", "labels / reinit / rewind 1ep"]

    other = tmp_path / "other"
    other.mkdir()
    rows = [make_row(sweep="a", top1=0.5), make_row(sweep="b", top1=0.7)]
    table = results.pivot(loaded(other, rows))
    assert list(table.columns) == ["a / labels / winning_ticket", "b / labels / winning_ticket"]
    assert table.iloc[0].tolist() == ["50.0 ± — (1)", "70.0 ± — (1)"]


def test_pivot_refuses_to_average_what_labels_cannot_separate(tmp_path):
    # two IMP levels at the same nominal fraction in one curve
    df = loaded(tmp_path, [make_row(level=2), make_row(level=3)])
    with pytest.raises(ValueError, match="--where"):
        results.pivot(df)
    assert len(results.pivot(results.filter_rows(df, ["level=2"]))) == 1


def test_pivot_small_fractions_get_distinct_labels(tmp_path):
    rows = [make_row(nominal_fraction=0.8 ** k, measured_fraction=0.8 ** k) for k in (29, 30, 31)]
    labels = list(results.pivot(loaded(tmp_path, rows)).index)
    assert labels == ["0.15%", "0.12%", "0.099%"]


def test_pivot_empty(grid):
    assert results.pivot(grid.iloc[0:0]).empty


def test_helpers():
    assert percent_label(0.512) == "51.2%"
    assert percent_label(1.0) == "100.0%"
    assert format_cell(0.913, 0.004, 3) == "91.3 ± 0.4 (3)"
    assert format_cell(0.913, float("nan"), 1) == "91.3 ± — (1)"
