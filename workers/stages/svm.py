"""Per-class linear SVMs on frozen features, as Goyal et al. 2019's benchmark trains them
(``fair_self_supervision_benchmark``: ``train_svm_kfold.py``, then ``test_svm.py``).

Labels per class are the devkit's: 1 present, -1 absent, 0 difficult only (their label files:
1 / 0 / -1). Their training script keeps the difficult-only images as negatives (their -1 is
the SVM's negative label); only their test script drops them. :data:`DIFFICULT_READINGS`
names both ways of training here, ``negative`` (theirs, the paper's) and ``ignore`` (leave
the difficult-only images out of the training too: what this project did before issue 28).
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from workers.data.image_folder import loader_workers
from workers.training.seeds import derive_seed

#: Goyal et al. 2019's grid of SVM costs (their released benchmark: 1e-7 .. 100 by decades,
#: to which their script appends 2^-4 .. 2^-19), ascending.
SVM_COSTS = tuple(sorted((1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0,
                          *(0.5 ** k for k in range(4, 20)))))
SVM_FOLDS = 3
#: how SVM training reads a difficult-only label (0): as a negative (the benchmark's), or not at all.
DIFFICULT_READINGS = ("negative", "ignore")


def _svm(cost: float, seed: int):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, loss="squared_hinge", penalty="l2", dual=True,
                     tol=1e-4, max_iter=2000, random_state=derive_seed(seed, "svm"))


def _fold_ap(cost: float, seed: int, x, y, train: Any, held_out: Any) -> float:
    """scikit-learn's average precision on one held-out fold of an SVM fitted on the others."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import average_precision_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is part of the protocol
        classifier = _svm(cost, seed).fit(x[train], y[train])
    return float(average_precision_score(y[held_out] == 1, classifier.decision_function(x[held_out])))


def training_labels(labels, difficult: str):
    """The labels one class's SVM trains on, and which images it trains on: ``labels`` 1 / -1 / 0
    (numpy), with 0 read as -1 (``difficult="negative"``) or its images left out (``"ignore"``)."""
    import numpy as np

    if difficult not in DIFFICULT_READINGS:
        raise ValueError(f"difficult must be one of {DIFFICULT_READINGS}, got {difficult!r}")
    if difficult == "negative":
        return np.where(labels == 0, -1, labels), np.ones(labels.shape[0], dtype=bool)
    keep = labels != 0
    return labels[keep], keep


def svm_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, seed: int,
               costs: tuple[float, ...] = SVM_COSTS, folds: int = SVM_FOLDS,
               difficult: str = "negative") -> tuple[torch.Tensor, list[float]]:
    """Scores ``(N_test, C)`` of one linear SVM per class, and the cost chosen for each
    (``nan`` for a class not trained).

    Goyal et al. 2019's benchmark: features L2-normalised; per class, labels 1 / -1, the
    difficult-only images (0) as negatives (``difficult="negative"``, their ``train_svm_kfold.py``)
    or left out (``"ignore"``; see :func:`training_labels`); scikit-learn's ``LinearSVC``
    (squared hinge, L2, ``class_weight {1: 2, -1: 1}``, tol 1e-4, at most 2,000 iterations);
    the cost with the best mean average precision (scikit-learn's) over ``folds``-fold
    stratified cross-validation on the training split (unshuffled, as their
    ``cross_val_score(cv=3)``; ties: the smallest cost), then refitted on all of it. The
    (cost, fold) fits of a class run in :func:`workers.data.image_folder.loader_workers`
    processes. A class without both positives and negatives scores 0 everywhere; one with
    fewer than 2 of either is fitted at the smallest cost without cross-validation.
    """
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    def normalised(x: torch.Tensor) -> np.ndarray:
        array = x.double().numpy()
        return array / (np.linalg.norm(array, axis=1, keepdims=True) + 1e-5)

    features, test_features, labels = normalised(train_x), normalised(test_x), train_y.numpy()
    scores = np.zeros((test_features.shape[0], labels.shape[1]))
    chosen: list[float] = []
    ordered = sorted(costs)
    with Parallel(n_jobs=max(1, loader_workers())) as parallel:
        for c in range(labels.shape[1]):
            y, keep = training_labels(labels[:, c], difficult)
            x = features[keep]
            fewest = min(int((y == 1).sum()), int((y == -1).sum()))
            if not fewest:
                chosen.append(float("nan"))
                continue
            best = ordered[0]
            if fewest >= 2:
                splits = list(StratifiedKFold(n_splits=min(folds, fewest)).split(x, y))
                aps = parallel(delayed(_fold_ap)(cost, seed, x, y, train, held_out)
                               for cost in ordered for train, held_out in splits)
                means = [float(np.mean(aps[i * len(splits):(i + 1) * len(splits)])) for i in range(len(ordered))]
                best = ordered[int(np.argmax(means))]  # the first of the best: the smallest cost
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                classifier = _svm(best, seed).fit(x, y)
            scores[:, c] = classifier.decision_function(test_features)
            chosen.append(best)
    return torch.from_numpy(scores), chosen
