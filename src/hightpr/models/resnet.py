"""CIFAR ResNets (3x3 stem, no max-pool): ResNet-10 of the binary experiments, ResNet-32 (LDAM).

Shortcuts where a block changes shape (He et al., "Deep Residual Learning for Image
Recognition", arXiv:1512.03385, §3.3 and §4.2): option A, the parameter-free identity subsampled
by the stride with zero-padded extra channels (their CIFAR ResNets, and Cao et al.'s ResNet-32
for long-tailed CIFAR); option B, a 1x1 convolution + BatchNorm projection (the official ALM
ResNet-10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hightpr.models.heads import make_head

SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::stride, ::stride] with zero channels added, half before and half after.

    Parameter-free; the even split of the new channels is that of Cao et al.'s ResNet-32
    (planes // 4 on each side when the width doubles).
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"option-A shortcut cannot shrink {in_planes} channels to {planes}")
        extra = planes - in_planes
        self.stride, self.pad = stride, (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, *self.pad))


def make_shortcut(in_planes: int, planes: int, stride: int, option: str) -> nn.Module:
    """The identity when the shape is kept; otherwise option A (zero padding) or B (1x1 conv + BN)."""
    if option not in SHORTCUTS:
        raise ValueError(f"model.shortcut={option!r}: use A (zero padding) or B (1x1 projection)")
    if stride == 1 and in_planes == planes:
        return nn.Sequential()
    if option == "A":
        return PadShortcut(in_planes, planes, stride)
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = make_shortcut(in_planes, planes, stride, shortcut)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stages of BasicBlocks with widths `widths`, strides 1,2,2,...; global pool; head.

    `shortcut`: "A" (parameter-free zero padding) or "B" (1x1 projection) where a block changes shape.
    """

    def __init__(
        self,
        blocks: tuple[int, ...] = (1, 1, 1, 1),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        num_logits: int = 1,
        normed_head: bool = False,
        in_channels: int = 3,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers, in_planes = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, w, stride=stride, shortcut=shortcut))
                in_planes = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_planes
        self.head = make_head(in_planes, num_logits, normed_head)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.pool(self.features(self.stem(x))).flatten(1))


def resnet10(width: int = 64, num_logits: int = 1, normed_head: bool = False) -> CifarResNet:
    """ResNet-10: one BasicBlock per stage, widths width x (1, 2, 4, 8) (64-128-256-512)."""
    return CifarResNet((1, 1, 1, 1), tuple(width * m for m in (1, 2, 4, 8)), num_logits, normed_head)


def resnet32(width: int = 16, num_logits: int = 10, normed_head: bool = False,
             shortcut: str = "A") -> CifarResNet:
    """ResNet-32 of He et al. for CIFAR (5 blocks x 3 stages, widths 16-32-64), option-A
    shortcuts by default as in He et al.'s CIFAR experiments and Cao et al.'s (LDAM) code."""
    return CifarResNet((5, 5, 5), tuple(width * m for m in (1, 2, 4)), num_logits, normed_head,
                       shortcut=shortcut)
