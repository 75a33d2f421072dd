"""Backends: where stages run. ``get_backend(name, **options)`` builds one."""
from __future__ import annotations

from ..errors import UserError
from .base import DEFAULT_RUNNER, Backend, Events, Task

BACKENDS = ("local",)


def get_backend(name: str, workers=None, runner: str = DEFAULT_RUNNER) -> Backend:
    """The backend called ``name``."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(workers=workers, runner=runner)
    raise UserError(f"--backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")


__all__ = ["Backend", "Events", "Task", "get_backend", "BACKENDS", "DEFAULT_RUNNER"]
