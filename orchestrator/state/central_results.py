"""Which central results database a workspace reports to, and pushing its rows there.

The database URL comes from, first to last:

1. the sweep file's top-level ``results_db`` (of the workspace's most recently launched
   sweep that names one);
2. the environment variable ``PRUNESWEEP_RESULTS_DB`` (empty: none);
3. the user's config file ``$XDG_CONFIG_HOME/prunesweep/config.yaml`` (default
   ``~/.config/prunesweep/config.yaml``), key ``results_db``.

Without any, nothing here imports SQLAlchemy and nothing is pushed. With one, each command
that records results rows (launch, resume, and the reading commands that bring the table up
to date) then pushes the rows the database lacks (:func:`results.central_db.push`); a
database that cannot take them never fails a command or a stage: the rows wait in the
workspace, one line says so on stderr, and ``status`` counts them.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from orchestrator.errors import UserError
from orchestrator.state.ledger import Ledger
from results import central_db

ENV_VAR = "PRUNESWEEP_RESULTS_DB"
CONFIG_KEYS = ("results_db",)
#: after a failed push, this process waits so long before trying again (a launch records a row per stage).
RETRY_AFTER_S = 30.0

_failed_at: dict[str, float] = {}


def config_file() -> Path:
    """The user's prunesweep config file (it may not exist)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "prunesweep" / "config.yaml"


def _from_config() -> Optional[str]:
    """``results_db`` of the user's config file; UserError (exit 2) naming the file for a bad one."""
    path = config_file()
    if not path.is_file():
        return None
    from orchestrator.yaml_input import YamlInputError, load_yaml

    try:
        data = load_yaml(path.read_bytes())
    except (OSError, YamlInputError) as error:
        raise UserError(f"{path}: cannot read the config file ({error})") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings; allowed keys: {', '.join(CONFIG_KEYS)}")
    unknown = sorted(str(key) for key in data if key not in CONFIG_KEYS)
    if unknown:
        raise UserError(f"{path}: {unknown[0]}: unknown key; allowed: {', '.join(CONFIG_KEYS)}")
    url = data.get("results_db")
    if url is None:
        return None
    try:
        central_db.check_url(url)
    except ValueError as error:
        raise UserError(f"{path}: results_db: {error}") from None
    return str(url)


def _from_environment() -> Optional[str]:
    url = os.environ.get(ENV_VAR, "").strip()
    if not url:
        return None
    try:
        central_db.check_url(url)
    except ValueError as error:
        raise UserError(f"{ENV_VAR}: {error}") from None
    return url


def check_settings() -> None:
    """Refuse (exit 2, nothing written) a malformed URL in the environment or the config file."""
    _from_environment()
    _from_config()


def configured_elsewhere() -> Optional[str]:
    """The database of the environment or the user's config file (no sweep at hand), or None."""
    return _from_environment() or _from_config()


def configured_url(ledger: Ledger) -> Optional[str]:
    """The database the workspace of ``ledger`` reports to, or None."""
    for row in reversed(ledger.sweeps()):  # the most recently launched first
        url = json.loads(row["spec"]).get("results_db")
        if url:
            return str(url)
    return configured_elsewhere()


def push_waiting(workspace: Path, ledger: Ledger) -> None:
    """Push the workspace's waiting rows to its database, if it has one; never raises.

    Called where rows are recorded (:func:`orchestrator.state.reconcile.ingest_results`). A failure
    prints one line on stderr (the URL's password hidden) and this process tries again
    only after :data:`RETRY_AFTER_S`.
    """
    url: Optional[str] = None
    try:
        url = configured_url(ledger)
        if url is None:
            return
        failed = _failed_at.get(url)
        if failed is not None and time.monotonic() - failed < RETRY_AFTER_S:
            return
        if not central_db.waiting(workspace, url):
            return
        central_db.push(workspace, url)
    except Exception as error:  # the database, the URL or the workspace's state: never fail the command
        _failed_at[url or ""] = time.monotonic()
        message = central_db.redact(str(error).splitlines()[0] if str(error) else type(error).__name__)
        print(f"prunesweep: results database not updated: {message}; the rows wait in the workspace "
              "and go with the next command that records results", file=sys.stderr)


def waiting_line(workspace: Path, ledger: Ledger) -> Optional[str]:
    """``N rows waiting for HOST:PORT/DATABASE``, or None when none wait (or no database is set)."""
    try:
        url = configured_url(ledger)
    except UserError as error:
        return f"results database: {error}"
    if url is None:
        return None
    try:
        count = central_db.waiting(workspace, url)
    except Exception as error:  # a damaged central_db.sqlite must not stop `status`
        return f"results database {central_db.describe(url)}: cannot count the waiting rows ({error})"
    if not count:
        return None
    return f"{count} row{'s' if count != 1 else ''} waiting for {central_db.describe(url)}"
