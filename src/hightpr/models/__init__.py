"""Backbones with their classifier head; models never know their loss."""

from hightpr.models.convnet import ConvNet2d, convnet
from hightpr.models.heads import NormedLinear, binary_score, critical_score, make_head
from hightpr.models.resnet import CifarResNet, resnet10, resnet32

# The model configs (`model=<name>`) by the inputs they take, for the message that refuses a mismatch.
MODELS_BY_INPUT: dict[str, tuple[str, ...]] = {
    "2d": ("resnet10", "resnet18", "resnet32", "convnet"),
    "3d": ("cnn3d", "cnn3d_dual"),
}

__all__ = [
    "MODELS_BY_INPUT",
    "CifarResNet", "ConvNet2d", "NormedLinear", "binary_score", "convnet", "critical_score", "make_head",
    "resnet10", "resnet32",
]
