"""NPID: non-parametric instance discrimination with a memory bank (Wu et al. 2018).

Every training image is its own class. The network's head gives a 128-d embedding ``f``,
L2-normalised; a memory bank holds one unit vector ``v_i`` per training image (drawn at
random from the stage's seed). The probability that ``f`` is image ``i`` is the
non-parametric softmax ``exp(v_i . f / tau) / Z`` with ``tau = 0.07``; training minimises
noise-contrastive estimation (NCE) against ``m`` negatives drawn uniformly from the bank for
every positive (with replacement, so also when the bank holds fewer images, as on digits):
``recipes.npid.negatives``, 4,096 unless given (the paper's 16,384 in ``sweeps/paper/``).
``Z`` is the paper's Monte-Carlo estimate, ``N`` times the mean of ``exp(v . f / tau)``
over the batch's positives and negatives (a constant for the gradient), computed for every
batch rather than once from the first one as the paper does: on digits the constant from the
random bank of the first batch is soon orders of magnitude too small, every negative then
looks like a positive and the embeddings collapse (loss ~2e4, retrieval at chance), while the
per-batch estimate learns (93% of the training images retrieve their own bank row, 86%
1-nearest-neighbour test accuracy, small_cnn width 16, 20 epochs). After every step the bank
row of each image of the batch becomes ``normalise(0.5 v_i + 0.5 f_i)``: the loss notes the
update and the task's ``after_step`` makes it inside the optimizer step's update guard, so a
checkpoint saved on request holds the bank and the weights of the same step.

Training state lives in the model, so checkpoints and rewind points carry it:
:class:`NpidHead` replaces ``model.head`` (same ``weight`` and ``bias``) and holds the bank
as a buffer (``head.memory``); an evaluation on labels drops it with the head it redraws.
Negatives come from the global generator, which training seeds from the stage's seed and the
step (``random_batches``), so a run resumed mid-epoch draws the same ones.

The head's output is ``v . f / tau`` for every bank row: its argmax is the nearest bank row,
so the training log's accuracy is the fraction of images whose own bank row is the nearest,
and the test score is the accuracy of the nearest bank row's class (1-nearest-neighbour, the
paper's evaluation with k = 1). It carries no gradient: the loss picks the positive's and the
negatives' columns and forms their gradient to the embedding the head keeps (:func:`bank_scores`)
:func:`chunk_rows` images at a time. At ImageNet's batch 1,024 (a bank of 1,281,167 rows) the
output is 1,024 x 1,281,167 x 4 B = 5.2 GB and the gradient of all of it at once would be as
much again; a chunk (209 images there) is at most 1 GiB. ``docs/sweep-file.md`` lists the rest.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.data.datasets import DatasetSpec, DataSplit
from workers.tasks.objectives import Task
from workers.tasks.registry import DEFAULT_NEGATIVES
from workers.training import distributed
from workers.training.seeds import derive_seed

EMBEDDING_DIM = 128
#: negatives per positive when the recipe gives none.
NEGATIVES = DEFAULT_NEGATIVES
TEMPERATURE = 0.07
MEMORY_MOMENTUM = 0.5
#: at most this many bytes of gathered bank rows exist at once while scoring a batch.
CHUNK_BYTES = 1 << 30


class NpidHead(nn.Linear):
    """The embedding head: a linear layer to 128-d, L2-normalised, with the memory bank.

    Buffer ``memory``: one unit row per training image. ``embedding`` is the normalised
    output of the last forward pass, which the step writes into the bank.
    """

    memory: torch.Tensor

    def __init__(self, linear: nn.Linear, bank_size: int, seed: int):
        # built on the meta device, then given the linear layer's own parameters: no draw
        # from the global generator, and the weights stay those the model was built with
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        generator = torch.Generator().manual_seed(derive_seed(seed, "npid_memory"))
        memory = F.normalize(torch.randn(bank_size, linear.out_features, generator=generator), dim=1)
        self.register_buffer("memory", memory.to(linear.weight.device))
        self.embedding: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``v . f / tau`` for every bank row (no gradient: the loss scores ``f`` itself); keeps ``f``
        in ``self.embedding``."""
        self.embedding = F.normalize(super().forward(features).float(), dim=1)
        with torch.autocast(features.device.type, enabled=False), torch.no_grad():  # scores / 0.07 need fp32
            return self.embedding @ self.memory.t() / TEMPERATURE


