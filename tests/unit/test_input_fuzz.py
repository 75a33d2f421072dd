"""Fuzz of what parses user input: random mutations of the demo sweep and random overrides.

Every run of ``prunesweep plan`` on a mutated sweep must exit 0 or 2 (never a traceback:
anything but a UserError escaping ``main`` fails the test) and write nothing. The seed is
random per run (``PRUNESWEEP_FUZZ_SEED`` replays one) and named in every failure;
``PRUNESWEEP_FUZZ_N`` sets the number of mutations (default 3,000, about 15 s on 2 cores).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import random

import yaml

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
