"""LDAM (Cao et al. 2019): label-distribution-aware margins on a cosine head, optional DRW.

One class serves both settings: binary = 2 classes [negatives, positives] on a 2-logit normed
head (score z1 - z0), multi-class = one logit per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from hightpr.errors import HightprError
from hightpr.losses.base import BaseLoss
from hightpr.losses.multiclass import logits_and_targets, weighted_mean
from hightpr.losses.weights import check_counts, check_range, class_balanced_weights, ldam_margins


class LDAM(BaseLoss):
    """CE(s * (z - m_y e_y), y) with m_c = K / n_c^(1/4), K such that max_c m_c = max_m.

    The logits z are cosines (normed head), s rescales them. With `drw_epoch` set, deferred
    re-weighting (DRW): from that epoch on, each sample's term is weighted by the class-balanced
    weight of its class (beta = `drw_beta`, normalised to sum to C) and the batch is reduced by
    the weighted mean, as in Cao et al.'s code; before it (and without DRW) all weights are 1.
    """

    num_logits: ClassVar[int | None] = None
    normed_head: ClassVar[bool] = True

    def __init__(self, max_m: float = 0.5, s: float = 30.0, drw_epoch: int | None = None,
                 drw_beta: float = 0.9999, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.max_m = check_range("max_m", max_m, low=0.0)
        self.s = check_range("s", s, low=0.0, low_open=True)
        self.drw_epoch = None if drw_epoch is None else int(check_range("drw_epoch", drw_epoch, low=0.0))
        self.drw_beta = check_range("drw_beta", drw_beta, low=0.0, high=1.0, low_open=True, high_open=True)
        counts = check_counts("ldam", class_counts)
        self.register_buffer("margins", ldam_margins(counts, self.max_m), persistent=False)
        self.register_buffer("drw_weight", class_balanced_weights(counts, self.drw_beta),
                             persistent=False)
        self.reweight = False

    def on_train_epoch_start(self, epoch: int) -> None:
        """Switch the class-balanced re-weighting on from `drw_epoch` (DRW)."""
        self.reweight = self.drw_epoch is not None and epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        logits, target = logits_and_targets(logits, y, "ldam")
        if logits.shape[1] != len(self.margins):
            raise HightprError(f"loss ldam has {len(self.margins)} class counts but the head has "
                               f"{logits.shape[1]} logits: leave model.num_logits unset (null)")
        margin = F.one_hot(target, logits.shape[1]).to(logits.dtype) * self.margins.to(logits.dtype)
        ce = F.cross_entropy(self.s * (logits - margin), target, reduction="none")
        weights = self.drw_weight[target] if self.reweight else torch.ones_like(ce)
        return weighted_mean(ce, weights.to(ce.dtype))
