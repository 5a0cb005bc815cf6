"""Binary imbalanced CIFAR-10/100 (ALM §5.1, RankReg §4.1): negatives vs positives at 1:ratio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from hightpr.data.cifar import CIFARDataModule
from hightpr.data.splits import SplitIndices, binary_split, class_tuple


class BinaryCIFARDataModule(CIFARDataModule):
    """Negative class(es) vs positive class(es) at a 1:`ratio` imbalance; labels are 0/1 floats.

    Binary CIFAR-10 (one class each side) and binary CIFAR-100 (a group of fine classes as
    negatives): see `binary_split`. `label_noise` flips that fraction of the training labels.
    """

    def __init__(
        self,
        root: str | Path,
        which: str = "cifar10",
        negative_class: int | Sequence[int] = 0,
        positive_class: int | Sequence[int] = 1,
        ratio: float = 100,
        seed: int = 1,
        val_per_class: int = 100,
        negative_fraction: float = 0.9,
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        augment: bool = True,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__(root, which, seed, batch_size, eval_batch_size, augment, label_noise)
        self.positives = class_tuple(positive_class, "dataset.positive_class")
        self.split_args = dict(
            negative_class=negative_class, positive_class=positive_class, ratio=ratio,
            seed=seed, val_per_class=val_per_class, negative_fraction=negative_fraction,
            split_seed=split_seed,
        )

    def make_split(self, train_labels: torch.Tensor, test_labels: torch.Tensor) -> SplitIndices:
        return binary_split(train_labels, test_labels, **self.split_args)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.isin(labels, torch.tensor(self.positives)).float()
