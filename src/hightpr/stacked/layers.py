"""N copies of one architecture as one network: every layer holds the N members as groups of channels.

A member's input has C channels; the stacked network sees [B, N*C, ...] with member n in channels
n*C .. (n+1)*C. Convolutions become grouped convolutions (groups x N), BatchNorm over N*C channels
is exactly each member's BatchNorm (its statistics over its own batch), linear heads are batched
matrix products. Pooling, activations and the containers' own forward code are channel-local and
are reused unchanged; a layer that could mix members is refused (`NotStackable`), and
`stack_models` checks the stacked outputs against the members' own on a real input.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hightpr.models.heads import NormedLinear
from hightpr.models.resnet import PadShortcut


class NotStackable(Exception):
    """The members cannot be trained as one stacked network (the reason is the message)."""


# channel-local, parameter-free layers: the same module works on the stacked channels
CHANNEL_LOCAL = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)


class StackedLeaf(nn.Module):
    """A layer holding N members: `tensors()` by the member layer's names, `split` gives member m's part."""

    n: int

    def tensors(self) -> dict[str, torch.Tensor]:
        """The stacked parameters and buffers, named as in one member's layer (no step counters)."""
        return {}

    def split(self, t: torch.Tensor, m: int) -> torch.Tensor:
        """Member m's part of a stacked tensor (or of its gradient): a view, never a copy."""
        k = t.shape[0] // self.n  # members stacked in equal blocks along dim 0
        return t[m * k:(m + 1) * k]


def _device(module: nn.Module) -> torch.device | None:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return None if tensor is None else tensor.device


def _own(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t for name, t in [*layer._parameters.items(), *layer._buffers.items()]
            if t is not None and name != "num_batches_tracked"}


class StackedConv(StackedLeaf):
    """Conv{1,2,3}d of N members as one convolution with groups x N (weights stacked along dim 0).

    On the CPU a convolution with few input channels per group (the stem on RGB images) runs as
    one convolution per member instead: oneDNN's grouped kernels are slow for those shapes.
    """

    def __init__(self, convs: Sequence[nn.Module]) -> None:
        super().__init__()
        c, self.n = convs[0], len(convs)
        device = c.weight.device
        self.per_member = (device.type == "cpu" and c.in_channels // c.groups <= 4
                           and c.padding_mode == "zeros")
        self.conv = type(c)(c.in_channels * self.n, c.out_channels * self.n, c.kernel_size, c.stride,
                            c.padding, c.dilation, c.groups * self.n, c.bias is not None, c.padding_mode,
                            device=c.weight.device, dtype=c.weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([m.weight for m in convs]))
            if c.bias is not None:
                self.conv.bias.copy_(torch.cat([m.bias for m in convs]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_member:
            return self.conv(x)
        c, n = self.conv, self.n
        weights = c.weight.chunk(n)
        biases = c.bias.chunk(n) if c.bias is not None else [None] * n
        conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.ndim]
        return torch.cat([conv(xm, w, b, c.stride, c.padding, c.dilation, c.groups // n)
                          for xm, w, b in zip(x.chunk(n, dim=1), weights, biases, strict=True)], dim=1)

    def tensors(self) -> dict[str, torch.Tensor]:
        return _own(self.conv)


class StackedBatchNorm(StackedLeaf):
    """BatchNorm over N*C channels: per channel, hence per member, statistics over its own batch."""

    def __init__(self, bns: Sequence[nn.Module]) -> None:
        super().__init__()
        b, self.n = bns[0], len(bns)
        self.bn = type(b)(b.num_features * self.n, b.eps, b.momentum, b.affine, b.track_running_stats,
                          device=_device(b))
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(self.bn, name) is not None:
                    getattr(self.bn, name).copy_(torch.cat([getattr(m, name) for m in bns]))
            if b.num_batches_tracked is not None:
                self.bn.num_batches_tracked.copy_(b.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)

    def tensors(self) -> dict[str, torch.Tensor]:
        return _own(self.bn)


class _StackedHead(StackedLeaf):
    """A head whose own tensors are stacked along a new leading member dim: member m's is `t[m]`."""

    def tensors(self) -> dict[str, torch.Tensor]:
        return _own(self)

    def split(self, t: torch.Tensor, m: int) -> torch.Tensor:
        return t[m]


class StackedLinear(_StackedHead):
    """Linear heads of N members, [B, N*in] -> [B, N*out], as one batched matrix product."""

    def __init__(self, linears: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.n = len(linears)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))  # [N, out, in]
        has_bias = linears[0].bias is not None
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in linears])) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = x.reshape(b, self.n, -1).transpose(0, 1)  # [N, B, in]
        if self.bias is None:
            out = torch.bmm(xs, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias[:, None, :], xs, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(b, -1)


class StackedNormedLinear(_StackedHead):
    """LDAM's cosine heads of N members: each member's features and weights normalised on their own."""

    def __init__(self, heads: Sequence[NormedLinear]) -> None:
        super().__init__()
        self.n = len(heads)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in heads]))  # [N, in, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        xs = F.normalize(x.reshape(b, self.n, -1), dim=2).transpose(0, 1)  # [N, B, in]
        out = torch.bmm(xs, F.normalize(self.weight, dim=1))
        return out.transpose(0, 1).reshape(b, -1)


