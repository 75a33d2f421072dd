"""Which central results database a workspace reports to, and pushing its rows there.

The database URL comes from, first to last:

1. the sweep file's top-level ``results_db`` (of the workspace's most recently launched
   sweep that names one);
2. the environment variable ``PRUNESWEEP_RESULTS_DB`` (empty: none);
3. the user's config file ``$XDG_CONFIG_HOME/prunesweep/config.yaml`` (default
   ``~/.config/prunesweep/config.yaml``), key ``results_db``.

The workspace keeps only the database's target (user, host, port, database: the sweep's
``results_db`` is stored that way, :mod:`orchestrator.spec.sweep`), never a password. The
password of a push comes from the URL this process was given for that target (``launch``'s
sweep file, :func:`remember`), else from the environment's or the config file's URL when it
names the same target, else from libpq itself (``PGPASSWORD``, ``~/.pgpass``).

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
#: target -> the whole URL (password included) this process was given for it; never written anywhere.
_GIVEN: dict[str, str] = {}


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


def remember(url: Optional[str]) -> None:
    """Keep ``url`` (a sweep file's, with its password) for this process's pushes to its target."""
    if url:
        _GIVEN[central_db.target(url)] = url


def configured_url(ledger: Ledger) -> Optional[str]:
    """The database the workspace of ``ledger`` reports to (with the password found for it), or None."""
    for row in reversed(ledger.sweeps()):  # the most recently launched first
        url = json.loads(row["spec"]).get("results_db")
        if url:
            return _with_password(str(url))
    return configured_elsewhere()


def _with_password(url: str) -> str:
    """``url`` when it holds a secret (a workspace of an older prunesweep stored it); else the URL of the
    same target this process was given, or the environment's or config file's; else ``url`` (libpq's
    ``PGPASSWORD`` or ``~/.pgpass`` may have one)."""
    parsed = central_db.parse(url)
    if parsed.secrets:
        return url
    for candidate in (_GIVEN.get(parsed.target), _from_environment(), _from_config()):
        if candidate and central_db.target(candidate) == parsed.target:
            return candidate
    return url


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
        message = _without_secrets(str(error).splitlines()[0] if str(error) else type(error).__name__, url)
        print(f"prunesweep: results database not updated: {message}; the rows wait in the workspace "
              "and go with the next command that records results", file=sys.stderr)


def _without_secrets(text: str, url: Optional[str]) -> str:
    """``text`` with every secret of ``url`` (when it parses) and whatever looks like a password hidden."""
    try:
        return central_db.parse(url).hide(text) if url else central_db.redact(text)
    except ValueError:
        return central_db.redact(text)


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
        return (f"results database {central_db.describe(url)}: cannot count the waiting rows "
                f"({_without_secrets(str(error), url)})")
    if not count:
        return None
    return f"{count} row{'s' if count != 1 else ''} waiting for {central_db.describe(url)}"
