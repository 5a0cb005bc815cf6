"""ResNet-18 of RankReg's Melanoma experiments (torchvision), its head replaced by ours.

ImageNet weights are used only when the user points `pretrained_path` at a local torchvision
state dict (e.g. `resnet18-f37072fd.pth`): nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.resnet import BasicBlock, ResNet

from hightpr.errors import HightprError
from hightpr.models.heads import make_head


class _NarrowResNet18(ResNet):
    """torchvision's ResNet-18 with every width scaled by width/64 (smoke tests, CPU runs)."""

    def __init__(self, width: int) -> None:
        self._width = int(width)
        super().__init__(BasicBlock, [2, 2, 2, 2])
        self.conv1 = nn.Conv2d(3, self._width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self._width)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if not hasattr(self, "layer1"):  # first stage: its input is the (narrowed) stem
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


def load_imagenet_weights(model: ResNet, path: str | Path) -> None:
    """Load a local torchvision ResNet-18 state dict into `model`, except its classifier."""
    path = Path(path)
    if not path.is_file():
        raise HightprError(
            f"model.pretrained_path={path}: no such file (weights are never downloaded; "
            "save torchvision's resnet18 ImageNet state dict there, or set it to null)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise HightprError(f"model.pretrained_path={path}: not a readable state dict ({err})") from err
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise HightprError(
            f"model.pretrained_path={path}: not a torchvision ResNet-18 state dict "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)"
        )


def resnet18(
    width: int = 64,
    pretrained_path: str | None = None,
    num_logits: int = 1,
    normed_head: bool = False,
) -> ResNet:
    """torchvision `resnet18(weights=None)` with `fc` replaced by our head (1 or 2 logits).

    `width` 64 is the real ResNet-18 (the only width ImageNet weights fit); other widths scale
    every stage for quick runs. The stem expects RGB images of any size >= 32 px.
    """
    if width == 64:
        model = tv_resnet18(weights=None)
    elif pretrained_path:
        raise HightprError("model.pretrained_path needs model.width=64 (ImageNet weights are 64 wide)")
    else:
        model = _NarrowResNet18(width)
    if pretrained_path:
        load_imagenet_weights(model, pretrained_path)
    model.fc = make_head(model.layer4[-1].bn2.num_features, num_logits, normed_head)
    return model
