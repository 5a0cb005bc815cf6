"""BestEpoch: the best validation monitor, exact ties broken by the lower validation loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from hightpr.callbacks import BestEpoch, LastCheckpoint


class Scripted(pl.LightningModule):
    """Logs a scripted validation AUC and loss per epoch (training itself is a no-op)."""

    def __init__(self, aucs, losses):
        super().__init__()
        self.aucs, self.losses = aucs, losses
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w * 0).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        e = self.current_epoch
        self.log("val/auc", self.aucs[e])
        if self.losses[e] is not None:
            self.log("val/loss", self.losses[e])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def best_epoch(tmp_path, aucs, losses) -> int:
    data = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)
    ckpt = BestEpoch(dirpath=tmp_path, filename="best-epoch{epoch:03d}", monitor="val/auc", mode="max",
                     save_top_k=1, auto_insert_metric_name=False)
    trainer = pl.Trainer(max_epochs=len(aucs), callbacks=[ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(Scripted(aucs, losses), data, data)
    assert len(list(tmp_path.glob("best-*.ckpt"))) == 1
    return int(ckpt.best_model_path.rsplit("epoch", 1)[1][:3])


@pytest.mark.parametrize(
    "aucs, losses, expected",
    [
        ([0.90, 0.95, 0.95, 0.95, 0.94], [0.5, 0.4, 0.3, 0.35, 0.1], 2),  # tie: lower loss wins
        ([0.90, 0.95, 0.95, 0.97, 0.97], [0.5, 0.4, 0.3, 0.9, 0.95], 3),  # a higher AUC wins anyway
        ([1.0, 1.0, 1.0, 1.0, 1.0], [0.6, 0.7, 0.2, 0.2, 0.1], 4),        # saturated AUC: the lowest loss
        ([0.80, 0.90, 0.90], [0.3, 0.2, 0.2], 1),                          # equal loss too: keep the earlier
        ([0.80, 0.90, 0.90], [0.3, None, None], 1),                        # no loss logged: keep the earlier
    ],
)
def test_ties_go_to_the_lower_validation_loss(tmp_path, aucs, losses, expected):
    assert best_epoch(tmp_path, aucs, losses) == expected


AUCS_TIED = [0.90, 0.95, 0.95, 0.95]  # epochs 1, 2 and 3 tie at the best AUC
LOSSES_TIED = [0.5, 0.4, 0.3, 0.35]  # epoch 2 wins the tie (0.3 < 0.4); epoch 3 (0.35) does not


def fit_tied(tmp_path, epochs: int, resume_from=None) -> tuple[pl.Trainer, BestEpoch]:
    """The scripted run with the protocol's checkpoints (best epoch, last.ckpt), or resumed from a file."""
    data = DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)
    ckpt = BestEpoch(dirpath=tmp_path, filename="best-epoch{epoch:03d}", monitor="val/auc", mode="max",
                     save_top_k=1, auto_insert_metric_name=False)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[ckpt, LastCheckpoint(tmp_path / "last.ckpt")],
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(Scripted(AUCS_TIED, LOSSES_TIED), data, data, ckpt_path=resume_from)
    return trainer, ckpt


def test_the_tie_value_is_checkpointed(tmp_path):
    trainer, first = fit_tied(tmp_path, 3)
    assert first.best_model_path.endswith("best-epoch002.ckpt")
    assert first.best_tie_value == pytest.approx(0.3)  # epoch 2's validation loss, computed in training
    saved = tmp_path / "after-epoch-2.ckpt"
    trainer.save_checkpoint(saved)
    state = torch.load(saved, weights_only=False)["callbacks"][first.state_key]
    assert state["best_tie_value"] == pytest.approx(0.3)  # written to the file
    # resumed from the file by a fresh callback: the tie value comes back, so epoch 3's tie at the
    # higher loss 0.35 keeps epoch 2 (without it, inf, epoch 3 would win the tie)
    _, resumed = fit_tied(tmp_path, 4, resume_from=saved)
    assert resumed.best_tie_value == pytest.approx(0.3)
    assert resumed.best_model_path.endswith("best-epoch002.ckpt")
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == ["best-epoch002.ckpt"]


