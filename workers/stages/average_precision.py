"""Average precision of transfer evaluations: one-vs-rest on a single-label target; on a
multi-label one (VOC07) the benchmark's AP, which the paper reports, and the devkit's 11-point AP.

Labels of a multi-label target are the devkit's per class: 1 (present), -1 (absent), 0 (only
difficult objects: ignored at test, as both the devkit and Goyal et al.'s ``test_svm.py`` do).
Goyal et al.'s label files write the same three cases as 1 / 0 / -1.

- :func:`benchmark_average_precision`: Goyal et al.'s ``fair_self_supervision_benchmark``
  (``svm_helper.calculate_ap``, the VOC2010+ definition): the area under the precision-recall
  curve over every rank, each precision replaced by the best precision at that recall or a
  higher one. The headline VOC07 number (``top1`` of the results row, ``metric: map``).
- :func:`voc07_average_precision`: the VOC2007 devkit's 11-point AP, kept beside it
  (``map_11point``). On the same scores it is lower by a point or more per class.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present of the one-vs-rest average precision of ``scores``."""
    aps = []
    for c in range(scores.shape[1]):
        positive = labels == c
        if not positive.any():
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        hits = positive[order].float()
        precision_at = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, device=hits.device)
        aps.append(float((precision_at * hits).sum() / hits.sum()))
    return sum(aps) / len(aps) if aps else 0.0


def _ranked(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(hits, precision, recall)`` at every rank of the known images (label 0 left out), best
    score first (ties keep the images' order); None when no image is positive."""
    keep = labels != 0
    scores, positive = scores[keep].double(), labels[keep] == 1
    if not positive.any():
        return None
    hits = positive[torch.argsort(scores, descending=True, stable=True)].double()
    true_positives = hits.cumsum(0)
    precision = true_positives / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    return hits, precision, true_positives / hits.sum()


def benchmark_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The benchmark's AP of one class (``labels`` 1, -1, or 0: ignored): the sum over the ranks
    where recall grows (the positives, by ``1 / P`` each) of that growth times the best precision
    at that rank or below it. ``nan`` when no image is positive."""
    ranked = _ranked(scores, labels)
    if ranked is None:
        return float("nan")
    hits, precision, _ = ranked
    envelope = precision.flip(0).cummax(0).values.flip(0)  # the best precision from each rank on
    return float((envelope * hits).sum() / hits.sum())


def voc07_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The VOC07 11-point average precision of one class: ``labels`` 1 (positive), -1
    (negative) or 0 (difficult: ignored); the mean over recall thresholds 0, 0.1, ..., 1 of
    the best precision at a recall at least that high (0 where none reaches it).
    Ties in ``scores`` keep the images' order. ``nan`` when no image is positive."""
    ranked = _ranked(scores, labels)
    if ranked is None:
        return float("nan")
    _, precision, recall = ranked
    points = []
    for threshold in torch.linspace(0, 1, 11, dtype=torch.float64):
        reached = recall >= threshold - 1e-12
        points.append(float(precision[reached].max()) if reached.any() else 0.0)
    return sum(points) / len(points)


def _mean_over_classes(average_precision: Callable[[torch.Tensor, torch.Tensor], float], scores: torch.Tensor,
                       labels: torch.Tensor) -> float:
    aps = [average_precision(scores[:, c], labels[:, c]) for c in range(labels.shape[1])]
    present = [ap for ap in aps if ap == ap]
    return sum(present) / len(present) if present else 0.0


def voc07_mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of :func:`voc07_average_precision` over the classes (columns) with a positive image."""
    return _mean_over_classes(voc07_average_precision, scores, labels)


def benchmark_mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of :func:`benchmark_average_precision` over the classes (columns) with a positive image."""
    return _mean_over_classes(benchmark_average_precision, scores, labels)


def multilabel_metrics(scores: torch.Tensor, labels: torch.Tensor, reported: str = "benchmark") -> dict[str, float]:
    """What a transfer stage reports on a multi-label target: ``top1`` the benchmark's mAP (the
    paper's number) and ``map_11point`` the devkit's 11-point mAP; with ``reported="voc07_11point"``
    (a stage planned before issue 28) ``top1`` the 11-point mAP alone, as such a stage did."""
    eleven_point = voc07_mean_average_precision(scores, labels)
    if reported == "voc07_11point":
        return {"top1": eleven_point}
    if reported != "benchmark":
        raise ValueError(f"average_precision must be 'benchmark' or 'voc07_11point', got {reported!r}")
    return {"top1": benchmark_mean_average_precision(scores, labels), "map_11point": eleven_point}
