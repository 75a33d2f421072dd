"""``prunesweep preflight``: one short job on exactly what the sweep's stages get, before a campaign.

The sweep is planned; each distinct (network, task, dataset, ranks) of its training stages
becomes a target of one ``preflight`` stage (:mod:`workers.stages.preflight`), written to
``WORKSPACE/preflight/<time>/`` and run by the sweep's backend like any stage, with the
resources of the stage kind it stands for and a short time limit. Its rows are printed as one
table, and the run is recorded as ``WORKSPACE/preflight/<time>.json`` with the fingerprint of
what it proved: the backend and its settings, the worker code and the packages. A passing
record's measured throughput joins the table ``plan`` estimates GPU-hours with, for that
workspace (:func:`orchestrator.planning.gpu_hours.table_for`); ``launch`` looks for a passing
record of the same fingerprint (:func:`passing_record`).
"""
from __future__ import annotations

import datetime
import json
import math
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import workers
from orchestrator.errors import UserError
from orchestrator.planning.gpu_hours import preflight_records
from workers.stages.artifacts import atomic_write_json, inspect_done
from workers.stages.paths import ERROR_FILE, PREFLIGHT_DIR, PREFLIGHT_RESULT_FILE, STAGE_FILE
from workers.stages.preflight import installed_versions
from workers.stages.provenance import code_digest

#: the stage kinds whose configs train a network (the targets come from them).
_TRAINING_KINDS = ("dense", "imp", "eval", "finetune")


def _ranks(section: Any, kind: str) -> int:
    """Processes per stage of ``kind`` in the backend's section (1 when it has no such setting)."""
    ranks = getattr(section, "ranks", None)
    if isinstance(ranks, int):
        return ranks
    value = (ranks or {}).get(kind, 1)
    return value if isinstance(value, int) else int(value.nodes) * int(value.tasks_per_node)


def targets(spec: Any, plan: Any, section: Any) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """(ranks, a kind with those ranks) -> the distinct targets of the plan's training stages that run so.

    One target per (network, task, dataset, ranks); its recipe is the largest batch of the stages it
    stands for (memory is the first thing a node runs out of).
    """
    from orchestrator.planning.gpu_hours import VIEWS

    fraction = min(spec.pruning.fractions)
    found: dict[str, tuple[int, str, dict[str, Any]]] = {}
    for stage in plan.stages.values():
        if stage.kind not in _TRAINING_KINDS:
            continue
        config = stage.config
        dataset = config["target"] if stage.kind == "finetune" else config["dataset"]
        task = config.get("task", "labels")
        ranks = _ranks(section, stage.kind)
        identity = json.dumps([config["arch"], task, dataset, config.get("task_options"), ranks], sort_keys=True)
        target = {"label": f"{config['arch']['name']}/{task}/{dataset['name']}" + (f" x{ranks}" if ranks > 1 else ""),
                  "dataset": dataset, "arch": config["arch"], "task": task,
                  "task_options": config.get("task_options"), "recipe": config["recipe"], "fraction": fraction,
                  "views": VIEWS.get(task, 1), "seed": 0}
        before = found.get(identity)
        if before is None or int(config["recipe"]["batch_size"]) > int(before[2]["recipe"]["batch_size"]):
            found[identity] = (ranks, stage.kind, target)
    grouped: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for ranks, kind, target in found.values():
        same = next((key for key in grouped if key[0] == ranks), (ranks, kind))
        grouped.setdefault(same, []).append(target)
    return grouped


