"""Lightning callbacks of the protocol: the best epoch on validation, ties broken as the official code."""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hightpr.metrics.evaluators import improves

log = logging.getLogger("hightpr")


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
        self.best_epoch: int | None = None  # the epoch of the best checkpoint saved by this process

    def _tie_value(self, trainer: pl.Trainer) -> float:
        value = trainer.callback_metrics.get(self.tie_break)
        return math.nan if value is None else float(value)

    def check_monitor_top_k(self, trainer: pl.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k != 1 or not self.best_k_models:
            return super().check_monitor_top_k(trainer, current)
        best = self.best_k_models[self.kth_best_model_path]
        if bool(current == best):  # the evaluators' tie rule: the lower tie-break; NaN keeps the earlier
            return improves(float(current), self._tie_value(trainer), float(best), self.best_tie_value)
        return super().check_monitor_top_k(trainer, current)

    def _update_best_and_save(self, current: torch.Tensor, trainer: pl.Trainer,
                              monitor_candidates: dict[str, torch.Tensor]) -> None:
        tie = self._tie_value(trainer)
        self.best_tie_value = math.inf if math.isnan(tie) else tie  # before the save: the file holds it
        super()._update_best_and_save(current, trainer, monitor_candidates)
        self.best_epoch = trainer.current_epoch

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


class LastCheckpoint(pl.callbacks.Checkpoint):
    """`last.ckpt` at the end of every training epoch (after its validation): what a killed run
    resumes from. At most the interrupted epoch is lost.

    A `Checkpoint` callback, so Lightning runs it after every other callback and after `BestEpoch`
    (listed before it): the file holds this epoch's best epoch, tie value and early-stopping count."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path)


class Interrupt(pl.Callback):
    """Ctrl-C (or SIGTERM) stops training at the next safe point, as Lightning stops on SIGTERM: the
    end of the current step, or of the epoch being closed, so every finished epoch is saved
    (`last.ckpt`) and logged (the csv log is flushed); the same command resumes the run. A second
    Ctrl-C stops the process at once. `exit_code` is 130 after Ctrl-C, 143 after SIGTERM."""

    def __init__(self) -> None:
        self.exit_code: int | None = None
        self._previous = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda signum, frame: self._ctrl_c(trainer))

    def _ctrl_c(self, trainer: pl.Trainer) -> None:
        if self.exit_code is not None:
            _stop_now(signal.SIGINT, None)
        self.exit_code = 130
        log.warning("Ctrl-C: stopping at the end of this step, finished epochs kept (again: stop at once)")
        trainer._signal_connector.received_sigterm = True  # Lightning's own graceful stop

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        if self.exit_code is None:
            self.exit_code = 130 if isinstance(exception, KeyboardInterrupt) else 143
        signal.signal(signal.SIGINT, _stop_now)  # Lightning ignores further Ctrl-C while it shuts down
        done = trainer.fit_loop.epoch_progress.current.completed
        log.warning("interrupted: %d finished epochs are saved in %s; run the same command to resume",
                    done, self._last(trainer))

    @staticmethod
    def _last(trainer: pl.Trainer) -> str:
        for callback in trainer.callbacks:
            if isinstance(callback, LastCheckpoint):
                return str(callback.path)
        return "the run's last checkpoint"


def _stop_now(signum: int, frame) -> None:
    sys.stderr.write("error: interrupted twice: stopped at once (finished epochs are in last.ckpt)\n")
    sys.stderr.flush()
    os._exit(130)


def keep_csv_log(trainer: pl.Trainer, resume_from: Path) -> None:
    """A resumed run continues its `csv/metrics.csv`: the rows of the epochs the checkpoint holds are
    logged again (Lightning's CSV logger deletes an existing file), those of the interrupted epoch not."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if logger is None:
        return
    path = Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    done = int(torch.load(resume_from, map_location="cpu", weights_only=False).get("epoch", -1))
    kept = [{k: v for k, v in row.items() if v != ""} for row in rows
            if row.get("epoch", "") != "" and int(float(row["epoch"])) <= done]
    writer = logger.experiment  # created now: it removes the old file, the kept rows are written anew
    writer.metrics = [*kept, *writer.metrics]
    writer.metrics_keys = sorted({*writer.metrics_keys, *(k for row in rows for k in row)})
    logger.save()
