"""Sampling baseline and the LibAUC peer: dual batches, LibAUC losses, the requirements they state."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from hightpr.data import BinaryCIFARDataModule
from hightpr.data.samplers import DualBatchSampler

pytest.importorskip("libauc")

from hightpr.losses.libauc import LibAUCAUCM, LibAUCPartialAUCDRO  # noqa: E402


def sig(v):
    return 1 / (1 + math.exp(-v))


def test_pauc_dro_on_the_flipped_problem_matches_the_hand_formula():
    # scores: positives 2.0, -1.0 (ids 10, 11); negatives 0.5, -2.0, 1.0 (ids 20, 21, 22)
    s = torch.tensor([2.0, -1.0, 0.5, -2.0, 1.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    ids = torch.tensor([10, 11, 20, 21, 22])
    gamma, margin, lam = 0.9, 1.0, 1.0
    loss = LibAUCPartialAUCDRO(num_sample_ids=30, gamma=gamma, margin=margin, Lambda=lam)
    got = loss(s[:, None], y, ids)
    # Flipped: each original negative i weighs the original positives j by exp(L_ij / lam)
    # normalised by its first moving average u_i = gamma * mean_j exp(L_ij / lam) (u starts at 0),
    # with L_ij = max(margin - ((1 - p_i) - (1 - p_j)), 0)^2 = max(margin - (p_j - p_i), 0)^2.
    pos, neg = [2.0, -1.0], [0.5, -2.0, 1.0]
    total = 0.0
    for sn in neg:
        losses = [max(margin - (sig(sp) - sig(sn)), 0.0) ** 2 for sp in pos]
        u = gamma * np.mean([math.exp(v / lam) for v in losses])
        total += sum(math.exp(v / lam) / u * v for v in losses)
    assert got.item() == pytest.approx(total / 6, rel=1e-5)
    got.backward()
    assert s.grad[0] < 0 and s.grad[1] < 0  # positives pushed up
    assert s.grad[2] > 0 and s.grad[4] > 0  # negatives pushed down


def test_pauc_dro_weights_the_lowest_positive_most():
    s = torch.tensor([3.0, -1.0, 0.0, 0.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    LibAUCPartialAUCDRO(num_sample_ids=4)(s[:, None], y, torch.arange(4)).backward()
    assert s.grad[1] < s.grad[0] < 0  # the hard (low) positive gets the larger push


def test_aucm_value_and_pesg_variables():
    s = torch.tensor([2.0, -1.0, 0.5, -2.0])
    y = torch.tensor([1.0, 0.0, 0.0, 0.0])
    loss = LibAUCAUCM(margin=1.0)
    p = torch.sigmoid(s)
    prior = 0.25  # positives in the batch (LibAUC v1 estimates p per batch)
    a = b = alpha = 0.0  # LibAUC's initial values
    want = ((1 - prior) * ((p - a) ** 2 * y).mean() + prior * ((p - b) ** 2 * (1 - y)).mean()
            + 2 * alpha * (prior * (1 - prior) * 1.0 + (prior * p * (1 - y) - (1 - prior) * p * y).mean())
            - prior * (1 - prior) * alpha**2)
    assert loss(s[:, None], y).item() == pytest.approx(want.item(), rel=1e-6)
    assert set(loss.optimizer_kwargs()) == {"loss_fn"}


@pytest.mark.parametrize("cls", [LibAUCAUCM, partial(LibAUCPartialAUCDRO, num_sample_ids=8)])
def test_one_class_batch_is_a_clear_error(cls):
    from hightpr.errors import HightprError

    with pytest.raises(HightprError, match="sampler=dual"):
        cls()(torch.zeros(4, 1), torch.zeros(4), torch.arange(4))


def test_datamodule_dual_batches(tiny_data_dir):
    dm = BinaryCIFARDataModule(root=tiny_data_dir / "tiny-cifar10", ratio=10, val_per_class=20, batch_size=20)
    dm.batch_sampler = partial(DualBatchSampler, positive_rate=0.25, seed=3)
    batches = list(dm.train_dataloader())
    assert all(int(b["y"].sum()) == 5 for b in batches)
    negatives = torch.cat([b["id"][b["y"] == 0] for b in batches])
    assert sorted(negatives.tolist()) == sorted(dm.splits["train"].ids[dm.splits["train"].y == 0].tolist())


@pytest.mark.parametrize(
    "overrides",
    [
        ("loss=libauc_pauc_dro_hightpr", "sampler=dual"),
        ("loss=libauc_aucm", "optimizer=pesg", "sampler=dual", "sampler.positive_rate=0.2"),
        ("loss=bce", "sampler=dual", "reg=rankreg"),
    ],
)
def test_trains_end_to_end(train, overrides):
    r = train(*overrides)
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.isfinite(r.metrics["test"]["auc"]) and 0 <= r.metrics["test"]["pauc@90tpr"] <= 1


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (("loss=libauc_aucm", "optimizer=pesg"), "add sampler=dual"),
        (("loss=libauc_pauc_dro_hightpr",), "add sampler=dual"),
        (("loss=libauc_aucm", "sampler=dual"), "add optimizer=pesg"),
    ],
)
def test_missing_requirements_are_named(train, overrides, expect):
    r = train(*overrides)
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr
