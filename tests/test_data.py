"""Binary CIFAR split protocol, device-side augmentation, and the DataModule on tiny data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hightpr.data import BinaryCIFARDataModule, binary_split
from hightpr.data.augment import random_crop_flip
from hightpr.errors import HightprError

# CIFAR-10-shaped labels: 5000 train / 1000 test per class, classes interleaved.
TRAIN = torch.arange(50_000) % 10
TEST = torch.arange(10_000) % 10


def split(**kw):
    args = dict(negative_class=0, positive_class=1, ratio=100, seed=1)
    return binary_split(TRAIN, TEST, **{**args, **kw})


@pytest.mark.parametrize("ratio, n_pos", [(50, 88), (100, 44), (200, 22)])
def test_counts_follow_the_protocol(ratio, n_pos):
    s = split(ratio=ratio)
    y_train = TRAIN[s.train]
    assert int((y_train == 0).sum()) == 4410  # 90% of 5000 - 100 held out
    assert int((y_train == 1).sum()) == n_pos
    assert set(y_train.tolist()) == {0, 1}
    assert torch.bincount(TRAIN[s.val], minlength=2)[:2].tolist() == [100, 100]
    assert torch.bincount(TEST[s.test], minlength=2)[:2].tolist() == [1000, 1000]
    assert set(TEST[s.test].tolist()) == {0, 1}


def test_splits_are_disjoint_and_unique():
    s = split()
    train, val = set(s.train.tolist()), set(s.val.tolist())
    assert len(train) == len(s.train) and len(val) == len(s.val)
    assert not train & val


def test_seed_changes_the_draw_not_the_validation_set():
    a, b, a2 = split(seed=1), split(seed=2), split(seed=1)
    assert torch.equal(a.train, a2.train) and torch.equal(a.val, a2.val)
    assert not torch.equal(a.train, b.train)
    assert torch.equal(a.val, b.val)
    assert not set(b.train.tolist()) & set(a.val.tolist())


def test_other_class_pair():
    s = split(negative_class=6, positive_class=7)
    assert set(TRAIN[s.train].tolist()) == {6, 7} and set(TEST[s.test].tolist()) == {6, 7}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(ratio=0.1), "needs 44100 positives"),
        (dict(ratio=0), "must be > 0"),
        (dict(positive_class=0), "must differ"),
        (dict(val_per_class=5000), "not enough"),
    ],
)
def test_impossible_protocols_are_clear_errors(kw, match):
    with pytest.raises(HightprError, match=match):
        split(**kw)


def test_crop_flip_is_a_padded_window_of_the_input():
    torch.manual_seed(0)
    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, padding=2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [
            w
            for oy in range(5)
            for ox in range(5)
            for w in (padded[i, :, oy:oy + 8, ox:ox + 8], padded[i, :, oy:oy + 8, ox:ox + 8].flip(-1))
        ]
        assert any(torch.equal(out[i], w) for w in windows)


def test_crop_flip_varies_across_samples():
    torch.manual_seed(0)
    x = torch.arange(64 * 3 * 32 * 32, dtype=torch.float32).reshape(64, 3, 32, 32)
    shifts = {tuple(random_crop_flip(x[:1].repeat(2, 1, 1, 1))[0, 0, 10, 10:12].tolist())
              for _ in range(20)}
    assert len(shifts) > 3


@pytest.fixture
def tiny_module(tiny_data_dir):
    dm = BinaryCIFARDataModule(root=tiny_data_dir / "tiny-cifar10", ratio=10, val_per_class=20,
                               batch_size=16, eval_batch_size=64)
    dm.setup()
    return dm


def test_datamodule_ids_labels_and_counts(tiny_module):
    dm = tiny_module
    tr, va, te = (dm.splits[k] for k in ("train", "val", "test"))
    assert dm.class_counts == [117, 12]  # 90% of (150 - 20) negatives; round(117 / 10) positives
    assert (len(va), int(va.y.sum())) == (40, 20) and (len(te), int(te.y.sum())) == (80, 40)
    all_ids = torch.cat([tr.ids, va.ids, te.ids])
    assert len(set(all_ids.tolist())) == len(all_ids)  # train, val, test never share an id
    assert int(te.ids.min()) >= 1500 and int(all_ids.max()) < dm.num_sample_ids
    assert set(tr.y.unique().tolist()) == {0.0, 1.0} and tr.x.dtype == torch.uint8


def test_datamodule_batches_are_gathered_whole(tiny_module):
    batch = next(iter(tiny_module.train_dataloader()))
    assert batch["x"].shape == (16, 3, 32, 32) and batch["x"].dtype == torch.uint8
    assert batch["y"].shape == (16,) and batch["id"].dtype == torch.int64


def test_augmentation_only_while_training(tiny_module):
    class FakeTrainer:
        training = False

    dm = tiny_module
    batch = next(iter(dm.val_dataloader()))
    dm.trainer = FakeTrainer()
    first = dm.on_after_batch_transfer(batch, 0)["x"]
    assert torch.equal(first, dm.on_after_batch_transfer(batch, 0)["x"])  # eval: deterministic
    assert first.dtype == torch.float32 and abs(float(first.mean())) < 1.5
    FakeTrainer.training = True
    assert not torch.equal(first, dm.on_after_batch_transfer(batch, 0)["x"])
