"""The top-1 vs fraction plot and the CSV / Parquet exports."""
from __future__ import annotations

import os
from functools import partial

import matplotlib.image
import pandas as pd
import pytest
from conftest import results_row

import results

make_row = partial(results_row, sweep="digits-imp")


@pytest.fixture
def frame(tmp_path):
    rows = []
    for mask_source in ("labels", "rotnet", "random"):
        for init in ("winning_ticket", "reinit"):
            for level in range(4):
                for seed in range(2):
                    rows.append(make_row(
                        mask_source=mask_source, init=init, level=level, seed=seed,
                        nominal_fraction=0.8 ** level, measured_fraction=0.8 ** level * 0.999,
                        top1=0.9 - 0.02 * level - 0.01 * seed,
                    ))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    results.record(workspace, rows)
    return results.load(workspace)


def test_plot_writes_a_readable_png_with_one_line_per_setting(frame, tmp_path):
    out = tmp_path / "plots" / "top1.png"
    out.parent.mkdir()  # an export never creates a folder
    figure = results.plot_top1_vs_fraction(frame, out)
    assert out.is_file() and out.stat().st_size > 0
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    ax = figure.axes[0]
    assert len(ax.containers) == 6  # 3 mask sources x 2 inits, each an errorbar line
    assert sorted(t.get_text() for t in figure.legends[0].get_texts()) == sorted(
        f"{m} / {i}" for m in ("labels", "rotnet", "random") for i in ("winning_ticket", "reinit")
    )
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > right  # 100% on the left, decreasing to the right
    assert "digits" in figure.get_suptitle() and "lenet" in figure.get_suptitle()
    assert "remaining" in ax.get_xlabel() and "Top-1" in ax.get_ylabel()
    # no temp files left next to the plot
    assert os.listdir(out.parent) == ["top1.png"]


def test_the_figure_is_the_papers_fig3_with_a_panel_zoomed_on_the_trained_masks(frame, tmp_path):
    """A colour per mask source, a line style per init, the single seeds as faint dots, the bars and n named in
    the legend; the second panel holds the trained masks alone, its y axis fitted to them (not to random's)."""
    from matplotlib.colors import to_hex

    frame = frame.assign(top1=frame["top1"].where(frame["mask_source"] != "random", frame["top1"] - 0.5))
    figure = results.plot_top1_vs_fraction(frame, tmp_path / "fig3.svg")
    everything, trained = figure.axes
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    lines = {label: container.lines[0] for label, container in zip(labels, everything.containers, strict=True)}
    for source in ("labels", "rotnet", "random"):  # one colour per mask source, whatever the init
        assert to_hex(lines[f"{source} / winning_ticket"].get_color()) == to_hex(lines[f"{source} / reinit"].get_color())
    assert len({to_hex(lines[f"{source} / reinit"].get_color()) for source in ("labels", "rotnet", "random")}) == 3
    for init in ("winning_ticket", "reinit"):  # one line style per init, whatever the mask source
        assert len({lines[f"{source} / {init}"].get_linestyle() for source in ("labels", "rotnet", "random")}) == 1
    assert lines["labels / winning_ticket"].get_linestyle() != lines["labels / reinit"].get_linestyle()
    dots = sum(len(collection.get_offsets()) for collection in everything.collections
               if collection.get_alpha() is not None and collection.get_alpha() < 1)
    assert dots == len(frame)  # every seed of every setting
    assert figure.legends[0].get_title().get_text() == (
        "mean ± 1 s.e. over seeds (n = 2 seeds per point); faint dots: single seeds")
    assert len(trained.containers) == 4 and "random masks left out" in trained.get_title()
    low, high = trained.get_ylim()
    kept = frame[frame["mask_source"] != "random"]["top1"] * 100
    assert low <= kept.min() and high >= kept.max() and low > frame["top1"].min() * 100  # random is out of view
    assert (tmp_path / "fig3.svg").read_bytes().lstrip().startswith(b"<?xml")  # the suffix picks the format


def test_no_zoomed_panel_without_random_masks(frame, tmp_path):
    figure = results.plot_top1_vs_fraction(frame[frame["mask_source"] != "random"], tmp_path / "trained.png")
    assert len(figure.axes) == 1 and len(figure.axes[0].containers) == 4


def test_plot_one_line_per_rewind_point(tmp_path):
    rows = [make_row(init="reinit", rewind=r, nominal_fraction=f, measured_fraction=f, top1=0.5 + f / 10)
            for r in ("0", "1ep") for f in (1.0, 0.5, 0.25)]
    results.record(tmp_path, rows)
    figure = results.plot_top1_vs_fraction(results.load(tmp_path), tmp_path / "rewind.png")
    ax = figure.axes[0]
    assert len(ax.containers) == 2
    assert sorted(t.get_text() for t in figure.legends[0].get_texts()) == [
        "labels / reinit / rewind 0", "labels / reinit / rewind 1ep",
    ]


