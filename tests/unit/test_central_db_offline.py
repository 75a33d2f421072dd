"""The central results database without a server: URLs (checked, passwords hidden), the
schema following the results row, upserts into a shared SQLite file, what waits in the
workspace, where the URL comes from, and that nothing imports SQLAlchemy when none is set.
(The PostgreSQL path runs against a real server in tests/integration/test_central_db.py.)"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ROOT, results_row

import results
from orchestrator.state import central_results
from orchestrator.cli import main
from orchestrator.errors import UserError
from results import central_db
from results.row import COLUMNS


@pytest.fixture(autouse=True)
def _no_configured_database(monkeypatch, tmp_path):
    monkeypatch.delenv("PRUNESWEEP_RESULTS_DB", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.mark.parametrize("url, shown", [
    ("postgresql://lab:s3cret@db.example:5432/results", "postgresql://lab:***@db.example:5432/results"),
    ("postgresql+psycopg://lab:p@ss@h/db", "postgresql+psycopg://lab:***@h/db"),  # an unencoded @ too
    ("postgresql://lab@h/db", "postgresql://lab@h/db"),
    ("results_db=postgresql://u:pw@h/db and mysql://a:b@c/d", "results_db=postgresql://u:***@h/db and mysql://a:***@c/d"),
])
def test_redact_hides_every_password(url, shown):
    assert central_db.redact(url) == shown


@pytest.mark.parametrize("url, normalized", [
    ("postgresql://u:pw@h:5432/db", "postgresql+psycopg://u:pw@h:5432/db"),
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql+psycopg://h/db?sslmode=require", "postgresql+psycopg://h/db?sslmode=require"),
    ("sqlite:////abs/central.sqlite", "sqlite:////abs/central.sqlite"),
])
def test_check_url_accepts_postgresql_and_sqlite(url, normalized):
    assert central_db.check_url(url) == normalized


@pytest.mark.parametrize("url, problem", [
    ("mysql://u:pw@h/db", "'mysql://u:***@h/db' is not a supported database URL; allowed: postgresql://"),
    ("postgresql://u:pw@h", "a host and a database name"),
    ("postgresql://u:pw@/db", "a host and a database name"),
    ("postgresql://u:pw@h:port/db", "the port must be a number, got 'port'"),
    ("sqlite://", "a SQLite URL names a file"),
    ("", "expected a database URL"),
])
def test_check_url_refuses_other_urls_naming_them_without_password(url, problem):
    with pytest.raises(ValueError) as caught:
        central_db.check_url(url)
    assert problem in str(caught.value) and "pw" not in str(caught.value)


def test_describe_names_host_and_database():
    assert central_db.describe("postgresql://u:pw@db.lab:5433/res") == "db.lab:5433/res"
    assert central_db.describe("sqlite:////tmp/c.sqlite") == "/tmp/c.sqlite"


def test_the_central_schema_has_every_results_column(tmp_path):
    """A column added to results.row needs a central migration: the schema after all of them has it."""
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    results.record(tmp_path, [results_row()])
    central_db.push(tmp_path, url)
    with central_db._engine(url).connect() as conn:
        found = [column["name"] for column in inspect(conn).get_columns(central_db.TABLE)]
    assert found == ["workspace_id", "workspace", "row_number", *COLUMNS]
    assert central_db.schema_version(url) == len(central_db.CENTRAL_MIGRATIONS)


def test_push_upserts_each_row_once_and_waiting_counts_the_rest(tmp_path):
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    results.record(workspace, [results_row(seed=seed) for seed in range(3)])
    assert central_db.waiting(workspace, url) == 3
    assert central_db.push(workspace, url) == 3
    assert central_db.waiting(workspace, url) == 0 and central_db.push(workspace, url) == 0
    results.record(workspace, [results_row(seed=3)])
    assert central_db.waiting(workspace, url) == 1
    assert central_db.push(workspace, url) == 1
    for _ in range(2):  # forgetting the mark sends everything again: still one row each
        with closing(sqlite3.connect(workspace / central_db.STATE_FILE)) as conn, conn:
            conn.execute("UPDATE pushed SET last_rowid = 0")
        assert central_db.push(workspace, url) == 4
    assert len(central_db.load(url)) == 4


def test_load_of_one_workspace_equals_its_own_results(tmp_path):
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    results.record(workspace, [results_row(seed=seed, level=None if seed else 3) for seed in range(3)])
    central_db.push(workspace, url)
    import pandas as pd

    pd.testing.assert_frame_equal(central_db.load(url), results.load(workspace))


def test_load_of_several_workspaces_has_a_workspace_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        results.record(tmp_path / name, [results_row(seed=0)])
        central_db.push(tmp_path / name, url)
    frame = central_db.load(url)
    assert list(frame.columns) == ["workspace", *COLUMNS]
    assert sorted(label.rsplit(":", 1)[1] for label in frame["workspace"]) == \
        [str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())]


def test_workspace_id_is_made_once(tmp_path):
    first = central_db.workspace_id(tmp_path)
    assert central_db.workspace_id(tmp_path) == first and len(first) == 36


def test_a_symlinked_state_file_is_refused_and_its_target_untouched(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / central_db.STATE_FILE).symlink_to(outside)
    with pytest.raises(central_db.CentralDbError, match="is a symbolic link"):
        central_db.workspace_id(workspace)
    assert outside.read_text() == "precious"


def test_a_newer_central_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    results.record(tmp_path, [results_row()])
    central_db.push(tmp_path, url)
    from sqlalchemy import text

    with central_db._engine(url).begin() as conn:
        conn.execute(text("UPDATE prunesweep_schema SET version = 99"))
    results.record(tmp_path, [results_row(seed=5)])
    with pytest.raises(central_db.CentralDbError, match="schema version 99 was made by a newer prunesweep"):
        central_db.push(tmp_path, url)
    assert central_db.waiting(tmp_path, url) == 1


def test_an_unreachable_database_keeps_the_rows_waiting(tmp_path):
    url = "postgresql://u:hidden@127.0.0.1:1/db"
    results.record(tmp_path, [results_row()])
    with pytest.raises(central_db.CentralDbError) as caught:
        central_db.push(tmp_path, url)
    assert "hidden" not in str(caught.value) and "u:***@127.0.0.1:1/db" in str(caught.value)
    assert central_db.waiting(tmp_path, url) == 1


# --------------------------------------------------------------------------- where the URL comes from


class _Ledger:
    def __init__(self, *specs):
        self._rows = [{"spec": json.dumps(spec)} for spec in specs]

    def sweeps(self):
        return self._rows


def test_the_sweep_then_the_environment_then_the_config_file(tmp_path, monkeypatch):
    assert central_results.configured_url(_Ledger({})) is None
    config = tmp_path / "config" / "prunesweep" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("results_db: postgresql://lab@config/db\n")
    assert central_results.configured_url(_Ledger({})) == "postgresql://lab@config/db"
    monkeypatch.setenv("PRUNESWEEP_RESULTS_DB", "postgresql://lab@env/db")
    assert central_results.configured_url(_Ledger({})) == "postgresql://lab@env/db"
    ledger = _Ledger({"results_db": "postgresql://lab@old/db"}, {"results_db": "postgresql://lab@sweep/db"}, {})
    assert central_results.configured_url(ledger) == "postgresql://lab@sweep/db"


@pytest.mark.parametrize("text, problem", [
    ("results_db: mysql://a:b@c/d\n", "results_db: 'mysql://a:***@c/d' is not a supported database URL"),
    ("colour: red\n", "colour: unknown key; allowed: results_db"),
    ("- a\n", "expected a mapping of settings"),
])
def test_a_bad_config_file_is_named(tmp_path, text, problem):
    config = tmp_path / "config" / "prunesweep" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(text)
    with pytest.raises(UserError) as caught:
        central_results.check_settings()
    assert str(caught.value).startswith(f"{config}: ") and problem in str(caught.value)


def test_results_without_workspace_or_database_exits_2(capsys):
    assert main(["results"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give one or more WORKSPACE, or --db URL" in err


def test_results_with_both_workspace_and_database_exits_2(tmp_path, capsys):
    assert main(["results", str(tmp_path), "--db", "sqlite:///x.sqlite"]) == 2
    assert "not both" in capsys.readouterr().err


def test_results_db_answers_like_results_workspace(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    results.record(workspace, [results_row(seed=seed, top1=0.5 + seed / 10) for seed in range(3)]
                   + [results_row(seed=seed, mask_source="rotnet") for seed in range(3)])
    central_db.push(workspace, url)
    assert main(["results", "--db", url, "--pivot"]) == 0
    central = capsys.readouterr().out
    frame = results.load(workspace)
    assert central.strip() == results.pivot(frame).to_string().strip()


# --------------------------------------------------------------------------- SQLAlchemy only when needed


def test_plan_launch_status_and_results_do_not_import_sqlalchemy_without_a_database(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text((ROOT / "sweeps" / "digits.yaml").read_text())
    code = f"""
