"""Every split of the papers' protocols in one place: pure index arithmetic, seeded, testable."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from hightpr.errors import HightprError


@dataclass(frozen=True)
class SplitIndices:
    """Indices into the source train split (train, val) and test split (test)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def class_tuple(value: int | Iterable[int], key: str) -> tuple[int, ...]:
    """One class index or a list of them (a group of fine classes) as a non-empty tuple."""
    try:
        classes = (int(value),) if not isinstance(value, Iterable) else tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise HightprError(f"{key} must be a class index or a list of them, got {value!r}") from err
    if not classes or len(set(classes)) != len(classes):
        raise HightprError(f"{key} must name at least one class, each once; got {value!r}")
    return classes


def positives_for_ratio(n_negatives: int, ratio: float) -> int:
    """Positives needed for a 1:`ratio` imbalance (at least one)."""
    if ratio <= 0:
        raise HightprError(f"dataset.ratio must be > 0 (1:ratio imbalance), got {ratio}")
    return max(1, round(n_negatives / ratio))


def binary_split(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    negative_class: int | Iterable[int],
    positive_class: int | Iterable[int],
    ratio: float,
    seed: int,
    val_per_class: int = 100,
    negative_fraction: float = 0.9,
    split_seed: int = 0,
) -> SplitIndices:
    """Binary imbalanced protocol (ALM / RankReg CIFAR): docs/design.md 'Binary CIFAR-10'.

    Either side may be a group of classes (binary CIFAR-100: five aquatic-mammal fine classes
    vs shark). A fixed (split_seed) `val_per_class` images per class are held out of the train
    split for validation; of the rest, `seed` draws `negative_fraction` of the pooled negatives
    and enough positives for 1:`ratio`. The test split keeps every image of those classes.
    """
    negatives = class_tuple(negative_class, "dataset.negative_class")
    positives = class_tuple(positive_class, "dataset.positive_class")
    if set(negatives) & set(positives):
        raise HightprError("dataset.negative_class and dataset.positive_class must differ "
                           f"(class {sorted(set(negatives) & set(positives))[0]} is in both)")
    train, val = [], []
    pools: dict[int, torch.Tensor] = {}
    for offset, cls in enumerate(negatives + positives):
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
    neg_pool = torch.cat([pools[c] for c in negatives])
    pos_pool = torch.cat([pools[c] for c in positives])
    n_neg = round(negative_fraction * len(neg_pool))
    n_pos = positives_for_ratio(n_neg, ratio)
    if n_pos > len(pos_pool):
        raise HightprError(
            f"ratio 1:{ratio} needs {n_pos} positives but only {len(pos_pool)} are available"
        )
    train.append(neg_pool[torch.randperm(len(neg_pool), generator=draw)[:n_neg]])
    train.append(pos_pool[torch.randperm(len(pos_pool), generator=draw)[:n_pos]])
    test_mask = torch.isin(test_labels, torch.tensor(negatives + positives))
    return SplitIndices(
        train=torch.cat(train).sort().values,
        val=torch.cat(val).sort().values,
        test=torch.nonzero(test_mask).flatten(),
    )


# -- stratified (and patient-grouped) splits: Melanoma, MRI-style volumes, small 3D sets ------------


