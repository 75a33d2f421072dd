"""Trainings planned vs naive, computed by the planner itself.

(a) the demo grid (``sweeps/digits.yaml``) and (b) the paper's ImageNet grid: 14
fractions from 80% to 0.12% remaining, labels/rotnet/random x winning_ticket/reinit,
3 seeds, one rewinding point, 90-epoch recipes. Stage counts do not depend on the
dataset, so (b) is planned on the digits catalogue entry with the paper's grid (its
rewinding point is written in iterations, since digits epochs are short).

Naive = every cell runs its own IMP chain from scratch: a dense run, L rounds and the
evaluation (a random cell: one evaluation). A labels winning-ticket cell whose evaluation
recipe is the labels recipe runs no separate evaluation: its chain's last round is it, so
a from-scratch chain would not run one either (corrected in issue 16: 2,760, not 2,802,
for the paper grid).

    python bench/plan_counts.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.planning.planner import plan_sweep  # noqa: E402
from orchestrator.spec import load_spec, validate_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: IMP rounds of the 14 reported rates, 0.8^1 = 80% ... 0.8^30 = 0.12% (ours: the paper gives no list).
PAPER_LEVELS = (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 24, 27, 30)


def paper_grid() -> dict:
    """The ImageNet ResNet-50 grid of the paper, as a sweep mapping."""
    recipe = {"epochs": 90, "batch_size": 1536, "optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4,
              "schedule": {"kind": "step", "milestones": [50, 65, 80]}}
    return {
        "name": "paper-imagenet-grid", "workspace": "unused", "dataset": {"name": "digits"},
        "arch": {"name": "small_cnn"}, "recipes": {"labels": recipe, "rotnet": dict(recipe, lr=1.0, weight_decay=1e-5)},
        "pruning": {"fractions": [round(0.8 ** level, 6) for level in PAPER_LEVELS]},
        "rewind": ["3it"], "mask_source": ["labels", "rotnet", "random"], "init": ["winning_ticket", "reinit"],
        "seeds": [0, 1, 2],
    }


def report(title: str, spec) -> None:
    """Print one grid's stage counts, trainings and epochs, planned vs naive."""
    plan = plan_sweep(spec)
    counts = plan.counts_by_kind()
    print(f"{title}: {len(plan.cells)} cells")
    print("  stages: " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))
    print(f"  trainings: planned {plan.trainings}, naive {plan.naive_trainings} "
          f"-> {plan.naive_trainings / plan.trainings:.2f}x fewer")
    print(f"  epochs:    planned {plan.total_epochs:g}, naive {plan.naive_epochs:g} "
          f"-> {plan.naive_epochs / plan.total_epochs:.2f}x fewer")


if __name__ == "__main__":
    report("demo grid (sweeps/digits.yaml)", load_spec(ROOT / "sweeps" / "digits.yaml"))
    report("paper ImageNet grid (14 rates, 3 sources x 2 inits, 3 seeds, 1 rewind point)",
           validate_spec(paper_grid(), "bench/plan_counts.py"))
