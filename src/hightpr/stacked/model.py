"""The members' models as one network whose storage the members' own parameters alias.

`StackedModel.alias(models)` makes every parameter, BatchNorm statistic and gradient of member m
a view of its part of the stacked tensors. The members' own optimizers (built by each member's
module, with its own state and schedule) then step their parameters in place, which updates
the stacked network; a member's own model can still run on its own (a step whose batches differ
in size between members) and its gradients land in the same place.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from hightpr.stacked.layers import NotStackable, StackedConv, StackedLeaf, stack_modules


class StackedModel(nn.Module):
    """forward: inputs [N, B, C, ...] of N members -> logits [N, B, K] (member n's model on its input n)."""

    def __init__(self, models: Sequence[nn.Module], channels_last: bool = False) -> None:
        super().__init__()
        self.n, self.channels_last = len(models), channels_last
        self.net = stack_modules(models)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
            for leaf in self.net.modules():    # the CPU's one-conv-per-member stem is for NCHW only:
                if isinstance(leaf, StackedConv):   # in channels-last, oneDNN's backward of it
                    leaf.per_member = False         # corrupts the heap (seen on torch 2.14, CPU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b = x.shape[:2]
        if n != self.n:
            raise ValueError(f"the stacked model holds {self.n} members, the input {n}")
        if self.channels_last and x.ndim == 5:  # memory [B, H, W, N, C], seen as [B, N*C, H, W]
            xs = x.permute(1, 3, 4, 0, 2).contiguous().flatten(3).permute(0, 3, 1, 2)
        else:
            xs = x.transpose(0, 1).flatten(1, 2).contiguous()
        return self.net(xs).reshape(b, n, -1).transpose(0, 1)

    def leaves(self) -> list[tuple[str, StackedLeaf]]:
        """(path in a member's model, stacked layer) of every layer that holds member tensors."""
        return [(path.removeprefix("net."), m) for path, m in self.named_modules()
                if isinstance(m, StackedLeaf)]

    @torch.no_grad()
    def alias(self, models: Sequence[nn.Module]) -> None:
        """Point the members' parameters, statistics and gradients at their parts of this network."""
        for p in self.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        for path, leaf in self.leaves():
            for m, model in enumerate(models):
                layer = model.get_submodule(path)
                for name, stacked in leaf.tensors().items():
                    own = getattr(layer, name)
                    own.data = leaf.split(stacked.detach(), m)
                    if isinstance(stacked, nn.Parameter) and stacked.requires_grad:
                        own.grad = leaf.split(stacked.grad, m)

    def zero_grad_(self) -> None:
        """Zero the stacked gradients in place (the members' gradients are views of them)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)


@torch.no_grad()
def detach_member(model: nn.Module) -> None:
    """Give a member's model its own storage again (a frozen member, or the end of training)."""
    for t in [*model.parameters(), *model.buffers()]:
        t.data = t.data.clone()
    for p in model.parameters():
        p.grad = None


@torch.no_grad()
def check_stacked(stacked: StackedModel, models: Sequence[nn.Module], x: torch.Tensor) -> None:
    """The stacked outputs equal each member's own, in eval and train mode, on a real input x [B, ...].

    Catches a model whose forward code mixes channels (which stacking would break). Copies run the
    train-mode check, so no statistics move; TF32 is off during it, so that only a real difference
    (not the precision of the device's fast kernels) fails it.
    """
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), _no_tf32_matmul():
        _compare(stacked, models, x)


@contextlib.contextmanager
def _no_tf32_matmul() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _compare(stacked: StackedModel, models: Sequence[nn.Module], x: torch.Tensor) -> None:
    for train in (False, True):
        net = copy.deepcopy(stacked).train(train)
        mods = [copy.deepcopy(m).train(train) for m in models]
        xs = x[None].expand(len(models), *x.shape)
        try:
            got = net(xs).float()
        except Exception as err:  # noqa: BLE001 - a forward that cannot take stacked channels
            raise NotStackable(f"the stacked {type(models[0]).__name__} cannot run "
                               f"({str(err).splitlines()[0][:100]})") from err
        for m, model in enumerate(mods):
            want = model(x).float()
            if got[m].shape != want.shape or not torch.allclose(got[m], want, rtol=1e-3,
                                                                  atol=1e-4 * (1 + want.abs().max())):
                raise NotStackable(f"the stacked {type(models[0]).__name__} does not reproduce its members' "
                                   f"outputs ({'train' if train else 'eval'} mode)")
