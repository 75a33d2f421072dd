"""Seeds derived from a stage's seed, so that every random draw has its own stream."""
from __future__ import annotations

import hashlib
import json


def derive_seed(seed: int, *tags: str | int) -> int:
    """Return a seed in ``[0, 2**31)`` determined by ``seed`` and ``tags`` (sha256-based).

    ``derive_seed(3, "reinit")`` and ``derive_seed(3, "head")`` are unrelated, and the same
    arguments always give the same result on every machine and Python version.
    """
    payload = json.dumps([int(seed), *tags], separators=(",", ":")).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") % (2**31)
