"""Do the digits demo's stated conclusions hold beyond the seeds it happens to run?

The README ("What the demo shows") states a few orderings of the mask sources at the demo's
smallest fraction remaining. This script launches the demo sweep (``sweeps/digits.yaml``,
or ``--sweep``) with three disjoint sets of seeds into a workspace of its own, each set as
large as the demo's own list of seeds (``--seeds-per-set`` to change it): seeds 0..N-1,
N..2N-1 and 2N..3N-1, so the first set is the demo itself. For each stated conclusion
"A beats B" it prints, per seed set, the mean paired difference A - B of top-1 (percentage
points, paired by seed), its standard error, n, the p-value of a **one-sided** paired t-test
(:func:`results.compare` with ``alternative="greater"``, as ``prunesweep results --compare
'COLUMN=A>B'``) and that p-value **Holm-adjusted** over the "beats" claims of the seed set (six
claims are six tests). A conclusion holds in a set when the difference has the stated sign with
the adjusted p < 0.05; the last line says how many hold in every set::

    demo conclusions: 7 of 7 hold in 3 of 3 seed sets

Equality ("as good as") cannot be shown this way. The one such statement the README makes
is worded "no significant difference in any set" and checked as that (the two-sided
p-value >= 0.05 in every set, not adjusted: adjusting would only make it easier to hold): a
weaker statement, since a few seeds detect only large differences.
The exit code is 0 when every conclusion holds in every set, 1 otherwise. ``--first-seed``
moves the seed sets (``--first-seed 12 --sets 1``: a held-out confirmation on seeds 12-15 that
played no part in choosing the design).

Numbers are bit-identical between runs on one machine, not across CPU models: run this on
the machine whose numbers the docs quote. A run of stages already done in the workspace
is not repeated (``--no-launch`` reads the workspace as it is).

    nice -n 19 python bench/demo_conclusions.py [--workspace runs/digits-conclusions]
        [--sweep sweeps/digits.yaml] [--seeds-per-set N] [--sets 3] [--first-seed 0] [--fraction F] [--no-launch]
        [--only-smallest] [key.path=value ...]

``--only-smallest`` launches only the stages the conclusions read (the IMP chains, and the
evaluations at that fraction), about a fifth less compute than the whole sweep.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import results  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402

#: a conclusion holds in a seed set when its one-sided paired p-value is below this
ALPHA = 0.05


@dataclass(frozen=True)
class Conclusion:
    """``a`` beats ``b`` at the smallest fraction (or, with ``beats=False``, no significant
    difference between them); each side is (mask_source, init)."""

    text: str
    a: tuple[str, str]
    b: tuple[str, str]
    beats: bool = True


#: what the README states about the smallest fraction, one line per claim
CONCLUSIONS = (
    Conclusion("the labels mask: winning ticket beats re-initialising it",
               ("labels", "winning_ticket"), ("labels", "reinit")),
    Conclusion("winning tickets: the labels mask beats the RotNet mask",
               ("labels", "winning_ticket"), ("rotnet", "winning_ticket")),
    Conclusion("the labels mask as a winning ticket beats a random mask",
               ("labels", "winning_ticket"), ("random", "reinit")),
    Conclusion("the labels mask re-initialised beats a random mask",
               ("labels", "reinit"), ("random", "reinit")),
    Conclusion("the RotNet mask as a winning ticket beats a random mask",
               ("rotnet", "winning_ticket"), ("random", "reinit")),
    Conclusion("the RotNet mask re-initialised beats a random mask",
               ("rotnet", "reinit"), ("random", "reinit")),
    Conclusion("re-initialised: no significant difference between the labels and the RotNet mask",
               ("labels", "reinit"), ("rotnet", "reinit"), beats=False),
)


def _label(side: tuple[str, str]) -> str:
    return f"{side[0]} / {side[1]}"


def seed_sets(n_sets: int, per_set: int, first: int = 0) -> list[list[int]]:
    """``n_sets`` disjoint runs of consecutive seeds from ``first``, ``per_set`` each."""
    return [list(range(first + i * per_set, first + (i + 1) * per_set)) for i in range(n_sets)]


def check(frame, conclusion: Conclusion, seeds: list[int]) -> dict:
    """The paired comparison of one conclusion over ``seeds`` (rows of one fraction of one sweep), alone:
    ``p`` one-sided for a "beats" claim, two-sided for "no significant difference"; ``holds`` unadjusted."""
    rows = frame[frame["seed"].isin(seeds)].copy()
    rows["setting"] = rows["mask_source"].astype(str) + " / " + rows["init"].astype(str)
    result = results.compare(rows, "setting", _label(conclusion.a), _label(conclusion.b),
                             by=["sweep", "nominal_fraction", "setting"],
                             alternative="greater" if conclusion.beats else "two-sided")
    if len(result) != 1:
        raise SystemExit(f"{conclusion.text}: expected one compared setting over seeds {seeds}, got {len(result)}")
    row = result.iloc[0]
    p = float(row["p"])
    holds = bool(p < ALPHA) if conclusion.beats else bool(p >= ALPHA)  # False for NaN too: no spread is no test
    return {"a": 100 * row["top1_a"], "b": 100 * row["top1_b"], "diff": 100 * row["diff"],
            "se": 100 * row["diff_se"], "n": int(row["n"]), "p": p, "p_holm": p, "holds": holds,
            "measured": float(row["measured_fraction"])}


def check_set(frame, conclusions: tuple[Conclusion, ...], seeds: list[int]) -> list[dict]:
    """Every conclusion over ``seeds``, the "beats" claims Holm-adjusted together (one family per seed set)."""
    import numpy as np

    from results.comparison import holm

    found = [check(frame, conclusion, seeds) for conclusion in conclusions]
    beats = [i for i, conclusion in enumerate(conclusions) if conclusion.beats]
    for i, adjusted in zip(beats, holm(np.array([found[i]["p"] for i in beats])), strict=True):
        found[i]["p_holm"] = float(adjusted)
        found[i]["holds"] = bool(adjusted < ALPHA)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default=str(ROOT / "sweeps" / "digits.yaml"))
    parser.add_argument("--workspace", default="runs/digits-conclusions",
                        help="a workspace of its own (default: runs/digits-conclusions)")
    parser.add_argument("--sets", type=int, default=3, help="disjoint seed sets (default 3)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first seed of the first set (default 0; 12 with --sets 1: a held-out set)")
    parser.add_argument("--seeds-per-set", type=int, default=None,
                        help="seeds per set (default: as many as the sweep file lists)")
    parser.add_argument("--fraction", type=float, default=None,
                        help="the nominal fraction the conclusions are about (default: the sweep's smallest)")
    parser.add_argument("--no-launch", action="store_true", help="read the workspace as it is")
    parser.add_argument("--only-smallest", action="store_true",
                        help="launch only the fraction the conclusions are about (its stages are the same; "
                             "the evaluations at the other fractions are left out)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides of the sweep file")
    args = parser.parse_args(argv)

    spec = load_spec(args.sweep, args.overrides)
    per_set = args.seeds_per_set or len(spec.seeds)
    sets = seed_sets(args.sets, per_set, args.first_seed)
    all_seeds = [seed for chunk in sets for seed in chunk]
    fraction = args.fraction if args.fraction is not None else min(spec.pruning.fractions)

    if not args.no_launch:
        overrides = [*args.overrides, *([f"pruning.fractions=[{fraction!r}]"] if args.only_smallest else [])]
        command = [sys.executable, "-m", "orchestrator", "launch", str(args.sweep), *overrides,
                   f"workspace={args.workspace}", "seeds=[" + ",".join(map(str, all_seeds)) + "]", "--no-progress"]
        print("launch:", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        launched = subprocess.run(command, env=env)
        print(f"launch: exit {launched.returncode} after {time.perf_counter() - started:.0f} s", flush=True)
        if launched.returncode != 0:
            return launched.returncode

    frame = results.load(args.workspace)
    frame = frame[(frame["sweep"] == spec.name) & ((frame["nominal_fraction"] - fraction).abs() < 1e-9)]
    if frame.empty:
        raise SystemExit(f"{args.workspace}: no results of sweep {spec.name!r} at fraction {fraction}")
    print(f"sweep {spec.name}, workspace {args.workspace}, nominal fraction {fraction:g}; "
          f"{args.sets} seed sets of {per_set}; paired t-test: 'A beats B' holds when its one-sided p, "
          f"Holm-adjusted over the set's {sum(c.beats for c in CONCLUSIONS)} 'beats' claims, is < {ALPHA:g}; "
          f"'no significant difference' when the two-sided p >= {ALPHA:g}")

    failing: list[str] = []
    verdicts = {tuple(seeds): check_set(frame, CONCLUSIONS, seeds) for seeds in sets}
    for number, conclusion in enumerate(CONCLUSIONS, 1):
        print(f"\n{number}. {conclusion.text}: {_label(conclusion.a)} - {_label(conclusion.b)}")
        p_kind = "p, 1-sided" if conclusion.beats else "p, 2-sided"
        print(f"   {'seeds':<12} {'fraction':>8} {'A':>6} {'B':>6} {'diff':>7} {'se':>6} {'n':>3} {p_kind:>11}"
              f" {'p (Holm)':>9}")
        fails_in = []
        for seeds in sets:
            stats = verdicts[tuple(seeds)][number - 1]
            shown = ",".join(map(str, seeds))
            holm_shown = f"{stats['p_holm']:9.2g}" if conclusion.beats else f"{'-':>9}"
            print(f"   {shown:<12} {100 * stats['measured']:>7.3g}% {stats['a']:6.1f} {stats['b']:6.1f} "
                  f"{stats['diff']:+7.2f} {stats['se']:6.2f} {stats['n']:3d} {stats['p']:11.2g} {holm_shown}"
                  f"  {'holds' if stats['holds'] else 'FAILS'}")
            if not stats["holds"]:
                fails_in.append(shown)
        if fails_in:
            failing.append(f"{number} (seeds {'; '.join(fails_in)})")
    held = len(CONCLUSIONS) - len(failing)
    print()
    print(f"demo conclusions: {held} of {len(CONCLUSIONS)} hold in {args.sets} of {args.sets} seed sets"
          + (f"; not: {', '.join(failing)}" if failing else ""))
    return 0 if not failing else 1


if __name__ == "__main__":
    sys.exit(main())
