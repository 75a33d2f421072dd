"""A local worker dies with the driver that started it.

The local backend's stage processes are the driver's children: when the driver dies, even
by SIGKILL sent to it alone, the kernel kills them too (Linux's parent-death signal), so no
stage goes on training without a driver to record it. What they had checkpointed is kept;
``resume`` continues from there. (An orphan that survives anyway, on a system without the
signal, holds its stage's lock and is never started beside itself: :mod:`workers.stages.lock`.)
"""
from __future__ import annotations

import ctypes
import os
import signal

#: prctl(2)'s option that sets the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies; False where that cannot be set.

    The signal follows the parent *thread* that started this process: the driver starts its
    workers from its main thread. A parent that died before the call is caught by comparing
    ``parent_pid``, and this process then exits at once.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return False
    if prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:
        os._exit(1)
    return True