def fingerprint(backend: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a preflight proves: the backend and its settings, the worker code, the packages."""
    return {"backend": backend, "settings": json.loads(json.dumps(settings, sort_keys=True, default=str)),
            "code": code_digest(Path(workers.__file__).resolve().parent), "packages": installed_versions()}


def passing_record(workspace: Path, backend: str, settings: Mapping[str, Any]) -> Optional[Path]:
    """The newest passing preflight of the workspace with this backend, settings, code and packages."""
    wanted = fingerprint(backend, settings)
    for path, record in preflight_records(workspace):
        if record.get("passed") is True and record["fingerprint"] == wanted:
            return path
    return None


class _Events:
    """What the backend reports of the one preflight stage."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.state, self.message, self.job_id = "submitted", "", None

    def started(self, key, host, pid, job_id=None):
        self.state, self.job_id = "running", job_id

    def finished(self, key) -> bool:
        self.state = "done" if inspect_done(self.folder).ok else "failed"
        return self.state == "done"

    def failed(self, key, error_class, message):
        self.state, self.message = "failed", f"{error_class}: {message}"

    def blocked(self, key, because_of):
        self.state, self.message = "failed", f"blocked by {because_of}"

    def retrying(self, key, error_class, message):
        self.state = "running"

    def interrupted(self, key):
        self.state = "interrupted"

    def cancelled(self, key, reason):
        self.state, self.message = "failed", reason


class _TimedOut(KeyboardInterrupt):
    """The preflight's time is up (raised where Ctrl-C would be, so backends stop their work the same way)."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expire(signum, frame):
        raise _TimedOut()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _wait_detached(folder: Path, events: _Events, deadline: float) -> None:
    """A detached backend's job (SLURM): wait for its ``DONE.json`` or ``error.json``, with a progress line."""
    while not inspect_done(folder).ok and not (folder / ERROR_FILE).exists():
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut()
        print(f"\rpreflight: job {events.job_id or '?'} submitted, waiting ({left:.0f} s left) ", end="",
              file=sys.stderr, flush=True)
        time.sleep(min(2.0, left))
    print(file=sys.stderr)
    events.state = "done" if inspect_done(folder).ok else "failed"


def _run_one(backend_name: str, settings: dict[str, Any], workspace: Path, folder: Path, kind: str,
             timeout: float, workers: Optional[int]) -> _Events:
    from orchestrator.backends import StageToRun, backend_class, get_backend

    settings = backend_class(backend_name).blocking_settings(settings)
    backend = get_backend(backend_name, workers=workers, settings=settings, workspace=workspace)
    events = _Events(folder)
    deadline = time.monotonic() + timeout
    try:
        with _deadline(timeout):
            backend.run([StageToRun(folder.name, folder, kind=kind)], events)
            if backend.detached:
                _wait_detached(folder, events, deadline)
    except KeyboardInterrupt as stop:
        if events.job_id:
            backend_class(backend_name).cancel_jobs([{"key": folder.name, "job_id": events.job_id,
                                                      "backend": backend_name, "state": "running"}])
        if not isinstance(stop, _TimedOut):
            raise
        events.state, events.message = "failed", f"timed out after {timeout:g} s (--timeout)"
    return events


#: what a rank that cannot reach its peers says (torch's rendezvous, gloo and NCCL).
_RENDEZVOUS = ("init_process_group", "rendezvous", "TCPStore", "DistNetworkError", "DistStoreError",
               "Unable to find address", "Connection refused", "NCCL error", "gloo", "Socket Timeout")


def job_failure_row(target: str, state: str, message: str, ranks: int) -> dict[str, Any]:
    """The row of a preflight job that ended without its report: the check it names (the distributed
    setup when its ranks could not meet), the error's last line and the fix where one is known."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1] if lines else "")
    if ranks > 1 and any(marker in message for marker in _RENDEZVOUS):
        return {"target": target, "check": "distributed", "ok": False, "figure": f"{ranks} ranks",
                "detail": f"the ranks could not meet: {last}"[:600],
                "fix": "every rank must reach rank 0's MASTER_ADDR:MASTER_PORT: check the firewall between the "
                       "nodes and the network interface (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)"}
    if "timed out" in state or "timed out" in message:
        return {"target": target, "check": "job", "ok": False, "figure": "timed out", "detail": message[:600],
                "fix": "a longer --timeout, or a partition whose queue is shorter"}
    return {"target": target, "check": "job", "ok": False, "figure": state, "detail": (last or "no report")[:600],
            "fix": "read the stage's log.txt in the preflight folder"}


def _report(path: Path, workspace: Path) -> Optional[dict[str, Any]]:
    """The stage's ``preflight.json``, checked like input (the node wrote it), or None when it is not one."""
    from workers.stages.workspace_files import read_json

    try:
        report = read_json(path, root=workspace)
    except (OSError, ValueError):
        return None
    rows = report.get("rows") if isinstance(report, dict) else None
    environment = report.get("environment") if isinstance(report, dict) else None
    fields = {"target": str, "check": str, "figure": str, "detail": str, "fix": str}
    if not isinstance(rows, list) or not isinstance(environment, dict) or not all(
            isinstance(row, dict) and row.get("ok") in (True, False, None)
            and all(isinstance(row.get(name), kind) for name, kind in fields.items()) for row in rows):
        return None
    return {"rows": [{name: row[name] for name in (*fields, "ok")} for row in rows],
            "environment": {str(k): str(v)[:200] for k, v in environment.items()}}


def _table(rows: list[dict[str, Any]]) -> list[str]:
    marks = {True: "ok", False: "FAIL", None: "-"}
    lines = [[row["target"], row["check"], marks[row["ok"]], row["figure"]] for row in rows]
    widths = [max(len(str(line[i])) for line in [["target", "check", "result", "figure"], *lines]) for i in range(4)]
    out = ["  ".join(h.ljust(w) for h, w in zip(["target", "check", "result", "figure"], widths, strict=False))]
    for row, line in zip(rows, lines, strict=False):
        out.append("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=False)).rstrip())
        if row["ok"] is False or row["check"] == "environment":
            out.append(f"    {row['detail']}" + (f"\n    fix: {row['fix']}" if row["fix"] else ""))
    return out


def _throughput(rows: list[dict[str, Any]], device: str, targets_: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_label = {target["label"]: target for target in targets_}
    today = datetime.date.today().isoformat()
    entries = []
    for row in rows:
        if row["check"] == "throughput" and row["ok"] and row["target"] in by_label:
            target = by_label[row["target"]]
            rate = float(row["figure"].split()[0].replace(",", ""))
            entries.append({"arch": target["arch"]["name"], "dataset": target["dataset"]["name"], "device": device,
                            "samples_per_s": rate, "measured": f"{today}, prunesweep preflight ({row['detail']})"})
    return entries


def preflight(spec: Any, source: str, backend_name: Optional[str], timeout: float, workers: Optional[int]) -> int:
    """Run the preflight of ``spec``; print its table; record it; 0 when every check passed, else 1."""
    from orchestrator.backends import backend_class
    from orchestrator.planning.planner import plan_sweep
    from orchestrator.state.workspace import check_creatable

    plan = plan_sweep(spec)
    backend_name = backend_name or spec.backend
    section = getattr(spec, backend_name, None)
    settings = backend_class(backend_name).planned_settings(spec, plan, section.model_dump() if section else {})
    groups = targets(spec, plan, section)
    if not groups:
        raise UserError(f"{source}: the sweep plans no training stage: nothing to check")
    workspace = Path(spec.workspace)
    check_creatable(workspace, source)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    proved = fingerprint(backend_name, section.model_dump() if section else {})
    run_settings = {**settings}
    if "time_min" in run_settings:  # a scheduler's time limit: the preflight's own, not a stage's
        run_settings["time_min"] = {kind: max(1, math.ceil(timeout / 60)) for _, kind in groups}
    rows: list[dict[str, Any]] = []
    environment: dict[str, Any] = {}
    for index, ((ranks, kind), group) in enumerate(sorted(groups.items())):
        folder = workspace / PREFLIGHT_DIR / f"{stamp}-{index}"
        folder.mkdir(parents=True)
        key = folder.name
        atomic_write_json(folder / STAGE_FILE, {"kind": "preflight", "key": key, "identity": {}, "deps": {},
                                                  "config": {"targets": group, "packages": proved["packages"]}})
        print(f"preflight: {len(group)} target(s) on {backend_name} with the resources of a {kind} stage "
              f"({ranks} rank{'s' if ranks > 1 else ''}), at most {timeout:g} s", file=sys.stderr)
        events = _run_one(backend_name, run_settings, workspace, folder, kind, timeout, workers)
        result = folder / PREFLIGHT_RESULT_FILE
        if events.state != "done" or not result.exists():
            rows.append(job_failure_row(f"job {index} ({kind}, {ranks} rank{'s' if ranks > 1 else ''})",
                                        events.state, events.message, ranks))
            continue
        report = _report(result, workspace)
        if report is None:
            rows.append(job_failure_row(f"job {index} ({kind})", "damaged", f"{result}: not a preflight report", 1))
            continue
        rows += report["rows"]
        environment = environment or report["environment"]
    passed = all(row["ok"] is not False for row in rows)
    for line in _table(rows):
        print(line)
    device = environment.get("device_key")
    record = {"created": stamp, "sweep": spec.name, "source": str(source), "passed": passed, "fingerprint": proved,
              "environment": environment, "rows": rows,
              "throughput": _throughput(rows, device, [t for g in groups.values() for t in g]) if device else []}
    atomic_write_json(workspace / PREFLIGHT_DIR / f"{stamp}.json", record)
    if passed:
        print(f"preflight passed: {workspace / PREFLIGHT_DIR / (stamp + '.json')}; "
              f"`prunesweep plan {source}` now estimates hours on {device}")
        return 0
    failed = sorted({row["check"] for row in rows if row["ok"] is False})
    print(f"preflight FAILED ({', '.join(failed)}): fix what the table says, then run it again", file=sys.stderr)
    return 1
