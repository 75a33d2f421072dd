"""A central-database password never appears in any output, error, stored record or file, whatever it
holds (issue 25 §2): every form goes through every command that prints or stores a URL, on the
failure paths too (nothing listens on 127.0.0.1 port 1), and every output and every file under the
workspace and the config folder is searched for each piece of the secret."""
from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from in_process_cli import MINI, run_cli, launch_mini

from orchestrator.state import central_results
from results import central_db

#: (URL, pieces of its secret that must appear nowhere); each piece occurs nowhere else.
FORMS = [
    ("postgresql://lab:Zq8Kx/Pw7Lm@127.0.0.1:1/db", ["Zq8Kx", "Pw7Lm"]),  # a '/' (SQLAlchemy: host 'Zq8Kx')
    ("postgresql://lab:Yb4 Qm2 Tr9@127.0.0.1:1/db", ["Yb4", "Qm2", "Tr9"]),  # blanks
    ("postgresql://lab:Hv6@Nd3?Ke1@127.0.0.1:1/db", ["Hv6", "Nd3", "Ke1"]),  # '@' and '?'
    ("postgresql://lab:Wk5%2FJp8%40Xc1%20Lz0@127.0.0.1:1/db", ["Wk5", "Jp8", "Xc1", "Lz0"]),  # percent-escapes
    ("postgresql://lab@127.0.0.1:1/db?password=Rf7Gs2Ue4", ["Rf7Gs2Ue4"]),  # libpq's option
    ("postgresql://lab@127.0.0.1:1/db?sslmode=disable&passfile=/nonexistent/Pf9Qz3.pgpass&password=Mn5%20Bv8",
     ["Pf9Qz3", "Mn5", "Bv8"]),
]
TARGET = "postgresql://lab@127.0.0.1:1/db"
IDS = ["slash", "blanks", "at-and-question-mark", "percent-escapes", "password-option", "passfile-and-password"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workspace whose mini sweep ran to the end (no database named)."""
    root = tmp_path_factory.mktemp("secrets")
    sweep = launch_mini(root)
    return root / "ws"


@pytest.fixture
def place(finished, tmp_path, monkeypatch):
    """A copy of the finished workspace, an empty config folder, and no database given to this process yet."""
    monkeypatch.delenv("PRUNESWEEP_RESULTS_DB", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "config" / "prunesweep").mkdir(parents=True)
    monkeypatch.setattr(central_results, "_GIVEN", {}, raising=False)
    monkeypatch.setattr(central_results, "_failed_at", {})
    return Path(shutil.copytree(finished, tmp_path / "ws"))


def _sweep(tmp_path: Path, workspace: Path, url=None) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**MINI, "workspace": str(workspace),
                                    **({"results_db": url} if url is not None else {})}))
    return path


def _run(*args) -> str:
    """A command's output and errors (its push retried each time, as a new process would)."""
    central_results._failed_at.clear()
    code, out, err = run_cli(*args)
    assert "Traceback" not in err, err
    return f"{code}\n{out}\n{err}"


def _nowhere(pieces: list[str], outputs: list[str], *folders: Path, skip: tuple[Path, ...] = ()) -> None:
    for text in outputs:
        for piece in pieces:
            assert piece not in text, (piece, text)
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path not in skip:
                data = path.read_bytes()
                for piece in pieces:
                    assert piece.encode() not in data, (piece, path)


def _commands(tmp_path: Path, workspace: Path, sweep: Path) -> list[str]:
    """Every command that records, pushes, stores or shows the workspace's database."""
    return [_run("launch", sweep, "--no-progress", "--workers", "1"), _run("status", workspace),
            _run("status", workspace, "--verify"), _run("results", workspace), _run("results", workspace, "--pivot"),
            _run("report", workspace, "-o", tmp_path / "page.html"), _run("resume", workspace, "--dry-run")]


@pytest.mark.parametrize("url, pieces", FORMS, ids=IDS)
def test_a_password_in_the_sweep_file_is_never_shown_nor_stored(place, tmp_path, url, pieces):
    outputs = _commands(tmp_path, place, _sweep(tmp_path, place, url))
    assert "results database not updated: postgresql://lab:***@127.0.0.1:1/db" in outputs[0] \
        or "results database not updated: postgresql://lab@127.0.0.1:1/db" in outputs[0], outputs[0]
    assert "1 row waiting for 127.0.0.1:1/db" in outputs[1]
    # a malformed URL holding the same password, in the file and as an override
    broken = url.replace("127.0.0.1:1/db", "127.0.0.1:1")
    outputs += [_run("plan", _sweep(tmp_path, place, broken)), _run("launch", _sweep(tmp_path, place, broken)),
                _run("plan", _sweep(tmp_path, place), f"results_db={broken}"),
                _run("plan", _sweep(tmp_path, place), f"results_db={url}", "seeds=[-1]")]
    assert all(output.startswith("2\n") for output in outputs[-4:]), outputs[-4:]
    _nowhere(pieces, outputs, place, tmp_path / "config")
    with closing(sqlite3.connect(place / "ledger.sqlite")) as conn:
        assert json.loads(conn.execute("SELECT spec FROM sweeps").fetchone()[0])["results_db"] == TARGET
    assert json.loads((place / "sweeps" / "mini.json").read_text())["spec"]["results_db"] == TARGET
    with closing(sqlite3.connect(place / central_db.STATE_FILE)) as conn:
        assert conn.execute("SELECT target FROM pushed").fetchall() == [("postgresql+psycopg://lab@127.0.0.1:1/db",)]


@pytest.mark.parametrize("url, pieces", [FORMS[0], FORMS[1], FORMS[5]], ids=[IDS[0], IDS[1], IDS[5]])
@pytest.mark.parametrize("source", ["environment", "config file"])
def test_a_password_from_the_environment_or_the_config_file_is_never_shown_nor_stored(place, tmp_path, monkeypatch,
                                                                                     url, pieces, source):
    config = tmp_path / "config" / "prunesweep" / "config.yaml"
    if source == "environment":
        monkeypatch.setenv("PRUNESWEEP_RESULTS_DB", url)
    else:
        config.write_text(yaml.safe_dump({"results_db": url}))
    outputs = _commands(tmp_path, place, _sweep(tmp_path, place))
    outputs += [_run("results"), _run("results", "--pivot")]  # the database of the environment or config file
    assert outputs[-1].startswith("2\n") and "--db: postgresql://lab" in outputs[-1], outputs[-1]
    _nowhere(pieces, outputs, place, tmp_path / "config", skip=(config,))


@pytest.mark.parametrize("url, pieces", FORMS, ids=IDS)
def test_results_db_never_shows_the_password(place, tmp_path, url, pieces):
    broken = url.replace("127.0.0.1:1/db", "127.0.0.1:1")
    outputs = [_run("results", "--db", url), _run("results", "--db", url, "--pivot"),
               _run("results", "--db", broken), _run("results", "--db", url.replace("postgresql", "mysql", 1))]
    for output in outputs:
        assert output.startswith("2\n") and output.count("prunesweep: error: --db: ") == 1, output
    _nowhere(pieces, outputs, place, tmp_path / "config")


@pytest.mark.parametrize("url, pieces", FORMS, ids=IDS)
def test_every_text_that_shows_a_url_hides_every_piece_of_its_password(url, pieces):
    parsed = central_db.parse(url)
    assert parsed.target == TARGET and parsed.where == "127.0.0.1:1/db"
    for text in (parsed.shown, central_db.shown(url), central_db.redact(url), parsed.hide(f"failed: {url} ({url})"),
                 central_db.describe(url), central_db.target(url)):
        assert not any(piece in text for piece in pieces), text
    assert central_db.shown(url).startswith("postgresql://lab")


@pytest.mark.parametrize("url, shown", [
    ("postgresql://lab:pw@h/db?application_name=a@b", "postgresql://lab:***@b"),  # an '@' after the path
    ("postgresql://lab:Zq8Kx/Pw7Lm@h", "postgresql://lab:***@h"),  # no database
    ("postgresql://h/db?password=my secret&x=1@y", "postgresql://***@y"),
    ("mysql://a:b c@h/d?passfile=/p/q r", "mysql://a:***@h/d?passfile=***"),
])
def test_a_url_that_cannot_be_parsed_is_shown_without_anything_that_may_be_a_secret(url, shown):
    assert central_db.shown(url) == shown
    with pytest.raises(ValueError) as caught:
        central_db.check_url(url)
    assert str(caught.value).startswith(repr(shown))


def test_the_password_of_a_stored_target_comes_from_the_environment_for_that_target_only(place, monkeypatch):
    class Ledger:
        def sweeps(self):
            return [{"spec": json.dumps({"results_db": TARGET})}]

    assert central_results.configured_url(Ledger()) == TARGET  # libpq's PGPASSWORD or ~/.pgpass may serve
    monkeypatch.setenv("PRUNESWEEP_RESULTS_DB", "postgresql://lab:Zq8Kx/Pw7Lm@127.0.0.1:2/db")  # another port
    assert central_results.configured_url(Ledger()) == TARGET
    monkeypatch.setenv("PRUNESWEEP_RESULTS_DB", FORMS[0][0])
    assert central_results.configured_url(Ledger()) == FORMS[0][0]
    central_results.remember(FORMS[4][0])  # what launch was given wins over the environment
    assert central_results.configured_url(Ledger()) == FORMS[4][0]


def test_a_state_file_of_the_previous_version_loses_the_secrets_it_kept(tmp_path):
    """Version 1 stored a target as the URL less a password it did not always find."""
    path = tmp_path / central_db.STATE_FILE
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE identity (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE pushed (target TEXT PRIMARY KEY, last_rowid INTEGER NOT NULL DEFAULT 0, "
                     "pushed_at REAL, failed_at REAL, error TEXT)")
        conn.executemany("INSERT INTO pushed VALUES (?, ?, NULL, 1.0, ?)", [
            ("postgresql+psycopg://lab:Zq8Kx/Pw7Lm@127.0.0.1:1/db", 3, "postgresql://lab:Zq8Kx/Pw7Lm@127.0.0.1:1/db"),
            ("postgresql+psycopg://lab@127.0.0.1:1/db?password=Rf7Gs2Ue4", 5, "refused"),
        ])
        conn.execute("PRAGMA user_version = 1")
    central_db.workspace_id(tmp_path)  # the first writer migrates the file
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT target, last_rowid, error FROM pushed").fetchall() == \
            [("postgresql+psycopg://lab@127.0.0.1:1/db", 5, None)]
        conn.execute("VACUUM")  # the old rows' bytes leave the free pages too
    _nowhere(["Zq8Kx", "Pw7Lm", "Rf7Gs2Ue4"], [], tmp_path)
