"""The regulariser interface: one object the LightningModule drives without knowing its kind.

State (ALM's multipliers, RankReg's buffer) lives in registered buffers, so it sits on the
training device and is saved in checkpoints.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from hightpr.task import Task


class Regularizer(nn.Module):
    """A term added to the base loss. The defaults make it a no-op (`reg=none`)."""

    binary_only: ClassVar[bool] = False  # True: refuses multi-class data (binary ALM)

    def __init__(self, num_sample_ids: int = 0) -> None:
        super().__init__()
        self.num_sample_ids = num_sample_ids

    def extend_batch(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """Return the batch to score and how many leading samples enter the base loss."""
        return batch, len(batch["y"])

    def forward(
        self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """The loss term on the (extended) batch, already weighted.

        logits: model outputs [B, K]; scores: the ranked scalar per sample [B] (binary score,
        or the critical class's logit); y: labels [B]; ids: stable training-sample ids [B].
        """
        return scores.sum() * 0.0

    def after_step(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor, scores: torch.Tensor
    ) -> None:
        """Update state after the step, without gradient (ALM's multipliers, RankReg's buffer).

        Receives the extended batch and its detached outputs.
        """

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called at the start of every training epoch (e.g. warm-up switches)."""

    def handles(self, task: Task) -> bool:
        """Whether this regulariser can train on `task` (the wiring refuses a mismatch before training)."""
        return task.binary or not self.binary_only

    def on_validation_end(self, monitored: float) -> None:
        """Called after each validation during fitting with the monitored metric (binary: AUC;
        multi-class: accuracy), e.g. for ALM's mu schedule."""

    def epoch_log(self) -> dict[str, torch.Tensor]:
        """Quantities to log once per epoch (tensors; no host sync inside steps)."""
        return {}


class NoRegularizer(Regularizer):
    """`reg=none`: the base loss alone."""
