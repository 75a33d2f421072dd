"""Damaged workspaces: diagnose a store before a command uses it, and ``prunesweep repair``.

The artifacts are the truth (``stage.json``, ``DONE.json`` and the checksums it lists); the
ledger and the results table are caches of them. A command that meets a damaged store
(garbage, truncated, empty, a folder, unreadable) exits 2 with one line naming the file and
pointing here. :func:`repair` then:

- removes the temp files of killed writers (ours only, never through a link);
- moves every malformed file aside into a new ``WORKSPACE/quarantine/<UTC time>/`` (same
  relative path; ``<UTC time>.2``, ... when a repair of the same second made one already: nothing
  quarantined is ever overwritten): a store that is not a sound SQLite database of ours, a
  ``stage.json`` that is not a stage's (a link or a FIFO included: never followed, never waited
  on), a ``DONE.json`` that is malformed or whose artifacts no longer match (with the artifacts it
  lists, so the stage is recomputed from scratch). Every move stays inside the workspace: a
  ``quarantine``, ``stages`` or ``sweeps`` that is a link is refused before anything is touched
  (exit 2), a move the system refuses (an immutable folder) is one line, exit 1;
- rebuilds the ledger when it was moved aside: the sweeps from the records ``launch`` keeps in
  ``WORKSPACE/sweeps/<name>.json`` (and from sweep files named on the command line), their
  stages and cells planned again, every other stage folder from its ``stage.json``; a missing
  ``stage.json`` of a known sweep's stage is written again;
- reconciles the ledger with the artifacts, removes the results rows of stages not verified
  done (those whose artifacts it moved aside, or that are gone) and records every done cell
  missing from the results table (all of them when the table was moved aside): after a
  repair the table holds the rows of the verified stages only.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Optional

from orchestrator.errors import EnvironmentProblem, UserError
from orchestrator.state.ledger import Ledger
from orchestrator.state.store_health import store_problem
from orchestrator.state.workspace import refuse_linked_folders
from workers.stages.artifacts import atomic_write_json, manifest_problem, verify_done
from workers.stages.disk_space import SPACE_ERRNOS
from workers.stages.paths import (
    DONE_FILE,
    LEDGER_FILE,
    QUARANTINE_DIR,
    RESULTS_FILE,
    STAGE_FILE,
    STAGES_DIR,
    SWEEPS_DIR,
)
from workers.stages.workspace_files import (
    LinkedFolder,
    list_folder,
    make_unique_folder,
    move_within,
    read_json,
    remove_temp_files,
)

#: the tables each store must hold.
_LEDGER_TABLES = frozenset({"stages", "deps", "sweeps", "verified", "cells"})
_SIDE_FILES = ("-wal", "-shm", "-journal")


# --------------------------------------------------------------------------- temp files


def remove_leftover_temps(workspace: Path, ledger: Optional[Ledger] = None) -> list[Path]:
    """Remove the temp files of killed writers in the workspace folder and its stage folders.

    The caller holds the workspace lock, so no launch or resume writes; a stage the ledger
    still calls running (a scheduler may be running it now) keeps its folder untouched.
    """
    workspace = Path(workspace)
    running = set()
    if ledger is not None:
        running = {row["key"] for row in ledger.stages() if row["state"] == "running"}
    removed = remove_temp_files(workspace, workspace)
    stages = workspace / STAGES_DIR
    for name, is_folder in list_folder(stages, workspace):
        if is_folder and name not in running:
            removed += remove_temp_files(stages / name, workspace)
    return removed


# --------------------------------------------------------------------------- sweep records


def keep_sweep_record(workspace: Path, name: str, source: str, settings: str, spec: dict) -> None:
    """Keep what ``launch`` registered for sweep ``name``, so ``repair`` can plan it again."""
    atomic_write_json(Path(workspace) / SWEEPS_DIR / f"{name}.json",
                      {"name": name, "source": source, "settings": settings, "spec": spec}, Path(workspace))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value


# --------------------------------------------------------------------------- repair


class _Repair:
    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self.name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.quarantine: Optional[Path] = None  # made at the first move, under a name no repair used
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def move_aside(self, path: Path, why: str) -> None:
        """Move ``path`` (a file, a link or a folder) into the quarantine folder at its relative path,
        never through a link, never over a file."""
        relative = path.relative_to(self.workspace)
        try:
            if self.quarantine is None:
                self.quarantine = make_unique_folder(self.workspace / QUARANTINE_DIR, self.name, self.workspace)
            target = self.quarantine / relative
            move_within(path, target, self.workspace)
        except LinkedFolder as error:
            raise UserError(str(error.strerror)) from None
        except OSError as error:
            if error.errno in SPACE_ERRNOS:
                raise
            where = self.quarantine or self.workspace / QUARANTINE_DIR
            raise EnvironmentProblem(
                f"{path}: cannot be moved aside into {where} ({error.strerror}); nothing was lost: make the folders "
                f"writable (`chattr -i` for an immutable one), then run `prunesweep repair {self.workspace}` again"
            ) from None
        self.say(f"moved {relative} to {target.relative_to(self.workspace)}: {why}")

    # -- stores
    def store_is_sound(self, path: Path, tables: frozenset[str], known_versions: int) -> Optional[str]:
        """What is wrong with a store, or None; UserError for one of a newer prunesweep (never moved)."""
        problem = store_problem(path)
        if problem or not path.exists():
            return problem
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=60)) as conn:
                check = conn.execute("PRAGMA quick_check").fetchone()
                if not check or check[0] != "ok":
                    return f"fails SQLite's integrity check ({check[0] if check else 'no answer'})"
                found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as error:
            if any(word in str(error).lower() for word in ("locked", "busy")):  # in use, not damaged: keep it
                raise UserError(f"{path}: is in use by another program ({error}); run the repair again once it "
                                "is done") from None
            return f"cannot be read by SQLite ({error})"
        if version > known_versions:
            raise UserError(f"{path}: schema version {version} was made by a newer prunesweep (this one knows up to "
                            f"{known_versions}); upgrade prunesweep to repair this workspace")
        if not tables <= found:
            return f"lacks the table(s) {', '.join(sorted(tables - found))}"
        return None

    def check_store(self, name: str, tables: frozenset[str], known_versions: int) -> Optional[str]:
        """What is wrong with a store (None: nothing), or UserError for one of a newer prunesweep."""
        return self.store_is_sound(self.workspace / name, tables, known_versions)

    def move_store_aside(self, name: str, problem: str) -> None:
        """Move a damaged store aside with its side files."""
        path = self.workspace / name
        for side in _SIDE_FILES:
            if os.path.lexists(f"{path}{side}"):
                self.move_aside(Path(f"{path}{side}"), f"belongs to the damaged {name}")
        self.move_aside(path, problem)

    # -- stage folders
    def check_stage_folders(self) -> dict[str, dict]:
        """Quarantine malformed stage.json and DONE.json files; return key -> sound stage.json."""
        stages: dict[str, dict] = {}
        root = self.workspace / STAGES_DIR
        for name, is_folder in list_folder(root, self.workspace):
            if not is_folder:
                continue
            folder = root / name
            stage_file = folder / STAGE_FILE
            if os.path.lexists(stage_file):
                try:  # a link or a FIFO is no stage's description: never followed, never waited on
                    stage = read_json(stage_file, self.workspace)
                except (OSError, ValueError, RecursionError):
                    stage = None
                if _stage_problem(stage, folder.name) is None:
                    stages[folder.name] = stage
                else:
                    self.move_aside(stage_file, _stage_problem(stage, folder.name) or "malformed")
            done_file = folder / DONE_FILE
            if not os.path.lexists(done_file):
                continue
            ok, reason = verify_done(folder)
            if ok:
                continue
            listed: list[str] = []
            try:
                manifest = read_json(done_file, self.workspace)
                if manifest_problem(manifest) is None:
                    listed = list(manifest["files"])
            except (OSError, ValueError, RecursionError):
                pass
            self.move_aside(done_file, f"{reason}; the stage will be recomputed")
            for name in listed:  # plain names inside the folder (manifest_problem checked them)
                if os.path.lexists(folder / name):
                    self.move_aside(folder / name, f"listed by the manifest moved aside from {folder.name}")
        return stages


def _stage_problem(stage: Any, folder: str) -> Optional[str]:
    from orchestrator.state.workspace import stage_record_problem

    return stage_record_problem(stage, folder)


def _sweep_record_problem(record: Any, path: Path) -> Optional[str]:
    """What makes a parsed ``sweeps/<name>.json`` unfit to plan its sweep again, or None."""
    if not isinstance(record, dict):
        return "unreadable or not a mapping"
    if record.get("name") != path.stem:
        return f"it names the sweep {str(record.get('name'))[:80]!r}, not its file's {path.stem!r}"
    if not isinstance(record.get("source"), str) or not isinstance(record.get("settings"), str):
        return "no 'source' and 'settings' text"
    if not isinstance(record.get("spec"), dict):
        return "no 'spec' mapping"
    return None


def repair(workspace: Path, sweep_files: tuple[str, ...] = ()) -> list[str]:
    """Repair ``workspace`` as the module says; return the lines saying what was done.

    The caller holds the workspace lock. A store made by a newer prunesweep is refused,
    never moved aside.
    """
    from orchestrator.planning.planner import plan_sweep, settings_fingerprint
    from orchestrator.spec import load_spec
    from orchestrator.spec.loading import validate_spec
    from orchestrator.state.ledger import MIGRATIONS as LEDGER_MIGRATIONS
    from orchestrator.state.reconcile import ingest_results, reconcile
    from orchestrator.state.workspace import existing_captures, materialise
    from results.migrations import MIGRATIONS as RESULTS_MIGRATIONS
    from results.table import keep_only_stages

    work = _Repair(workspace)
    workspace = work.workspace
    refuse_linked_folders(workspace)  # before anything is touched: no move may leave the workspace
    # judged before anything is touched: a bad sweep file or a store of a newer prunesweep stops here
    specs_from_files = [load_spec(path) for path in sweep_files]
    ledger_problem = work.check_store(LEDGER_FILE, _LEDGER_TABLES, len(LEDGER_MIGRATIONS))
    results_problem = work.check_store(RESULTS_FILE, frozenset(), len(RESULTS_MIGRATIONS))
    for path in remove_leftover_temps(workspace):
        work.say(f"removed {path.relative_to(workspace)}: a temp file left by a killed writer")
    for name, problem in ((LEDGER_FILE, ledger_problem), (RESULTS_FILE, results_problem)):
        if problem:
            work.move_store_aside(name, problem)
    ledger_moved, results_moved = bool(ledger_problem), bool(results_problem)
    stages = work.check_stage_folders()
    rebuilt = ledger_moved or not (workspace / LEDGER_FILE).exists()
    ledger = Ledger(workspace)
    try:
        sweeps: dict[str, tuple[str, str, dict, Any]] = {}
        if not rebuilt:
            for row in ledger.sweeps():
                sweeps[row["name"]] = (row["source"], row["settings"], json.loads(row["spec"]), None)
        for record_name, _ in list_folder(workspace / SWEEPS_DIR, workspace):
            if not record_name.endswith(".json"):
                continue
            record_path = workspace / SWEEPS_DIR / record_name
            try:
                record = read_json(record_path, workspace)
            except (OSError, ValueError, RecursionError):
                record = None
            if _sweep_record_problem(record, record_path) is None:
                sweeps.setdefault(record["name"], (record["source"], record["settings"], record["spec"], None))
            else:
                work.move_aside(record_path, f"not a sweep record ({_sweep_record_problem(record, record_path)})")
        for spec, source in zip(specs_from_files, sweep_files, strict=True):
            settings = settings_fingerprint(spec)
            if spec.name in sweeps and sweeps[spec.name][1] != settings:
                raise UserError(f"{source}: name: a sweep named {spec.name!r} was launched in {workspace} with "
                                "other settings; name the sweep file it was launched from")
            sweeps[spec.name] = (source, settings, spec.model_dump(), spec)
        for name, (source, settings, dump, given) in sweeps.items():
            try:
                spec = given or validate_spec(_without_none(dump), source)
            except UserError as error:
                work.say(f"sweep {name}: could not be planned again ({error}); launch it again to restore its cells")
                continue
            if given is None and settings_fingerprint(spec) != settings:
                # a default changed meaning (issue 28: VOC07's AP): planning it again would plan other stages
                work.say(f"sweep {name}: its settings mean something else in this prunesweep; not planned again "
                         "(its done stages and rows are kept); launch its file under a new name to compute it anew")
                continue
            plan = plan_sweep(spec, existing_captures(workspace))
            missing = [stage for stage in plan.stages.values() if stage.key not in stages]
            materialise(workspace, missing)
            if missing:
                work.say(f"sweep {name}: wrote the stage.json of {len(missing)} stage(s) again")
            if rebuilt or given is not None:
                ledger.register(name, source, settings, dump, plan.stages.values(), plan.cells)
                stages.update({stage.key: stage.to_json() for stage in plan.stages.values()})
        if rebuilt:
            known = {row["key"] for row in ledger.stages()}
            orphans = [stage for key, stage in stages.items() if key not in known]
            with ledger.transaction() as db:
                for stage in orphans:
                    recipe = stage["config"].get("recipe")
                    epochs = recipe.get("epochs", 0) if isinstance(recipe, dict) else 0
                    db.execute("INSERT OR IGNORE INTO stages (key, kind, label, epochs, state) "
                               "VALUES (?, ?, ?, ?, 'planned')",
                               (stage["key"], stage["kind"], str(stage.get("label", "")),
                                epochs if isinstance(epochs, (int, float)) else 0))
                    db.executemany("INSERT OR IGNORE INTO deps (key, role, dep_key) VALUES (?, ?, ?)",
                                   [(stage["key"], role, dep) for role, dep in stage.get("deps", {}).items()])
            work.say(f"rebuilt {LEDGER_FILE}: {len(sweeps)} sweep(s), {len(known)} of their stages"
                     + (f", {len(orphans)} stage folder(s) of no known sweep" if orphans else ""))
            if not sweeps:
                work.say("no sweep record was found: launch each sweep again (nothing done is rerun) or run "
                         f"`prunesweep repair {workspace} SWEEP.yaml ...` to restore their cells")
        done = reconcile(workspace, ledger, lock_held_by_us=True, rehash=True)
        removed = keep_only_stages(workspace, done)
        if removed:
            work.say(f"removed {removed} row(s) of {RESULTS_FILE} whose stage is not verified done "
                     "(their artifacts were moved aside or are gone) or that held a value their column does not take")
        recorded = ingest_results(workspace, ledger, done)
        if results_moved or recorded:
            work.say(f"{'rebuilt' if results_moved else 'completed'} {RESULTS_FILE}: recorded {recorded} row(s) "
                     "from the done stages")
        states: dict[str, int] = {}
        for row in ledger.stages():
            states[row["state"]] = states.get(row["state"], 0) + 1
        work.say("stages: " + (", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"))
    finally:
        ledger.close()
    if work.quarantine is not None:
        work.say(f"what was moved aside is in {work.quarantine}; delete it once you no longer need it")
    return work.lines