def test_plot_by_pools_into_one_line_per_value(frame, tmp_path):
    figure = results.plot_top1_vs_fraction(frame, tmp_path / "by.png", by=["mask_source"])
    ax = figure.axes[0]
    assert sorted(t.get_text() for t in figure.legends[0].get_texts()) == ["labels", "random", "rotnet"]
    labels = ax.containers[0].lines[0].get_ydata()  # labels first: both inits and seeds pooled
    expected = frame[frame["mask_source"] == "labels"].groupby("level")["top1"].mean().to_numpy() * 100
    assert list(labels) == pytest.approx(list(expected))
    assert "digits" in figure.get_suptitle()


def test_plot_of_several_workspaces_names_them(frame, tmp_path):
    workspaces = [tmp_path / "a", tmp_path / "b"]
    for workspace, shift in zip(workspaces, (0.0, 0.05), strict=True):
        workspace.mkdir()
        results.record(workspace, [make_row(nominal_fraction=f, measured_fraction=f, top1=0.5 + f / 10 + shift)
                                   for f in (1.0, 0.5)])
    figure = results.plot_top1_vs_fraction(results.load(workspaces), tmp_path / "both.png")
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        f"{workspace} / labels / winning_ticket" for workspace in workspaces]


def test_plot_refuses_an_empty_frame(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        results.plot_top1_vs_fraction(results.load(tmp_path), tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


def test_plot_replaces_an_existing_file(frame, tmp_path):
    out = tmp_path / "top1.png"
    out.write_bytes(b"old")
    results.plot_top1_vs_fraction(frame, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_csv_roundtrip(frame, tmp_path):
    (tmp_path / "out").mkdir()  # an export never creates a folder
    path = results.export_csv(frame, tmp_path / "out" / "results.csv")
    back = pd.read_csv(path, dtype={"rewind": str})  # CSV has no types: "0" would read as 0
    assert list(back.columns) == list(frame.columns)
    assert len(back) == len(frame)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert os.listdir(tmp_path / "out") == ["results.csv"]


def test_export_csv_keeps_missing_values(tmp_path):
    results.record(tmp_path, [make_row(level=None), make_row(level=2, seed=1)])
    frame = results.load(tmp_path)
    back = pd.read_csv(results.export_csv(frame, tmp_path / "r.csv"))
    assert back["level"].isna().tolist() == [True, False]


def test_export_parquet_roundtrip(frame, tmp_path):
    path = results.export_parquet(frame, tmp_path / "results.parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, frame)


def test_export_summary_and_pivot(frame, tmp_path):
    summary = results.summarize(frame)
    pd.testing.assert_frame_equal(pd.read_parquet(results.export_parquet(summary, tmp_path / "s.parquet")), summary)
    table = results.pivot(frame).reset_index()
    back = pd.read_csv(results.export_csv(table, tmp_path / "p.csv"), keep_default_na=False)
    assert back.astype(str).values.tolist() == table.astype(str).values.tolist()


def test_a_second_process_draws_the_same_figures_and_a_failed_one_leaves_them_to_this_one(frame, monkeypatch):
    from results.plot import top1_curves
    from results.top1_drawing import DrawingProcess, png, svg

    curves = [top1_curves(frame), top1_curves(frame, title="another", by=["mask_source"])]
    here = [svg(one) for one in curves]
    assert here[0] != here[1] and all(image.startswith(b"<?xml") for image in here)
    drawer = DrawingProcess()
    drawer.send(curves)
    assert drawer.images() == here  # byte for byte: the page is the same whichever process drew it
    drawer = DrawingProcess()
    drawer.send(curves, 110)
    assert drawer.images() == [png(one, 110) for one in curves]

    monkeypatch.setattr("sys.executable", "/nonexistent/python")  # cannot start
    drawer = DrawingProcess()
    drawer.send(curves)
    assert drawer.images() is None
    monkeypatch.undo()

    drawer = DrawingProcess()
    drawer.close()  # stopped before it was sent anything (a report that failed its checks)
    drawer.send(curves)
    assert drawer.images() is None


def test_the_x_axis_labels_the_fractions_held(frame):
    figure = results.plot.top1_figure(frame)
    figure.canvas.draw()
    labels = [tick.get_text() for tick in figure.axes[0].get_xticklabels() if tick.get_text()]
    assert labels == ["99.9%", "79.9%", "63.9%", "51.1%"]  # measured, as `results --pivot` writes them
