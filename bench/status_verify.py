"""What the verification stamps save: reconciling a workspace of large artifacts.

Builds a workspace of ``--stages`` done stages, each with one ``--mb`` MB artifact dated
a minute back (as a finished sweep's are), then reconciles it (what every command does
first) three times in this process: hashing every artifact (``status --verify``, the only
behaviour before stamps), then twice trusting the stamps that run recorded. Prints the
seconds of each and the ratio. The page cache holds the files after the first read, so
the hashing figure is a lower bound: on a cold cache or a network file system it is slower.

    python bench/status_verify.py [--stages 100] [--mb 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.state.ledger import Ledger  # noqa: E402
from orchestrator.state.reconcile import reconcile  # noqa: E402
from orchestrator.planning.stage_identity import Stage  # noqa: E402
from orchestrator.state.workspace import materialise
from workers.stages.paths import stage_dir  # noqa: E402
from workers.stages.artifacts import write_done  # noqa: E402


def build(workspace: Path, stages: int, megabytes: int) -> Ledger:
    """A workspace whose ``stages`` stages are done, each with one artifact of ``megabytes`` MB."""
    planned = [Stage("dense", {"seed": i}, {"seed": i}, label=f"dense {i}", epochs=1) for i in range(stages)]
    materialise(workspace, planned)
    ledger = Ledger(workspace)
    ledger.register("bench", "bench.yaml", "{}", {}, planned, [])
    for stage in planned:
        folder = stage_dir(workspace, stage.key)
        (folder / "final.pt").write_bytes(os.urandom(megabytes << 20))
        (folder / "metrics.json").write_text("{}")
        write_done(folder, ["final.pt", "metrics.json"], {})
        for path in folder.iterdir():
            info = path.stat()
            os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns - 60 * 10**9))
    return ledger


def timed(workspace: Path, ledger: Ledger, rehash: bool) -> float:
    """Seconds for one reconcile of the workspace (all stages must verify)."""
    started = time.perf_counter()
    done = reconcile(workspace, ledger, rehash=rehash)
    seconds = time.perf_counter() - started
    assert len(done) == len(ledger.stages()), "every stage should verify"
    return seconds


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=100)
    parser.add_argument("--mb", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prunesweep-bench-") as tmp:
        workspace = Path(tmp)
        ledger = build(workspace, args.stages, args.mb)
        hashing = timed(workspace, ledger, rehash=True)
        stamped = [timed(workspace, ledger, rehash=False) for _ in range(2)]
        ledger.close()
    print(f"{args.stages} done stages of {args.mb} MB ({args.stages * args.mb / 1024:.2f} GiB)")
    print(f"  hashing every artifact (status --verify): {hashing:.3f} s")
    print(f"  trusting unchanged stamps:                {min(stamped):.3f} s "
          f"({hashing / min(stamped):.0f}x faster)")


if __name__ == "__main__":
    main()
