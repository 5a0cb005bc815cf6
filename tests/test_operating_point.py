"""Operating point: threshold chosen on validation, rates measured on test (hand-worked examples)."""

from __future__ import annotations

import numpy as np
import pytest

from hightpr.metrics import fpr_at_tpr
from hightpr.metrics.operating_point import operating_point, operating_points, threshold_at_tpr


def test_hand_example():
    # val positives 0.9, 0.8, 0.6, 0.3 -> TPR 0.75 needs 3 of 4: threshold 0.6 (val FPR: 0.7 only = 1/4)
    val_s = [0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.2, 0.1]
    val_y = [1, 1, 1, 1, 0, 0, 0, 0]
    # test: positives 0.95, 0.65, 0.6 (tie: counts), 0.4 -> TPR 3/4; negatives 0.62, 0.61, 0.3 -> FPR 2/3
    test_s = [0.95, 0.65, 0.6, 0.4, 0.62, 0.61, 0.3]
    test_y = [1, 1, 1, 1, 0, 0, 0]
    op = operating_point(val_s, val_y, test_s, test_y, 0.75)
    assert op == pytest.approx({"target_tpr": 0.75, "threshold": 0.6, "val_tpr": 0.75, "val_fpr": 0.25,
                                "test_tpr": 0.75, "test_fpr": 2 / 3})


@pytest.mark.parametrize("seed", range(4))
def test_on_validation_it_is_the_oracle_point(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2).astype(int)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=300) + y, 1)  # ties
    for tpr in (0.9, 0.95, 1.0):
        op = operating_point(s, y, s, y, tpr)
        assert op["val_tpr"] >= tpr and op["val_fpr"] == pytest.approx(fpr_at_tpr(s, y, tpr))
        # no higher threshold reaches the target (brute force over the distinct scores)
        higher = [t for t in np.unique(s) if t > op["threshold"]]
        assert all(((s >= t) & (y == 1)).sum() / y.sum() < tpr for t in higher)


def test_keys_and_bad_target():
    ops = operating_points([0.9, 0.1, 0.5], [1, 0, 1], [0.9, 0.1, 0.5], [1, 0, 1], tprs=(0.9, 0.95))
    assert set(ops) == {"90tpr", "95tpr"}
    with pytest.raises(ValueError, match="0.95, not 95"):
        threshold_at_tpr([0.9, 0.1], [1, 0], 95)
