"""Plain 2D CNN of ALM-v1 (§5.2, appendix B) for the small CIFAR-10 protocol.

The paper gives the structure, not the sizes: "a single-path, 2D architecture, whose layers are
the same as for MRI, substituting 3D with 2D versions", i.e. a cascade of convolution, max
pooling and ReLU, then the classifier (sigmoid in the loss). Sizes mirror the 3D cascade of
`hightpr.models.cnn3d` (3x3 kernels, widths width * 2^i, global pooling), so the two paths of the
paper stay one design.
"""

from __future__ import annotations

import torch
from torch import nn

from hightpr.models.cnn3d import Cascade
from hightpr.models.heads import make_head


class ConvNet2d(nn.Module):
    """`depth` stages of Conv2d(3x3) - ReLU - MaxPool2d(2), widths width * 2^i; global pool; head."""

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 3, global_pool: str = "max",
                 num_logits: int = 1, normed_head: bool = False) -> None:
        super().__init__()
        self.path = Cascade(2, in_channels, width, depth, global_pool)
        self.num_features = self.path.num_features
        self.head = make_head(self.num_features, num_logits, normed_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.path(x))


def convnet(width: int = 16, depth: int = 3, global_pool: str = "max", num_logits: int = 1,
            normed_head: bool = False, in_channels: int = 3) -> ConvNet2d:
    """The plain cascade CNN of ALM-v1 appendix B (CIFAR-10 path)."""
    return ConvNet2d(in_channels, width, depth, global_pool, num_logits, normed_head)
