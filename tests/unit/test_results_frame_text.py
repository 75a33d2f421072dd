"""results.frame_text: the text of DataFrame.to_string(index=False), written a distinct value at a time."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import results
from results.frame_text import SMALL, frame_text

DISPLAY = ("display.width", 200, "display.max_columns", None, "display.max_rows", None)


def same_as_pandas(frame: pd.DataFrame, *options) -> None:
    with pd.option_context(*DISPLAY, *options):
        assert frame_text(frame) == frame.to_string(index=False)


def mixed_frame(rows: int, seed: int) -> pd.DataFrame:
    """Columns of every dtype a results frame holds and some it does not, with values that print alike
    while differing (0.0 and -0.0; 1, 1.0 and True) and missing values of every kind."""
    rng = np.random.default_rng(seed)
    text = pd.Series(["x"]).dtype
    pick = lambda values: rng.choice(np.array(values, dtype=object), rows).tolist()  # noqa: E731
    return pd.DataFrame({
        "sweep": pd.array(pick(["a", "bb", None, "tab\there", "ünï", "line\nbreak", "w" * 70, ""]), dtype=text),
        "level": pd.array(pick([1, 3, None, 300_000, -5]), dtype="Int64"),
        "top1_mean": rng.random(rows),
        "signed": np.array(pick([0.5, -0.0, 0.0, np.nan, 2.0])).astype(float),
        "round": np.array(pick([1.0, -3.0, np.nan, 100.0])).astype(float),
        "missing": np.full(rows, np.nan),
        "wide": np.array(pick([1e-9, 1e7, 3.14159265358979, np.inf])).astype(float),
        "seed": rng.integers(-1000, 1000, rows),
        "significant": rng.random(rows) < 0.5,
        "": pick(["*", ""]),
        "objects": np.array(pick([1, 1.0, True, "1", None, np.nan, -0.0, 0.0]), dtype=object),
        "single": rng.random(rows).astype(np.float32),
    })


@pytest.mark.parametrize("rows", [1, SMALL, SMALL + 1, 4 * SMALL])
@pytest.mark.parametrize("seed", [0, 1])
def test_as_pandas_writes_it(rows, seed):
    frame = mixed_frame(rows, seed)
    same_as_pandas(frame)
    same_as_pandas(frame[["top1_mean"]])
    same_as_pandas(frame[["sweep", "objects"]])


def test_as_pandas_writes_it_under_other_display_options():
    frame = mixed_frame(3 * SMALL, 2)
    for precision in (0, 1, 3, 9):
        same_as_pandas(frame, "display.precision", precision)
    same_as_pandas(frame, "display.chop_threshold", 0.5)
    same_as_pandas(frame, "display.chop_threshold", 0.0)
    same_as_pandas(frame, "display.colheader_justify", "left")
    same_as_pandas(frame, "display.max_colwidth", 10)
    same_as_pandas(frame, "display.float_format", "{:.2%}".format)


def test_frames_it_leaves_to_pandas():
    frame = mixed_frame(2 * SMALL, 3)
    same_as_pandas(frame.iloc[0:0])
    same_as_pandas(frame.rename(columns={"sweep": " sweep", "level": 7}))
    same_as_pandas(frame.rename(columns={"level": "sweep"}))
    same_as_pandas(frame.rename(columns={"sweep": "two\nlines"}))
    same_as_pandas(pd.concat({"mean": frame[["top1_mean", "signed"]]}, axis=1))


def test_a_summary_of_a_loaded_table(tmp_path):
    rows = [dict(sweep=f"s{sweep}", stage_key=f"k{sweep}-{source}-{level}-{seed}", dataset="digits", arch="lenet",
                 mask_source=source, init="winning_ticket", rewind="0", rewind_iteration=0,
                 level=level if level % 3 else None, nominal_fraction=0.8 ** level, measured_fraction=0.8 ** level,
                 seed=seed, top1=(seed * 7 + level * 3 + sweep) % 10 / 10, epochs=1, wall_time_s=1.0)
            for sweep in range(8) for source in ("labels", "rotnet", "random") for level in range(1, 30)
            for seed in range(2)]
    results.record(tmp_path, rows)
    summary = results.summarize(results.load(tmp_path))
    assert len(summary) > SMALL
    same_as_pandas(summary)
