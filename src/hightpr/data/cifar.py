"""The base of every CIFAR protocol: decoded uint8 images in memory, one gather per batch."""

from __future__ import annotations

from pathlib import Path

import torch

from hightpr.data.augment import random_crop_flip, to_float
from hightpr.data.base import TensorDataModule
from hightpr.data.cifar_files import load_cifar
from hightpr.data.splits import SplitIndices, flip_labels
from hightpr.data.tensors import IndexedTensors


class CIFARDataModule(TensorDataModule):
    """Decoded uint8 CIFAR images in memory; a batch is one index operation (docs/design.md, speed).

    A protocol subclass says which source images form train/val/test (`make_split`) and what
    their labels are (`targets`); everything else is shared: loaders, augmentation on the
    batch's device, `label_noise` on the training labels, stable sample ids (the index in the
    source train split for train/val samples, `len(train split) + index` for test samples).
    """

    num_classes: int = 2

    def __init__(
        self,
        root: str | Path,
        which: str = "cifar10",
        seed: int = 1,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        augment: bool = True,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, augment)
        self.root, self.which, self.seed = str(root), which, int(seed)
        self.label_noise = float(label_noise)

    # -- protocol hooks --------------------------------------------------------------------
    def make_split(self, train_labels: torch.Tensor, test_labels: torch.Tensor) -> SplitIndices:
        raise NotImplementedError

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Source labels -> the task's labels (identity: multi-class int64)."""
        return labels

    # -- data ------------------------------------------------------------------------------
    def build(self) -> None:
        x_tr, y_tr = load_cifar(self.root, True, self.which)
        x_te, y_te = load_cifar(self.root, False, self.which)
        split = self.make_split(y_tr, y_te)
        for name, (x, y, idx, offset) in {
            "train": (x_tr, y_tr, split.train, 0),
            "val": (x_tr, y_tr, split.val, 0),
            "test": (x_te, y_te, split.test, len(y_tr)),
        }.items():
            target = self.targets(y[idx])
            if name == "train" and self.label_noise > 0:
                target = flip_labels(target, self.label_noise, self.seed, self.num_classes)
            self.splits[name] = IndexedTensors(x[idx].contiguous(), target, idx + offset)
        self.num_sample_ids = len(y_tr) + len(y_te)

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        return random_crop_flip(x)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return to_float(x)
