"""Lightning callbacks of the protocol: the best epoch on validation, ties broken as the official code."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO


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


class RNGState(pl.Callback):
    """Saves the random streams in every checkpoint and restores them on resume.

    torch (CPU and CUDA), numpy and Python's `random` drive the batch order, augmentation and
    initialisation; with them restored a resumed run continues exactly as an uninterrupted one.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
        state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, gauss = state_dict["numpy"]  # plain types: loadable with weights_only
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state_dict["python"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed into place: a process killed while
    saving leaves the previous `last.ckpt` intact, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


class LastCheckpoint(pl.Callback):
    """`last.ckpt` at the end of every training epoch (after its validation): what a killed run
    resumes from. At most the interrupted epoch is lost."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)
