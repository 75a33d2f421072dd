"""Backends: where stages run. One subpackage each, registered by one line in :data:`BACKENDS`.

A backend's subpackage holds ``backend.py`` (``BACKEND``, a :class:`~.base.Backend`
subclass) and ``settings.py`` (``SETTINGS``, the pydantic model of its section of the
sweep file; pydantic and the standard library only, so planning imports no scheduler).
Nothing outside the subpackage names a backend: the driver, reconcile, status, cancel and
the sweep schema all go through this registry. See ``docs/extending/backend.md``.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from orchestrator.backends.base import DEFAULT_RUNNER, Backend, Events, StageToRun
    from orchestrator.backends.settings_base import SettingsModel

#: backend name -> its subpackage (imported only when the backend is used).
BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local",
    "slurm": "orchestrator.backends.slurm",
    "ray": "orchestrator.backends.ray",
}


def _package(name: str) -> str:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UserError(f"--backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}") from None


def backend_class(name: str) -> type[Backend]:
    """The :class:`Backend` subclass registered as ``name``."""
    return importlib.import_module(f"{_package(name)}.backend").BACKEND


def settings_model(name: str) -> type[SettingsModel]:
    """The pydantic model of the sweep file's section for backend ``name`` (with the shared ``retries``)."""
    from orchestrator.backends.settings_base import with_retries

    return with_retries(importlib.import_module(f"{_package(name)}.settings").SETTINGS)


def get_backend(name: str, workers: Optional[int] = None, runner: Optional[str] = None,
                settings: Optional[Mapping[str, Any]] = None, workspace: Optional[Path] = None) -> Backend:
    """The backend called ``name`` for one run; ``settings`` is the sweep's section for it.

    ``runner``: the worker entry point (default :data:`~.base.DEFAULT_RUNNER`).
    """
    from orchestrator.backends.base import DEFAULT_RUNNER

    return backend_class(name).create(dict(settings or {}), workspace,
                                      runner=DEFAULT_RUNNER if runner is None else runner, workers=workers)


def by_backend(rows: Iterable[Any]) -> dict[str, list[Any]]:
    """Ledger rows grouped by the registered backend that ran them (rows of no known backend left out)."""
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        if row["backend"] in BACKENDS:
            grouped.setdefault(row["backend"], []).append(row)
    return grouped


def __getattr__(name: str) -> Any:
    # the base classes load on first use: the command line reads BACKENDS without them (and pydantic)
    if name in ("Backend", "Events", "StageToRun", "DEFAULT_RUNNER"):
        from orchestrator.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Backend", "Events", "StageToRun", "get_backend", "backend_class", "settings_model", "by_backend",
           "BACKENDS", "DEFAULT_RUNNER"]