def test_last_ckpt_holds_the_best_epoch_of_its_own_epoch(tmp_path):
    fit_tied(tmp_path, 3)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("BestEpoch"))
    assert last["epoch"] == 2
    assert (Path(state["best_model_path"]).name, state["best_tie_value"]) == ("best-epoch002.ckpt",
                                                                             pytest.approx(0.3))


# -- the callbacks config group --------------------------------------------------------------------
def test_the_default_callbacks_are_the_protocols_own_given_the_runs_settings(tmp_path):
    from hightpr.build import build_callbacks
    from hightpr.callbacks import Interrupt, RNGState
    from hightpr.config import compose_config
    from hightpr.runs import checkpoint_dir, last_checkpoint

    cfg = compose_config(["trainer.patience=7"])
    callbacks = build_callbacks(cfg, tmp_path, monitor="auc")
    assert [type(c) for c in callbacks] == [BestEpoch, LastCheckpoint, RNGState, Interrupt,
                                            pl.callbacks.EarlyStopping]
    best, last, early = callbacks[0], callbacks[1], callbacks[4]
    assert Path(best.dirpath) == checkpoint_dir(tmp_path) and best.monitor == "val/auc"
    assert last.path == last_checkpoint(tmp_path)
    assert early.monitor == "val/auc" and early.patience == 7


def test_a_callback_added_on_the_command_line_is_built_after_the_protocols(tmp_path):
    from hightpr.build import build_callbacks
    from hightpr.checks import check_keys
    from hightpr.config import compose_config

    cfg = compose_config(["+callbacks.lr_monitor._target_=pytorch_lightning.callbacks.LearningRateMonitor",
                          "+callbacks.lr_monitor.logging_interval=epoch", "~callbacks.early_stopping"])
    check_keys(cfg)
    callbacks = build_callbacks(cfg, tmp_path)
    assert isinstance(callbacks[-1], pl.callbacks.LearningRateMonitor)
    assert callbacks[-1].logging_interval == "epoch"
    assert not any(isinstance(c, pl.callbacks.EarlyStopping) for c in callbacks)


@pytest.mark.parametrize(("override", "said"), [
    ("+callbacks.lr_monitor.logging_interval=epoch", "callbacks.lr_monitor: a callback is a node with a "),
    ("+callbacks.early_stopping.patiense=3", "callbacks.early_stopping.patiense: no component reads"),
])
def test_a_callback_without_a_target_or_with_an_unread_key_is_refused(override, said):
    from hightpr.checks import check_keys
    from hightpr.config import compose_config
    from hightpr.errors import HightprError

    with pytest.raises(HightprError, match=said):
        check_keys(compose_config([override]))


def test_the_default_callbacks_leave_run_keys_alone_and_others_make_a_run_of_their_own():
    from omegaconf import open_dict

    from hightpr.config import compose_config
    from hightpr.identity import run_key
    from hightpr.stacked.layers import NotStackable
    from hightpr.stacked.settings import settings_of

    plain, same = compose_config([]), compose_config(["callbacks=default"])
    added = compose_config(["+callbacks.lr_monitor._target_=pytorch_lightning.callbacks.LearningRateMonitor"])
    without = compose_config([])
    with open_dict(without):
        del without["callbacks"]  # the configuration before the group existed: the same folder
    assert run_key(plain) == run_key(same) == run_key(without) != run_key(added)
    settings_of(plain)
    with pytest.raises(NotStackable, match="callbacks"):
        settings_of(added)


def test_a_learning_rate_monitor_logs_the_learning_rate_in_the_csv_log(train):
    result = train("+callbacks.lr_monitor._target_=pytorch_lightning.callbacks.LearningRateMonitor")
    assert result.returncode == 0, result.stderr[-2000:]
    import pandas as pd

    from hightpr.runs import csv_log_path

    log = pd.read_csv(csv_log_path(result.run_dir))
    assert log["lr-Adam"].dropna().tolist() == [0.001] * 2  # at the start of each of the 2 epochs
