"""How the running members' models are run: one stacked network, or each member's own model.

`StackedNetwork` (`ensemble.forward=stacked`, the default on a GPU) runs one `StackedModel` whose storage
the members' tensors alias: one forward and one backward for all members. `OwnModels`
(`ensemble.forward=members`, the default on the CPU, where a stacked network is not faster than
the members one by one) runs each member's own model on its batch; everything else of batched
training (one process, data on the device, one pass per epoch over the members' batches) stays.
Steps whose batches differ in size between members (RankReg's buffers filling up) run the
members' own models in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hightpr.checks.values import ENSEMBLE_FORWARDS
from hightpr.errors import HightprError
from hightpr.stacked.model import StackedModel, check_stacked, detach_member

MODES = ENSEMBLE_FORWARDS  # `ensemble.forward`, checked with every setting (hightpr.checks.values)


def forward_mode(setting: str | None, device: torch.device) -> str:
    """The forward of `ensemble.forward` (stacked | members); null: stacked on a GPU, members on the CPU."""
    if setting is None:
        return "stacked" if device.type == "cuda" else "members"
    if setting not in MODES:
        raise HightprError(f"ensemble.forward must be one of {', '.join(MODES)} or null (automatic: stacked "
                           f"on a GPU, members on the CPU), got {setting!r}")
    return setting


class OwnModels:
    """Each running member's own model on its own batch."""

    mode = "members"

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.models = list(models)

    def train(self, x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Training-mode logits of each member on its own batch (x [N, B, ...], or N batches)."""
        return [model(xm) for model, xm in zip(self.models, x, strict=True)]

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits [N, B, K] of each member on its own inputs x [N, B, ...]."""
        for model in self.models:
            model.eval()
        try:
            return torch.stack([model(xm) for model, xm in zip(self.models, x, strict=True)])
        finally:
            for model in self.models:
                model.train()

    def eval_batch(self, eval_batch_size: int) -> int:
        """Samples per member per evaluation pass (each member's model runs on its own)."""
        return eval_batch_size

    def keep(self, running: Sequence[int]) -> OwnModels:
        """The same for the members at positions `running` (the others stopped)."""
        return OwnModels([self.models[i] for i in running])

    def release(self) -> None:
        """Nothing to undo: the members' models own their tensors."""


class StackedNetwork(OwnModels):
    """One stacked network; the members' parameters, statistics and gradients are views of it."""

    mode = "stacked"

    def __init__(self, models: Sequence[nn.Module], channels_last: bool, compile: bool = False,
                 alias: bool = True, check: torch.Tensor | None = None) -> None:
        super().__init__(models)
        self.channels_last, self.compile = channels_last, compile
        self.stacked = StackedModel(self.models, channels_last=channels_last)
        if check is not None:
            check_stacked(self.stacked, self.models, check)
        if alias:
            self.stacked.alias(self.models)
        self.run = torch.compile(self.stacked) if compile else self.stacked

    def zero_grad(self) -> None:
        """Zero the gradients in place (the members' are views of them: never set to None)."""
        self.stacked.zero_grad_()

    def train(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """One stacked forward, or each member's own model when the batches differ in size."""
        if not isinstance(x, torch.Tensor):
            if len({len(xm) for xm in x}) > 1:  # batches of different sizes: each member's own model
                return super().train(x)
            x = torch.stack(list(x))
        return self.run(x)

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        """One stacked forward in eval mode."""
        self.stacked.eval()
        try:
            return self.run(x)
        finally:
            self.stacked.train()

    def eval_batch(self, eval_batch_size: int) -> int:
        """About `eval_batch_size` images per stacked pass, shared among the members."""
        return max(1, -(-eval_batch_size // len(self.models)))

    def keep(self, running: Sequence[int]) -> StackedNetwork:
        """A smaller stack of the members at positions `running`; the others get their own storage."""
        for i, model in enumerate(self.models):
            if i not in running:
                detach_member(model)
        return StackedNetwork([self.models[i] for i in running], self.channels_last, self.compile)

    def release(self) -> None:
        """Give every member its own storage again (the end of training)."""
        for model in self.models:
            detach_member(model)


def make_forward(mode: str, models: Sequence[nn.Module], sample: torch.Tensor, compile: bool = False,
                 alias: bool = True) -> OwnModels:
    """The forward of `mode` over the members' models (a stacked one checked on `sample`, 2D images
    in channels-last layout on a GPU)."""
    if mode == "stacked":
        channels_last = sample.ndim == 4 and sample.device.type == "cuda"
        return StackedNetwork(models, channels_last, compile, alias, check=sample if alias else None)
    return OwnModels(models)
