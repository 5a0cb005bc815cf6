"""ROC metrics against hand-worked values, brute force, sklearn and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torchmetrics.functional.classification import binary_specificity_at_sensitivity

from hightpr.metrics import binary_report, fpr_at_fn, fpr_at_tpr, roc_auc


def brute_force_fpr(scores, labels, min_tpr):
    """Try every threshold (each distinct score and +inf): smallest FPR with TPR >= min_tpr."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    best = 1.0
    for t in [*np.unique(scores), np.inf]:
        pred = scores >= t
        tpr = (pred & labels).sum() / labels.sum()
        fpr = (pred & ~labels).sum() / (~labels).sum()
        if tpr >= min_tpr - 1e-12:
            best = min(best, fpr)
    return best


def brute_force_auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean()


def random_case(seed, n=300, pos_rate=0.2, decimals=1):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_rate).astype(int)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=n) + labels, decimals)  # rounding makes many ties
    return scores, labels


def test_auc_hand_example_with_tie():
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5) (0.9>0.1) (0.5=0.5 -> 1/2) (0.5>0.1)
    assert roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_and_pairs(seed):
    scores, labels = random_case(seed)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_fpr_at_tpr_hand_example_single_threshold():
    # Only thresholds <= 0.1 reach TPR 1; then negatives 0.5 and 0.2 are above: FPR 2/3.
    scores = [0.9, 0.1, 0.5, 0.2, 0.05]
    labels = [1, 1, 0, 0, 0]
    assert fpr_at_tpr(scores, labels, 1.0) == pytest.approx(2 / 3)
    assert fpr_at_tpr(scores, labels, 0.5) == 0.0  # threshold 0.9 alone: TPR 1/2, FPR 0
    assert fpr_at_fn(scores, labels, 0) == pytest.approx(2 / 3)
    assert fpr_at_fn(scores, labels, 1) == 0.0


def test_fpr_at_tpr_tie_moves_together():
    # The lowest positive ties with a negative: reaching TPR 1 must include that negative.
    scores = [0.8, 0.3, 0.3, 0.1]
    labels = [1, 1, 0, 0]
    assert fpr_at_tpr(scores, labels, 1.0) == pytest.approx(0.5)


def test_fpr_at_tpr_exact_boundary():
    # 20 positives: TPR 0.95 is exactly 19 of them (no float slack that would demand 20).
    labels = np.r_[np.ones(20), np.zeros(10)]
    scores = np.r_[np.arange(20, 40), np.arange(10)].astype(float)
    scores[0] = -1.0  # one positive below every negative
    assert fpr_at_tpr(scores, labels, 0.95) == 0.0
    assert fpr_at_tpr(scores, labels, 1.0) == 1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tpr", [0.90, 0.92, 0.95, 0.98, 1.0])
def test_fpr_at_tpr_brute_force_and_sklearn(seed, tpr):
    scores, labels = random_case(seed)
    ours = fpr_at_tpr(scores, labels, tpr)
    assert ours == pytest.approx(brute_force_fpr(scores, labels, tpr), abs=1e-12)
    fpr, tpr_curve, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert ours == pytest.approx(fpr[tpr_curve >= tpr - 1e-12].min(), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tpr", [0.90, 0.95])
def test_fpr_at_tpr_matches_torchmetrics(seed, tpr):
    scores, labels = random_case(seed, decimals=2)
    probs = torch.sigmoid(torch.as_tensor(scores))
    spec, _ = binary_specificity_at_sensitivity(probs, torch.as_tensor(labels), min_sensitivity=tpr)
    assert fpr_at_tpr(probs, torch.as_tensor(labels), tpr) == pytest.approx(1 - spec.item(), abs=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_fpr_at_fn_is_fpr_at_tpr_of_p_minus_k(k):
    scores, labels = random_case(7, n=120)
    n_pos = labels.sum()
    assert fpr_at_fn(scores, labels, k) == pytest.approx(
        brute_force_fpr(scores, labels, (n_pos - k) / n_pos), abs=1e-12
    )


def test_report_keys_and_counts():
    scores, labels = random_case(1)
    report = binary_report(scores, labels, fns=(0, 1))
    assert {"auc", "fpr@90tpr", "fpr@92tpr", "fpr@95tpr", "fpr@98tpr", "fpr@100tpr",
            "fpr@0fn", "fpr@1fn"} <= set(report)
    assert report["n_pos"] == labels.sum() and report["n_neg"] == (1 - labels).sum()
    assert report["fpr@100tpr"] == report["fpr@0fn"]


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([0.1, 0.2], [1, 1], "at least one positive and one negative"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, 0.2], [1, 2], "binary"),
        ([0.1, 0.2, 0.3], [1, 0], "same length"),
    ],
)
def test_bad_input_is_a_clear_error(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(scores, labels)


def test_tpr_given_in_percent_is_rejected():
    with pytest.raises(ValueError, match="0.95, not 95"):
        fpr_at_tpr([0.1, 0.9], [0, 1], 95)


def brute_force_pauc(scores, labels, min_tpr, max_fpr, n=400_001):
    """Integrate max(TPR - min_tpr, 0) on a fine FPR grid along sklearn's full ROC polyline."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    grid = np.linspace(0, max_fpr, n)
    # Along vertical runs np.interp is ambiguous, but they have zero width: any value is fine.
    heights = np.maximum(np.interp(grid, fpr, tpr) - min_tpr, 0)
    return np.trapezoid(heights, grid) / ((1 - min_tpr) * max_fpr)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_tpr, max_fpr", [(0.0, 1.0), (0.9, 1.0), (0.5, 0.3), (0.95, 0.5)])
def test_partial_auc_brute_force(seed, min_tpr, max_fpr):
    from hightpr.metrics import partial_auc

    scores, labels = random_case(seed, n=200)
    got = partial_auc(scores, labels, min_tpr=min_tpr, max_fpr=max_fpr)
    assert got == pytest.approx(brute_force_pauc(scores, labels, min_tpr, max_fpr), abs=2e-5)
    if (min_tpr, max_fpr) == (0.0, 1.0):
        assert got == pytest.approx(roc_auc(scores, labels), abs=1e-12)


def test_partial_auc_hand_example():
    from hightpr.metrics import partial_auc

    # ROC: (0,0) -> (0,1/2) -> (1/2,1/2) -> (1/2,1) -> (1,1). Above TPR 0.9: height 0.1 from
    # FPR 1/2 to 1, area 0.05, normalised by 0.1: 0.5.
    scores, labels = [4, 3, 2, 1], [1, 0, 1, 0]
    assert partial_auc(scores, labels, min_tpr=0.9) == pytest.approx(0.5)
    assert partial_auc([2, 1], [1, 0], min_tpr=0.9) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="min_tpr"):
        partial_auc(scores, labels, min_tpr=1.0)
