"""The real prepared CIFAR-10 (skipped unless $HIGHTPR_DATA_DIR holds it)."""

from __future__ import annotations

import pytest

from hightpr.data import BinaryCIFARDataModule
from hightpr.data.cifar_files import verify_cifar10
from tests.conftest import real_cifar10_dir, run_train

DATA = real_cifar10_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="prepared CIFAR-10 not in $HIGHTPR_DATA_DIR")


@needs_data
def test_prepared_files_verify():
    assert verify_cifar10(DATA) == "train 50000, test 10000"


@needs_data
@pytest.mark.parametrize("ratio, n_pos", [(100, 44), (200, 22), (50, 88)])
def test_binary_protocol_counts_on_real_data(ratio, n_pos):
    dm = BinaryCIFARDataModule(root=DATA, ratio=ratio, seed=3)
    assert dm.summary() == {"train_pos": n_pos, "train_neg": 4410, "val_pos": 100, "val_neg": 100,
                            "test_pos": 1000, "test_neg": 1000}


@needs_data
@pytest.mark.slow
def test_cpu_quick_learns_on_real_data(tmp_path):
    r = run_train(DATA, tmp_path, "trainer=cpu_quick", "trainer.enable_progress_bar=false", fast=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics["test"]["auc"] > 0.75
    assert (r.metrics["test"]["n_pos"], r.metrics["test"]["n_neg"]) == (1000, 1000)
