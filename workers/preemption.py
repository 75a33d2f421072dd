"""Saving a training's progress on request, before a preemption or a time limit.

A scheduler announces the end of an allocation with a signal whose handler (in the
backend) calls :func:`save_progress`. The signal may arrive in the middle of an optimizer
step; :func:`update_guard` defers it while a step changes the weights, so a save made
from the handler always sees the model, the optimizer and the step count agree.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Callable, Iterator, Optional

#: signals held back while a step updates the weights (SIGUSR2: SLURM's warning signal).
DEFERRED_SIGNALS = frozenset({signal.SIGUSR2})

_saver: Optional[Callable[[], None]] = None


@contextlib.contextmanager
def saving_with(saver: Callable[[], None]) -> Iterator[None]:
    """Make ``saver`` the function :func:`save_progress` calls, for the duration of the block."""
    global _saver
    previous, _saver = _saver, saver
    try:
        yield
    finally:
        _saver = previous


@contextlib.contextmanager
def update_guard() -> Iterator[None]:
    """Hold back :data:`DEFERRED_SIGNALS` inside the block; a pending one is handled on exit."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def save_progress() -> bool:
    """Save the running training's state now (mid-epoch); False when nothing is training."""
    if _saver is None:
        return False
    _saver()
    return True
