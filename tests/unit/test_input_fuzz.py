"""Fuzz of what parses user input: random mutations of the demo sweep and random overrides, and of the
records a workspace holds and its commands read back (issue 25).

Every run of ``prunesweep plan`` on a mutated sweep must exit 0 or 2 (never a traceback:
anything but a UserError escaping ``main`` fails the test) and write nothing. Every command run
over a mutated workspace record (a held workspace lock's or stage lock's record, a ``DONE.json``,
a ``sweeps/<name>.json``, a row of ``results.sqlite``) must end within a timeout, without a
traceback, with an exit code among 0, 1, 2 and 3. The seed is random per run
(``PRUNESWEEP_FUZZ_SEED`` replays one) and named in every failure; ``PRUNESWEEP_FUZZ_N`` sets the
number of sweep mutations (default 3,000, about 15 s on 2 cores), ``PRUNESWEEP_RECORD_FUZZ_N``
that of record mutations (default 5,000, about 45 s on one core).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from in_process_cli import run_cli

from conftest import ROOT

N = int(os.environ.get("PRUNESWEEP_FUZZ_N", "3000"))
SEED = int(os.environ.get("PRUNESWEEP_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))

#: values a mutation may put anywhere: wrong types, edges of ranges, odd strings, nesting.
VALUES = [
    None, True, False, 0, 1, -1, 2, 7, 0.5, 1.0, -0.0, 1e-300, 1e308, float("nan"), float("inf"), 2**31, 2**64,
    10**30, "", "x", "0.1", "1", "true", "~", "~/x", "../..", "/proc/x", "a\x00b", "é", "1ep", "-1ep", "5it",
    "labels", "rotnet", "random", "winning_ticket", "reinit", "digits", "cifar10", "small_cnn", "resnet50",
    "sgd", "adam", "cosine", "step", "global", [], {}, [[[[[[]]]]]], [0, 0], [0.8, 0.8], [1, "a", None],
    {"kind": "step"}, {"name": "digits"}, {"a": {"b": {"c": {}}}}, list(range(50)), "x" * 300,
]
#: override value texts: YAML fragments, broken YAML, tags, anchors, long and nested text.
TEXTS = ["0", "-1", "1.5", ".nan", ".inf", "true", "null", "~", "[", "]", "{", "{a: 1, a: 2}", "[0, 1, 2]",
         "[0.8, 1.5]", "!!python/object:os.system", "!!binary aGk=", "&a [1]", "*a", ": :", "'", '"', "\\x00",
         "a: b", "- x", "[" * 50 + "]" * 50, "9" * 400, "1e9", "0x10", "0o7", "1_000", "2001-01-01", "é", "x" * 200]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


def _mutate(sweep: dict, rng: random.Random) -> dict:
    sweep = copy.deepcopy(sweep)
    for _ in range(rng.choice((1, 1, 2, 3))):
        path = rng.choice([p for p in _paths(sweep) if p])
        parent = sweep
        for part in path[:-1]:
            parent = parent[part]
        key, op = path[-1], rng.random()
        if op < 0.15 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.25 and isinstance(parent, dict):
            parent[rng.choice(["bogus", "x" * 40, 3, "recipes", "local"])] = copy.deepcopy(rng.choice(VALUES))
        elif op < 0.35:
            parent[key] = [parent[key]]
        elif op < 0.45:
            parent[key] = {"nested": parent[key]}
        else:
            parent[key] = copy.deepcopy(rng.choice(VALUES))
    return sweep


def _override(sweep: dict, rng: random.Random) -> str:
    path = rng.choice([p for p in _paths(sweep) if p and all(isinstance(x, str) for x in p)] + [("bogus",), ("a", "")])
    key = ".".join(path) if rng.random() < 0.9 else rng.choice(["", ".", "a..b", "x" * 100, "seeds.0", "é"])
    return f"{key}={rng.choice(TEXTS)}" if rng.random() < 0.95 else key


def test_random_sweeps_and_overrides_exit_0_or_2_and_write_nothing(tmp_path, monkeypatch):
    from orchestrator.cli import main

    base = yaml.safe_load((ROOT / "sweeps" / "digits.yaml").read_text())
    base.update(seeds=[0], workspace=str(tmp_path / "ws"))
    base["pruning"]["fractions"] = [0.8, 0.05]
    # the values include "~", "~/x" and "../..": plan runs two folders below tmp_path (so ".." and "../.."
    # name the test's own folders) with HOME a fresh folder of the test's own, and all of them are watched
    cwd, home = tmp_path / "up" / "cwd", tmp_path / "home"
    cwd.mkdir(parents=True)
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    watched = ["home", "sweep.yaml", "up", "up/cwd"]
    rng = random.Random(SEED)
    codes = {0: 0, 2: 0}
    for i in range(N):
        sweep = _mutate(base, rng) if rng.random() < 0.7 else copy.deepcopy(base)
        path = tmp_path / "sweep.yaml"
        try:
            text = yaml.safe_dump(sweep, allow_unicode=True)
        except yaml.YAMLError:
            continue
        path.write_text(text) if rng.random() < 0.95 else path.write_bytes(text.encode()[: rng.randrange(50)])
        overrides = [_override(base, rng) for _ in range(rng.choice((0, 0, 1, 2)))]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                code = main(["plan", str(path), *overrides])
            except SystemExit as exit_:  # argparse's own refusals
                code = exit_.code
            except Exception as error:
                raise AssertionError(f"PRUNESWEEP_FUZZ_SEED={SEED}, mutation {i}: {type(error).__name__}: {error}\n"
                                     f"sweep: {sweep!r}\noverrides: {overrides!r}") from error
        assert code in (0, 2), f"PRUNESWEEP_FUZZ_SEED={SEED}, mutation {i}: exit {code}: {err.getvalue()}"
        if code == 2:
            assert len(err.getvalue().strip().splitlines()) <= 2, f"seed {SEED}, mutation {i}: {err.getvalue()}"
        codes[code] += 1
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == watched, \
            f"seed {SEED}, mutation {i} wrote"
    assert codes[0] > N // 20 and codes[2] > N // 4, codes  # both paths were exercised


# ---- workspace records ------------------------------------------------------------------------------

RECORD_N = int(os.environ.get("PRUNESWEEP_RECORD_FUZZ_N", "5000"))
#: each record kind's share of the mutations (its commands take from 3 ms to 40 ms in process).
SHARES = {".lock": 0.44, "stage.lock": 0.3, "DONE.json": 0.14, "sweeps/<name>.json": 0.06, "results.sqlite": 0.06}
#: seconds a command may take before it counts as hung.
COMMAND_TIMEOUT_S = 30
#: values a results cell may be given: text in number columns, blobs, extremes, NULL in NOT NULL ones.
CELLS = [None, "", "x", "1.5", "nan", "-inf", "2001-01-01", "a\nb", "é" * 500, b"\x00\xff", 0, -1, 2**63 - 1, -2**63,
         0.5, 1e308, -1e308, float("inf"), float("-inf")]
#: flocks a file as a live launch or stage does, until killed; the test writes the records into it.
HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(600)
""")