def chunk_rows(bank_size: int, budget: int = CHUNK_BYTES) -> int:
    """Images of a batch whose float32 scores against a bank of ``bank_size`` rows fit in ``budget`` bytes (>= 1)."""
    return max(1, budget // (bank_size * 4))


class _ChunkedScores(torch.autograd.Function):
    """Columns of the bank-wide scores; the gradient to the embedding formed a chunk of images at a time."""

    @staticmethod
    def forward(ctx: Any, embedding: torch.Tensor, memory: torch.Tensor, columns: torch.Tensor,
                bank_wide: torch.Tensor, rows: int) -> torch.Tensor:
        ctx.save_for_backward(memory, columns)
        ctx.rows = rows
        return bank_wide.gather(1, columns)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        memory, columns = ctx.saved_tensors
        grad = grads[0]
        embedding_grad = grad.new_empty(columns.shape[0], memory.shape[1])
        for start in range(0, columns.shape[0], ctx.rows):
            part = slice(start, start + ctx.rows)
            # what autograd does for the whole batch at once: the scores' gradient spread over every bank row
            dense = grad.new_zeros(columns[part].shape[0], memory.shape[0]).scatter_add_(1, columns[part], grad[part])
            embedding_grad[part] = (dense / TEMPERATURE) @ memory
        return embedding_grad, None, None, None, None


def bank_scores(embedding: torch.Tensor, memory: torch.Tensor, columns: torch.Tensor, rows: int | None = None,
                bank_wide: torch.Tensor | None = None) -> torch.Tensor:
    """``v_c . f / tau`` for every column ``c`` of ``columns`` ``(B, k)``, the embeddings ``f`` ``(B, D)``
    against the bank ``memory`` ``(N, D)``; gradient to ``embedding`` only.

    ``rows=None``: the columns of ``embedding @ memory.T / tau`` through autograd, whose backward
    pass forms the ``(B, N)`` gradient of all bank-wide scores at once. ``rows=n``: the same
    scores, the gradient formed ``n`` images at a time (``(n, N)`` at once). ``bank_wide``: those
    bank-wide scores when already computed (the head's output). Both give the same loss and gradients.
    """
    if rows is None:
        return (embedding @ memory.t() / TEMPERATURE).gather(1, columns)
    if bank_wide is None:
        with torch.no_grad():
            bank_wide = embedding @ memory.t() / TEMPERATURE
    return _ChunkedScores.apply(embedding, memory, columns, bank_wide.detach(), rows)


def nce_loss(scores: torch.Tensor, bank_size: int) -> torch.Tensor:
    """NCE loss of the scores ``v . f / tau`` of (positive, m negatives), shape ``(B, 1 + m)``.

    ``P = exp(score) / Z`` with ``Z = N * mean(exp(scores))`` over the whole batch (no
    gradient through ``Z``); with the noise distribution uniform over the bank (``P_n = 1/N``),
    ``h = P / (P + m P_n)`` and the loss is ``-log h(positive) - sum log(1 - h(negative))``,
    averaged over the batch; computed as softplus terms so no probability is formed.
    """
    negatives = scores.shape[1] - 1
    log_noise = math.log(negatives / bank_size)  # log(m P_n)
    detached = scores.detach()
    log_z = torch.logsumexp(detached.flatten(), 0) - math.log(detached.numel()) + math.log(bank_size)
    log_p = scores - log_z
    positive = F.softplus(log_noise - log_p[:, 0])
    return (positive + F.softplus(log_p[:, 1:] - log_noise).sum(dim=1)).mean()


@torch.no_grad()
def updated_rows(memory: torch.Tensor, positions: torch.Tensor, embeddings: torch.Tensor,
                 momentum: float = MEMORY_MOMENTUM) -> torch.Tensor:
    """The bank rows ``positions`` after an update: ``normalise(momentum * old + (1 - momentum) * new)``."""
    rows = momentum * memory[positions] + (1 - momentum) * embeddings.to(memory.dtype)
    return F.normalize(rows, dim=1)


class _Bound:
    """The head of the model a task object was attached to, the training split's classes and the pending bank update."""

    def __init__(self) -> None:
        self.head: NpidHead | None = None
        self.train_classes: torch.Tensor | None = None
        #: the bank update of the step whose loss was just taken: (positions, embeddings)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None
        #: negatives per positive (the recipe's ``negatives``).
        self.negatives = NEGATIVES

    def the_head(self) -> NpidHead:
        if self.head is None:
            raise ValueError("the npid task was not attached to a model (Task.attach)")
        return self.head


def npid_task() -> Task:
    """A fresh NPID task: it serves the model it is attached to (its head holds the bank)."""
    bound = _Bound()

    def attach(model: nn.Module, spec: DatasetSpec, seed: int) -> None:
        if not isinstance(model.head, nn.Linear) or model.head.out_features != EMBEDDING_DIM:
            raise ValueError(f"npid needs a linear head of {EMBEDDING_DIM} outputs, got {model.head}")
        bound.head = NpidHead(model.head, spec.train_size, seed)
        model.head = bound.head

    def prepare(data: DataSplit, options: Mapping[str, Any]) -> DataSplit:
        if distributed.current() is not None:
            raise ValueError("npid trains in one process: each rank would update its own copy of the memory bank")
        n_train = data.train_labels.shape[0]
        bank_size = bound.the_head().memory.shape[0]
        if n_train != bank_size:
            raise ValueError(f"npid: the memory bank has {bank_size} rows for {n_train} training images")
        bound.train_classes = data.train_labels
        positions = torch.arange(n_train, device=data.train_labels.device)
        return dataclasses.replace(data, train_labels=positions)

    def make_batch(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, labels

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        head = bound.the_head()
        embedding = head.embedding
        assert embedding is not None  # set by the forward pass that gave ``outputs``
        bank_size = head.memory.shape[0]
        negatives = torch.randint(bank_size, (targets.shape[0], bound.negatives), device=targets.device)
        columns = torch.cat([targets[:, None], negatives], dim=1)
        with torch.autocast(targets.device.type, enabled=False):
            scores = bank_scores(embedding, head.memory, columns, chunk_rows(bank_size), outputs.float())
            value = nce_loss(scores, bank_size)
        bound.pending = (targets, embedding.detach())  # written by after_step, inside the step's update guard
        return value

    def after_step() -> None:
        if bound.pending is not None:
            positions, embeddings = bound.pending
            memory = bound.the_head().memory
            memory.index_copy_(0, positions, updated_rows(memory, positions, embeddings))
            bound.pending = bound.the_head().embedding = None  # nor keep the step's graph alive

    def score(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        if bound.train_classes is None:
            raise ValueError("npid scores against the training split's classes: prepare it first")
        nearest = outputs.argmax(dim=1)
        return (bound.train_classes.to(nearest.device)[nearest] == targets).sum(), targets.shape[0]

    def read_recipe(recipe: Mapping[str, Any]) -> None:
        bound.negatives = int(recipe.get("negatives", NEGATIVES))

    return Task("npid", lambda spec: EMBEDDING_DIM, make_batch, loss=loss, score=score, prepare=prepare,
                random_batches=True, attach=attach, after_step=after_step, read_recipe=read_recipe)