import sys
from contextlib import closing
from orchestrator.cli import main
assert main(["plan", {str(sweep)!r}]) == 0
from orchestrator import driver
from orchestrator.state import central_results
from orchestrator.state import reconcile
from orchestrator.commands import status
from orchestrator.commands import results as results_command
from orchestrator.state.central_results import configured_url
import results
ws = {str(tmp_path / 'ws')!r}
import os; os.makedirs(ws)
results.record(ws, [dict(sweep="s", stage_key="k", dataset="d", arch="a", mask_source="labels",
    init="winning_ticket", rewind="0", rewind_iteration=0, level=1, nominal_fraction=0.8,
    measured_fraction=0.8, seed=0, top1=0.5, epochs=1, wall_time_s=1.0)])
class L:
    def sweeps(self): return []
central_results.push_waiting(ws, L())
assert central_results.waiting_line(ws, L()) is None
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "psycopg"))
assert not bad, bad
"""
    env = {key: value for key, value in os.environ.items() if key != "PRUNESWEEP_RESULTS_DB"}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_push_waiting_never_raises_and_says_so_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRUNESWEEP_RESULTS_DB", "postgresql://u:hidden@127.0.0.1:1/db")
    central_results._failed_at.clear()
    results.record(tmp_path, [results_row()])
    central_results.push_waiting(Path(tmp_path), _Ledger({}))
    central_results.push_waiting(Path(tmp_path), _Ledger({}))  # within RETRY_AFTER_S: not tried again
    err = capsys.readouterr().err
    assert err.count("results database not updated") == 1 and "hidden" not in err
    assert central_results.waiting_line(Path(tmp_path), _Ledger({})) == "1 row waiting for 127.0.0.1:1/db"
    central_results._failed_at.clear()


def test_a_central_database_of_version_1_names_the_11_point_map_of_its_voc07_rows(tmp_path):
    """Central step 2, as the workspace's step 3: rows pushed before issue 28 held VOC07's 11-point
    mAP in top1 (metric map); the first push of this version adds the column and names them."""
    import pandas as pd
    from sqlalchemy import text

    from results.central_migrations import CENTRAL_MIGRATIONS

    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    with central_db._engine(url).begin() as conn:
        conn.execute(text(f"CREATE TABLE {central_db.VERSION_TABLE} (version INTEGER NOT NULL)"))
        conn.execute(text(f"INSERT INTO {central_db.VERSION_TABLE} VALUES (1)"))
        CENTRAL_MIGRATIONS[0](conn)
        for seed, dataset in ((0, "voc07"), (1, "places205")):
            row = {**results_row(seed=seed, init="pretrained", transfer="linear", top1=0.5 + seed / 10),
                   "metric": "map", "eval_dataset": dataset, "recorded_at": "2024-01-01T00:00:00",
                   "workspace_id": "old", "workspace": "elsewhere:/ws", "row_number": seed + 1}
            conn.execute(text(f"INSERT INTO {central_db.TABLE} ({', '.join(row)}) "
                              f"VALUES ({', '.join(':' + k for k in row)})"), row)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    results.record(workspace, [{**results_row(seed=2, init="pretrained", transfer="linear", top1=0.7),
                                "metric": "map", "eval_dataset": "voc07", "map_11point": 0.65}])
    assert central_db.push(workspace, url) == 1
    assert central_db.schema_version(url) == len(CENTRAL_MIGRATIONS) == 2
    frame = central_db.load(url).set_index("seed")
    assert frame.loc[0, ["metric", "top1", "map_11point"]].tolist() == ["map_11point", 0.5, 0.5]
    assert frame.loc[1, "metric"] == "map" and pd.isna(frame.loc[1, "map_11point"])
    assert frame.loc[2, ["metric", "top1", "map_11point"]].tolist() == ["map", 0.7, 0.65]
