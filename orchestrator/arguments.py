"""The ``prunesweep`` command line: every subcommand's arguments and their parsing (no command runs here)."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional

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