class _Hang(BaseException):
    """A command ran past COMMAND_TIMEOUT_S (a BaseException: no ``except Exception`` of a command swallows it)."""


def _timed_cli(*args) -> tuple[int, str, str]:
    """:func:`run_cli` stopped by _Hang after COMMAND_TIMEOUT_S."""
    def hang(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, COMMAND_TIMEOUT_S)
    try:
        return run_cli(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _damaged_bytes(data: bytes, rng: random.Random) -> bytes:
    """``data`` cut, flipped, spliced, repeated or replaced by bytes no JSON reader likes."""
    op = rng.randrange(6)
    at = rng.randrange(len(data) + 1)
    if op == 0:
        return data[:at]
    if op == 1 and data:
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]
    if op == 2:
        return data[:at] + rng.randbytes(rng.randrange(1, 20)) + data[at:]
    if op == 3:
        return data * rng.choice((2, 300))
    return rng.choice([b"", b"\xef\xbb\xbf" + data, b"[" * 5000, b'{"a":' * 3000, b"\x00" * 10, b"\xff\xfe", b"1e999",
                       b'{"since": 1e300, "pid": 1e300}', b'{"files": {"../../x": {"size": 1, "sha256": "0"}}}'])


def _record(base: dict, rng: random.Random) -> bytes:
    """A mutation of the JSON record ``base``: its structure (types, keys, nesting), the whole of it, its bytes."""
    choice = rng.random()
    value = _mutate(base, rng) if choice < 0.65 else copy.deepcopy(rng.choice(VALUES)) if choice < 0.75 else base
    data = json.dumps(value).encode()
    return _damaged_bytes(data, rng) if rng.random() < 0.3 else data


