"""BestEpoch: the best validation monitor, exact ties broken by the lower validation loss."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from hightpr.callbacks import BestEpoch


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


def test_the_tie_value_is_checkpointed():
    ckpt = BestEpoch(monitor="val/auc", mode="max")
    ckpt.best_tie_value = 0.25
    fresh = BestEpoch(monitor="val/auc", mode="max")
    fresh.load_state_dict(ckpt.state_dict())
    assert fresh.best_tie_value == 0.25
