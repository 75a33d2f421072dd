"""The SQLite results table: record/load round trip, no duplicates, concurrency, read-only loads."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pandas as pd
import pytest

import results
from results.table import COLUMNS, DB_FILE, PRIMARY_KEY


def make_row(**overrides):
    row = dict(
        sweep="digits-oneshot",
        stage_key="eval-0001",
        dataset="digits",
        arch="lenet",
        mask_source="labels",
        init="winning_ticket",
        rewind="0",
        rewind_iteration=0,
        level=None,
        nominal_fraction=0.512,
        measured_fraction=0.5118,
        seed=0,
        top1=0.913,
        epochs=20,
        wall_time_s=12.5,
    )
    row.update(overrides)
    return row


def test_schema_constant_is_the_documented_one():
    assert COLUMNS == (
        "sweep", "stage_key", "dataset", "arch", "mask_source", "init", "rewind",
        "rewind_iteration", "level", "nominal_fraction", "measured_fraction", "seed", "top1",
        "epochs", "wall_time_s", "recorded_at", "natural_sparsity", "metric", "eval_dataset", "transfer",
        "map_11point",
    )
    assert PRIMARY_KEY == ("sweep", "mask_source", "init", "rewind", "nominal_fraction", "seed", "stage_key")


def test_record_then_load_roundtrip(tmp_path):
    rows = [
        make_row(),
        make_row(stage_key="eval-0002", seed=1, top1=0.9, level=3, rewind="1ep", rewind_iteration=469,
                 recorded_at="2024-01-02T03:04:05+00:00"),
    ]
    assert results.record(tmp_path, rows) == 2

    df = results.load(tmp_path)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 2
    # reading leaves no -wal/-shm files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_FILE]
    first, second = df.iloc[0], df.iloc[1]
    for key, value in rows[0].items():
        if value is None:
            assert pd.isna(first[key]), key
        else:
            assert first[key] == value, key
    assert second["level"] == 3 and second["rewind"] == "1ep" and second["rewind_iteration"] == 469
    assert second["recorded_at"] == "2024-01-02T03:04:05+00:00"
    # recorded_at is filled in with an ISO time when absent
    assert pd.Timestamp(first["recorded_at"]).tzinfo is not None
    assert str(df["level"].dtype) == "Int64" and str(df["seed"].dtype) == "Int64"
    assert df["top1"].dtype == "float64"


def test_wal_mode_and_primary_key(tmp_path):
    results.record(tmp_path, [make_row()])
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        pk = [r[1] for r in sorted(conn.execute("PRAGMA table_info(results)"), key=lambda r: r[5]) if r[5]]
    assert tuple(pk) == PRIMARY_KEY


def test_duplicates_are_ignored_and_not_counted(tmp_path):
    row = make_row()
    assert results.record(tmp_path, [row]) == 1
    assert results.record(tmp_path, [row]) == 0
    # same primary key, different payload: still the first one wins
    assert results.record(tmp_path, [make_row(top1=0.1), make_row(stage_key="eval-0002")]) == 1
    # duplicates inside one call count once
    assert results.record(tmp_path, [make_row(seed=5), make_row(seed=5)]) == 1
    df = results.load(tmp_path)
    assert len(df) == 3
    assert df.loc[(df["stage_key"] == "eval-0001") & (df["seed"] == 0), "top1"].tolist() == [0.913]


def test_record_requires_every_column_but_recorded_at(tmp_path):
    row = make_row()
    del row["measured_fraction"]
    with pytest.raises(ValueError, match="measured_fraction"):
        results.record(tmp_path, [make_row(stage_key="ok"), row])
    # nothing was written, not even the good row
    assert results.load(tmp_path).empty


def test_record_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="top5"):
        results.record(tmp_path, [make_row(top5=0.99)])
    with pytest.raises(ValueError, match="seed"):
        results.record(tmp_path, [make_row(seed="zero")])
    with pytest.raises(ValueError, match="top1"):
        results.record(tmp_path, [make_row(top1=None)])
    with pytest.raises(ValueError, match="seed"):
        results.record(tmp_path, [make_row(seed=1.5)])


def test_record_converts_numpy_values(tmp_path):
    import numpy as np

    row = make_row(seed=np.int64(2), top1=np.float32(0.5), level=np.int64(4), rewind=0)
    assert results.record(tmp_path, [row]) == 1
    df = results.load(tmp_path)
    assert df["seed"].tolist() == [2] and df["level"].tolist() == [4] and df["rewind"].tolist() == ["0"]


def test_record_into_missing_workspace_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        results.record(tmp_path / "nope", [make_row()])
    assert not (tmp_path / "nope").exists()
    assert results.record(tmp_path / "nope", []) == 0


def test_load_without_table_is_empty_and_creates_nothing(tmp_path):
    df = results.load(tmp_path)
    assert df.empty
    assert list(df.columns) == list(COLUMNS)
    assert list(tmp_path.iterdir()) == []
    assert results.recorded_cells(tmp_path) == set()
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / "no-such-workspace"
    assert results.load(missing).empty
    assert not missing.exists()


def test_load_of_several_workspaces_reads_only(tmp_path):
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    results.record(full, [make_row(), make_row(stage_key="eval-0002", seed=1)])
    before = (full / DB_FILE).read_bytes(), (full / DB_FILE).stat().st_mtime_ns
    df = results.load([empty, full, tmp_path / "missing"])
    assert list(df.columns) == ["workspace", *COLUMNS] and df["workspace"].tolist() == [str(full)] * 2
    assert df.drop(columns="workspace").equals(results.load(full))
    assert str(df["workspace"].dtype) == str(df["sweep"].dtype)  # text, as the other text columns
    assert list(empty.iterdir()) == [] and not (tmp_path / "missing").exists()
    assert sorted(p.name for p in full.iterdir()) == [DB_FILE]
    assert ((full / DB_FILE).read_bytes(), (full / DB_FILE).stat().st_mtime_ns) == before


def test_load_of_database_without_table(tmp_path):
    sqlite3.connect(tmp_path / DB_FILE).close()
    df = results.load(tmp_path)
    assert df.empty and list(df.columns) == list(COLUMNS)


def test_empty_frame_has_the_same_dtypes_as_a_full_one(tmp_path):
    empty = results.load(tmp_path)
    results.record(tmp_path, [make_row(level=1)])
    full = results.load(tmp_path)
    assert empty.dtypes.astype(str).to_dict() == full.dtypes.astype(str).to_dict()


def test_recorded_cells(tmp_path):
    results.record(tmp_path, [make_row(), make_row(stage_key="eval-0002", seed=1)])
    assert results.recorded_cells(tmp_path) == {
        ("digits-oneshot", "labels", "winning_ticket", "0", 0.512, 0, "eval-0001"),
        ("digits-oneshot", "labels", "winning_ticket", "0", 0.512, 1, "eval-0002"),
    }


def _writer(workspace, offset, barrier, queue):
    """Record rows offset..offset+199 one per call, then all of them again in one call."""
    rows = [make_row(stage_key=f"eval-{i:04d}", seed=i, top1=i / 1000) for i in range(offset, offset + 200)]
    barrier.wait()
    new = sum(results.record(workspace, [row]) for row in rows)
    new += results.record(workspace, rows)
    queue.put(new)


def test_concurrent_record_never_duplicates_nor_loses(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    # overlapping ranges: 0..199 and 100..299, started together on a fresh workspace
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), offset, barrier, queue)) for offset in (0, 100)]
    for worker in workers:
        worker.start()
    counts = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    df = results.load(tmp_path)
    assert len(df) == 300
    assert sorted(df["seed"].tolist()) == list(range(300))
    assert sum(counts) == 300
