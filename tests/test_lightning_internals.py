"""The Lightning internals `hightpr.callbacks` leans on, named here: this fails when Lightning moves them."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.io import TorchCheckpointIO

from hightpr.runs import CSV_LOG


def parameters(function) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


def test_best_epoch_overrides_model_checkpoints_top_k_decision_and_save():
    """`BestEpoch` breaks ties in `check_monitor_top_k` and records its epoch in `_update_best_and_save`,
    reading `best_k_models`, `kth_best_model_path` and `save_top_k`."""
    assert parameters(ModelCheckpoint.check_monitor_top_k) == ["trainer", "current"]
    assert parameters(ModelCheckpoint._update_best_and_save) == ["current", "trainer", "monitor_candidates"]
    callback = ModelCheckpoint(monitor="val/auc", mode="max", save_top_k=1)
    assert callback.best_k_models == {} and callback.kth_best_model_path == "" and callback.save_top_k == 1
    assert {"state_dict", "load_state_dict"} <= set(vars(ModelCheckpoint))


def test_last_checkpoint_runs_after_the_other_callbacks_as_a_checkpoint_callback():
    """Lightning runs `Checkpoint` callbacks last: `LastCheckpoint` saves after `BestEpoch` and early
    stopping have updated their state."""
    from pytorch_lightning.trainer.connectors.callback_connector import _CallbackConnector

    early, last = pl.callbacks.EarlyStopping(monitor="val/auc"), Checkpoint()
    assert _CallbackConnector._reorder_callbacks([last, early]) == [early, last]


def test_interrupt_reads_the_signal_connector_and_the_epoch_progress():
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    assert trainer._signal_connector.received_sigterm is False
    assert trainer.fit_loop.epoch_progress.current.completed == 0


def test_a_resumed_run_rewrites_the_csv_loggers_file_through_its_writer(tmp_path):
    """`keep_csv_log` reads `<log_dir>/metrics.csv` and prepends rows to the writer's `metrics`."""
    assert ExperimentWriter.NAME_METRICS_FILE == CSV_LOG
    logger = CSVLogger(str(tmp_path), name="csv")
    writer = logger.experiment
    assert isinstance(writer.metrics, list) and isinstance(writer.metrics_keys, list)
    writer.metrics = [{"epoch": 0, "val/auc": 0.5}, *writer.metrics]
    writer.metrics_keys = sorted({*writer.metrics_keys, "epoch", "val/auc"})
    logger.save()
    assert (Path(logger.log_dir) / CSV_LOG).read_text().splitlines() == ["epoch,val/auc", "0,0.5"]


def test_atomic_checkpoint_io_overrides_save_checkpoint():
    assert parameters(TorchCheckpointIO.save_checkpoint) == ["checkpoint", "path", "storage_options"]