def _write_in_place(path: Path, data: bytes) -> bytes:
    """What another process's writer leaves in a file it holds locked (its inode kept); ``data``."""
    with open(path, "r+b") as handle:
        handle.truncate()
        handle.write(data)
    return data


def _replace(path: Path, data: bytes) -> bytes:
    """``data`` renamed over ``path``, as an atomic writer (or a colleague's editor) leaves it; ``data``."""
    temp = path.with_name(path.name + ".fuzz")
    temp.write_bytes(data)
    os.replace(temp, path)
    return data


def _mutate_results(workspace: Path, rng: random.Random) -> tuple:
    """A results row given a value of the wrong type or range, a damaged copy added, or the rows removed."""
    from results.row import COLUMNS

    with contextlib.closing(sqlite3.connect(workspace / "results.sqlite")) as conn:
        column, value, op = rng.choice(COLUMNS), rng.choice(CELLS), rng.random()
        try:
            if op < 0.6:
                conn.execute(f"UPDATE results SET {column} = ?", (value,))
            elif op < 0.9:
                row = dict(zip(COLUMNS, conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results").fetchone(),
                               strict=True))
                row.update({column: value, "stage_key": f"copy-{rng.randrange(10**6)}"})
                conn.execute(f"INSERT OR IGNORE INTO results VALUES ({', '.join('?' for _ in COLUMNS)})",
                             list(row.values()))
            else:
                conn.execute("DELETE FROM results")
        except sqlite3.IntegrityError:  # NULL in a NOT NULL column: SQLite keeps the row as it was
            pass
        conn.commit()
    return column, value, op


@contextlib.contextmanager
def _held(path: Path):
    """Another live process holds the lock file ``path``."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.fixture(scope="module")
def finished_workspace(tmp_path_factory) -> Path:
    """A finished workspace of every stage kind (never changed: the fuzz damages copies): the committed
    old one, launched again (nothing runs) so that its stores are current and it keeps its sweep's record."""
    root = tmp_path_factory.mktemp("records")
    shutil.copytree(ROOT / "tests" / "fixtures" / "workspace_v1", root / "ws")
    sweep = yaml.safe_load((ROOT / "tests" / "fixtures" / "workspace_v1.yaml").read_text())
    (root / "fixture.yaml").write_text(yaml.safe_dump({**sweep, "workspace": str(root / "ws")}))
    code, out, err = run_cli("launch", root / "fixture.yaml", "--no-progress")
    assert code == 0 and "ran 0 stage(s)" in out, out + err
    return root / "ws"


class _RecordFuzz:
    """Runs commands over one record kind's mutations and checks how each ends."""

    def __init__(self, base: Path, workspace: Path, rng: random.Random):
        self.base, self.workspace, self.rng = base, workspace, rng
        self.codes: dict[int, int] = {}
        self.subprocesses = 0

    def fresh(self) -> None:
        """The workspace as the finished sweep left it."""
        shutil.rmtree(self.workspace, ignore_errors=True)
        shutil.copytree(self.base, self.workspace, symlinks=True)

    def run(self, kind: str, i: int, data: object, *args, allowed=(0, 1, 2, 3)) -> int:
        """``prunesweep ARGS`` on the workspace, in process (the first of each kind also as a process)."""
        where = f"PRUNESWEEP_FUZZ_SEED={SEED}, {kind} mutation {i}, {' '.join(map(str, args))}"
        shown = repr(data)[:400]
        try:
            code, _, err = _timed_cli(*args)
        except _Hang:
            raise AssertionError(f"{where}: no end after {COMMAND_TIMEOUT_S} s; record: {shown}") from None
        except Exception as error:
            raise AssertionError(f"{where}: {type(error).__name__}: {error}; record: {shown}") from error
        assert code in allowed, f"{where}: exit {code}: {err}; record: {shown}"
        assert "Traceback" not in err and (code == 0 or len(err.strip().splitlines()) == 1), f"{where}: {err}"
        if i == 0:
            self.subprocesses += 1
            done = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True,
                                  text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=COMMAND_TIMEOUT_S)
            assert done.returncode in allowed and "Traceback" not in done.stderr, f"{where}: {done.stderr}"
        self.codes[code] = self.codes.get(code, 0) + 1
        return code

    def each(self, kind: str, count: int, mutate: Callable[[int], object], commands: Callable[[], list[tuple]],
             allowed=(0, 1, 2, 3), restore: bool = False) -> None:
        """``count`` mutations of one record kind, each followed by the commands chosen for it."""
        for i in range(count):
            data = mutate(i)
            for command in commands():
                self.run(kind, i, data, *command, allowed=allowed)
            if restore:
                self.fresh()


