"""The base-loss interface: a small nn.Module on (logits, labels), told the class counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn


class BaseLoss(nn.Module):
    """A base loss. Subclasses declare the head they need, so the model is built to match.

    `class_counts` (training samples per class, from the DataModule) is given to every loss;
    losses that do not re-weight ignore it. `forward` also receives the batch's stable sample
    ids, for losses that keep per-sample state (LibAUC's pAUC); the others ignore them.
    """

    # What the loss needs, declared (the wiring in `hightpr.build` reads these, nothing else):
    num_logits: ClassVar[int | None] = 1  # head size; None: one logit per class (multi-class losses)
    normed_head: ClassVar[bool] = False  # cosine head (LDAM)
    data_facts: ClassVar[tuple[str, ...]] = ("class_counts",)  # `DataFacts` fields given to __init__
    required_sampler: ClassVar[str | None] = None  # class path of the batch sampler it needs (or a subclass)
    required_optimizer: ClassVar[str | None] = None  # class path of the optimizer it prescribes
    stateful: ClassVar[bool] = False  # forward updates state (LibAUC pAUC): never evaluated on val/test

    def __init__(self, class_counts: Sequence[int] | None = None) -> None:
        super().__init__()
        self.class_counts = list(class_counts) if class_counts is not None else None

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def logits_for(cls, num_classes: int) -> int:
        """Head size on data with `num_classes` classes: `num_logits`, or one per class when None."""
        return cls.num_logits or num_classes

    def on_train_epoch_start(self, epoch: int) -> None:
        """Hook for losses with an epoch schedule (LDAM's deferred re-weighting); a no-op here."""

    def optimizer_kwargs(self) -> dict:
        """Extra keyword arguments the loss's prescribed optimizer needs (LibAUC PESG: loss_fn)."""
        return {}


def mean_or_zero(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean that is 0 (still in the graph) on an empty batch instead of NaN."""
    return values.mean() if values.numel() else like.sum() * 0.0


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (mixed precision) as float32: the exp/log terms of a loss need the range."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
