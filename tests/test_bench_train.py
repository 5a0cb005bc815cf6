"""The training benchmark's arithmetic: per-epoch and fixed seconds from runs of two lengths."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_lengths_separate_the_per_epoch_cost_from_the_fixed_cost():
    bench = _bench()
    # worked by hand: 3-epoch runs 40, 41, 39 s (median 40); 9-epoch runs 100, 104, 98 s (median 100):
    # per epoch (100 - 40) / 6 = 10 s, fixed 40 - 3 * 10 = 10 s; each repeat's own figure
    # 60/6 = 10, 63/6 = 10.5, 59/6 = 9.8333, spread (10.5 - 9.8333) / 10 = 0.0667
    runs = [{"epochs": 3, "seconds": s, "auc": 0.9, "cpu_s": 1.0} for s in (40, 41, 39)]
    runs += [{"epochs": 9, "seconds": s, "auc": 0.9, "cpu_s": 1.0} for s in (100, 104, 98)]
    fit = bench.lengths_fit(runs, 3, 9)
    assert fit["per_epoch_s"] == 10.0 and fit["fixed_s"] == 10.0
    assert fit["per_epoch_each_s"] == [10.0, 10.5, 9.833]
    assert fit["per_epoch_spread"] == pytest.approx(0.0667, abs=1e-4)


def test_the_ratio_is_per_epoch_and_greater_than_one_when_the_project_is_faster():
    bench = _bench()
    args = argparse.Namespace(lengths=(3, 9), repeats=1, width=32, device="cpu")

    def side(short, long):
        return [{"epochs": 3, "seconds": short, "auc": 0.9, "cpu_s": 1.0, "data": {}, "ids": {}},
                {"epochs": 9, "seconds": long, "auc": 0.9, "cpu_s": 1.0, "data": {}, "ids": {}}]

    # plain: 12 s an epoch, 4 s fixed; project: 10 s an epoch, 7 s fixed
    out = bench.summarise(args, "runs", {"plain": side(40, 112), "project": side(37, 97)})
    assert out["per_epoch_project_vs_plain"] == pytest.approx(1.2)
    assert out["fixed_project_minus_plain_s"] == pytest.approx(3.0)
    assert out["same_split"] and not out["void"]


@pytest.mark.parametrize("text", ["9", "9,3", "0,3", "a,b"])
def test_lengths_must_be_two_increasing_epoch_counts(text):
    with pytest.raises(argparse.ArgumentTypeError, match="SHORT"):
        _bench()._lengths(text)
