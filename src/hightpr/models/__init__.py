"""Backbones with their classifier head; models never know their loss."""

from hightpr.models.convnet import ConvNet2d, convnet
from hightpr.models.heads import NormedLinear, binary_score, critical_score, make_head
from hightpr.models.resnet import CifarResNet, resnet10, resnet32

__all__ = [
    "CifarResNet", "ConvNet2d", "NormedLinear", "binary_score", "convnet", "critical_score", "make_head",
    "resnet10", "resnet32",
]
