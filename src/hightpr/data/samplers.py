"""Batch samplers: `random` (the papers' protocol) and `dual` (a fixed share of positives).

`DualBatchSampler` follows LibAUC's DualSampler: every batch holds round(rate * batch_size)
positives, positives are cycled through fresh shuffles as often as needed, and one epoch
covers every negative exactly once (the last batch holds the remaining negatives).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from hightpr.errors import HightprError


class DualBatchSampler(Sampler[list[int]]):
    """Yields index batches with a fixed number of positives; seeded and deterministic per epoch."""

    def __init__(self, positive: torch.Tensor, batch_size: int, positive_rate: float, seed: int = 0) -> None:
        """`positive`: which training samples are positives (a bool mask, or 0/1 labels)."""
        positive = torch.as_tensor(positive).flatten() > 0.5
        if not 0.0 < positive_rate < 1.0:
            raise HightprError(f"sampler.positive_rate must be in (0, 1), got {positive_rate}")
        self.positives = torch.nonzero(positive).flatten()
        self.negatives = torch.nonzero(~positive).flatten()
        if len(self.positives) == 0 or len(self.negatives) == 0:
            raise HightprError("sampler=dual needs positives and negatives in the training split")
        self.num_pos = max(1, round(positive_rate * batch_size))
        self.num_neg = batch_size - self.num_pos
        if self.num_neg < 1:
            raise HightprError(f"sampler.positive_rate={positive_rate} leaves no negatives in a batch "
                               f"of {batch_size}")
        self.seed, self.epoch = int(seed), 0
        # Lightning calls `set_epoch` on `batch_sampler.sampler` at every epoch start, resumed runs
        # included: exposing ourselves there gives a resumed run the batches of an uninterrupted one.
        self.sampler = self

    def __len__(self) -> int:
        return math.ceil(len(self.negatives) / self.num_neg)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order to draw next (Lightning calls it each epoch: a resumed run draws
        the same batches as an uninterrupted one)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        n_batches = len(self)
        negatives = self.negatives[torch.randperm(len(self.negatives), generator=g)]
        cycles = math.ceil(n_batches * self.num_pos / len(self.positives))
        positives = torch.cat([self.positives[torch.randperm(len(self.positives), generator=g)]
                               for _ in range(cycles)])
        for b in range(n_batches):
            pos = positives[b * self.num_pos:(b + 1) * self.num_pos]
            neg = negatives[b * self.num_neg:(b + 1) * self.num_neg]
            yield torch.cat([pos, neg]).tolist()
