"""``prunesweep status``: what every stage of a workspace is doing, and what is missing."""
from __future__ import annotations

import re
import textwrap
from collections import Counter
from pathlib import Path

from orchestrator.backends import BACKENDS, backend_class
from orchestrator.backends.failure_classes import describe
from orchestrator.state.central_results import waiting_line
from orchestrator.state.ledger import STATES, Ledger
from orchestrator.state.reconcile import reconcile_and_record
from workers import catalog

MISSING_SHOWN = 20


def print_status(workspace: Path, all_missing: bool = False, rehash: bool = False) -> None:
    """Print counts per kind and state, failed stages with reasons, and missing cells
    (``rehash``: checksum every artifact again, trusting no recorded stamp)."""
    ledger = Ledger(workspace, reading=True)
    try:
        reconcile_and_record(workspace, ledger, rehash=rehash)
        stages = ledger.stages_of_note()  # the done ones are only counted
        sweeps = ledger.sweeps()
        print(f"workspace {workspace}: {len(sweeps)} sweep(s): " + ", ".join(row["name"] for row in sweeps))
        for name in BACKENDS:
            for line in backend_class(name).status_lines(workspace):
                print(line)
        waiting = waiting_line(workspace, ledger)  # rows the central results database has not received
        if waiting:
            print(waiting)
        counts = Counter(ledger.state_counts())
        present = {kind for kind, _ in counts}
        kinds = [kind for kind in catalog.STAGE_KINDS if kind in present] + sorted(present - set(catalog.STAGE_KINDS))
        print()
        print(f"{'kind':<12}" + "".join(f"{state:>10}" for state in STATES) + f"{'total':>10}")
        for kind in kinds:
            per_state = [counts[(kind, state)] for state in STATES]
            print(f"{kind:<12}" + "".join(f"{n:>10}" for n in per_state) + f"{sum(per_state):>10}")
        totals = [sum(counts[(kind, state)] for kind in kinds) for state in STATES]
        print(f"{'all':<12}" + "".join(f"{n:>10}" for n in totals) + f"{sum(totals):>10}")

        failed = [row for row in stages if row["state"] == "failed"]
        if failed:
            print(f"\nfailed stages ({len(failed)}):")
            for row in failed:
                where = f"job {row['job_id']}" if row["job_id"] else f"on {row['host'] or '?'}"
                print(f"  {row['key']}  {row['label']}  [{describe(row['error_class'], row['attempts'])}"
                      f"{_how(row['error_message'])}, {row['backend'] or '?'} {where}]")
                for log in _scheduler_logs(workspace, row):
                    print(f"      log: {log}")
                print(textwrap.indent(row["error_message"] or "(no message)", "      "))
        cancelled = [row for row in stages if row["state"] == "cancelled"]
        if cancelled:
            print(f"\ncancelled stages ({len(cancelled)}):")
            for row in cancelled:
                print(f"  {row['key']}  {row['label']}  [{row['backend'] or '?'}, attempt {row['attempts']}] "
                      f"{row['error_message'] or 'cancelled'}")
        print_blocked_and_running(workspace, stages)
        _print_retried(stages)
        notes = [row for row in stages if row["state"] == "planned" and row["error_class"]]
        if notes:
            print(f"\nto be rerun ({len(notes)}):")
            for row in notes:
                print(f"  {row['key']}  {row['label']}  [{row['error_class']}] {row['error_message']}")

        cells = ledger.cell_count()
        missing = ledger.unfinished_cells()
        print(f"\ncells: {cells - len(missing)} of {cells} done, {len(missing)} missing")
        for cell in missing if all_missing else missing[:MISSING_SHOWN]:
            print(f"  {cell['sweep']}: {cell['mask_source']} / {cell['init']} rewind={cell['rewind']} "
                  f"fraction={cell['nominal_fraction']:g} seed={cell['seed']} -> {cell['stage_key']} "
                  f"({cell['state'] or 'unknown'})")
        if len(missing) > MISSING_SHOWN and not all_missing:
            print(f"  ... and {len(missing) - MISSING_SHOWN} more (--all-missing lists them)")
        if any(row["state"] in ("failed", "blocked", "cancelled") or (row["state"] == "planned" and row["error_class"])
               for row in stages) or missing and not any(row["state"] == "running" for row in stages):
            print(f"\nnext: {'fix what the failed stages say, then ' if failed else ''}"
                  f"`prunesweep resume {workspace}` reruns what is not done")
    finally:
        ledger.close()


#: how a stage's process ended, as its message says it (an exception is named by the error class already).
_HOW = re.compile(r"(killed by SIG[A-Z0-9]+|exited with code -?\d+)")


def _how(message: str | None) -> str:
    """``: killed by SIGKILL`` from a failed stage's message, for its headline."""
    found = _HOW.findall(message or "")
    return f": {found[-1].strip()}" if found else ""


def print_blocked_and_running(workspace: Path, stages) -> None:
    """Blocked stages with the stage each waits for; running ones (with the process holding each one's
    lock, an orphan of a dead driver included) apart from those queued in a scheduler (with its reason);
    at most :data:`MISSING_SHOWN` lines each."""
    from orchestrator.state.stage_activity import activity_lines

    for line in activity_lines(Path(workspace), stages, MISSING_SHOWN):
        print(line)


def _print_retried(stages) -> None:
    """Stages that were retried automatically after infrastructure failures, with each failed attempt."""
    retried = [row for row in stages if row["retried"]]
    if not retried:
        return
    print(f"\nretried automatically ({len(retried)}):")
    for row in retried:
        print(f"  {row['key']}  {row['label']}  [{row['state']}, attempt {row['attempts']}]")
        print(textwrap.indent(row["retried"], "      "))


def _scheduler_logs(workspace: Path, row) -> list[Path]:
    """The log files the stage's backend (its scheduler) wrote for it, where they exist."""
    if row["backend"] not in BACKENDS:
        return []
    return backend_class(row["backend"]).log_files(Path(workspace), row)