def stratified_group_split(
    labels: torch.Tensor,
    fractions: tuple[float, ...],
    seed: int,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Partition `range(len(labels))` into len(fractions) parts, stratified and group-disjoint.

    Stratification and grouping combined: each group (a patient; every sample its own group when
    `groups` is None) gets a stratum, positive if it holds any positive sample. Within a stratum
    the groups are shuffled (seeded) and laid end to end by sample count; a group goes to the
    part whose cumulative target boundary (fractions x the stratum's sample count) its midpoint
    falls before. So each part holds about its fraction of the positive and of the negative
    samples (exactly, up to rounding, without groups), and no group is ever split.
    """
    labels = torch.as_tensor(labels).reshape(-1)
    n = len(labels)
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise HightprError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    if groups is None:
        group_of = torch.arange(n)
    else:
        _, group_of = torch.unique(torch.as_tensor(groups).reshape(-1), return_inverse=True)
        if len(group_of) != n:
            raise HightprError("groups and labels must have the same length")
    n_groups = int(group_of.max()) + 1 if n else 0
    sizes = torch.bincount(group_of, minlength=n_groups)
    positive = torch.zeros(n_groups, dtype=torch.long).scatter_reduce_(
        0, group_of, (labels > 0).long(), reduce="amax").bool()
    part_of_group = torch.empty(n_groups, dtype=torch.long)
    cum_fractions = torch.tensor(fractions, dtype=torch.float64).cumsum(0)
    for stratum in (False, True):
        members = torch.nonzero(positive == stratum).flatten()
        members = members[_perm(len(members), seed * 2 + int(stratum))]
        counts = sizes[members].double()
        midpoints = counts.cumsum(0) - counts / 2
        bounds = cum_fractions * counts.sum()
        part = torch.searchsorted(bounds, midpoints, right=True).clamp_max(len(fractions) - 1)
        part_of_group[members] = part
    sample_part = part_of_group[group_of]
    return tuple(torch.nonzero(sample_part == k).flatten() for k in range(len(fractions)))


def subsample_positives(
    labels: torch.Tensor, idx: torch.Tensor, ratio: float | None, seed: int
) -> torch.Tensor:
    """Keep every negative of `idx` and a seeded draw of round(n_neg / ratio) of its positives.

    Used to reach a paper's imbalance on a source with more positives (Melanoma 1:170 on the
    offline 1:10.3 set). `ratio=None` keeps `idx` as it is; never adds positives.
    """
    if ratio is None:
        return idx
    y = torch.as_tensor(labels)[idx]
    neg, pos = idx[y == 0], idx[y > 0]
    n_pos = positives_for_ratio(len(neg), ratio)
    if n_pos > len(pos):
        raise HightprError(
            f"positive_ratio 1:{ratio} needs {n_pos} positives but the split has only {len(pos)} "
            f"(for {len(neg)} negatives); use a larger ratio"
        )
    pos = pos[_perm(len(pos), seed)[:n_pos]]
    return torch.cat([neg, pos]).sort().values


def melanoma_split(
    labels: torch.Tensor,
    groups: torch.Tensor | None,
    split_seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    positive_ratio: float | None = None,
) -> SplitIndices:
    """Melanoma (RankReg §4.1): stratified 70/10/20 train/val/test, grouped by patient if known.

    One fixed split (`split_seed`): the paper trains no ensemble on Melanoma. `positive_ratio`
    then subsamples the positives of every split to 1:ratio, so all three keep the same imbalance.
    """
    parts = stratified_group_split(labels, fractions, split_seed, groups)
    parts = [subsample_positives(labels, p, positive_ratio, split_seed * 1000 + 17 + k)
             for k, p in enumerate(parts)]
    return SplitIndices(train=parts[0], val=parts[1], test=parts[2])


def member_split(
    labels: torch.Tensor,
    seed: int,
    val_fraction: float = 0.2,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble member's own stratified (1 - val_fraction) / val_fraction train/val split (ALM-v1 §5.2).

    Member `seed` reshuffles the whole pool, so every member trains on a different 80% (docs/design.md
    'Ensembles': MRI-style volumes and small sets). Indices are into `labels`.
    """
    if not 0.0 < val_fraction < 1.0:
        raise HightprError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = stratified_group_split(labels, (1.0 - val_fraction, val_fraction), seed, groups)
    return train, val


def _take(pool: torch.Tensor, n: int, what: str, key: str) -> torch.Tensor:
    if n > len(pool):
        raise HightprError(f"{what}: needs {n} images but only {len(pool)} are available ({key})")
    return pool[:n]


def small_split(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    negative_class: int,
    positive_class: int,
    ratio: float,
    seed: int,
    train_negatives: int = 300,
    val_negatives: int = 100,
    test_negatives: int | None = None,
    test_balanced: bool = False,
    split_seed: int = 0,
) -> SplitIndices:
    """Small CIFAR-10 protocol of ALM-v1 (§5.1, appendix B; ALM Table 16).

    Each seed (ensemble member) redraws, from the whole train split, `train_negatives` +
    `val_negatives` images of the negative class and, disjoint from them, the positives that
    give both sets the 1:`ratio` imbalance. The test set is fixed (split_seed): the test
    split's negatives (all of them, or `test_negatives`) plus positives at the same ratio, or
    every test image of the two classes when `test_balanced` (ALM-v1 appendix D).
    """
    if negative_class == positive_class:
        raise HightprError("dataset.negative_class and dataset.positive_class must differ")
    if min(train_negatives, val_negatives) < 1:
        raise HightprError("dataset.train_negatives and dataset.val_negatives must be >= 1")
    n_pos_train = positives_for_ratio(train_negatives, ratio)
    n_pos_val = positives_for_ratio(val_negatives, ratio)
    draw = torch.Generator().manual_seed(int(seed))
    neg = torch.nonzero(train_labels == negative_class).flatten()
    pos = torch.nonzero(train_labels == positive_class).flatten()
    neg = _take(neg[torch.randperm(len(neg), generator=draw)], train_negatives + val_negatives,
                f"class {negative_class} (train + val negatives)", "dataset.train_negatives")
    pos = _take(pos[torch.randperm(len(pos), generator=draw)], n_pos_train + n_pos_val,
                f"class {positive_class} at ratio 1:{ratio} (train + val positives)", "dataset.ratio")
    train = torch.cat([neg[:train_negatives], pos[:n_pos_train]])
    val = torch.cat([neg[train_negatives:], pos[n_pos_train:]])

    t_neg = torch.nonzero(test_labels == negative_class).flatten()
    t_pos = torch.nonzero(test_labels == positive_class).flatten()
    if not test_balanced:
        n_neg = len(t_neg) if test_negatives is None else int(test_negatives)
        fixed = torch.Generator().manual_seed(int(split_seed))
        t_neg = _take(t_neg[torch.randperm(len(t_neg), generator=fixed)], n_neg,
                      f"test negatives of class {negative_class}", "dataset.test_negatives")
        t_pos = _take(t_pos[torch.randperm(len(t_pos), generator=fixed)],
                      positives_for_ratio(n_neg, ratio),
                      f"test positives of class {positive_class} at ratio 1:{ratio}", "dataset.ratio")
    return SplitIndices(
        train=train.sort().values, val=val.sort().values, test=torch.cat([t_neg, t_pos]).sort().values
    )


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Exponential long-tailed profile of Cao et al. (LDAM): n_i = int(n_max * imbalance^(-i/(C-1))).

    Computed as LDAM's code does (int of n_max * (1/imbalance)^(i/(C-1))), so the counts match
    the published long-tailed CIFAR sets exactly; class 0 is the largest, class C-1 the smallest.
    """
    if num_classes < 2:
        raise HightprError(f"a long-tailed set needs at least 2 classes, got {num_classes}")
    if imbalance < 1:
        raise HightprError(f"dataset.imbalance is n_max / n_min and must be >= 1, got {imbalance}")
    factor = 1.0 / imbalance
    counts = [int(n_max * factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if counts[-1] < 1:
        raise HightprError(f"imbalance {imbalance} leaves the smallest class empty with n_max={n_max}; "
                           "lower dataset.imbalance or raise dataset.n_max")
    return counts


def long_tail_split(
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    imbalance: float,
    seed: int,
    val_per_class: int = 100,
    n_max: int | None = None,
    split_seed: int = 0,
) -> SplitIndices:
    """Long-tailed CIFAR-10/100 (ALM §5.1, LDAM): a multi-class split with balanced val and test.

    A fixed (split_seed) `val_per_class` images of every class are held out of the train split
    (the balanced validation set); from the rest, `seed` draws n_i images of class i following
    `long_tail_counts(n_max, C, imbalance)`, with n_max = the images left per class by default.
    The test set is the whole (balanced) test split.
    """
    pools, val = [], []
    for cls in range(num_classes):
        idx = torch.nonzero(train_labels == cls).flatten()
        if len(idx) <= val_per_class:
            raise HightprError(f"class {cls} has {len(idx)} training images, not enough to hold out "
                               f"{val_per_class} for validation (dataset.val_per_class)")
        idx = idx[_perm(len(idx), split_seed * 1000 + cls)]
        val.append(idx[:val_per_class])
        pools.append(idx[val_per_class:])
    available = min(len(p) for p in pools)
    n_max = available if n_max is None else int(n_max)
    if n_max > available:
        raise HightprError(f"dataset.n_max={n_max} but only {available} training images per class "
                           f"remain after holding out {val_per_class} for validation")
    counts = long_tail_counts(n_max, num_classes, imbalance)
    draw = torch.Generator().manual_seed(int(seed))
    train = [p[torch.randperm(len(p), generator=draw)[:n]] for p, n in zip(pools, counts, strict=True)]
    test = torch.nonzero(test_labels < num_classes).flatten()
    return SplitIndices(train=torch.cat(train).sort().values, val=torch.cat(val).sort().values, test=test)


NOISE_STREAM = 7_919  # label noise draws from its own stream, not the training-data draw's


def flip_labels(y: torch.Tensor, eta: float, seed: int, num_classes: int = 2) -> torch.Tensor:
    """Label noise (RankReg §4.5, Fig. 4): flip a seeded fraction `eta` of the labels.

    round(eta * N) samples, chosen uniformly, get another label: 1 - y for binary labels, a
    uniformly drawn other class for multi-class ones. The flipped sets are nested in `eta`
    for one seed ("incrementally flip"), so a noise sweep adds noise to the same draw.
    """
    if not 0.0 <= eta <= 1.0:
        raise HightprError(f"dataset.label_noise is a fraction in [0, 1], got {eta}")
    n = round(eta * len(y))
    out = y.clone()
    if n == 0:
        return out
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + NOISE_STREAM)
    order = torch.randperm(len(y), generator=gen)
    shift = torch.randint(1, num_classes, (len(y),), generator=gen)
    idx = order[:n]
    out[idx] = ((y[idx].long() + shift[idx]) % num_classes).to(y.dtype)
    return out
