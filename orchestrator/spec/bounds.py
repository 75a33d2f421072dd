"""Bounds on what a sweep file may ask for, and the check of the paths it names."""
from __future__ import annotations

import os
import re
from pathlib import Path

#: bounds on what a sweep may ask for: each is far above any real study and keeps a typo
#: (an extra zero or two) from allocating what the machine does not have.
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_000_000
MAX_WIDTH = 4096
MAX_IMAGE_SIZE = 4096
#: NPID's negatives per positive (the paper draws 16,384).
MAX_NEGATIVES = 1_048_576
#: seeds seed numpy (below 2**32) and are stored in SQLite (64-bit).
MAX_SEED = 2**32 - 1
#: the smallest pruning rate (fraction of the remaining weights pruned per IMP round).
MIN_RATE = 1e-6
#: the most IMP rounds of one chain (each round is a training run after the one before it)
MAX_LEVELS = 1_000
#: the longest sweep name: it names the file ``sweeps/<name>.json`` (and that file's temp name, 19 characters
#: longer) in a workspace, where a file system allows 255 bytes.
MAX_SWEEP_NAME = 100
#: the most stages ``plan``/``launch`` build unless ``--max-stages`` says otherwise.
DEFAULT_MAX_STAGES = 100_000


#: what Linux allows: a path of 4096 bytes, a name (one component) of 255.
MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255


def checked_path(text: str) -> str:
    """``text`` with ``~`` expanded; ValueError for control characters (NUL too) or names too long."""
    if _CONTROL_CHARACTER.search(text):
        raise ValueError(f"a path may not hold control characters (such as NUL or a newline), got {text!r}")
    path = os.path.expanduser(text)
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ValueError(f"the path is longer than {MAX_PATH_BYTES} bytes")
    for name in Path(path).parts:
        if len(os.fsencode(name)) > MAX_NAME_BYTES:
            raise ValueError(f"the name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes, "
                             "the most a file system allows")
    return path


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
