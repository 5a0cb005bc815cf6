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


class Cascade(nn.Module):
    """`depth` stages of Conv(3x3[x3]) - ReLU - MaxPool(2), widths width * 2^i, then global pool.

    `dims` is 2 (the plain CNN of the small CIFAR-10 protocol) or 3 (volumes). Global max pooling
    by default: a small lesion anywhere in the volume should decide the score, which an average
    over the whole grid would dilute.
    """

    def __init__(self, dims: int, in_channels: int, width: int = 16, depth: int = 3,
                 global_pool: str = "max") -> None:
        super().__init__()
        conv, maxpool = {2: (nn.Conv2d, nn.MaxPool2d), 3: (nn.Conv3d, nn.MaxPool3d)}[dims]
        pools = {"max": {2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d},
                 "avg": {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}}
        if global_pool not in pools:
            raise ValueError(f"model.global_pool must be one of {sorted(pools)}, got {global_pool!r}")
        if depth < 1 or width < 1:
            raise ValueError(f"model.depth and model.width must be >= 1, got {depth} and {width}")
        layers, c = [], in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [conv(c, out, 3, padding=1), nn.ReLU(inplace=True), maxpool(2, ceil_mode=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = pools[global_pool][dims](1)
        self.num_features = c
        for m in self.modules():
            if isinstance(m, conv):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


class CNN3d(nn.Module):
    """One cascade and the classifier head (AdrenalMNIST3D and other single-modality volumes)."""

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3, global_pool: str = "max",
                 num_logits: int = 1, normed_head: bool = False) -> None:
        super().__init__()
        self.path = Cascade(3, in_channels, width, depth, global_pool)
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
        self.paths = nn.ModuleList(Cascade(3, c, width, depth, global_pool) for c in self.split)
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
