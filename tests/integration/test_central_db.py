"""The central results database against a real PostgreSQL server on 127.0.0.1
(tests/cluster/postgres.sh): every recorded row upserted once whoever pushes it and however
often, `results --db` equal to the workspace's own results, a database that is down never
failing a stage (the rows wait and go later), and a bad URL refused in one line."""
from __future__ import annotations

import copy
import os
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing

import pytest
import yaml
from conftest import BASE_SWEEP, ROOT

import results
from orchestrator.cli import main
from results import central_db
from results.central_migrations import CENTRAL_MIGRATIONS

pytestmark = pytest.mark.postgres

#: a small real sweep: 2 mask sources x 1 init x 1 fraction, one epoch each (a few stages of seconds).
SMALL = {
    **copy.deepcopy(BASE_SWEEP),
    "name": "pg",
    "arch": {"name": "small_cnn", "width": 4},
    "recipes": {"labels": {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01}},
    "pruning": {"fractions": [0.8, 0.64]},
    "mask_source": ["labels", "random"],
    "init": ["winning_ticket"],
}


def _sweep(tmp_path, name, url=None, **changes):
    sweep = dict(copy.deepcopy(SMALL), workspace=str(tmp_path / name), **changes)
    if url is not None:
        sweep["results_db"] = url
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def cli(*args, env=None, check=True):
    extra = ["--no-progress"] if args[0] in ("launch", "resume") else []
    environment = {key: value for key, value in os.environ.items() if key != "PRUNESWEEP_RESULTS_DB"}
    result = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args), *extra], capture_output=True,
                            text=True, env={**environment, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _central_keys(server, url):
    return server.query(url, "SELECT workspace_id, sweep, mask_source, init, rewind, nominal_fraction, seed, "
                             "stage_key FROM prunesweep_results")


def test_upserts_are_idempotent_across_relaunch_resume_and_a_second_writer(postgres_server, tmp_path):
    url = postgres_server.new_database()
    sweep = _sweep(tmp_path, "ws", url)
    workspace = tmp_path / "ws"
    first = cli("launch", sweep)
    assert postgres_server.password not in first.stdout + first.stderr
    local = results.load(workspace)
    assert len(local) == 4  # 2 mask sources x 2 fractions
    keys = _central_keys(postgres_server, url)
    assert len(keys) == len(set(keys)) == len(local)
    assert postgres_server.query(url, "SELECT version FROM prunesweep_schema") == [(len(CENTRAL_MIGRATIONS),)]

    cli("launch", sweep)  # a relaunch: nothing new
    cli("resume", workspace)
    assert sorted(_central_keys(postgres_server, url)) == sorted(keys)

    # the workspace forgets what it pushed (as a copy, a crash before the mark, or another
    # process pushing at the same moment would): everything is sent again, and nothing doubles
    with closing(sqlite3.connect(workspace / central_db.STATE_FILE)) as conn, conn:
        conn.execute("UPDATE pushed SET last_rowid = 0")
    assert central_db.waiting(workspace, url) == len(local)
    errors = []

    def push():
        try:
            central_db.push(workspace, url)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    writers = [threading.Thread(target=push) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not errors
    assert central_db.waiting(workspace, url) == 0
    assert sorted(_central_keys(postgres_server, url)) == sorted(keys)

    # three processes at once into a fresh database: one makes the schema (under a lock), none fails
    fresh = postgres_server.new_database()
    code = f"from results import central_db; central_db.push({str(workspace)!r}, {fresh!r})"
    pushers = [subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    for pusher in pushers:
        output = pusher.communicate(timeout=120)[0]
        assert pusher.returncode == 0, output
    assert sorted(_central_keys(postgres_server, fresh)) == sorted(keys)
    assert postgres_server.query(fresh, "SELECT version FROM prunesweep_schema") == [(len(CENTRAL_MIGRATIONS),)]

    # a second workspace (another cluster's) adds its own rows under its own id
    other = _sweep(tmp_path, "other", url, seeds=[1])
    cli("launch", other)
    rows = postgres_server.query(url, "SELECT workspace_id, count(*) FROM prunesweep_results GROUP BY 1")
    assert sorted(count for _, count in rows) == [4, 4]
    assert {ident for ident, _ in rows} == {central_db.workspace_id(workspace),
                                            central_db.workspace_id(tmp_path / "other")}
    both = central_db.load(url)
    assert list(both.columns)[:2] == ["workspace", "sweep"] and both["workspace"].nunique() == 2


def test_results_db_equals_the_workspace_results(postgres_server, tmp_path, capsys, monkeypatch):
    url = postgres_server.new_database()
    workspace = tmp_path / "ws"
    cli("launch", _sweep(tmp_path, "ws"), env={"PRUNESWEEP_RESULTS_DB": url})  # the URL from the environment
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(central_db.load(url), results.load(workspace))

    def results_command(*args):  # in this process: the results command needs no training
        monkeypatch.delenv("PRUNESWEEP_RESULTS_DB", raising=False)
        assert main(["results", *map(str, args)]) == 0
        out, err = capsys.readouterr()
        assert postgres_server.password not in out + err
        return out

    for options in ([], ["--pivot"], ["--where", "mask_source=labels", "--group-by", "nominal_fraction"],
                    ["--compare", "mask_source=labels,random"]):
        own = results_command(workspace, *options)
        assert results_command("--db", url, *options) == own and own.strip()
    results_command(workspace, "--csv", tmp_path / "own.csv")
    results_command("--db", url, "--csv", tmp_path / "central.csv")
    assert (tmp_path / "own.csv").read_text() == (tmp_path / "central.csv").read_text()
    # `results` alone reads the database the environment names
    monkeypatch.setenv("PRUNESWEEP_RESULTS_DB", url)
    assert main(["results", "--pivot"]) == 0
    assert capsys.readouterr().out == results_command(workspace, "--pivot")


def test_a_database_that_is_down_never_fails_a_stage(postgres_server, tmp_path):
    url = postgres_server.new_database()
    sweep = _sweep(tmp_path, "ws", url)
    workspace = tmp_path / "ws"
    with postgres_server.down():
        launched = cli("launch", sweep)
        assert "0 failed, 0 blocked" in launched.stdout
        assert "results database not updated" in launched.stderr
        assert postgres_server.password not in launched.stdout + launched.stderr
        status = cli("status", workspace)
        where = f"127.0.0.1:{postgres_server.port}/{url.rsplit('/', 1)[1]}"
        assert f"4 rows waiting for {where}" in status.stdout.splitlines()
        assert postgres_server.password not in status.stdout + status.stderr
    assert len(results.load(workspace)) == 4
    # the next command that records results pushes them; the workspace keeps no password (issue 25), so
    # this process finds it in the environment's URL of the same database
    resumed = cli("resume", workspace, env={"PRUNESWEEP_RESULTS_DB": url})
    assert postgres_server.password not in resumed.stdout + resumed.stderr
    assert len(_central_keys(postgres_server, url)) == 4
    for path in workspace.rglob("*"):
        assert not path.is_file() or postgres_server.password.encode() not in path.read_bytes(), path
    assert "waiting for" not in cli("status", workspace).stdout


def test_bad_urls_exit_2_in_one_line(postgres_server, tmp_path):
    wrong_password = postgres_server.url.replace(postgres_server.password, "not-the-password")
    for args, env, expected in (
        (["results", "--db", "mysql://user:secret@host/db"], {}, "--db: 'mysql://user:***@host/db' is not a supported"),
        (["results", "--db", wrong_password], {}, "password authentication failed"),
        (["launch", _sweep(tmp_path, "a")], {"PRUNESWEEP_RESULTS_DB": "postgresql://u:secret@/nodb"},
         "PRUNESWEEP_RESULTS_DB: 'postgresql://u:***@/nodb': expected postgresql://"),
        (["launch", _sweep(tmp_path, "b", "postgresql://u:secret@h")], {}, "results_db: 'postgresql://u:***@h'"),
    ):
        result = cli(*args, env=env, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert "secret" not in result.stderr and "not-the-password" not in result.stderr
        assert not result.stdout
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()



@pytest.mark.parametrize("written", ["{password}", "{escaped}"], ids=["as-is", "percent-escaped"])
def test_a_password_of_any_characters_reaches_the_server_and_nowhere_else(postgres_server, tmp_path, written):
    """'/', '@', '?', blanks and '%' in a password (issue 25): the URL is read from its last '@'."""
    from urllib.parse import quote

    import psycopg

    password = "Zq8Kx/Pw7 @Lm?x%zz"  # (a % before two hex digits would be read as an escape)
    role = f"r_{os.getpid()}_{len(written)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    database = postgres_server.new_database().rsplit("/", 1)[1]
    secret = written.format(password=password, escaped=quote(password, safe=""))
    url = f"postgresql://{role}:{secret}@127.0.0.1:{postgres_server.port}/{database}"
    result = cli("results", "--db", url)
    assert result.stdout.strip() == f"postgresql://{role}:***@127.0.0.1:{postgres_server.port}/{database}: no results yet"
    wrong = cli("results", "--db", url.replace("Zq8Kx", "Zq8Kz"), check=False)
    assert wrong.returncode == 2 and "password authentication failed" in wrong.stderr, wrong.stderr
    for output in (result.stdout + result.stderr, wrong.stdout + wrong.stderr):
        assert not any(piece in output for piece in ("Zq8K", "Pw7", "Lm?x", quote(password, safe="")))
