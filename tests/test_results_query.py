"""Filters, per-setting summaries and the pivot table, on frames loaded from a real table."""
from __future__ import annotations

import math
from functools import partial

import pandas as pd
import pytest

import results
from conftest import results_row
from results.query import SETTING_COLUMNS, format_cell, percent_label


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
    rows.append(make_row(mask_source="random", init="reinit", nominal_fraction=0.512, measured_fraction=0.512, seed=0, top1=0.4))
    rows.append(make_row(mask_source="random", init="reinit", nominal_fraction=0.512, measured_fraction=0.512, seed=1, top1=0.5))
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
