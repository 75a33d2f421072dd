"""The ``prunesweep`` command: plan | launch | status | resume | cancel | results | report | repair."""
from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Optional

from orchestrator.arguments import parse_arguments
from orchestrator.commands.wording import count, plain_number
from orchestrator.errors import EnvironmentProblem, UserError, WorkspaceBusy


def _stop_like_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


#: commands that read and print (an export or a page written atomically before they return): their
#: process ends without the interpreter's teardown, freeing every module's objects one by one, which
#: takes 30-90 ms (a seventh of a ``plan``, a tenth of a ``results``).
_NO_TEARDOWN = frozenset({"plan", "results", "report"})


def console() -> None:
    """The ``prunesweep`` process: :func:`main`, then exit with its code.

    The process (and the workers it starts) validates only prunesweep's own files, without
    pydantic's plugins: looking for them reads the metadata of every installed distribution,
    20 ms of each command (a tenth of a ``plan``). ``PYDANTIC_DISABLE_PLUGINS=`` (set empty)
    keeps them.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    args = parse_arguments(None)
    code = _run(args)
    if args.command in _NO_TEARDOWN:
        for module, close in (("results.central_db", "close_connections"), ("results.versioned_sqlite", "close_all")):
            if module in sys.modules:  # (a store left open would keep its -wal/-shm files)
                getattr(sys.modules[module], close)()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
                pass
        os._exit(code)
    sys.exit(code)


def main(argv: Optional[list[str]] = None) -> int:
    """The command line ``argv`` (default: the process's); returns the exit code."""
    return _run(parse_arguments(argv))


def _run(args) -> int:
    """Run the parsed command; its exit code (a user's error is one line on stderr)."""
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # `kill` stops the workers too, as Ctrl-C does
    try:
        return COMMANDS[args.command](args)
    except (UserError, EnvironmentProblem) as error:
        print(f"prunesweep: error: {error}", file=sys.stderr)
        return error.exit_code
    except WorkspaceBusy as busy:
        print(f"prunesweep: {busy}", file=sys.stderr)
        return busy.exit_code
    except BrokenPipeError:  # output piped into `head` and closed early (an OSError: handled first)
        _drop_stdout()
        return 0
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        from orchestrator.state.store_health import explain_space_error

        print(f"prunesweep: error: {explain_space_error(error, _workspace_argument(args))}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as error:
        from orchestrator.state.store_health import explain_database_error

        print(f"prunesweep: error: {explain_database_error(error, _workspace_argument(args))}", file=sys.stderr)
        return 1 if "full" in str(error).lower() else 2  # a full disk is no bad input
    except KeyboardInterrupt:
        print("\nprunesweep: interrupted", file=sys.stderr)
        return 130


def _drop_stdout() -> None:
    """Send what is still buffered for a closed pipe to /dev/null (else flushing it at exit fails again)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture): nothing to flush to
        pass


def _workspace_argument(args) -> Optional[Path]:
    """The workspace a command was given, or its sweep's; None when unknown."""
    named = getattr(args, "workspace", None) or (getattr(args, "workspaces", None) or [None])[0]
    if named is None and getattr(args, "sweep", None):
        from orchestrator.spec import load_spec

        try:
            named = load_spec(args.sweep, args.overrides, max_stages=None).workspace
        except UserError:
            return None
    return Path(named) if named else None


def _cmd_repair(args) -> int:
    from orchestrator.commands.repair import repair
    from orchestrator.state.workspace import WorkspaceLock

    workspace = Path(args.workspace)
    if not workspace.is_dir() or not ((workspace / "ledger.sqlite").exists() or (workspace / "stages").is_dir()):
        raise UserError(f"{workspace}: not a prunesweep workspace (no ledger.sqlite, no stages folder)")
    if not os.access(workspace, os.W_OK | os.X_OK):
        raise UserError(f"{workspace}: the workspace folder is read-only for you; repair a copy of it")
    with WorkspaceLock(workspace):
        for line in repair(workspace, tuple(args.sweeps)):
            print(line)
    return 0


def _cmd_plan(args) -> int:
    from workers.data.known_datasets import sizes_when_absent

    with sizes_when_absent() as absent:  # plan from the published sizes when a data folder is not there yet
        return _print_plan(args, absent)


def _print_plan(args, absent: dict[str, str]) -> int:
    from orchestrator.planning.gpu_hours import DEFAULT_DEVICE, check_device, estimate, table_for, workspace_throughput
    from orchestrator.planning.planner import depth_lines, plan_sweep
    from orchestrator.spec import load_spec
    from workers.data.known_datasets import describe

    spec = load_spec(args.sweep, args.overrides, max_stages=args.max_stages)
    table = table_for(Path(spec.workspace))  # the shipped table and the workspace's passing preflights
    if args.gpu is not None:
        try:
            check_device(args.gpu, table)
        except ValueError as error:
            raise UserError(f"--gpu: {error}") from None
    if Path(spec.workspace).is_dir():  # its dense stages may capture rewinding points already
        from orchestrator.state.workspace import existing_captures

        plan = plan_sweep(spec, existing_captures(Path(spec.workspace)))
    else:
        plan = plan_sweep(spec)
    if absent:
        print("note: data folder missing: " + "; ".join(f"{root} ({describe(name)})" for root, name in absent.items())
              + ": planned from the published sizes; `launch` needs the folder")
    print(f"sweep {spec.name}: {spec.dataset.name} / {spec.arch.name}, workspace {spec.workspace}")
    axes = ((spec.mask_source, "mask source"), (spec.init, "init"), (spec.rewind, "rewind point"),
            (spec.pruning.fractions, "fraction"), (spec.seeds, "seed"))
    print(f"grid: {count(len(plan.cells), 'cell')} ({' x '.join(count(len(axis), noun) for axis, noun in axes)}; "
          "random masks are always re-initialised)")
    transfer_cells = sum(cell.transfer is not None for cell in plan.cells)
    if transfer_cells and spec.transfer is not None:
        print(f"      ({transfer_cells:,} of them transfer {', '.join(spec.transfer_sources)} to "
              f"{spec.transfer.dataset.name}: linear / finetune / finetune_prune_during)")
    counts = plan.counts_by_kind()
    order = ("dense", "rewind", "imp", "random_mask", "eval", "features", "linear_eval", "finetune")
    print("stages: " + ", ".join(f"{kind} {counts[kind]:,}" for kind in order if counts[kind]))
    ratio = plan.naive_trainings / plan.trainings if plan.trainings else float("nan")
    print(f"trainings: {plan.trainings:,} planned vs {plan.naive_trainings:,} naive "
          f"(every cell its own IMP chain from scratch): {ratio:.1f}x fewer")
    print(f"epochs: {plain_number(plan.total_epochs)} planned vs {plain_number(plan.naive_epochs)} naive")
    _, preflight_device = workspace_throughput(Path(spec.workspace))
    print(estimate(spec, plan, args.gpu or preflight_device or DEFAULT_DEVICE, table).describe())
    _print_backend_plan(spec, plan)
    print("\n".join(depth_lines(spec, lambda f: plain_number(f, 6), plain_number)))
    if args.graph:
        print()
        for key, stage in plan.stages.items():
            deps = ", ".join(f"{role}={dep}" for role, dep in stage.deps.items())
            print(f"{key}  {stage.label}" + (f"  <- {deps}" if deps else ""))
    return 0


def _cmd_launch(args) -> int:
    from orchestrator import driver
    from orchestrator.spec import load_spec
    from orchestrator.state.central_results import check_settings

    check_settings()  # a malformed results-database URL in the environment or config file: exit 2 first
    spec = load_spec(args.sweep, args.overrides, max_stages=args.max_stages)
    note = _check_preflight(spec, args)
    started = time.time()
    try:
        plan, summary = driver.launch(spec, args.sweep, args.backend, args.workers, progress=not args.no_progress)
    except KeyboardInterrupt:
        return _interrupted(spec.workspace)
    _print_summary(spec.workspace, summary, time.time() - started)
    if note:
        print(note, file=sys.stderr)
    return summary.exit_code


def _check_preflight(spec, args) -> Optional[str]:
    """The line ``launch`` prints when the sweep's backend, settings, worker code and packages have no
    passing preflight in the workspace (None when they have one); with ``--require-preflight``, a refusal
    (exit 2) instead."""
    from orchestrator.commands.preflight import passing_record
    from orchestrator.state.workspace import check_creatable

    check_creatable(Path(spec.workspace), args.sweep)  # a workspace that cannot be is said first
    name = args.backend or spec.backend
    section = getattr(spec, name, None)
    if passing_record(Path(spec.workspace), name, section.model_dump() if section else {}) is not None:
        return None
    message = (f"no passing preflight in {spec.workspace} for this backend ({name}), its settings, the worker code "
               f"and the packages: `prunesweep preflight {args.sweep}` checks them in minutes")
    if args.require_preflight:
        raise UserError(f"{args.sweep}: --require-preflight: {message}")
    return f"note: {message}"


def _cmd_preflight(args) -> int:
    from orchestrator.commands.preflight import preflight
    from orchestrator.spec import load_spec

    spec = load_spec(args.sweep, args.overrides, max_stages=args.max_stages)
    try:
        return preflight(spec, args.sweep, args.backend, float(args.timeout), args.workers)
    except KeyboardInterrupt:
        print("\nprunesweep: preflight cancelled", file=sys.stderr)
        return 130


def _cmd_resume(args) -> int:
    from orchestrator import driver
    from orchestrator.state.central_results import check_settings
    from orchestrator.state.workspace import require_workspace

    check_settings()
    workspace = require_workspace(Path(args.workspace), writing=True)
    started = time.time()
    try:
        keys, summary = driver.resume(workspace, args.backend, args.workers, progress=not args.no_progress,
                                      dry_run=args.dry_run)
    except KeyboardInterrupt:
        return _interrupted(str(workspace))
    if summary is None:
        from orchestrator.state.ledger import Ledger

        print(f"would run {len(keys)} stage(s):")
        ledger = Ledger(workspace, reading=True)
        try:
            for row in ledger.stages(keys):
                why = f": {row['error_class']}" if row["error_class"] else ""
                print(f"  {row['key']}  {row['label']}  [{row['state']}{why}]")
        finally:
            ledger.close()
        return 0
    _print_summary(str(workspace), summary, time.time() - started)
    return summary.exit_code


def _interrupted(workspace: str) -> int:
    print(f"\nprunesweep: interrupted; finished stages and epoch checkpoints are kept. "
          f"Continue with `prunesweep resume {workspace}`.", file=sys.stderr)
    return 130


def _print_summary(workspace: str, summary, seconds: float) -> None:
    if summary.submitted:
        print(f"submitted {summary.submitted} stage(s) in {seconds:.1f} s; they run without this command. "
              f"Watch with `prunesweep status {workspace}`; cancel with `prunesweep cancel {workspace}`")
        return
    retried = (f"; {summary.retried} attempt(s) died and were retried automatically (`prunesweep status "
               f"{workspace}` lists them)" if summary.retried else "")
    print(f"ran {summary.ran} stage(s) in {seconds:.1f} s: {summary.done} done, {summary.failed} failed, "
          f"{summary.blocked} blocked{f', {summary.cancelled} cancelled' if summary.cancelled else ''}{retried}")
    if summary.exit_code:
        print(f"see `prunesweep status {workspace}` for the reasons; fix them and run `prunesweep resume {workspace}`")
    else:
        print(f"results: prunesweep results {workspace} --pivot")


def _print_backend_plan(spec, plan) -> None:
    """What the sweep's backend says about running the plan (SLURM: the time limit of each kind)."""
    from orchestrator.backends import BACKENDS, backend_class

    section = getattr(spec, spec.backend, None)
    if spec.backend in BACKENDS:
        for line in backend_class(spec.backend).plan_lines(spec, plan, section.model_dump() if section else {}):
            print(line)


def _cmd_status(args) -> int:
    from orchestrator.commands.status import print_status
    from orchestrator.state.workspace import require_workspace

    workspace = require_workspace(Path(args.workspace))
    if args.watch:
        from orchestrator.commands.status_watch import watch

        if not 0 < args.interval <= 86400:
            raise UserError(f"--interval: {args.interval:g}: allowed: a number of seconds above 0, at most 86400")
        watch(workspace, args.interval, final=lambda: print_status(workspace, all_missing=args.all_missing))
        return 0
    print_status(workspace, all_missing=args.all_missing, rehash=args.verify)
    return 0


def _cmd_results(args) -> int:
    from orchestrator.commands.results import show_central_results, show_results
    from orchestrator.state.workspace import require_workspace

    if args.db is not None or not args.workspaces:
        return show_central_results(args)
    return show_results([require_workspace(Path(workspace)) for workspace in args.workspaces], args)


def _cmd_report(args) -> int:
    from orchestrator.commands.report import make_report  # pandas and matplotlib: loaded for this command only
    from orchestrator.state.workspace import require_workspace

    return make_report([require_workspace(Path(workspace)) for workspace in args.workspaces], args)


def _cmd_cancel(args) -> int:
    from orchestrator.driver import cancel
    from orchestrator.state.workspace import require_workspace

    if args.stage is not None:
        from orchestrator.commands.cancel import cancel_stage

        return cancel_stage(require_workspace(Path(args.workspace), writing=True), args.stage)
    cancelled = cancel(require_workspace(Path(args.workspace), writing=True))
    print(f"cancelled {len(cancelled)} job(s)" + (": " + " ".join(cancelled) if cancelled else ""))
    return 0


COMMANDS = {"plan": _cmd_plan, "preflight": _cmd_preflight, "cancel": _cmd_cancel, "launch": _cmd_launch,
            "status": _cmd_status, "resume": _cmd_resume, "results": _cmd_results, "report": _cmd_report,
            "repair": _cmd_repair}


if __name__ == "__main__":
    sys.exit(main())
