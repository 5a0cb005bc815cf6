"""Long-tailed CIFAR-10/100 (ALM §5.1 and Tables 4, 7-9; RankReg Table 7): the multi-class protocol."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from hightpr.data.cifar import CIFARDataModule
from hightpr.data.splits import SplitIndices, class_tuple, long_tail_split
from hightpr.errors import HightprError

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


class LongTailCIFARDataModule(CIFARDataModule):
    """Exponential long-tailed training set (Cao et al.), balanced val and test; int64 labels.

    `critical_classes` are the rare classes that must be found (ALM: the smallest, class C-1;
    Table 9: the two smallest, [C-1, C-2]). Their presence tells the training CLI that the task
    is multi-class: it then scores samples by the first critical class's logit and evaluates
    with the multi-class report.
    """

    def __init__(
        self,
        root: str | Path,
        which: str = "cifar10",
        imbalance: float = 100,
        critical_classes: Sequence[int] | int | None = None,
        seed: int = 1,
        val_per_class: int = 100,
        n_max: int | None = None,
        split_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        augment: bool = True,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__(root, which, seed, batch_size, eval_batch_size, augment, label_noise)
        if which not in NUM_CLASSES:
            raise HightprError(f"dataset.which must be one of {sorted(NUM_CLASSES)}, got {which!r}")
        self.num_classes = NUM_CLASSES[which]
        critical = (self.num_classes - 1,) if critical_classes is None else \
            class_tuple(critical_classes, "dataset.critical_classes")
        bad = [c for c in critical if not 0 <= c < self.num_classes]
        if bad or len(critical) >= self.num_classes:
            raise HightprError(f"dataset.critical_classes must be distinct classes in "
                               f"[0, {self.num_classes - 1}], not all of them; got {list(critical)}")
        self.critical_classes = list(critical)  # also the positives of `positive_mask` (sampler=dual)
        self.split_args = dict(num_classes=self.num_classes, imbalance=imbalance, seed=seed,
                               val_per_class=val_per_class, n_max=n_max, split_seed=split_seed)

    def make_split(self, train_labels: torch.Tensor, test_labels: torch.Tensor) -> SplitIndices:
        return long_tail_split(train_labels, test_labels, **self.split_args)

    @property
    def class_counts(self) -> list[int]:
        """Training samples per class (handed to imbalance-aware losses: CB-CE, LDAM)."""
        self.setup()
        return torch.bincount(self.splits["train"].y, minlength=self.num_classes).tolist()

    def summary(self) -> dict[str, int]:
        """Sizes per split, the largest/smallest training class, and the critical samples."""
        self.setup()
        counts = self.class_counts
        out = {"train_max_class": max(counts), "train_min_class": min(counts)}
        crit = torch.tensor(self.critical_classes)
        for name, ds in self.splits.items():
            out[f"{name}_n"] = len(ds)
            out[f"{name}_critical"] = int(torch.isin(ds.y, crit).sum())
        return out
