"""Every split of the papers' protocols in one place: pure index arithmetic, seeded, testable."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hightpr.errors import HightprError


@dataclass(frozen=True)
class BinarySplit:
    """Indices into the source train split (train, val) and test split (test)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def positives_for_ratio(n_negatives: int, ratio: float) -> int:
    """Positives needed for a 1:`ratio` imbalance (at least one)."""
    if ratio <= 0:
        raise HightprError(f"dataset.ratio must be > 0 (1:ratio imbalance), got {ratio}")
    return max(1, round(n_negatives / ratio))


def binary_split(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    negative_class: int,
    positive_class: int,
    ratio: float,
    seed: int,
    val_per_class: int = 100,
    negative_fraction: float = 0.9,
    split_seed: int = 0,
) -> BinarySplit:
    """Binary imbalanced protocol (ALM / RankReg CIFAR): DESIGN.md 'Binary CIFAR-10'.

    A fixed (split_seed) `val_per_class` images per class are held out of the train split for
    validation; of the rest, `seed` draws `negative_fraction` of the negatives and enough
    positives for 1:`ratio`. The test split keeps every image of the two classes.
    """
    if negative_class == positive_class:
        raise HightprError("dataset.negative_class and dataset.positive_class must differ")
    train, val = [], []
    pools = {}
    for offset, cls in enumerate((negative_class, positive_class)):
        idx = torch.nonzero(train_labels == cls).flatten()
        if len(idx) <= val_per_class:
            raise HightprError(
                f"class {cls} has {len(idx)} training images, not enough to hold out "
                f"{val_per_class} for validation (dataset.val_per_class)"
            )
        idx = idx[_perm(len(idx), split_seed * 1000 + offset)]
        val.append(idx[:val_per_class])
        pools[cls] = idx[val_per_class:]
    draw = torch.Generator().manual_seed(int(seed))
    neg_pool, pos_pool = pools[negative_class], pools[positive_class]
    n_neg = round(negative_fraction * len(neg_pool))
    n_pos = positives_for_ratio(n_neg, ratio)
    if n_pos > len(pos_pool):
        raise HightprError(
            f"ratio 1:{ratio} needs {n_pos} positives but only {len(pos_pool)} are available"
        )
    train.append(neg_pool[torch.randperm(len(neg_pool), generator=draw)[:n_neg]])
    train.append(pos_pool[torch.randperm(len(pos_pool), generator=draw)[:n_pos]])
    test_mask = (test_labels == negative_class) | (test_labels == positive_class)
    return BinarySplit(
        train=torch.cat(train).sort().values,
        val=torch.cat(val).sort().values,
        test=torch.nonzero(test_mask).flatten(),
    )
