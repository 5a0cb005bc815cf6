"""The dual sampler: positives per batch, negatives once per epoch, determinism per seed."""

from __future__ import annotations

import pytest
import torch

from hightpr.data.samplers import DualBatchSampler
from hightpr.errors import HightprError

_ORDER = torch.randperm(4454, generator=torch.Generator().manual_seed(0))
LABELS = torch.cat([torch.zeros(4410), torch.ones(44)])[_ORDER]


@pytest.mark.parametrize("rate, batch, n_pos", [(0.1, 64, 6), (0.5, 32, 16), (0.02, 64, 1)])
def test_batches_hold_the_requested_positives(rate, batch, n_pos):
    batches = list(DualBatchSampler(LABELS, batch, rate, seed=1))
    assert all(int(LABELS[b].sum()) == n_pos for b in batches)
    assert all(len(b) == batch for b in batches[:-1])


def test_every_negative_once_per_epoch_and_positives_cycle():
    sampler = DualBatchSampler(LABELS, 64, 0.1, seed=1)
    for _ in range(2):
        flat = torch.tensor([i for b in sampler for i in b])
        negatives = flat[LABELS[flat] == 0]
        assert sorted(negatives.tolist()) == torch.nonzero(LABELS == 0).flatten().tolist()
        counts = torch.bincount(flat[LABELS[flat] == 1], minlength=len(LABELS))[LABELS == 1]
        assert int(counts.max()) - int(counts.min()) <= 1  # each positive equally often (+-1)
    assert len(sampler) == -(-4410 // 58)


def test_same_seed_same_batches_other_seed_other_batches():
    a, b, c = (list(DualBatchSampler(LABELS, 64, 0.1, seed=s)) for s in (1, 1, 2))
    assert a == b and a != c
    sampler = DualBatchSampler(LABELS, 64, 0.1, seed=1)
    assert list(sampler) != list(sampler)  # a new shuffle every epoch


@pytest.mark.parametrize(
    "labels, rate, match",
    [
        (LABELS, 1.5, "must be in"),
        (torch.zeros(10), 0.1, "positives and negatives"),
        (LABELS, 0.999, "no negatives"),
    ],
)
def test_bad_settings_are_clear_errors(labels, rate, match):
    with pytest.raises(HightprError, match=match):
        DualBatchSampler(labels, 64, rate)