class StackedPadShortcut(StackedLeaf):
    """ResNet option-A shortcut: subsample, then zero channels added to each member's own block."""

    def __init__(self, shortcuts: Sequence[PadShortcut]) -> None:
        super().__init__()
        self.n, self.stride, self.pad = len(shortcuts), shortcuts[0].stride, shortcuts[0].pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride].unflatten(1, (self.n, -1))
        return F.pad(x, (0, 0, 0, 0, *self.pad)).flatten(1, 2)


LEAVES: dict[type, type[StackedLeaf]] = {
    nn.Conv1d: StackedConv, nn.Conv2d: StackedConv, nn.Conv3d: StackedConv,
    nn.BatchNorm1d: StackedBatchNorm, nn.BatchNorm2d: StackedBatchNorm, nn.BatchNorm3d: StackedBatchNorm,
    nn.Linear: StackedLinear, NormedLinear: StackedNormedLinear, PadShortcut: StackedPadShortcut,
}


def _signature(module: nn.Module) -> tuple:
    """What must agree between the members at one place of the architecture."""
    own = [(k, tuple(v.shape), v.dtype) for k, v in [*module._parameters.items(), *module._buffers.items()]
           if v is not None]
    return type(module), tuple(module._modules), tuple(own)


def stack_modules(modules: Sequence[nn.Module], path: str = "model") -> nn.Module:
    """The stacked counterpart of the same place in N members' architectures (see module docstring)."""
    first = modules[0]
    if any(_signature(m) != _signature(first) for m in modules[1:]):
        raise NotStackable(f"the members' models differ at {path}")
    kind = type(first)
    if kind in LEAVES:
        return LEAVES[kind](modules)
    if isinstance(first, CHANNEL_LOCAL) or (isinstance(first, nn.Dropout) and first.p == 0):
        return copy.deepcopy(first)
    if isinstance(first, nn.Flatten) and first.start_dim == 1:
        return copy.deepcopy(first)
    if first._parameters or first._buffers:
        raise NotStackable(f"{path} ({kind.__name__}) holds its own tensors and cannot be stacked")
    if not first._modules and not isinstance(first, nn.Sequential):
        raise NotStackable(f"{path} ({kind.__name__}) is a layer hightpr.stacked does not know")
    shell = copy.copy(first)
    shell.__dict__ = dict(first.__dict__)
    shell.__dict__["_modules"] = OrderedDict()
    for name, child in first._modules.items():
        if child is None:
            shell._modules[name] = None
            continue
        shell._modules[name] = stack_modules([m._modules[name] for m in modules], f"{path}.{name}")
    return shell
