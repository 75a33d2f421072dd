"""The habits researchers bring (issue 27, point 5): YAML 1.2 numbers, Hydra's command-line forms,
"did you mean" for misspelt keys, values and columns, filters on values no row holds, and the
bounds of ``--workers``. Each refusal is exit 2 and one line."""
from __future__ import annotations

import contextlib
import io
import os
import signal
import types
from pathlib import Path

import pytest
import yaml
from conftest import BASE_SWEEP, ROOT, results_row

DIGITS = ROOT / "sweeps" / "digits.yaml"


def cli(*args, cwd=None):
    """``prunesweep ARGS`` through the command's entry point, in this process."""
    from orchestrator.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(here)
        signal.signal(signal.SIGTERM, handler)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def refused(result, *needles) -> str:
    """The one line of a refusal (exit 2), checked to hold every needle."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunesweep: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- YAML 1.2 numbers


@pytest.mark.parametrize("text", ["1e-3", "5e-4", "1E5", "-2.5e-2", "1.0e5", "+3e0", ".5e1", "2E+2", "7e-07"])
def test_exponent_numbers_read_as_numbers(text):
    from orchestrator.yaml_input import load_yaml

    assert load_yaml(text) == float(text) and isinstance(load_yaml(text), float)
    assert load_yaml(f"lr: {text}") == {"lr": float(text)}
    assert load_yaml(f"[{text}]") == [float(text)]


@pytest.mark.parametrize("text", ["'1e-3'", '"5e-4"', "1e", "e5", "1e-3x", "1e3.5"])
def test_what_is_no_number_stays_text(text):
    from orchestrator.yaml_input import load_yaml

    assert isinstance(load_yaml(text), str)


def test_exponent_numbers_plan_from_the_file_and_from_overrides(tmp_path):
    sweep = DIGITS.read_text().replace("lr: 0.01", "lr: 5e-4")
    assert "5e-4" in sweep
    (tmp_path / "s.yaml").write_text(sweep)
    result = cli("plan", tmp_path / "s.yaml", "recipes.rotnet.lr=1e-3", "pruning.rate=2E-1", "recipes.labels.momentum=9e-1")
    assert result.returncode == 0, result.stderr


def test_an_exponent_number_gives_the_stage_keys_of_its_decimal_form(tmp_path):
    from orchestrator.planning.planner import plan_sweep
    from orchestrator.spec import load_spec

    def keys(lr: str, rate: str) -> set[str]:
        text = yaml.safe_dump({**BASE_SWEEP, "workspace": str(tmp_path / "ws")})
        text = text.replace("lr: 0.003", f"lr: {lr}").replace("pruning:\n", f"pruning:\n  rate: {rate}\n")
        path = tmp_path / "s.yaml"
        path.write_text(text)
        return set(plan_sweep(load_spec(path)).stages)

    assert keys("3e-3", "2e-1") == keys("0.003", "0.2")


def test_a_quoted_number_is_still_text():
    refused(cli("plan", DIGITS, "recipes.labels.lr='1e-3'"), "recipes.labels.lr: Input should be a valid number")


# --------------------------------------------------------------------------- Hydra's forms


@pytest.mark.parametrize("override,needles", [
    ("seeds=0,1,2", ["seeds: ", "a list is written in brackets: seeds=[0,1,2]"]),
    ("mask_source=labels,rotnet", ["a list is written in brackets: mask_source=[labels,rotnet]"]),
    ("pruning.fractions=0.8, 0.5", ["pruning.fractions=[0.8,0.5]"]),
    ("+seeds=[1]", ["Hydra's '+'", "write seeds=[1]"]),
    ("++pruning.rate=0.5", ["Hydra's '++'", "write pruning.rate=0.5"]),
    ("~seeds", ["Hydra's '~'", "leave seeds out of the sweep file"]),
], ids=lambda value: value if isinstance(value, str) else None)
def test_hydra_overrides_are_answered_with_the_form_to_write(override, needles):
    refused(cli("plan", DIGITS, override), "sweeps/digits.yaml: ", *needles)


@pytest.mark.parametrize("args,needles", [
    (["plan", DIGITS, "-m", "seeds=[0]"], ["-m: there is no multirun flag", "seeds=[0,1,2]"]),
    (["launch", DIGITS, "--multirun"], ["--multirun: there is no multirun flag"]),
    (["plan", DIGITS, "--seeds=[0,1]"], ["an override is written without dashes: seeds=[0,1]"]),
    (["launch", DIGITS, "--pruning.rate=0.5"], ["an override is written without dashes: pruning.rate=0.5"]),
])
def test_hydra_and_dashed_arguments_are_answered_in_one_line(tmp_path, args, needles):
    refused(cli(*args, cwd=tmp_path), *needles)
    assert list(tmp_path.iterdir()) == []


def test_a_single_value_where_a_list_is_asked_is_that_list(tmp_path):
    from orchestrator.spec import load_spec

    spec = load_spec(DIGITS, ["mask_source=rotnet", "seeds=3", "rewind=1ep", "init=reinit", "pruning.fractions=0.5"])
    assert (spec.mask_source, spec.seeds, spec.rewind, spec.init, spec.pruning.fractions) == (
        ["rotnet"], [3], ["1ep"], ["reinit"], [0.5])
    result = cli("plan", DIGITS, "mask_source=rotnet")
    assert result.returncode == 0 and "(1 mask source x 2 inits" in result.stdout, result.stdout + result.stderr


def test_a_single_value_where_the_file_asks_a_list_gets_the_bracketed_form(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(DIGITS.read_text().replace("mask_source: [labels, rotnet, random]", "mask_source: rotnet"))
    refused(cli("plan", path), "mask_source: Input should be a valid list, got 'rotnet'",
            "a list is written in brackets: [rotnet]")


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize("override,needle", [
    ("seed=[1]", "seed: unknown key (did you mean 'seeds'?); allowed here: name,"),
    ("recipes.labels.optimzer=adam", "recipes.labels.optimzer: unknown key (did you mean 'optimizer'?)"),
    ("pruning.fraction=[0.5]", "(did you mean 'fractions'?)"),
    ("mask_source=[labels,rotnett]", "mask_source[1]: unknown mask source 'rotnett' (did you mean 'rotnet'?); allowed"),
    ("init=[reinitt]", "unknown init 'reinitt' (did you mean 'reinit'?)"),
    ("recipes.labels.optimizer=adamm", "got 'adamm' (did you mean 'adam'?)"),
    ("backend=slrum", "(did you mean 'slurm'?)"),
    ("recipes.labls.lr=1", "recipes.labls: unknown recipe (did you mean 'labels'?)"),
    ("dataset.name=Digits", "unknown dataset 'Digits' (did you mean 'digits'?)"),
    ("arch.name=resnet19", "(did you mean 'resnet18'?)"),
    ("local.ranks={densee: 2}", "local.ranks.densee: unknown stage kind (did you mean 'dense'?)"),
])
def test_a_misspelt_key_or_value_gets_the_closest_allowed_one(override, needle):
    refused(cli("plan", DIGITS, override), needle)


def test_a_word_like_no_allowed_one_gets_no_guess():
    line = refused(cli("plan", DIGITS, "mask_source=[simclr]"), "unknown mask source 'simclr'; allowed: labels")
    assert "did you mean" not in line


@pytest.fixture
def workspace(tmp_path):
    """A workspace of 13 results rows: labels and rotnet, winning ticket and reinit, 3 seeds; one random row."""
    import results
    from orchestrator.state.ledger import Ledger

    path = tmp_path / "ws"
    path.mkdir()
    Ledger(path).close()
    results.record(path, [results_row(seed=seed, mask_source=source, init=init, top1=0.5 + seed / 10)
                          for seed in range(3) for source in ("labels", "rotnet") for init in ("winning_ticket", "reinit")]
                   + [results_row(mask_source="random", init="reinit", rewind="-", level=3, top1=0.1)])
    return path


@pytest.mark.parametrize("args,needle", [
    (["--where", "mask_sourc=rotnet"], "--where: filter 'mask_sourc=rotnet': unknown column 'mask_sourc' "
                                       "(did you mean 'mask_source'?); allowed columns: sweep,"),
    (["--group-by", "mask_sorce"], "--group-by: unknown column 'mask_sorce' (did you mean 'mask_source'?)"),
    (["--compare", "int=winning_ticket,reinit"], "--compare: unknown column 'int' (did you mean 'init'?)"),
    (["--compare", "mask_source=labels,rotnett"], "--compare: mask_source=rotnett: no row has this value "
                                                  "(did you mean 'rotnet'?); present: labels, random, rotnet"),
])
def test_results_options_name_the_closest_column_or_value(workspace, args, needle):
    refused(cli("results", workspace, *args), needle)


# --------------------------------------------------------------------------- a filter on a value no row holds


@pytest.mark.parametrize("args,needle", [
    (["--where", "mask_source=rotnett"], "--where: filter 'mask_source=rotnett': no row has this value (did you mean "
                                         "'rotnet'?); present: labels, random, rotnet"),
    (["--where", "init!=reinitt"], "filter 'init!=reinitt': no row has this value (did you mean 'reinit'?)"),
    (["--where", "mask_source in labels,rotnett"], "filter 'mask_source in labels,rotnett': no row has this value"),
    (["--where", "mask_source=rotnet and init=winning_tickt"], "filter 'init=winning_tickt': no row has this value"),
    (["--where", "nominal_fraction=0.3"], "no row has this value; present: 0.512"),
    (["--where", "seed not in 7"], "filter 'seed not in 7': no row has this value; present: 0, 1, 2"),
    (["--sweep", "digit"], "--sweep: filter 'sweep=digit': no row has this value (did you mean 'digits'?)"),
])
def test_a_filter_on_a_value_no_row_holds_says_so_with_the_values_there_are(workspace, args, needle):
    refused(cli("results", workspace, *args), needle)
    refused(cli("results", workspace, "--pivot", *args), needle)


def test_filters_on_values_that_exist_keep_their_rows_or_say_none_match(workspace):
    kept = cli("results", workspace, "--where", "mask_source=rotnet", "--where", "init!=reinit")
    assert kept.returncode == 0 and "rotnet winning_ticket" in kept.stdout and "reinit" not in kept.stdout
    none = cli("results", workspace, "--where", "mask_source=random", "--where", "init=winning_ticket")
    assert none.returncode == 0 and "no results yet match the filters" in none.stdout  # each value exists
    missing = cli("results", workspace, "--where", "level=none")
    assert missing.returncode == 0, missing.stderr


def test_filters_on_an_empty_workspace_find_no_results_yet(tmp_path):
    from orchestrator.state.ledger import Ledger

    Ledger(tmp_path).close()
    result = cli("results", tmp_path, "--where", "mask_source=rotnett")
    assert result.returncode == 0 and "no results yet match the filters" in result.stdout


# --------------------------------------------------------------------------- --workers


@pytest.mark.parametrize("value", ["0", "-1", "-8", "1025", "100000", "two"])
def test_workers_outside_1_to_1024_are_refused_in_one_line(value, tmp_path):
    from orchestrator.arguments import parse_arguments

    for command in ("launch", "resume"):
        target = DIGITS if command == "launch" else tmp_path
        with contextlib.redirect_stderr(io.StringIO()) as err, pytest.raises(SystemExit) as stop:
            parse_arguments([command, str(target), "--workers", value])
        assert stop.value.code == 2
        line, = err.getvalue().strip().splitlines()
        assert line.startswith("prunesweep: error: argument --workers: expected an integer from 1 to 1,024")


def test_workers_inside_the_bounds_are_taken():
    from orchestrator import arguments
    from orchestrator.backends.local import settings

    assert arguments.parse_arguments(["launch", "s.yaml", "--workers", "1024"]).workers == 1024
    assert arguments.parse_arguments(["resume", "ws", "--workers", "1"]).workers == 1
    assert arguments.MAX_WORKERS == settings.MAX_WORKERS


def test_the_sweep_files_local_workers_has_the_same_bounds():
    refused(cli("plan", DIGITS, "local.workers=0"), "local.workers: Input should be greater than 0")
    refused(cli("plan", DIGITS, "local.workers=1025"), "local.workers: Input should be less than or equal to 1024")


def test_argparse_refusals_are_one_line(tmp_path):
    refused(cli("plan", DIGITS, "--max-stages", "0"), "argument --max-stages: expected a positive integer",
            "(see `prunesweep plan --help`)")
    refused(cli("results", tmp_path, "--bogus"), "unrecognized arguments: --bogus")
