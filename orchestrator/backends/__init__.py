"""Backends: where stages run. ``get_backend(name, **options)`` builds one."""
from __future__ import annotations

from ..errors import UserError
from .base import DEFAULT_RUNNER, Backend, Events, Task

BACKENDS = ("local", "slurm", "ray")


def get_backend(name: str, workers=None, runner: str = DEFAULT_RUNNER, settings=None, log_folder=None,
                workspace=None) -> Backend:
    """The backend called ``name``; ``settings`` is the sweep's section for it."""
    if name == "local":
        from .local import LocalBackend

        settings = settings or {}
        return LocalBackend(workers=workers, runner=runner, stages_per_gpu=settings.get("stages_per_gpu", 1),
                            ranks=settings.get("ranks"))
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(settings or {}, log_folder, runner=runner)
    if name == "ray":
        from .ray import RayBackend

        return RayBackend(settings or {}, workspace, runner=runner)
    raise UserError(f"--backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")


__all__ = ["Backend", "Events", "Task", "get_backend", "BACKENDS", "DEFAULT_RUNNER"]
