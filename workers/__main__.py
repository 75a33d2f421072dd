"""``python -m workers STAGE_DIR``: run one stage; exit 0, or 1 with the traceback's tail on stderr."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

TRACEBACK_TAIL_LINES = 20


def main(argv: list[str] | None = None) -> int:
    """Run the stage folder named by the only argument; return the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workers STAGE_DIR", file=sys.stderr)
        return 2
    from workers.entry import run_stage
    try:
        run_stage(Path(args[0]))
    except Exception:
        lines = traceback.format_exc().rstrip().splitlines()
        print("\n".join(lines[-TRACEBACK_TAIL_LINES:]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
