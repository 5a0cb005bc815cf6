"""3D CNNs of ALM-v1 appendix B: cascades of Conv3d-ReLU-MaxPool3d; one path, or two in parallel.

The dual-path model takes ONE tensor [B, C_a + C_b, D, H, W] whose first `in_channels[0]`
channels are the first modality (diffusion b-values) and the rest the second (T2), both
resampled to one grid by the data module. One tensor (not a pair) keeps every batch operation
(gather, device-side flips, RankReg's buffer concatenation) unchanged; the model splits it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hightpr.models.heads import make_head

POOLS = {"max": nn.AdaptiveMaxPool3d, "avg": nn.AdaptiveAvgPool3d}


class Cascade3d(nn.Module):
    """`depth` stages of Conv3d(3x3x3) - ReLU - MaxPool3d(2), widths width * 2^i, then global pool.

    Global max pooling by default: a small lesion anywhere in the volume should decide the
    score, which an average over the whole grid would dilute.
    """

    def __init__(self, in_channels: int, width: int = 16, depth: int = 3, global_pool: str = "max") -> None:
        super().__init__()
        if global_pool not in POOLS:
            raise ValueError(f"global_pool must be one of {sorted(POOLS)}, got {global_pool!r}")
        layers, c = [], in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Conv3d(c, out, 3, padding=1), nn.ReLU(inplace=True),
                       nn.MaxPool3d(2, ceil_mode=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = POOLS[global_pool](1)
        self.num_features = c
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


class CNN3d(nn.Module):
    """One cascade and the classifier head (AdrenalMNIST3D and other single-modality volumes)."""

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3, global_pool: str = "max",
                 num_logits: int = 1, normed_head: bool = False) -> None:
        super().__init__()
        self.path = Cascade3d(in_channels, width, depth, global_pool)
        self.head = make_head(self.path.num_features, num_logits, normed_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.path(x))


class DualPathCNN3d(nn.Module):
    """Two identical, parallel cascades (diffusion, T2); features concatenated before the head."""

    def __init__(self, in_channels: Sequence[int] = (3, 1), width: int = 16, depth: int = 3,
                 global_pool: str = "max", num_logits: int = 1, normed_head: bool = False) -> None:
        super().__init__()
        if len(in_channels) != 2:
            raise ValueError(f"the dual-path model needs two channel counts, got {list(in_channels)}")
        self.split = (int(in_channels[0]), int(in_channels[1]))
        self.paths = nn.ModuleList(Cascade3d(c, width, depth, global_pool) for c in self.split)
        self.head = make_head(2 * self.paths[0].num_features, num_logits, normed_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != sum(self.split):
            raise ValueError(
                f"input has {x.shape[1]} channels but model.in_channels={list(self.split)} "
                f"expects {sum(self.split)} (diffusion b-values + T2)"
            )
        parts = torch.split(x, self.split, dim=1)
        return self.head(torch.cat([path(p) for path, p in zip(self.paths, parts, strict=True)], dim=1))


def cnn3d(in_channels: int = 1, width: int = 16, depth: int = 3, global_pool: str = "max",
          num_logits: int = 1, normed_head: bool = False) -> CNN3d:
    """Single-path 3D CNN (ALM-v1 appendix B cascade)."""
    return CNN3d(in_channels, width, depth, global_pool, num_logits, normed_head)


def cnn3d_dual(in_channels: Sequence[int] = (3, 1), width: int = 16, depth: int = 3,
               global_pool: str = "max", num_logits: int = 1, normed_head: bool = False) -> DualPathCNN3d:
    """Dual-path 3D CNN of ALM-v1 appendix B (MRI: diffusion path + T2 path)."""
    return DualPathCNN3d(tuple(in_channels), width, depth, global_pool, num_logits, normed_head)
