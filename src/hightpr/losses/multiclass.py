"""Multi-class base losses on one logit per class (long-tailed CIFAR; ALM Table 4, RankReg Table 7).

They also run on a binary dataset (2 logits, labels 0/1), where the ranked score is z1 - z0.
Labels are class indices (int64; float 0/1 binary labels are cast).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from hightpr.errors import HightprError
from hightpr.losses.base import BaseLoss, full_precision, mean_or_zero
from hightpr.losses.weights import check_counts, check_range, class_balanced_weights


def logits_and_targets(logits: torch.Tensor, y: torch.Tensor, loss_name: str) -> tuple[torch.Tensor, ...]:
    """(logits in at least float32, labels as class indices); a clear error on a wrong head."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise HightprError(f"loss {loss_name} needs one logit per class, got logits of shape "
                           f"{tuple(logits.shape)}: leave model.num_logits unset (null)")
    return full_precision(logits), y.long()


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w_i l_i) / sum(w_i), as torch's `cross_entropy(weight=...)`; 0 on an empty batch."""
    return (weights * values).sum() / weights.sum().clamp_min(1e-12)


def true_class_log_probs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_y, log(1 - p_y)) per sample; the second is the logsumexp of the other classes' log p,
    so it stays finite (with a finite gradient) even when p_y rounds to 1."""
    log_p = F.log_softmax(logits, dim=1)
    is_true = F.one_hot(target, logits.shape[1]).bool()
    log_p_true = log_p.gather(1, target[:, None])[:, 0]
    log_p_rest = torch.logsumexp(log_p.masked_fill(is_true, float("-inf")), dim=1)
    return log_p_true, log_p_rest


def true_class_margin_ce(logits: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Per-sample CE(z - margin_i e_y, y): the true logit must beat the others by margin_i (additive)."""
    shift = F.one_hot(target, logits.shape[1]).to(logits.dtype) * margin.to(logits.dtype)[:, None]
    return F.cross_entropy(logits - shift, target, reduction="none")


class CE(BaseLoss):
    """Softmax cross-entropy, -log softmax(z)_y (logsumexp form)."""

    num_logits: ClassVar[int | None] = None

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = logits_and_targets(logits, y, "ce")
        return mean_or_zero(F.cross_entropy(logits, target, reduction="none"), logits)


class FocalCE(BaseLoss):
    """Multi-class focal loss (Lin et al. 2017): -(1 - p_y)^gamma log p_y.

    log(1 - p_y) is the logsumexp of the other classes' log-probabilities, so the factor and its
    gradient stay finite even when p_y rounds to 1.
    """

    num_logits: ClassVar[int | None] = None

    def __init__(self, gamma: float = 1.0, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.gamma = check_range("gamma", gamma, low=0.0)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = logits_and_targets(logits, y, "fl")
        log_p_true, log_p_rest = true_class_log_probs(logits, target)
        return mean_or_zero(-torch.exp(self.gamma * log_p_rest) * log_p_true, logits)


class ClassBalancedCE(BaseLoss):
    """CB-CE (Cui et al. 2019): cross-entropy weighted per class by (1 - beta) / (1 - beta^n_c).

    Weights normalised to sum to C (Cui et al.); reduced as a weighted mean, sum(w_y l) / sum(w_y),
    as the long-tailed CIFAR code of Cao et al. that ALM's multi-class setup follows. The weighted
    mean cancels any common scale of the weights, so raw and normalised weights give the same loss
    (unlike CB-BCE, whose plain batch mean keeps the scale).
    """

    num_logits: ClassVar[int | None] = None

    def __init__(self, beta: float = 0.9999, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.beta = check_range("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)
        counts = check_counts("cbce", class_counts)
        self.register_buffer("class_weight", class_balanced_weights(counts, self.beta), persistent=False)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = logits_and_targets(logits, y, "cbce")
        if logits.shape[1] != len(self.class_weight):
            raise HightprError(f"loss cbce has {len(self.class_weight)} class counts but the head has "
                               f"{logits.shape[1]} logits: leave model.num_logits unset (null)")
        ce = F.cross_entropy(logits, target, reduction="none")
        return weighted_mean(ce, self.class_weight.to(ce.dtype)[target])
