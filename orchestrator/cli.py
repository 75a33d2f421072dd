"""The ``prunesweep`` command: plan | launch | status | resume | cancel | results | report | repair."""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional

from orchestrator.commands.wording import count, plain_number
from orchestrator.errors import EnvironmentProblem, UserError, WorkspaceBusy

DEMO_HINT = "prunesweep results WORKSPACE --pivot"
#: as orchestrator.spec.DEFAULT_MAX_STAGES and orchestrator.backends.local.settings.MAX_WORKERS (not
#: imported: --help must not load pydantic models)
DEFAULT_MAX_STAGES = 100_000
MAX_WORKERS = 1024


def _positive_int(text: str, most: Optional[int] = None) -> int:
    allowed = f"an integer from 1 to {most:,}" if most else "a positive integer"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
    if value < 1 or (most is not None and value > most):
        raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
    return value


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="the sweep file (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="override a setting, e.g. seeds=[0,1,2] pruning.rate=0.5 (values are YAML)")
    parser.add_argument("--max-stages", type=_positive_int, default=DEFAULT_MAX_STAGES, metavar="N",
                        help=f"refuse a sweep that would plan more than N stages (default {DEFAULT_MAX_STAGES:,})")


def _add_run_arguments(parser: argparse.ArgumentParser, default_backend: Optional[str]) -> None:
    from orchestrator.backends import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default=default_backend,
                        help="where stages run (default: the sweep's `backend`, else local)")
    parser.add_argument("--workers", type=lambda text: _positive_int(text, MAX_WORKERS), default=None, metavar="N",
                        help=f"parallel worker processes of the local backend, 1 to {MAX_WORKERS} (default: one per "
                             "core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusals are one line as any bad input's (not a usage block, then the error)."""

    def error(self, message: str) -> NoReturn:
        print(f"prunesweep: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="prunesweep", description="Sweep orchestrator for neural-network pruning studies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="validate a sweep and print its DAG of stages",
                               description="Validate a sweep file and print the stages it needs, the trainings "
                                           "planned against the naive grid, and the total epochs. Writes nothing.")
    _add_sweep_arguments(plan)
    plan.add_argument("--graph", action="store_true", help="print every stage with the stages it depends on")
    plan.add_argument("--gpu", default=None, metavar="DEVICE",
                      help="the device of the GPU-hours estimate: a name of orchestrator/planning/throughput.json "
                           "or of a passing preflight in the workspace, a GPU short name (H100, A100, ...) or "
                           "cpu-<N>thread (default: the device of the workspace's newest passing preflight, else H100)")

    launch = commands.add_parser("launch", help="plan a sweep into its workspace and run it",
                                 description="Plan a sweep into its workspace and run every stage not done yet. "
                                             "Stages already done in the workspace (by any sweep) are reused.")
    _add_sweep_arguments(launch)
    _add_run_arguments(launch, None)
    launch.add_argument("--require-preflight", action="store_true",
                        help="refuse to launch unless a preflight of this backend, its settings, the worker code "
                             "and the packages passed in the workspace")

    preflight = commands.add_parser(
        "preflight", help="one short job on exactly what the sweep's stages get: data, steps, masks, resume, ranks",
        description="Run one short job with the resources, environment and code the sweep's stages get on its "
                    "backend; on the node, check each distinct (network, task, dataset, ranks) of the sweep: the "
                    "environment, real batches from the data folders, a few training steps under the smallest "
                    "mask, a checkpoint resumed in a fresh process, the distributed setup, and samples/s. Prints "
                    "one table; exits 0 only when every check passed. See docs/gpu.md.")
    _add_sweep_arguments(preflight)
    _add_run_arguments(preflight, None)
    preflight.add_argument("--timeout", type=_positive_int, default=600, metavar="SECONDS",
                           help="the job's time limit and how long to wait for it (default 600)")

    status = commands.add_parser("status", help="states of a workspace's stages, failures and missing cells",
                                 description="Stage counts per kind and state, each failed stage with its reason, "
                                             "and the grid cells still missing. States are checked against the "
                                             "artifacts on disk first.")
    status.add_argument("workspace")
    status.add_argument("--all-missing", action="store_true", help="list every missing cell, not only the first 20")
    status.add_argument("--verify", action="store_true",
                        help="checksum every artifact again (by default an artifact whose size, mtime and inode "
                             "are unchanged since it last verified is trusted)")
    status.add_argument("--watch", action="store_true",
                        help="print a one-line summary (counts, ETA from the measured stage durations) every "
                             "--interval seconds until nothing is queued or running, then the full status")
    status.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between two refreshes of --watch (default 10)")

    resume = commands.add_parser("resume", help="rerun failed, blocked and missing stages of a workspace",
                                 description="Rerun every failed, blocked, interrupted or missing stage of every "
                                             "sweep in a workspace; never a done one.")
    resume.add_argument("workspace")
    _add_run_arguments(resume, "local")
    resume.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")

    cancel = commands.add_parser("cancel", help="stop what schedulers still run for a workspace (SLURM jobs, the Ray "
                                                "driver job)",
                                 description="Stop every queued or running stage a scheduler holds for this workspace "
                                             "(SLURM: its jobs; Ray: the driver job, whose stage tasks end with it), "
                                             "and nothing else; those stages become planned and `resume` reruns "
                                             "them. A local run is stopped with Ctrl-C in its terminal. With "
                                             "--stage: stop that one running stage on any backend; it ends "
                                             "cancelled, the stages waiting for it blocked, the rest goes on.")
    cancel.add_argument("workspace")
    cancel.add_argument("--stage", metavar="KEY", help="the one running stage to stop (its key, or a unique prefix)")

    res = commands.add_parser("results", help="mean ± standard error over seeds; queries, comparisons, plots, exports",
                              description="Summaries of the central results table of one workspace or several: "
                                          "mean top-1, standard error and n over seeds, grouped by every setting but "
                                          "the seed (and the workspace). Several workspaces give one table with a "
                                          "workspace column; --db reads a lab's central results database instead.")
    res.add_argument("workspaces", nargs="*", metavar="WORKSPACE")
    res.add_argument("--db", metavar="URL",
                     help="read the lab's central results database instead of workspaces "
                          "(postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite:///PATH)")
    res.add_argument("--pivot", action="store_true",
                     help="rows = fraction remaining, columns = mask source / init (the paper's Fig. 3 as a table)")
    res.add_argument("--plot", metavar="PNG", help="draw top-1 vs fraction remaining (log x) with error bars")
    res.add_argument("--csv", metavar="PATH", help="export the (filtered) rows as CSV")
    res.add_argument("--parquet", metavar="PATH", help="export the (filtered) rows as Parquet")
    res.add_argument("--where", action="append", default=[], metavar="CONDITION",
                     help="keep rows where CONDITION holds: COLUMN=VALUE, COLUMN!=VALUE, COLUMN<VALUE (<=, >, >=), "
                          "'COLUMN in V1,V2', 'COLUMN not in V1,V2'; repeatable, and 'A and B' joins conditions")
    res.add_argument("--sweep", help="only this sweep's rows")
    res.add_argument("--group-by", action="append", default=[], metavar="COLUMNS",
                     help="summarize per value of these columns (comma-separated) instead of per setting; "
                          "what they leave out is pooled")
    _add_label_argument(res)
    res.add_argument("--compare", metavar="COLUMN=A,B",
                     help="mean paired difference A - B of top-1 per setting over the seeds both share, its standard "
                          "error, n and the paired t-test's p-value: two-sided for A,B, one-sided for 'A>B' (A beats "
                          "B) or 'A<B'; Holm-adjusted over the settings shown (* marks adjusted p < 0.05)")
    _add_report_parser(commands)
    repair = commands.add_parser("repair", help="rebuild a damaged workspace's ledger and results table from its "
                                                "stage folders",
                                 description="Remove the temp files of killed writers, move malformed files (a "
                                             "damaged database, stage.json or DONE.json) aside into "
                                             "WORKSPACE/quarantine/<time>/, rebuild the ledger and the results table "
                                             "from the artifacts (stage.json, DONE.json and their checksums) and say "
                                             "what was done. Stages are not run: `resume` runs what is left.")
    repair.add_argument("workspace")
    repair.add_argument("sweeps", nargs="*", metavar="SWEEP",
                        help="sweep files launched in this workspace, to restore their cells when the workspace "
                             "keeps no record of them (made before prunesweep kept one)")
    return parser


def _add_report_parser(commands) -> None:
    report = commands.add_parser("report", help="one self-contained HTML page: sweeps, stages, failures, figures, "
                                                "tables, comparisons",
                                 description="Write one HTML file (no server, no network: figures embedded) with the "
                                             "sweeps, stage states per kind, failures with their log tails, missing "
                                             "cells, one figure per (dataset, network) of top-1 vs fraction "
                                             "remaining, the pivot tables, the paired comparisons and the transfer "
                                             "tables of one workspace or several.")
    report.add_argument("workspaces", nargs="+", metavar="WORKSPACE")
    report.add_argument("-o", "--output", required=True, metavar="HTML", help="the page to write (.html)")
    report.add_argument("--where", action="append", default=[], metavar="CONDITION",
                        help="keep the results rows where CONDITION holds, as `results --where`")
    report.add_argument("--sweep", help="only this sweep's results rows")
    report.add_argument("--compare", action="append", default=[], metavar="COLUMN=A,B",
                        help="the paired comparisons to show, as `results --compare` (repeatable; default: "
                             "'init=winning_ticket>reinit' and mask_source=labels,X for every other mask source X)")
    report.add_argument("--title", help="the page's title")
    _add_label_argument(report)


def _add_label_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", action="append", default=[], metavar="NAME",
                        help="the workspaces' labels in the tables, one per WORKSPACE in their order (repeat it; "
                             "default: the folder's name, with its parents where two are alike)")


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse the command line; ``key.path=value`` overrides may stand anywhere after the sweep file.

    argparse stops collecting a ``nargs="*"`` positional at the first option, so the overrides that
    follow an option come back as unknown arguments; they are appended in their order (a later
    override of the same key wins, as in the file). Anything else unknown is an error, as usual.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        takes_overrides = hasattr(args, "overrides")
        stray = [arg for arg in extras if not takes_overrides or arg.startswith("-") or "=" not in arg]
        if stray:
            from orchestrator.spec.habits import argument_habit

            for habit in filter(None, (argument_habit(arg, takes_overrides) for arg in stray)):
                print(f"prunesweep: error: {habit}", file=sys.stderr)  # one line, as any bad input
                raise SystemExit(2)
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        args.overrides = [*args.overrides, *extras]
    return args


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
