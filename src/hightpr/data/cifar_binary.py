"""Binary imbalanced CIFAR (ALM / RankReg protocol) as a LightningDataModule."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from hightpr.data.augment import random_crop_flip, to_float
from hightpr.data.cifar_files import load_cifar
from hightpr.data.splits import binary_split
from hightpr.data.tensors import IndexedTensors, batch_loader


class BinaryCIFARDataModule(pl.LightningDataModule):
    """Negative class vs positive class at a 1:`ratio` imbalance; labels are 0/1 floats.

    Sample ids are stable across seeds and runs: the index in the source train split for
    train/val samples, `len(train split) + index` for test samples.
    """

    def __init__(
        self,
        root: str | Path,
        which: str = "cifar10",
        negative_class: int = 0,
        positive_class: int = 1,
        ratio: float = 100,
        seed: int = 1,
        val_per_class: int = 100,
        negative_fraction: float = 0.9,
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        augment: bool = True,
    ) -> None:
        super().__init__()
        self.root = str(root)
        self.which = which
        self.split_args = dict(
            negative_class=negative_class, positive_class=positive_class, ratio=ratio,
            seed=seed, val_per_class=val_per_class, negative_fraction=negative_fraction,
            split_seed=split_seed,
        )
        self.batch_size, self.eval_batch_size, self.augment = batch_size, eval_batch_size, augment
        self.splits: dict[str, IndexedTensors] = {}

    # -- data ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x_tr, y_tr = load_cifar(self.root, True, self.which)
        x_te, y_te = load_cifar(self.root, False, self.which)
        split = binary_split(y_tr, y_te, **self.split_args)
        pos = self.split_args["positive_class"]
        for name, (x, y, idx, offset) in {
            "train": (x_tr, y_tr, split.train, 0),
            "val": (x_tr, y_tr, split.val, 0),
            "test": (x_te, y_te, split.test, len(y_tr)),
        }.items():
            self.splits[name] = IndexedTensors(
                x[idx].contiguous(), (y[idx] == pos).float(), idx + offset
            )
        self.num_sample_ids = len(y_tr) + len(y_te)

    @property
    def class_counts(self) -> list[int]:
        """Training samples per class [negatives, positives] (handed to imbalance-aware losses)."""
        self.setup()
        y = self.splits["train"].y
        n_pos = int(y.sum())
        return [len(y) - n_pos, n_pos]

    def summary(self) -> dict[str, int]:
        self.setup()
        out = {}
        for name, ds in self.splits.items():
            n_pos = int(ds.y.sum())
            out[f"{name}_pos"], out[f"{name}_neg"] = n_pos, len(ds) - n_pos
        return out

    # -- loaders ---------------------------------------------------------------------------
    def train_dataloader(self):
        return batch_loader(self.splits["train"], self.batch_size, shuffle=True)

    def val_dataloader(self):
        return batch_loader(self.splits["val"], self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return batch_loader(self.splits["test"], self.eval_batch_size, shuffle=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training only) and normalise on the device the batch now lives on."""
        x = batch["x"]
        if self.augment and self.trainer is not None and self.trainer.training:
            x = random_crop_flip(x)
        return {**batch, "x": to_float(x)}
