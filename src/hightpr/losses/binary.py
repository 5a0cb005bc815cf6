"""Binary base losses on the score s (the positive logit, or z1 - z0 for 2-logit heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hightpr.losses.base import BaseLoss, mean_or_zero
from hightpr.models.heads import binary_score


class BCE(BaseLoss):
    """Binary cross-entropy, -y log s(s) - (1 - y) log(1 - s(s)), in log-sigmoid form."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = binary_score(logits)
        return mean_or_zero(F.binary_cross_entropy_with_logits(s, y.float(), reduction="none"), s)
