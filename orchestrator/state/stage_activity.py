"""What ``status`` says of stages that are not finished: blocked (and on what), queued, running.

The ledger's ``running`` covers a job waiting in a scheduler's queue as much as one that
trains; each backend tells them apart (:meth:`~.backends.base.Backend.describe_running`).
A running stage is shown with the process that holds its lock (:mod:`workers.stages.lock`)
where one does, else with what its backend says, else where its ledger row says.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from orchestrator.backends import BACKENDS, backend_class, by_backend
from workers.stages.lock import holder
from workers.stages.paths import stage_dir


def phases(workspace: Path, stages) -> dict[str, tuple[str, str]]:
    """Stage key -> (``queued`` | ``running``, detail) for every stage the ledger calls running."""
    running = [row for row in stages if row["state"] == "running"]
    described: dict[str, tuple[str, str]] = {}
    for name, rows in by_backend(running).items():
        if name in BACKENDS:
            described.update(backend_class(name).describe_running(Path(workspace), rows))
    for row in running:
        held = holder(stage_dir(workspace, row["key"]))
        if held is not None:  # a live process runs it, whatever the scheduler said a moment ago
            extra = described.get(row["key"], ("", ""))[1].partition("; ")[2]
            described[row["key"]] = ("running", held.describe() + (f"; {extra}" if extra else ""))
        elif row["key"] not in described:
            described[row["key"]] = ("running", f"pid {row['pid'] or '?'} on {row['host'] or '?'} (starting)")
    return described


def activity_lines(workspace: Path, stages, shown: int) -> list[str]:
    """The lines of ``status`` about blocked, running and queued stages (at most ``shown`` of each list)."""
    lines: list[str] = []
    blocked = [row for row in stages if row["state"] == "blocked"]
    if blocked:
        causes: dict[str, list] = {}
        for row in blocked:  # one line per cause: a failed stage blocks every stage after it
            causes.setdefault(row["error_message"] or row["error_class"] or "blocked", []).append(row)
        lines.append(f"\nblocked stages ({len(blocked)}, by cause):")
        for cause, group in sorted(causes.items(), key=lambda item: -len(item[1]))[:shown]:
            examples = ", ".join(row["key"] for row in group[:3]) + (", ..." if len(group) > 3 else "")
            lines.append(f"  {len(group)} blocked: {cause} ({examples})")
        if len(causes) > shown:
            lines.append(f"  ... and {len(causes) - shown} more causes")
    described = phases(workspace, stages)
    rows = {row["key"]: row for row in stages}
    running = [key for key, (phase, _) in described.items() if phase != "queued"]
    queued = [key for key, (phase, _) in described.items() if phase == "queued"]

    def tag(row) -> str:
        job = f", job {row['job_id']}" if row["job_id"] else ""
        return f"[{row['backend'] or '?'}{job}, attempt {row['attempts']}]"

    if running:
        lines.append(f"\nrunning ({len(running)}):")
        for key in running[:shown]:
            lines.append(f"  {key}  {rows[key]['label']}  {tag(rows[key])} {described[key][1]}".rstrip())
        if len(running) > shown:
            lines.append(f"  ... and {len(running) - shown} more running")
    if queued:
        reasons = Counter(described[key][1] for key in queued)
        why = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        lines.append(f"\nqueued ({len(queued)}; waiting for: {why}):")
        for key in queued[:shown]:
            lines.append(f"  {key}  {rows[key]['label']}  {tag(rows[key])} {described[key][1]}")
        if len(queued) > shown:
            lines.append(f"  ... and {len(queued) - shown} more queued")
    return lines
