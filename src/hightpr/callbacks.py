"""Lightning callbacks of the protocol: the best epoch on validation, ties broken as the official code."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint


class BestEpoch(ModelCheckpoint):
    """Keep the epoch with the best validation monitor; on an exact tie, the lower `tie_break`.

    With 100 + 100 validation images equal validation AUCs (often 1.0) are common; the official
    ALM code then keeps the epoch with the lower validation loss (`utils/train_test_CIFAR.py`).
    A tie with no tie-break value (a loss that cannot be evaluated on validation) keeps the
    earlier epoch, as a plain ModelCheckpoint does.
    """

    def __init__(self, *args, tie_break: str = "val/loss", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tie_break = tie_break
        self.best_tie_value = math.inf

    def _tie_value(self, trainer: pl.Trainer) -> float:
        value = trainer.callback_metrics.get(self.tie_break)
        return math.nan if value is None else float(value)

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k != 1 or not self.best_k_models:
            return super().check_monitor_top_k(trainer, current)
        best = self.best_k_models[self.kth_best_model_path]
        if bool(current == best):
            return self._tie_value(trainer) < self.best_tie_value  # NaN compares False: keep the earlier
        return super().check_monitor_top_k(trainer, current)

    def _update_best_and_save(self, current: torch.Tensor, trainer: pl.Trainer,
                              monitor_candidates: dict[str, torch.Tensor]) -> None:
        tie = self._tie_value(trainer)
        super()._update_best_and_save(current, trainer, monitor_candidates)
        self.best_tie_value = math.inf if math.isnan(tie) else tie

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_tie_value": self.best_tie_value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_tie_value = state_dict.get("best_tie_value", math.inf)
