"""What ``status`` says of stages that are not finished: blocked (and on what), queued, running.

The ledger's ``running`` covers a job waiting in a scheduler's queue as much as one that
trains; each backend tells them apart (:meth:`~.backends.base.Backend.describe_running`).
A stage the backend does not describe runs where its ledger row says (host, pid, start).
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from .backends import BACKENDS, backend_class, by_backend


def phases(workspace: Path, stages) -> dict[str, tuple[str, str]]:
    """Stage key -> (``queued`` | ``running``, detail) for every stage the ledger calls running."""
    running = [row for row in stages if row["state"] == "running"]
    described: dict[str, tuple[str, str]] = {}
    for name, rows in by_backend(running).items():
        if name in BACKENDS:
            described.update(backend_class(name).describe_running(Path(workspace), rows))
    for row in running:
        if row["key"] not in described:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["started_at"])) if row["started_at"] else ""
            where = f"on {row['host']}" + (f" pid {row['pid']}" if row["pid"] else "") if row["host"] else ""
            described[row["key"]] = ("running", " ".join(part for part in (where, f"since {since}" if since else "")
                                                         if part))
    return described


def activity_lines(workspace: Path, stages, shown: int) -> list[str]:
    """The lines of ``status`` about blocked, queued and running stages (at most ``shown`` of each list)."""
    lines: list[str] = []
    label = {row["key"]: row["label"] for row in stages}
    blocked = [row for row in stages if row["state"] == "blocked"]
    if blocked:
        lines.append(f"\nblocked stages ({len(blocked)}):")
        for row in blocked[:shown]:
            lines.append(f"  {row['key']}  {row['label']}  [{row['error_class'] or 'blocked'}] "
                         f"{row['error_message'] or ''}".rstrip())
        if len(blocked) > shown:
            lines.append(f"  ... and {len(blocked) - shown} more")
    described = phases(workspace, stages)
    if not described:
        return lines
    queued = {key: detail for key, (phase, detail) in described.items() if phase == "queued"}
    running = {key: detail for key, (phase, detail) in described.items() if phase != "queued"}
    reasons = Counter(queued.values())
    why = ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common())
    lines.append(f"\nin progress: {len(running)} running, {len(queued)} queued" + (f" ({why})" if why else ""))
    for key in list(running)[:shown]:
        lines.append(f"  running  {key}  {label.get(key, '')}  {running[key]}".rstrip())
    if len(running) > shown:
        lines.append(f"  ... and {len(running) - shown} more running")
    for key in list(queued)[:shown]:
        lines.append(f"  queued   {key}  {label.get(key, '')}  ({queued[key]})")
    if len(queued) > shown:
        lines.append(f"  ... and {len(queued) - shown} more queued")
    return lines
