"""Bad input through the real command: exit 2, one message, no traceback, nothing written."""
from __future__ import annotations

import contextlib
import io
import os
import signal
import types
from pathlib import Path
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


def run_process(*args, cwd=None):
    """``prunesweep ARGS`` as a separate process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def run_cli(*args, cwd=None):
    """``prunesweep ARGS`` through the command's own entry point, in this process (a second each saved).

    Any exception but the command's own exit escapes to the test: a traceback fails it.
    ``test_the_real_process_refuses_bad_input_in_one_line`` runs the same path as a process.
    """
    from orchestrator.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(arg) for arg in args])
            except SystemExit as exit_:  # argparse's refusals and --help
                code = exit_.code
    finally:
        os.chdir(here)
        signal.signal(signal.SIGTERM, handler)
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def _assert_clean_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunesweep: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("command", ["plan", "launch"])
@pytest.mark.parametrize("mutate,needles", [
    (lambda s: s.update(bogus=1), ["bogus", "allowed"]),
    (lambda s: s["pruning"].update(fractions=[0.5, 2]), ["pruning.fractions[1]", "(0, 1]"]),
    (lambda s: s.update(rewind=["-2ep"]), ["rewind[0]"]),
    (lambda s: s.update(mask_source=["labels", "exemplar2"]), ["mask_source[1]", "allowed"]),
    (lambda s: s.update(seeds=[]), ["seeds"]),
])
def test_bad_sweep_exits_2_and_writes_nothing(tmp_path, sweep_dict, command, mutate, needles):
    mutate(sweep_dict)
    sweep_dict["workspace"] = str(tmp_path / "ws")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(sweep_dict))
    result = run_cli(command, path)
    _assert_clean_error(result, str(path), *needles)
    assert not (tmp_path / "ws").exists()


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nseeds: [0, 1\n")
    _assert_clean_error(run_cli("launch", path), str(path), "YAML")


def test_bad_override_exits_2(tmp_path, sweep_dict):
    sweep_dict["workspace"] = str(tmp_path / "ws")
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(sweep_dict))
    _assert_clean_error(run_cli("launch", path, "pruning.rate=0.5", "seeds=[0,x"), "seeds")
    _assert_clean_error(run_cli("launch", path, "pruning.rat=0.5"), "pruning.rat", "allowed")
    assert not (tmp_path / "ws").exists()


def test_workspace_that_cannot_be_created(tmp_path, sweep_dict):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    sweep_dict["workspace"] = str(blocker / "ws")
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(sweep_dict))
    _assert_clean_error(run_cli("launch", path), "workspace")


def test_status_of_a_folder_that_is_no_workspace(tmp_path):
    _assert_clean_error(run_cli("status", tmp_path), "not a prunesweep workspace")
    _assert_clean_error(run_cli("resume", tmp_path), "not a prunesweep workspace")
    assert list(tmp_path.iterdir()) == []


def test_every_command_has_help():
    for command in ("plan", "launch", "status", "resume", "results"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "usage: prunesweep " + command in result.stdout


def test_overrides_may_follow_options():
    """`launch S.yaml --backend ray seeds=[0]` keeps the override (argparse alone calls it unrecognized)."""
    from orchestrator.arguments import parse_arguments

    args = parse_arguments(["launch", "s.yaml", "pruning.rate=0.5", "--backend", "ray", "seeds=[0]",
                            "--workers", "2", "seeds=[1]"])
    assert args.backend == "ray" and args.workers == 2
    assert args.overrides == ["pruning.rate=0.5", "seeds=[0]", "seeds=[1]"]  # in order: the last one wins


def test_an_override_after_an_option_reaches_the_plan(tmp_path):
    result = run_cli("plan", ROOT / "sweeps" / "digits.yaml", "--gpu", "H100", "seeds=[0]")
    assert result.returncode == 0, result.stderr
    assert "x 1 seed;" in result.stdout


@pytest.mark.parametrize("args", [["plan", "s.yaml", "--gpu", "H100", "--bogus"],
                                  ["status", "ws", "seeds=[0]"],
                                  ["plan", "s.yaml", "--graph", "notanoverride"]])
def test_unknown_arguments_are_still_refused(args):
    result = run_cli(*args)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content,needle", [
    (b"name: a\nseeds: [0]\nseeds: [1]\n", "line 3, column 1: duplicate key 'seeds' (first at line 2, column 1)"),
    (b"name: a\nrecipes:\n  labels: {lr: 0.1, lr: 0.2}\n", "duplicate key 'lr'"),
    (b"\xff\xfename: a\n", "not UTF-8 text (byte 0 is 0xff)"),
    (b"", "the file is empty"),
    (b"  \n\n", "the file is empty"),
    (b"- 1\n- 2\n", "the top level must be a mapping"),
    (b"a: " + b"[" * 100 + b"]" * 100 + b"\n", "nested deeper than 32 levels"),
    (b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested deeper than 32 levels"),
    (b"a: &a [1,2,3,4,5,6,7,8,9,10]\n" + b"".join(
        b"%c: &%c [" % (ord("b") + i, ord("b") + i) + b",".join([b"*%c" % (ord("a") + i)] * 10) + b"]\n"
        for i in range(5)), "more than 100000 values"),
    (b"a: [1\n", "YAML syntax error: line 2, column 1"),
], ids=lambda value: repr(value)[:24] if isinstance(value, bytes) else None)
def test_unacceptable_yaml_exits_2_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    result = run_cli("plan", path)
    _assert_clean_error(result, str(path), needle)


@pytest.mark.parametrize("override,needle", [
    ("seeds=" + "[" * 40 + "]" * 40, "nested deeper than 32 levels"),
    ("recipes.labels={lr: 1, lr: 2}", "duplicate key 'lr'"),
], ids=["deep", "duplicate"])
def test_unacceptable_override_values_exit_2(override, needle):
    result = run_cli("plan", ROOT / "sweeps" / "digits.yaml", override)
    _assert_clean_error(result, "sweeps/digits.yaml", override.split("=")[0], needle)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    from orchestrator.yaml_input import load_yaml

    assert load_yaml("base: &b {x: 1}\nuse: {<<: *b, y: 2}\n") == {"base": {"x": 1}, "use": {"x": 1, "y": 2}}


@pytest.mark.parametrize("override,key_path,needle", [
    ("pruning.rate=true", "pruning.rate", "valid number, got True"),
    ("recipes.labels.epochs=true", "recipes.labels.epochs", "valid integer, got True"),
    ("seeds=['1']", "seeds[0]", "valid integer, got '1'"),
    ("recipes.labels.lr='0.1'", "recipes.labels.lr", "valid number"),
    ("recipes.labels.lr=.nan", "recipes.labels.lr", "finite number"),
    ("recipes.labels.momentum=.inf", "recipes.labels.momentum", "finite number"),
    ("pruning.fractions=[.nan]", "pruning.fractions[0]", "finite number"),
    ("seeds=[5000000000]", "seeds[0]", "0..4294967295"),
    ("seeds=[-1]", "seeds[0]", "0..4294967295"),
    ("arch.width=100000", "arch.width", "less than or equal to 4096"),
    ("recipes.labels.epochs=10000000", "recipes.labels.epochs", "less than or equal to 100000"),
    ("recipes.labels.batch_size=0", "recipes.labels.batch_size", "greater than 0"),
    ("recipes.labels.epochs=2.5", "recipes.labels.epochs", "valid integer"),
])
def test_numbers_are_finite_bounded_and_not_booleans_or_strings(override, key_path, needle):
    result = run_cli("plan", ROOT / "sweeps" / "digits.yaml", override)
    _assert_clean_error(result, "sweeps/digits.yaml", f"{key_path}: ", needle)


def test_integers_are_accepted_where_a_float_is_asked():
    assert run_cli("plan", ROOT / "sweeps" / "digits.yaml", "recipes.labels.lr=1", "pruning.fractions=[1]").returncode == 0


@pytest.mark.parametrize("overrides,key_path", [
    (["pruning.rate=1.0e-5"], "pruning.rate"),
    (["seeds=" + str(list(range(20000)))], "seeds"),
], ids=["rate", "seeds"])
def test_a_sweep_too_large_to_plan_is_refused_before_planning(tmp_path, overrides, key_path):
    result = run_cli("plan", ROOT / "sweeps" / "digits.yaml", *overrides)
    _assert_clean_error(result, f"{key_path}: this sweep would plan up to", "above the limit of 100,000", "--max-stages")


def test_max_stages_sets_the_limit():
    refused = run_cli("plan", ROOT / "sweeps" / "digits.yaml", "--max-stages", "100")
    _assert_clean_error(refused, "above the limit of 100;")
    accepted = run_cli("plan", ROOT / "sweeps" / "digits.yaml", "--max-stages", "300")
    assert accepted.returncode == 0 and "stages: dense 8, imp 132" in accepted.stdout
    from orchestrator import arguments, spec

    assert arguments.DEFAULT_MAX_STAGES == spec.DEFAULT_MAX_STAGES


@pytest.mark.parametrize("workspace,needle", [
    ("/proc/prunesweep-ws", "proc pseudo file system"),
    ("/sys/prunesweep-ws", "sysfs pseudo file system"),
    ("a" * 300, "longer than 255 bytes"),
    ("/tmp/" + "b" * 5000, "longer than 4096 bytes"),
])
def test_a_workspace_that_can_hold_nothing_is_refused(tmp_path, workspace, needle):
    result = run_cli("launch", ROOT / "sweeps" / "digits.yaml", f"workspace={workspace}", cwd=tmp_path)
    _assert_clean_error(result, "workspace: ", needle)
    assert list(tmp_path.iterdir()) == []


def test_a_workspace_with_a_control_character_is_refused(tmp_path, sweep_dict):
    sweep_dict["workspace"] = str(tmp_path / "ws\x00x")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep_dict))
    _assert_clean_error(run_cli("launch", path), "workspace: a path may not hold control characters")


def test_a_workspace_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    _assert_clean_error(run_cli("launch", ROOT / "sweeps" / "digits.yaml", f"workspace={target}"),
                        "exists and is not a folder")


def test_tilde_is_expanded_in_the_workspace(tmp_path, sweep_dict):
    from orchestrator.spec import validate_spec

    sweep_dict["workspace"] = "~/somewhere"
    assert validate_spec(sweep_dict, "s.yaml").workspace == os.path.expanduser("~/somewhere")


def test_file_system_type_reads_mountinfo(tmp_path):
    from orchestrator.state.workspace import file_system_type

    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
                         "23 22 0:22 / /proc rw,nosuid - proc proc rw\n"
                         "24 22 0:23 / /data\\040set rw - xfs /dev/sdb rw\n")
    assert file_system_type(Path("/proc/1"), str(mountinfo)) == "proc"
    assert file_system_type(Path("/processes"), str(mountinfo)) == "ext4"
    assert file_system_type(Path("/data set/x"), str(mountinfo)) == "xfs"


@pytest.mark.parametrize("args,needle", [
    (["plan", ROOT / "sweeps" / "digits.yaml", "recipes.labels.foo=1"], "recipes.labels.foo: unknown key"),
    (["plan", ROOT / "sweeps" / "digits.yaml", "seeds=[0,x"], "seeds"),
    (["status", ROOT / "no-such-workspace"], "not a prunesweep workspace"),
])
def test_the_real_process_refuses_bad_input_in_one_line(args, needle):
    _assert_clean_error(run_process(*args), needle)


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """``prunesweep plan SWEEP --graph | head -1``: exit 0, no traceback and no 'Exception ignored' at exit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sweep = ROOT / "sweeps" / "paper" / "cifar10_resnet18.yaml"  # 130 kB of plan: more than a pipe holds
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "plan", str(sweep), "--graph",
                                f"workspace={tmp_path / 'ws'}"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline()
    process.stdout.close()  # as `head -1` does after its line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and stderr == ""
