"""Small CIFAR-10 protocol of the first ALM version (ALM-v1 §5.1, appendix B and D; ALM Table 16)."""

from __future__ import annotations

from pathlib import Path

import torch

from hightpr.data.cifar_binary import BinaryCIFARDataModule
from hightpr.data.splits import SplitIndices, small_split


class SmallCIFARDataModule(BinaryCIFARDataModule):
    """300 negatives + positives at 1:`ratio` for training, 100 + positives for validation.

    Every seed (ensemble member) redraws train and val from the whole train split; the test set
    (the test split's negatives + positives at the training ratio, or the balanced test split
    with `test_balanced`) is the same for every member. Labels are 0/1 floats.
    """

    def __init__(
        self,
        root: str | Path,
        which: str = "cifar10",
        negative_class: int = 0,
        positive_class: int = 1,
        ratio: float = 9,
        seed: int = 1,
        train_negatives: int = 300,
        val_negatives: int = 100,
        test_negatives: int | None = None,
        test_balanced: bool = False,
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        augment: bool = True,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__(root, which, negative_class, positive_class, ratio, seed,
                         batch_size=batch_size, eval_batch_size=eval_batch_size, augment=augment,
                         label_noise=label_noise)
        self.split_args = dict(
            negative_class=negative_class, positive_class=positive_class, ratio=ratio, seed=seed,
            train_negatives=train_negatives, val_negatives=val_negatives,
            test_negatives=test_negatives, test_balanced=test_balanced, split_seed=split_seed,
        )

    def make_split(self, train_labels: torch.Tensor, test_labels: torch.Tensor) -> SplitIndices:
        return small_split(train_labels, test_labels, **self.split_args)
