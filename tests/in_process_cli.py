"""The smallest real sweep and ``prunesweep`` run in the test's own process, shared by the tests of
damaged, read-only and full workspaces."""
from __future__ import annotations

import contextlib
import io
import signal

#: one dense run, one IMP level and its evaluation on digits: a workspace in a few seconds.
MINI = {
    "name": "mini", "dataset": {"name": "digits"}, "arch": {"name": "small_cnn", "width": 4},
    "recipes": {"labels": {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01}},
    "pruning": {"fractions": [0.8]}, "rewind": [0], "mask_source": ["labels"], "init": ["reinit"], "seeds": [0],
}


def run_cli(*args):
    """``prunesweep ARGS`` through its entry point in this process: (exit code, stdout, stderr).

    An exception other than the command's own exit escapes and fails the test.
    """
    from orchestrator.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)  # the CLI installs its own; later tests keep pytest's
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(arg) for arg in args])
    finally:
        signal.signal(signal.SIGTERM, handler)
    return code, out.getvalue(), err.getvalue()


def launch_mini(root):
    """Write the mini sweep into ``root`` (its workspace ``root/ws``) and launch it to the end; its sweep file."""
    import yaml

    sweep = root / "mini.yaml"
    sweep.write_text(yaml.safe_dump({**MINI, "workspace": str(root / "ws")}))
    code, out, err = run_cli("launch", sweep, "--no-progress", "--workers", "1")
    assert code == 0, out + err
    return sweep
