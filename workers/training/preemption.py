"""Saving a training's progress on request, before a preemption or a time limit.

A scheduler announces the end of an allocation with a signal whose handler (in the
backend) calls :func:`save_progress`. The signal may arrive in the middle of an optimizer
step; :func:`update_guard` defers it while a step changes the weights, so a save made
from the handler always sees the model, the optimizer and the step count agree.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Optional

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
    """Hold back :data:`DEFERRED_SIGNALS` inside the block; one that arrived is handled on exit.

    Python runs signal handlers in the main thread whichever thread the kernel picked (torch
    keeps a pool of them), so masking the signal in one thread is not enough: for the block,
    the Python-level handlers are swapped for one that only notes the signal. Outside the
    main thread (where no handler can run) the block runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {signum: signal.signal(signum, lambda number, frame: arrived.append(number))
                for signum in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for number in arrived:
            handler = previous[signal.Signals(number)]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), number)


def save_progress() -> bool:
    """Save the running training's state now (mid-epoch); False when nothing is training."""
    if _saver is None:
        return False
    _saver()
    return True
