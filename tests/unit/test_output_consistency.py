"""What the commands print agrees (issue 27, point 6): top-1 in percent with ``-`` for a missing value,
plurals, numbers without an exponent, and short workspace labels in tables of several workspaces
or of a central database."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, results_row
from test_input_habits import cli, refused

import results

DIGITS = ROOT / "sweeps" / "digits.yaml"


def _workspace(path, top1=0.6, **row):
    """A workspace at ``path`` with 3 seeds of labels / winning_ticket and one seed of rotnet / reinit."""
    from orchestrator.state.ledger import Ledger

    path.mkdir(parents=True)
    Ledger(path).close()
    results.record(path, [results_row(seed=seed, top1=top1 + seed / 100, **row) for seed in range(3)]
                   + [results_row(mask_source="rotnet", init="reinit", top1=0.25, **row)])
    return path


# --------------------------------------------------------------------------- top-1 in percent


def test_plain_results_show_top1_in_percent_and_a_dash_for_what_is_missing(tmp_path):
    workspace = _workspace(tmp_path / "ws")
    result = cli("results", workspace)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[-4:] == ["top1_mean_%", "top1_se_%", "n", "measured_fraction"]
    labels, rotnet = (row.split() for row in rows)
    assert labels[-4:] == ["61.0", "0.6", "3", "0.512"]  # as the pivot's cell: 61.0 ± 0.6 (3)
    assert rotnet[-4:] == ["25.0", "-", "1", "0.512"]  # one seed: no standard error
    assert "NaN" not in result.stdout and "<NA>" not in result.stdout
    pivot = cli("results", workspace, "--pivot").stdout
    assert "61.0 ± 0.6 (3)" in pivot and "25.0 ± — (1)" in pivot


def test_the_percent_is_rounded_as_the_pivot_rounds_it():
    from orchestrator.commands.results import summary_text

    means = [0.99349999, 0.9935, 0.12345, 0.0005, float("nan")]
    summary = pd.DataFrame({"mask_source": list("abcde"), "top1_mean": means, "top1_se": [0.001] * 5,
                            "n": pd.array([2, 2, 2, 2, 1], dtype="Int64"), "level": pd.array([1, None, 1, 1, 1],
                                                                                             dtype="Int64")})
    rows = [line.split() for line in summary_text(summary).splitlines()[1:]]
    assert [row[1] for row in rows] == [f"{100 * mean:.1f}" if mean == mean else "-" for mean in means]
    assert [row[4] for row in rows] == ["1", "-", "1", "1", "1"]


def test_a_long_frame_writes_missing_values_as_asked():
    from results.frame_text import SMALL, frame_text

    rng = np.random.default_rng(0)
    values = rng.normal(size=SMALL * 3)
    values[::7] = np.nan
    frame = pd.DataFrame({"x": values, "k": pd.array(rng.integers(0, 9, SMALL * 3).astype(str), dtype="str")})
    frame.loc[::5, "k"] = None
    with pd.option_context("display.width", 200, "display.max_rows", None):
        assert frame_text(frame, na_rep="-") == frame.to_string(index=False, na_rep="-")
        assert frame_text(frame) == frame.to_string(index=False)


# --------------------------------------------------------------------------- plurals and plain numbers


def test_plan_counts_one_of_a_kind_in_the_singular():
    result = cli("plan", DIGITS, "mask_source=[labels]", "init=[reinit]", "seeds=[0]", "pruning.fractions=[0.5]")
    assert result.returncode == 0, result.stderr
    assert "grid: 1 cell (1 mask source x 1 init x 1 rewind point x 1 fraction x 1 seed;" in result.stdout
    two = cli("plan", DIGITS, "seeds=[0, 1]")
    assert "(3 mask sources x 2 inits x 1 rewind point x 5 fractions x 2 seeds;" in two.stdout


def test_plan_prints_numbers_without_an_exponent(tmp_path):
    result = cli("plan", ROOT / "sweeps" / "paper" / "cifar10_resnet18.yaml", f"workspace={tmp_path / 'ws'}")
    assert result.returncode == 0, result.stderr
    assert "epochs: 185,040 planned vs 1,390,080 naive" in result.stdout
    # the smallest fraction that still keeps a weight of the demo's network, well below 1e-3
    tiny = cli("plan", DIGITS, "pruning.fractions=[0.0002]", "mask_source=[labels]", "seeds=[0]")
    assert "fractions -> IMP rounds: 0.0002 -> 38 (0.0002077)" in tiny.stdout, tiny.stdout + tiny.stderr
    for output in (result.stdout, tiny.stdout):
        assert not any(marker in output for marker in ("e+0", "e-0", "e+1")), output


@pytest.mark.parametrize("value,text", [(1390080.0, "1,390,080"), (2200, "2,200"), (0, "0"), (2.25, "2.2"),
                                        (1234.56, "1,234.6"), (0.054976, "0.05498"), (1e-05, "0.00001"),
                                        (9.134e-06, "0.000009134"), (0.5, "0.5")])
def test_plain_number(value, text):
    from orchestrator.commands.wording import plain_number

    assert plain_number(value) == text


def test_count():
    from orchestrator.commands.wording import count

    assert (count(0, "seed"), count(1, "seed"), count(2, "seed"), count(1200, "cell")) == (
        "0 seeds", "1 seed", "2 seeds", "1,200 cells")
    assert count(1, "mask source") == "1 mask source" and count(2, "index", "indices") == "2 indices"


# --------------------------------------------------------------------------- short workspace labels


def test_short_labels_are_folder_names_with_parents_where_two_collide(tmp_path):
    from results.workspace_labels import short_labels

    names = [str(tmp_path / "a" / "runs" / "x"), str(tmp_path / "b" / "runs" / "x"), str(tmp_path / "c" / "y")]
    assert list(short_labels(names).values()) == ["a/runs/x", "b/runs/x", "y"]
    assert short_labels(["host1:/data/runs/cifar", "host2:/scratch/runs/cifar-b"]) == {
        "host1:/data/runs/cifar": "cifar", "host2:/scratch/runs/cifar-b": "cifar-b"}
    same = ["h:/w/runs/x#0123abcd", "h:/w/runs/x#4567ef01"]  # one path made anew: only the id tells them apart
    assert short_labels(same) == {name: name for name in same}
    assert short_labels(["h1:/w/x", "h2:/w/x"]) == {"h1:/w/x": "h1:/w/x", "h2:/w/x": "h2:/w/x"}


def test_tables_of_several_workspaces_use_their_folder_names(tmp_path):
    deep = tmp_path / ("long-folder-name-" * 4)
    first, second = _workspace(deep / "runs" / "cifar-a"), _workspace(deep / "runs" / "cifar-b", top1=0.7)
    pivot = cli("results", first, second, "--pivot")
    assert pivot.returncode == 0, pivot.stderr
    assert "cifar-a / labels / winning_ticket" in pivot.stdout and str(tmp_path) not in pivot.stdout
    assert max(map(len, pivot.stdout.splitlines())) < 250
    summary = cli("results", first, second, "--group-by", "workspace")
    assert [line.split()[0] for line in summary.stdout.splitlines()] == ["workspace", "cifar-a", "cifar-b"]
    compared = cli("results", first, second, "--compare", "workspace=cifar-b,cifar-a")
    assert compared.returncode == 0 and "+10.00" in compared.stdout, compared.stdout + compared.stderr
    twins = cli("results", _workspace(tmp_path / "a" / "x"), _workspace(tmp_path / "b" / "x"), "--pivot")
    assert "a/x / labels / winning_ticket" in twins.stdout and "b/x / rotnet / reinit" in twins.stdout


def test_label_names_the_workspaces_in_their_order(tmp_path):
    first, second = _workspace(tmp_path / "one"), _workspace(tmp_path / "two")
    result = cli("results", first, second, "--label", "prune-A", "--label", "prune-B", "--pivot")
    assert result.returncode == 0, result.stderr
    assert "prune-A / labels / winning_ticket" in result.stdout and "prune-B / rotnet / reinit" in result.stdout
    filtered = cli("results", first, second, "--label", "A", "--label", "B", "--where", "workspace=B")
    assert [line.split()[0] for line in filtered.stdout.splitlines()[1:]] == ["B", "B"]
    refused(cli("results", first, second, "--label", "A"), "--label: give one label per workspace",
            "(workspaces: 2, labels: 1)")
    refused(cli("results", first, second, "--label", "A", "--label", "A"), "--label: 'A' is given twice")
    refused(cli("results", first, second, "--label", "A", "--label", " "), "a label is printable text, not empty")


def test_tables_of_a_central_database_use_the_folder_names(tmp_path, monkeypatch):
    from results import central_db

    monkeypatch.delenv("PRUNESWEEP_RESULTS_DB", raising=False)
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    for name in ("cifar-a", "cifar-b"):
        central_db.push(_workspace(tmp_path / "lab" / "runs" / name), url)
    result = cli("results", "--db", url, "--pivot")
    assert result.returncode == 0, result.stderr
    assert "cifar-a / labels / winning_ticket" in result.stdout and str(tmp_path) not in result.stdout
    assert ":" not in result.stdout.splitlines()[0]  # no HOST: left
    refused(cli("results", "--db", url, "--label", "x"), "--label: names the WORKSPACE arguments")


def test_the_report_labels_the_workspaces_as_results_does(tmp_path):
    first, second = _workspace(tmp_path / "a" / "x"), _workspace(tmp_path / "b" / "x")
    page = tmp_path / "report.html"
    done = cli("report", first, second, "-o", page, "--label", "first-run", "--label", "second-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {page}: 8 rows from 2 workspaces\n"
    text = page.read_text()
    assert "first-run / labels / winning_ticket" in text and "second-run / rotnet / reinit" in text
    refused(cli("report", first, "-o", page, "--where", "mask_source=rotnett"), "no row has this value",
            "(did you mean 'rotnet'?)")
