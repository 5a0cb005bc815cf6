"""CIFAR protocols of the papers: binary CIFAR-100, small CIFAR-10, long-tailed CIFAR-10/100,
label noise, the CIFAR-100 file format, the LDAM schedule, the plain CNN, and end-to-end runs."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from hightpr.data import BinaryCIFARDataModule, LongTailCIFARDataModule, SmallCIFARDataModule
from hightpr.data.cifar_files import CIFAR100_DIR, load_cifar
from hightpr.data.prepare import main as prepare_main
from hightpr.data.prepare import make_tiny_cifar10, make_tiny_cifar100, prepare_cifar100
from hightpr.data.splits import (
    binary_split,
    flip_labels,
    long_tail_counts,
    long_tail_split,
    small_split,
)
from hightpr.errors import DataMissingError, HightprError
from hightpr.models import convnet
from hightpr.runs import load_logits
from hightpr.schedulers import warmup_multistep
from tests.conftest import real_cifar10_dir, run_train

# Source-split-shaped labels, classes interleaved: CIFAR-10 5000/1000 and CIFAR-100 500/100 per class.
C10_TRAIN, C10_TEST = torch.arange(50_000) % 10, torch.arange(10_000) % 10
C100_TRAIN, C100_TEST = torch.arange(50_000) % 100, torch.arange(10_000) % 100
AQUATIC, SHARK = [72, 4, 95, 30, 55], 73


def disjoint(*parts: torch.Tensor) -> bool:
    ids = torch.cat(parts)
    return len(set(ids.tolist())) == len(ids)


# -- binary CIFAR-100 ------------------------------------------------------------------------------
def c100_split(**kw):
    args = dict(negative_class=AQUATIC, positive_class=SHARK, ratio=100, seed=1, val_per_class=50)
    return binary_split(C100_TRAIN, C100_TEST, **{**args, **kw})


@pytest.mark.parametrize("ratio, n_pos", [(100, 20), (200, 10)])
def test_cifar100_binary_counts(ratio, n_pos):
    s = c100_split(ratio=ratio)
    y = C100_TRAIN[s.train]
    assert int(torch.isin(y, torch.tensor(AQUATIC)).sum()) == 2025  # 90% of 5 x (500 - 50)
    assert int((y == SHARK).sum()) == n_pos and set(y.tolist()) <= set(AQUATIC) | {SHARK}
    val_counts = torch.bincount(C100_TRAIN[s.val], minlength=100)
    assert all(int(val_counts[c]) == 50 for c in AQUATIC + [SHARK]) and int(val_counts.sum()) == 300
    test_counts = torch.bincount(C100_TEST[s.test], minlength=100)
    assert all(int(test_counts[c]) == 100 for c in AQUATIC + [SHARK]) and len(s.test) == 600


def test_cifar100_binary_validation_never_leaks_into_any_member():
    val = c100_split().val
    members = [c100_split(seed=m) for m in range(1, 11)]
    assert all(torch.equal(m.val, val) and disjoint(m.train, val) for m in members)
    assert torch.equal(c100_split(seed=3).train, members[2].train)  # deterministic per seed
    assert not torch.equal(members[0].train, members[1].train)


def test_class_groups_must_not_overlap():
    with pytest.raises(HightprError, match="must differ"):
        c100_split(positive_class=[73, 72])


# -- small CIFAR-10 (ALM-v1) -----------------------------------------------------------------------
def small(**kw):
    return small_split(C10_TRAIN, C10_TEST, **{**dict(negative_class=0, positive_class=1, ratio=9,
                                                      seed=1), **kw})


@pytest.mark.parametrize("ratio, train_pos, val_pos, test_pos", [(2, 150, 50, 500), (9, 33, 11, 111),
                                                                 (19, 16, 5, 53)])
def test_small_protocol_counts(ratio, train_pos, val_pos, test_pos):
    s = small(ratio=ratio)
    for idx, labels, neg, pos in ((s.train, C10_TRAIN, 300, train_pos), (s.val, C10_TRAIN, 100, val_pos),
                                  (s.test, C10_TEST, 1000, test_pos)):
        assert torch.bincount(labels[idx], minlength=10)[:2].tolist() == [neg, pos]
        assert set(labels[idx].tolist()) == {0, 1}
    assert disjoint(s.train, s.val)


def test_small_protocol_members_redraw_train_and_val_but_share_the_test_set():
    a, b = small(seed=1), small(seed=2)
    assert not torch.equal(a.train, b.train) and not torch.equal(a.val, b.val)
    assert torch.equal(a.test, b.test) and torch.equal(small(seed=1).train, a.train)


def test_small_protocol_balanced_test_and_errors():
    s = small(test_balanced=True)
    assert torch.bincount(C10_TEST[s.test], minlength=10)[:2].tolist() == [1000, 1000]
    with pytest.raises(HightprError, match="dataset.train_negatives"):
        small(train_negatives=5000)
    with pytest.raises(HightprError, match="dataset.ratio"):
        small(ratio=0.01)


# -- long-tailed CIFAR -----------------------------------------------------------------------------
def profile(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """The exponential profile computed independently (numpy, other algebraic form)."""
    exact = n_max * np.exp(-np.arange(num_classes) / (num_classes - 1) * np.log(imbalance))
    return np.floor(exact + 1e-9).astype(int).tolist()


def test_long_tail_profile_matches_ldam():
    # Cao et al.'s long-tailed CIFAR-10 at imbalance 100 (12406 images), and the independent formula
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    for n_max, c, imb in ((5000, 10, 200), (4900, 10, 100), (4900, 10, 200), (500, 100, 20),
                          (450, 100, 20), (450, 100, 50), (500, 100, 100)):
        assert long_tail_counts(n_max, c, imb) == profile(n_max, c, imb)


@pytest.mark.parametrize("train, test, num_classes, imbalance, val_per_class, smallest", [
    (C10_TRAIN, C10_TEST, 10, 100, 100, 49), (C10_TRAIN, C10_TEST, 10, 200, 100, 24),
    (C100_TRAIN, C100_TEST, 100, 20, 50, 22), (C100_TRAIN, C100_TEST, 100, 50, 50, 9),
])
def test_long_tail_split_counts(train, test, num_classes, imbalance, val_per_class, smallest):
    s = long_tail_split(train, test, num_classes, imbalance, seed=1, val_per_class=val_per_class)
    n_max = len(train) // num_classes - val_per_class
    counts = torch.bincount(train[s.train], minlength=num_classes).tolist()
    assert counts == profile(n_max, num_classes, imbalance) and counts[-1] == smallest
    assert torch.bincount(train[s.val], minlength=num_classes).tolist() == [val_per_class] * num_classes
    assert len(s.test) == len(test)  # the whole, balanced test split
    assert disjoint(s.train, s.val)


def test_long_tail_split_is_seeded_and_keeps_validation_fixed():
    a, b = (long_tail_split(C10_TRAIN, C10_TEST, 10, 100, seed=k) for k in (1, 2))
    assert torch.equal(a.train, long_tail_split(C10_TRAIN, C10_TEST, 10, 100, seed=1).train)
    assert not torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert disjoint(b.train, a.val)
    full = long_tail_split(C10_TRAIN, C10_TEST, 10, 100, seed=1, val_per_class=0, n_max=5000)
    assert len(full.train) == 12406


@pytest.mark.parametrize("kw, match", [
    (dict(imbalance=0.5), "must be >= 1"), (dict(imbalance=1e5), "smallest class empty"),
    (dict(n_max=4950), "dataset.n_max"), (dict(val_per_class=5000), "dataset.val_per_class"),
])
def test_long_tail_bad_input_is_clear(kw, match):
    with pytest.raises(HightprError, match=match):
        long_tail_split(C10_TRAIN, C10_TEST, **{**dict(num_classes=10, imbalance=100, seed=1), **kw})


# -- label noise -----------------------------------------------------------------------------------
def test_binary_label_noise_flips_a_nested_seeded_fraction():
    y = (torch.arange(1000) % 10 == 0).float()
    flips = {eta: flip_labels(y, eta, seed=3) != y for eta in (0.0, 0.1, 0.3, 0.5)}
    assert [int(f.sum()) for f in flips.values()] == [0, 100, 300, 500]
    assert bool((flips[0.1] <= flips[0.3]).all() and (flips[0.3] <= flips[0.5]).all())  # nested
    noisy = flip_labels(y, 0.3, seed=3)
    assert torch.equal(noisy[flips[0.3]], 1 - y[flips[0.3]]) and noisy.dtype == y.dtype
    assert torch.equal(noisy, flip_labels(y, 0.3, seed=3))
    assert not torch.equal(noisy, flip_labels(y, 0.3, seed=4))
    with pytest.raises(HightprError, match="dataset.label_noise"):
        flip_labels(y, 1.5, seed=1)


def test_multiclass_label_noise_moves_to_another_class():
    y = torch.arange(1000) % 10
    noisy = flip_labels(y, 0.2, seed=1, num_classes=10)
    moved = noisy != y
    assert int(moved.sum()) == 200 and noisy.dtype == torch.int64
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 9 and len(noisy[moved].unique()) == 10


# -- data modules on tiny files in torchvision's formats -----------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocols")
    make_tiny_cifar10(root)
    make_tiny_cifar100(root)
    return root


def test_tiny_cifar100_is_torchvisions_exact_format(data_dir):
    folder = data_dir / "tiny-cifar100" / CIFAR100_DIR
    for split, n in (("train", 3000), ("test", 1000)):
        with open(folder / split, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        assert set(entry) == {"filenames", "batch_label", "fine_labels", "coarse_labels", "data"}
        assert entry["data"].shape == (n, 3072) and entry["data"].dtype == np.uint8
        assert np.bincount(entry["fine_labels"]).tolist() == [n // 100] * 100
        assert max(entry["coarse_labels"]) == 19
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert len(meta["fine_label_names"]) == 100 and len(meta["coarse_label_names"]) == 20
    x, y = load_cifar(str(data_dir / "tiny-cifar100"), True, "cifar100")
    assert x.shape == (3000, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64


def test_prepare_cifar100_from_archive_or_folder_is_idempotent(data_dir, tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data_dir / "tiny-cifar100" / CIFAR100_DIR, arcname=CIFAR100_DIR)
    expect = (30, 10)
    assert prepare_cifar100(tmp_path / "a", archive, False, False, expect).startswith("prepared")
    assert prepare_cifar100(tmp_path / "a", archive, False, False, expect).startswith("already prepared")
    folder = data_dir / "tiny-cifar100"
    assert "train 3000, test 1000" in prepare_cifar100(tmp_path / "b", folder, False, False, expect)
    with pytest.raises(HightprError, match="expected 500 each"):
        prepare_cifar100(tmp_path / "c", folder, False, False)  # the real set's counts are checked
    with pytest.raises(HightprError, match="not torchvision's CIFAR-100"):
        prepare_cifar100(tmp_path / "d", tmp_path, False, False)


def test_missing_cifar100_names_the_prepare_command(tmp_path, capsys):
    dm = BinaryCIFARDataModule(root=tmp_path, which="cifar100", negative_class=AQUATIC,
                               positive_class=SHARK, val_per_class=50)
    with pytest.raises(DataMissingError, match=r"prepare cifar100 --download"):
        dm.setup()
    assert prepare_main(["cifar100", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--download" in err and "--from" in err


def test_binary_cifar100_datamodule(data_dir):
    dm = BinaryCIFARDataModule(root=data_dir / "tiny-cifar100", which="cifar100", negative_class=AQUATIC,
                               positive_class=SHARK, ratio=10, val_per_class=5)
    dm.setup()
    assert dm.class_counts == [112, 11]  # round(0.9 x 5 x 25) negatives; round(112 / 10) positives
    assert dm.summary() == {"train_pos": 11, "train_neg": 112, "val_pos": 5, "val_neg": 25,
                            "test_pos": 10, "test_neg": 50}
    ids = torch.cat([dm.splits[k].ids for k in ("train", "val", "test")])
    assert len(set(ids.tolist())) == len(ids) and int(ids.max()) < dm.num_sample_ids


def test_label_noise_touches_training_labels_only(data_dir):
    kw = dict(root=data_dir / "tiny-cifar10", ratio=10, val_per_class=20)
    clean, noisy = BinaryCIFARDataModule(**kw), BinaryCIFARDataModule(**kw, label_noise=0.2)
    clean.setup(), noisy.setup()
    tr_c, tr_n = clean.splits["train"], noisy.splits["train"]
    assert torch.equal(tr_c.ids, tr_n.ids) and int((tr_c.y != tr_n.y).sum()) == round(0.2 * len(tr_c))
    for k in ("val", "test"):
        assert torch.equal(clean.splits[k].y, noisy.splits[k].y)


def test_small_datamodule(data_dir):
    dm = SmallCIFARDataModule(root=data_dir / "tiny-cifar10", ratio=2, train_negatives=60,
                              val_negatives=20)
    assert dm.summary() == {"train_pos": 30, "train_neg": 60, "val_pos": 10, "val_neg": 20,
                            "test_pos": 20, "test_neg": 40}
    balanced = SmallCIFARDataModule(root=data_dir / "tiny-cifar10", ratio=2, train_negatives=60,
                                    val_negatives=20, test_balanced=True).summary()
    assert (balanced["test_pos"], balanced["test_neg"]) == (40, 40)


@pytest.mark.parametrize("which, imbalance, val_per_class, critical", [
    ("cifar10", 10, 20, [9]), ("cifar10", 10, 20, [9, 8]), ("cifar100", 10, 5, [99]),
])
def test_long_tail_datamodule(data_dir, which, imbalance, val_per_class, critical):
    dm = LongTailCIFARDataModule(root=data_dir / f"tiny-{which}", which=which, imbalance=imbalance,
                                 critical_classes=critical, val_per_class=val_per_class)
    c = dm.num_classes
    n_max = {"cifar10": 150, "cifar100": 30}[which] - val_per_class
    assert dm.class_counts == profile(n_max, c, imbalance)
    assert dm.critical_classes == critical and dm.splits["train"].y.dtype == torch.int64
    assert torch.bincount(dm.splits["val"].y, minlength=c).tolist() == [val_per_class] * c
    test_per_class = {"cifar10": 40, "cifar100": 10}[which]
    assert torch.bincount(dm.splits["test"].y, minlength=c).tolist() == [test_per_class] * c
    assert dm.summary()["train_critical"] == sum(dm.class_counts[k] for k in critical)
    assert disjoint(*(dm.splits[k].ids for k in ("train", "val", "test")))


def test_long_tail_critical_classes_are_checked(data_dir):
    with pytest.raises(HightprError, match="dataset.critical_classes"):
        LongTailCIFARDataModule(root=data_dir, critical_classes=[10])
    with pytest.raises(HightprError, match="dataset.which"):
        LongTailCIFARDataModule(root=data_dir, which="svhn")


# -- schedule and plain CNN ------------------------------------------------------------------------
def test_ldam_schedule_warmup_and_steps():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = warmup_multistep(opt)
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:6] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])  # Cao et al.: lr * epoch / 5
    assert lrs[159] == pytest.approx(0.1) and lrs[160] == pytest.approx(1e-3)  # epoch 161
    assert lrs[179] == pytest.approx(1e-3) and lrs[180] == pytest.approx(1e-5)  # epoch 181
    with pytest.raises(HightprError, match="scheduler"):
        warmup_multistep(opt, gamma=0)


def test_plain_convnet_shapes():
    model = convnet(width=8, depth=3, num_logits=2)
    assert model(torch.zeros(4, 3, 32, 32)).shape == (4, 2)
    assert model.num_features == 32
    with pytest.raises(ValueError, match="global_pool"):
        convnet(global_pool="median")


# -- end to end through train.py -----------------------------------------------------------------
FAST = ["trainer=cpu_quick", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.num_threads=1", "model.width=8"]


def train(data_dir, tmp_path, *overrides):
    r = run_train(data_dir, tmp_path, *FAST, *overrides, fast=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_train_binary_cifar100(data_dir, tmp_path):
    m = train(data_dir, tmp_path, "dataset=tiny_cifar100_binary").metrics
    assert m["data"]["train_neg"] == 112 and m["data"]["train_pos"] == 11
    assert (m["test"]["n_pos"], m["test"]["n_neg"]) == (10, 50) and 0 <= m["test"]["auc"] <= 1


def test_train_small_cifar10_with_the_plain_cnn_and_label_noise(data_dir, tmp_path):
    m = train(data_dir, tmp_path, "dataset=tiny_cifar10_small", "model=convnet",
              "dataset.label_noise=0.1").metrics
    assert (m["test"]["n_pos"], m["test"]["n_neg"]) == (20, 40) and 0 <= m["test"]["auc"] <= 1


@pytest.mark.parametrize("dataset, critical", [("tiny_cifar10_lt", 9), ("tiny_cifar100_lt", 99)])
def test_train_long_tailed_multiclass(data_dir, tmp_path, dataset, critical):
    r = train(data_dir, tmp_path, f"dataset={dataset}", "experiment=long_tailed", "loss=ce",
              "trainer.max_epochs=1", "trainer.batch_size=64")
    m = r.metrics["test"]
    for key in ("accuracy", "acc_other", "acc_critical", "auc_critical", "error@80tpr", "error@90tpr"):
        assert 0.0 <= m[key] <= 1.0, key
    out = load_logits(r.run_dir / "logits_test.npz")
    assert out["logits"].shape[1] == critical + 1
    assert np.array_equal(np.unique(out["labels"]), np.arange(critical + 1))  # class indices
    assert np.allclose(out["scores"], out["logits"][:, critical])  # score = critical class logit
    assert "hightpr.schedulers.warmup_multistep" in (r.run_dir / "config_resolved.yaml").read_text()


def test_binary_loss_on_a_multiclass_dataset_is_one_clear_message(data_dir, tmp_path):
    r = run_train(data_dir, tmp_path, *FAST, "dataset=tiny_cifar10_lt", "loss=bce", fast=False)
    assert r.returncode == 2
    assert "use a multi-class loss" in r.stderr and "Traceback" not in r.stderr


# -- the real prepared CIFAR-10 (skipped unless $HIGHTPR_DATA_DIR holds it) ------------------------
REAL = real_cifar10_dir()
needs_real = pytest.mark.skipif(REAL is None, reason="prepared CIFAR-10 not in $HIGHTPR_DATA_DIR")


@needs_real
def test_real_small_and_long_tailed_counts():
    small_dm = SmallCIFARDataModule(root=REAL, ratio=9)
    assert small_dm.summary() == {"train_pos": 33, "train_neg": 300, "val_pos": 11, "val_neg": 100,
                                  "test_pos": 111, "test_neg": 1000}
    lt = LongTailCIFARDataModule(root=REAL, imbalance=100, critical_classes=[9])
    assert lt.class_counts == profile(4900, 10, 100)
    assert lt.summary() == {"train_max_class": 4900, "train_min_class": 49, "train_n": 12156,
                            "train_critical": 49, "val_n": 1000, "val_critical": 100,
                            "test_n": 10000, "test_critical": 1000}


@needs_real
@pytest.mark.slow
def test_real_small_protocol_with_the_plain_cnn_learns(tmp_path):
    r = run_train(REAL, tmp_path, "dataset=cifar10_small", "model=convnet", "trainer=cpu_quick",
                  "trainer.max_epochs=15", "trainer.patience=15", "model.width=16",
                  "trainer.enable_progress_bar=false", fast=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics["test"]["auc"] > 0.65  # 0.77 after 15 epochs on 2 CPU cores
    assert (r.metrics["test"]["n_pos"], r.metrics["test"]["n_neg"]) == (111, 1000)


@needs_real
@pytest.mark.slow
def test_real_long_tailed_recipe_runs(tmp_path):
    r = run_train(REAL, tmp_path, "dataset=cifar10_lt", "experiment=long_tailed", "loss=ce",
                  "trainer=cpu_quick", "trainer.max_epochs=1", "model.width=16",
                  "trainer.limit_train_batches=20", "trainer.enable_progress_bar=false", fast=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics["data"]["train_n"] == 12156 and r.metrics["data"]["test_critical"] == 1000
    assert 0.0 <= r.metrics["test"]["error@90tpr"] <= 1.0
