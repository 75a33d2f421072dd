"""Fuzz of the habits' parsers (issue 27, point 5): numbers written every way YAML 1.2 allows, Hydra-like and
misspelt command lines, and ``results --where`` filters. Each must exit 0 or 2 (2: one line, no traceback)
and write nothing. The seed is random per run (``PRUNESWEEP_FUZZ_SEED`` replays one) and named in every
failure; ``PRUNESWEEP_FUZZ_N`` scales the number of cases (default 3,000: a few seconds)."""
from __future__ import annotations

import contextlib
import io
import os
import random

import pytest
from conftest import ROOT, results_row

N = int(os.environ.get("PRUNESWEEP_FUZZ_N", "3000"))
SEED = int(os.environ.get("PRUNESWEEP_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))
DIGITS = ROOT / "sweeps" / "digits.yaml"

KEYS = ["seeds", "mask_source", "init", "rewind", "pruning.fractions", "pruning.rate", "recipes.labels.lr",
        "recipes.labels.optimizer", "recipes.labels.epochs", "arch.width", "local.workers", "name", "backend"]
VALUES = ["0", "1", "0,1,2", "[0,1]", "labels", "rotnet,random", "[rotnet]", "1e-3", "5E-4", "1ep", "0.5",
          "adam", "'1e-3'", "", "[", "{a: 1}", "-1", "x,", ",", "1e5", "local", "0.8, 0.5"]
PREFIXES = ["", "", "", "+", "++", "~", "--", "-"]
OPTIONS = ["-m", "--multirun", "--workers", "0", "--workers", "-3", "--workers", "99999", "--graph", "-x", "--=1"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    from orchestrator.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except Exception as error:  # noqa: BLE001 - any other escape is the failure this test looks for
            raise AssertionError(f"PRUNESWEEP_FUZZ_SEED={SEED}: {argv!r}: {type(error).__name__}: {error}") from error
    return code, out.getvalue(), err.getvalue()


def _check(code: int, err: str, argv: list[str]) -> None:
    assert code in (0, 2), f"PRUNESWEEP_FUZZ_SEED={SEED}: {argv!r}: exit {code}: {err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prunesweep: error: "), f"seed {SEED}: {argv!r}: {err}"


def _misspelt(word: str, rng: random.Random) -> str:
    """``word`` with one letter dropped, doubled or swapped with the next."""
    i = rng.randrange(len(word))
    return rng.choice([word[:i] + word[i + 1:], word[:i] + word[i] * 2 + word[i + 1:],
                       word[:i] + word[i + 1:i + 2] + word[i:i + 1] + word[i + 2:]]) or word


def _number(rng: random.Random) -> tuple[str, float]:
    """A number in one of YAML 1.2's exponent forms, and its value."""
    mantissa = rng.choice([str(rng.randrange(1, 1000)), f"{rng.randrange(0, 100)}.{rng.randrange(0, 1000)}",
                           f".{rng.randrange(1, 1000)}", f"{rng.randrange(1, 10)}."])
    exponent = rng.choice(["", "+", "-"]) + str(rng.randrange(0, 12))
    text = rng.choice(["", "-", "+"]) + mantissa + rng.choice("eE") + exponent
    return text, float(text)


def test_numbers_in_every_exponent_form_are_read_as_floats():
    from orchestrator.yaml_input import load_yaml

    rng = random.Random(SEED)
    for _ in range(N):
        text, value = _number(rng)
        assert load_yaml(text) == value, f"PRUNESWEEP_FUZZ_SEED={SEED}: {text!r}"
        assert load_yaml(f"{{lr: {text}, l: [{text}]}}") == {"lr": value, "l": [value]}, f"seed {SEED}: {text!r}"
        assert load_yaml(f"'{text}'") == text


def test_numbers_as_overrides_plan_or_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED)
    for _ in range(max(N // 30, 10)):
        text, value = _number(rng)
        argv = ["plan", str(DIGITS), f"recipes.labels.lr={text}"]
        code, _, err = _run(argv)
        _check(code, err, argv)
        assert (code == 0) == (value > 0), f"PRUNESWEEP_FUZZ_SEED={SEED}: {argv!r}: {err}"
    assert list(tmp_path.iterdir()) == []


def test_hydra_like_and_misspelt_command_lines_exit_0_or_2_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED)
    for _ in range(max(N // 10, 20)):
        args = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            key = rng.choice(KEYS)
            key = _misspelt(key, rng) if rng.random() < 0.2 else key
            value = rng.choice(VALUES)
            value = _misspelt(value, rng) if value and rng.random() < 0.2 else value
            args.append(rng.choice(PREFIXES) + key + ("" if rng.random() < 0.05 else "=") + value)
        if rng.random() < 0.3:
            args.insert(rng.randrange(len(args) + 1), rng.choice(OPTIONS))
        argv = [rng.choice(["plan", "plan", "launch"]), str(DIGITS), *args]
        if argv[0] == "launch":
            argv.append("--max-stages=1")  # never runs: a valid launch is refused before anything is written
        code, _, err = _run(argv)
        _check(code, err, argv)
        assert list(tmp_path.iterdir()) == [], f"PRUNESWEEP_FUZZ_SEED={SEED}: {argv!r} wrote"


@pytest.fixture
def workspace(tmp_path):
    import results
    from orchestrator.state.ledger import Ledger

    path = tmp_path / "ws"
    path.mkdir()
    Ledger(path).close()
    results.record(path, [results_row(seed=seed, mask_source=source, top1=0.5 + seed / 10)
                          for seed in range(2) for source in ("labels", "rotnet")])
    return path


def test_random_where_filters_exit_0_or_2_in_one_line(workspace):
    columns = ["mask_source", "init", "seed", "top1", "level", "nominal_fraction", "sweep", "workspace", "x"]
    values = ["labels", "rotnet", "rotnett", "0", "1", "7", "0.512", "51.2%", "none", "", "a,b", "1e-3", "winning"]
    ops = ["=", "!=", "<", ">=", " in ", " not in ", "==", " ~ "]
    rng = random.Random(SEED)
    before = sorted(p.name for p in workspace.iterdir())
    for _ in range(max(N // 30, 10)):
        where = " and ".join(
            (_misspelt(column, rng) if rng.random() < 0.1 else column) + rng.choice(ops) + rng.choice(values)
            for column in rng.sample(columns, rng.choice((1, 1, 2))))
        argv = ["results", str(workspace), "--where", where, *rng.choice([[], ["--pivot"], ["--group-by", "init"]])]
        code, _, err = _run(argv)
        _check(code, err, argv)
    assert sorted(p.name for p in workspace.iterdir()) == before
