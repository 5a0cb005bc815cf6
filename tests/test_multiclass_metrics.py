"""Multi-class metrics (ALM Tables 4, 7-9) on hand-made examples with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hightpr.metrics.multiclass import (
    MulticlassEvaluator,
    accuracy,
    class_accuracy,
    critical_threshold,
    error_at_tpr,
    multiclass_report,
)

# 3 classes, class 2 critical. Critical logits of the 4 critical samples: 3.0, 2.0, 1.0, 0.5.
LOGITS = np.array([
    [0, 0, 3.0],   # a  y=2
    [0, 0, 2.0],   # b  y=2
    [0, 0, 1.0],   # c  y=2
    [2, 0, 0.5],   # d  y=2  (arg-max says 0)
    [2, 1, 2.5],   # e  y=0  (critical logit 2.5: above every threshold below)
    [1, 2, 1.5],   # f  y=1
    [0, 1, 0.8],   # g  y=0  (arg-max of the others says 1: wrong)
    [3, 1, 0.2],   # h  y=0
    [1, 3, -1.0],  # i  y=1
    [1, 0, 0.9],   # j  y=1  (arg-max of the others says 0: wrong)
])
LABELS = np.array([2, 2, 2, 2, 0, 1, 0, 0, 1, 1])


@pytest.mark.parametrize(
    "tpr, threshold, error",
    [
        # TPR 0.5: k = 2 -> t = 2.0; e goes critical (wrong), g and j wrong by arg-max: 3/6
        (0.5, 2.0, 3 / 6),
        # TPR 0.75: k = 3 -> t = 1.0; e and f critical (wrong), g and j wrong: 4/6
        (0.75, 1.0, 4 / 6),
        # TPR 0.8: k = ceil(3.2) = 4 -> t = 0.5; e, f, g, j critical (wrong), h and i right: 4/6
        (0.8, 0.5, 4 / 6),
        (1.0, 0.5, 4 / 6),
    ],
)
def test_error_at_tpr_hand_example(tpr, threshold, error):
    assert critical_threshold(LOGITS, LABELS, 2, tpr) == threshold
    assert error_at_tpr(LOGITS, LABELS, 2, tpr) == pytest.approx(error)


def test_tie_at_the_threshold_goes_critical():
    # h's critical logit set equal to the TPR-0.5 threshold 2.0: it is assigned the critical class.
    logits = LOGITS.copy()
    logits[7, 2] = 2.0
    assert error_at_tpr(logits, LABELS, 2, 0.5) == pytest.approx(4 / 6)


def test_report_one_critical_class():
    r = multiclass_report(LOGITS, LABELS, 2, tprs=(0.5, 0.8))
    # arg-max right on a, b, c, f, h, i
    assert r["accuracy"] == pytest.approx(6 / 10)
    assert r["acc_critical"] == pytest.approx(3 / 4)
    assert r["acc_other"] == pytest.approx(3 / 6)
    # critical beats: 3.0 -> 6 others, 2.0 -> 5, 1.0 -> 4, 0.5 -> 2 (of 6): 17/24
    assert r["auc_critical"] == pytest.approx(17 / 24)
    assert r["error@50tpr"] == pytest.approx(3 / 6) and r["error@80tpr"] == pytest.approx(4 / 6)
    assert set(r) == {"accuracy", "acc_critical", "acc_other", "auc_critical", "error@50tpr", "error@80tpr"}


def test_report_two_critical_classes():
    # Critical {1, 2}: the error is measured on class 0 only (e, g, h).
    r = multiclass_report(LOGITS, LABELS, [1, 2], tprs=(0.5,))
    # class 2 at TPR 0.5 (t = 2.0): e -> 2 wrong, g -> 1 wrong, h -> 0 right
    assert r["error@50tpr_c2"] == pytest.approx(2 / 3)
    # class 1 logits of class-1 samples 2, 3, 0 -> k = 2, t = 2.0; e -> arg-max(2, 2.5) = 2 wrong,
    # g -> arg-max(0, 0.8) = 2 wrong, h -> 0 right
    assert r["error@50tpr_c1"] == pytest.approx(2 / 3)
    assert r["acc_c1"] == pytest.approx(2 / 3) and r["acc_c2"] == pytest.approx(3 / 4)
    assert r["acc_other"] == pytest.approx(1 / 3) and r["accuracy"] == pytest.approx(6 / 10)


def test_accuracy_helpers_and_evaluator():
    assert accuracy(LOGITS, LABELS) == pytest.approx(0.6)
    assert class_accuracy(LOGITS, LABELS, [0, 1]) == pytest.approx(3 / 6)
    ev = MulticlassEvaluator([2], tprs=(0.5,))
    assert ev.monitor == "accuracy"
    assert np.array_equal(ev.scores(LOGITS), LOGITS[:, 2])
    assert ev(LOGITS, LABELS)["error@50tpr"] == pytest.approx(0.5)


def test_error_matches_brute_force_on_random_data():
    """Against a per-sample loop written independently (threshold by sorting the critical logits)."""
    rng = np.random.default_rng(0)
    logits = np.round(rng.normal(size=(400, 5)), 1)  # rounding: ties on the critical logit
    labels = rng.integers(0, 5, size=400)
    c, tpr = 4, 0.9
    crit = sorted(logits[labels == c, c], reverse=True)
    t = crit[int(np.ceil(0.9 * len(crit))) - 1]
    errors = total = 0
    for z, y in zip(logits, labels, strict=True):
        if y == c:
            continue
        pred = c if z[c] >= t else max((k for k in range(5) if k != c), key=lambda k: z[k])
        errors += pred != y
        total += 1
    assert error_at_tpr(logits, labels, c, tpr) == pytest.approx(errors / total)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"critical_classes": 3}, "not in [0, 2]"),
        ({"critical_classes": [0, 1, 2]}, "non-critical"),
        ({"critical_classes": [1, 1]}, "distinct"),
        ({"critical_classes": 2, "tprs": (90,)}, "0.9, not 90"),
    ],
)
def test_bad_input_is_clear(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        multiclass_report(LOGITS, LABELS, **kwargs)