@pytest.fixture
def scratch(tmp_path) -> Path:
    """A folder for the damaged copies: in memory where the machine has one (``/dev/shm``), so the
    thousands of commands pay for their own work, not for the syncs of the databases they write."""
    if not os.access("/dev/shm", os.W_OK):
        return tmp_path
    folder = Path(tempfile.mkdtemp(prefix="prunesweep-fuzz-", dir="/dev/shm"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_damaged_workspace_records_end_in_a_documented_exit_within_a_timeout(finished_workspace, scratch):
    rng = random.Random(SEED)
    workspace = scratch / "ws"
    fuzz = _RecordFuzz(finished_workspace, workspace, rng)
    fuzz.fresh()
    counts = {kind: max(1, round(RECORD_N * share)) for kind, share in SHARES.items()}
    ws = str(workspace)
    lock = {"host": "node7", "pid": 4242, "since": 1.7e9, "command": "prunesweep resume"}
    with _held(workspace / ".lock"):  # a launch holds the workspace: resume and repair are refused, status reads
        fuzz.each(".lock", counts[".lock"], lambda i: _write_in_place(workspace / ".lock", _record(lock, rng)),
                  lambda: [rng.choice([("resume", ws, "--no-progress"), ("repair", ws)])], allowed=(3,))
        fuzz.run(".lock", -1, None, "status", ws, allowed=(0,))
    stage = next((workspace / "stages").glob("eval-*"))
    (stage / "DONE.json").unlink()  # the stage runs: a live process holds its lock
    stage_lock = {"host": "node7", "pid": 4242, "since": 1.7e9}
    with _held(stage / "stage.lock"):
        fuzz.each("stage.lock", counts["stage.lock"],
                  lambda i: _write_in_place(stage / "stage.lock", _record(stage_lock, rng)),
                  lambda: [("status", ws)] if rng.random() < 0.9 else [("resume", ws, "--dry-run")], allowed=(0,))
    fuzz.fresh()
    manifest = json.loads((stage / "DONE.json").read_bytes())
    fuzz.each("DONE.json", counts["DONE.json"], lambda i: _replace(stage / "DONE.json", _record(manifest, rng)),
              lambda: [rng.choice([("status", ws), ("status", ws, "--verify"), ("resume", ws, "--dry-run"),
                                   ("repair", ws)])], restore=True)
    record_path = workspace / "sweeps" / "digits_v1.json"
    record = json.loads(record_path.read_bytes())

    def sweep_record(i: int) -> bytes:
        if rng.random() < 0.5:
            (workspace / "ledger.sqlite").unlink()  # repair rebuilds the ledger from the record
        return _replace(record_path, _record(record, rng))

    fuzz.each("sweeps/<name>.json", counts["sweeps/<name>.json"], sweep_record, lambda: [("repair", ws), ("status", ws)],
              restore=True)
    fuzz.each("results.sqlite", counts["results.sqlite"], lambda i: _mutate_results(workspace, rng),
              lambda: [rng.choice([("results", ws), ("results", ws, "--pivot"), ("status", ws), ("repair", ws)])],
              restore=True)
    assert sum(counts.values()) >= min(RECORD_N, 5000) and fuzz.subprocesses >= len(SHARES), counts
    assert len(fuzz.codes) > 1, fuzz.codes  # both sound and refused records were met
