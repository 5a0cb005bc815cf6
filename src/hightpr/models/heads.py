"""Classifier heads and the one rule that turns logits into the ranked score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormedLinear(nn.Module):
    """Cosine classifier (LDAM): logits are cosines between normalised features and weights."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-1, 1))
        self.weight.data.renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


def make_head(in_features: int, num_logits: int, normed: bool = False) -> nn.Module:
    if num_logits < 1:
        raise ValueError("a head needs at least one logit")
    return NormedLinear(in_features, num_logits) if normed else nn.Linear(in_features, num_logits)


def binary_score(logits: torch.Tensor) -> torch.Tensor:
    """The scalar that is ranked/thresholded: the logit of a 1-logit head, z1 - z0 for 2 logits."""
    if logits.ndim == 1:
        return logits
    if logits.shape[1] == 1:
        return logits[:, 0]
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    raise ValueError(f"binary score needs 1 or 2 logits, got {logits.shape[1]}")


def critical_score(logits: torch.Tensor, critical_class: int) -> torch.Tensor:
    """Multi-class score: the critical class's logit (docs/design.md, 'Score'); bind it with partial."""
    return logits[:, critical_class]
