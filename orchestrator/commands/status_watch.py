"""``prunesweep status WS --watch``: one summary line per refresh until nothing is queued or running.

Each refresh brings the ledger in line with the artifacts and the scheduler (as ``status``
does) and prints one line: the time, done/total, running, queued, failed and blocked counts
and an ETA. The ETA comes from the measured wall time of the stages done so far: from the
moment the ledger saw a stage start to the moment it saw it done (process start, data loading
and evaluation included: a stage's own ``wall_time_s`` counts only its training, which made
the ETA ~2.5x too optimistic), or its manifest's ``wall_time_s`` where the ledger has no such
times (a stage found done on disk); the mean per kind (or of all kinds, for a kind none of
whose stages finished yet) times the stages still to run, divided by how many run at once now.
When nothing is queued or running any more it prints the full ``status`` once and ends.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from orchestrator.state.ledger import Ledger
from orchestrator.state.reconcile import reconcile_and_record
from orchestrator.state.stage_activity import phases
from workers.stages.paths import DONE_FILE, stage_dir
from workers.stages.workspace_files import read_json

#: seconds between two refreshes unless ``--interval`` says otherwise.
DEFAULT_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Snapshot:
    """What one refresh saw."""

    total: int
    counts: Mapping[str, int]  # ledger state -> stages
    queued: int
    running: int
    eta_s: Optional[float]

    @property
    def active(self) -> bool:
        """Whether anything is still queued or running."""
        return self.queued + self.running > 0

    def line(self, now: Optional[float] = None) -> str:
        """``12:03:04  done 13/17  running 2  queued 2  failed 1  blocked 3  ETA ~1m20s``."""
        clock = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
        eta = "" if not self.active else (f"  ETA ~{format_duration(self.eta_s)}" if self.eta_s is not None
                                          else "  ETA unknown (no stage done yet)")
        return (f"{clock}  done {self.counts.get('done', 0)}/{self.total}  running {self.running}  "
                f"queued {self.queued}  failed {self.counts.get('failed', 0)}  "
                f"blocked {self.counts.get('blocked', 0)}"
                + (f"  cancelled {self.counts['cancelled']}" if self.counts.get("cancelled") else "") + eta)


def format_duration(seconds: Optional[float]) -> str:
    """``45s``, ``12m05s``, ``3h20m``, ``2d04h``."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def estimate_eta(stages: Sequence[Any], durations: Mapping[str, float], in_parallel: int
                 ) -> Optional[float]:
    """Seconds until the stages not finished (planned or running) are done, from ``durations``
    (stage key -> measured seconds of done stages); None when no duration is known."""
    if not durations:
        return None
    kind_of = {row["key"]: row["kind"] for row in stages}
    per_kind: dict[str, list[float]] = defaultdict(list)
    for key, seconds in durations.items():
        per_kind[kind_of.get(key, "")].append(seconds)
    overall = sum(durations.values()) / len(durations)
    left = [row for row in stages if row["state"] in ("planned", "running")]
    work = sum(sum(per_kind[row["kind"]]) / len(per_kind[row["kind"]]) if per_kind.get(row["kind"]) else overall
               for row in left)
    return work / max(1, in_parallel)


def wall_seconds(row: Any) -> Optional[float]:
    """Seconds from a done stage's start to its end as its ledger row saw them (its last attempt),
    or None when the row has no such times (a ledger row is read like input: finite, positive, < a year)."""
    if row is None:
        return None
    started, ended = row["started_at"], row["ended_at"]
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (started, ended)):
        return None
    seconds = float(ended) - float(started)
    return seconds if 0 < seconds < 365 * 86400 else None


def snapshot(workspace: Path, durations: dict[str, float]) -> Snapshot:
    """Reconcile the workspace and count; ``durations`` (a cache across refreshes) gains the done stages."""
    ledger = Ledger(workspace, reading=True)
    try:
        done = reconcile_and_record(workspace, ledger)
        stages = ledger.stages()
    finally:
        ledger.close()
    rows = {row["key"]: row for row in stages}
    for key in done:
        if key not in durations:
            seconds = wall_seconds(rows.get(key))
            if seconds is None:
                try:
                    seconds = float(read_json(stage_dir(workspace, key) / DONE_FILE, workspace)
                                    ["metrics"]["wall_time_s"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
            durations[key] = seconds
    described = phases(workspace, stages)
    queued = sum(phase == "queued" for phase, _ in described.values())
    running = len(described) - queued
    known = {key: seconds for key, seconds in durations.items() if key in done}
    return Snapshot(total=len(stages), counts=Counter(row["state"] for row in stages), queued=queued,
                    running=running, eta_s=estimate_eta(stages, known, running))


def watch(workspace: Path, interval_s: float = DEFAULT_INTERVAL_S, final: Optional[Callable[[], None]] = None,
          sleep: Callable[[float], None] = time.sleep) -> Snapshot:
    """Print a summary line every ``interval_s`` until nothing is queued or running; then call
    ``final`` (the full status) and return the last snapshot."""
    durations: dict[str, float] = {}
    while True:
        seen = snapshot(Path(workspace), durations)
        print(seen.line(), flush=True)
        if not seen.active:
            break
        sleep(interval_s)
    if final is not None:
        print()
        final()
    return seen
