"""The deployed operating point: a threshold chosen on validation, judged on test.

The papers report the oracle FPR@TPR (the threshold is picked on the test set itself). A user
deploying the model has to fix the threshold beforehand: here it is the highest threshold that
reaches the target TPR on the *validation* set, and we report the TPR and FPR it actually gives
on test.

That validation-quantile threshold is median-unbiased, not a guarantee: its test TPR falls short of
the target about half of the time. Each target therefore also gets the threshold of the configured
rule (`evaluation.threshold_rule`, `hightpr.metrics.thresholds`; default `np`, the Neyman-Pearson
threshold whose population TPR falls short with probability <= delta) and its rates, keyed by the
rule (`np_*`, `ltt_*`, `crc_*`, `quantile_*`); a validation set with too few positives gets
`<rule>_note` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hightpr.metrics.roc import _as_numpy
from hightpr.metrics.thresholds import DEFAULT_RULE, check_rule, quantile_order

OPERATING_TPRS = (0.90, 0.95, 0.98)


def threshold_at_tpr(scores, labels, tpr: float) -> float:
    """Highest threshold t with TPR >= `tpr` when predicting positive for score >= t.

    That is the k-th largest positive score, k = ceil(tpr * P) (the `quantile` rule); it is also the
    threshold of `fpr_at_tpr` (the highest threshold reaching k true positives has the fewest false
    positives).
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr} (write 0.95, not 95)")
    s, y = _as_numpy(scores, labels)
    pos = np.sort(s[y])
    return float(pos[quantile_order(pos.size, tpr) - 1])


def rates_at_threshold(scores, labels, threshold: float) -> tuple[float, float]:
    """(TPR, FPR) when predicting positive for score >= `threshold`."""
    s, y = _as_numpy(scores, labels)
    pred = s >= threshold
    return float(pred[y].mean()), float(pred[~y].mean())


def operating_point(val_scores, val_labels, test_scores, test_labels, tpr: float) -> dict[str, float]:
    """Threshold at TPR `tpr` on validation and the rates it gives on validation and test."""
    t = threshold_at_tpr(val_scores, val_labels, tpr)
    val_tpr, val_fpr = rates_at_threshold(val_scores, val_labels, t)
    test_tpr, test_fpr = rates_at_threshold(test_scores, test_labels, t)
    return {"target_tpr": float(tpr), "threshold": t, "val_tpr": val_tpr, "val_fpr": val_fpr,
            "test_tpr": test_tpr, "test_fpr": test_fpr}


Point = dict[str, float | bool | str | None]


def rule_operating_point(val_scores, val_labels, test_scores, test_labels, tpr: float,
                         delta: float = 0.05, rule: str = DEFAULT_RULE) -> Point:
    """`rule`'s threshold on validation and its rates, keys prefixed by the rule (`np_threshold`, ...).

    Rules that take delta (np, ltt) also report `<rule>_delta`; a threshold that cannot exist (too
    few validation positives, or a target TPR of 1) gives `<rule>_threshold: None` and a note.
    """
    r = check_rule(rule)
    p = r.name
    head: Point = {f"{p}_threshold": None}
    if r.uses_delta:
        head[f"{p}_delta"] = float(delta)
    _, val_y = _as_numpy(val_scores, val_labels)
    n_pos = int(val_y.sum())
    if tpr >= 1.0:
        return {**head, f"{p}_note": "a TPR of 1 cannot be guaranteed from a finite validation set"}
    need = r.min_positives(tpr, delta)
    if n_pos < need:
        return {**head, f"{p}_note": f"needs >= {need} validation positives, has {n_pos}"}
    t = r.threshold(val_scores, val_labels, tpr, delta)
    val_tpr, val_fpr = rates_at_threshold(val_scores, val_labels, t)
    test_tpr, test_fpr = rates_at_threshold(test_scores, test_labels, t)
    return {**head, f"{p}_threshold": t, f"{p}_val_tpr": val_tpr, f"{p}_val_fpr": val_fpr,
            f"{p}_test_tpr": test_tpr, f"{p}_test_fpr": test_fpr, f"{p}_held": bool(test_tpr >= tpr)}


def np_operating_point(val_scores, val_labels, test_scores, test_labels, tpr: float,
                       delta: float = 0.05) -> Point:
    """The guaranteed (Neyman-Pearson) threshold on validation and its rates; a note if it cannot exist."""
    return rule_operating_point(val_scores, val_labels, test_scores, test_labels, tpr, delta, "np")


def operating_points(val_scores, val_labels, test_scores, test_labels,
                     tprs: Sequence[float] = OPERATING_TPRS, delta: float = 0.05,
                     rule: str = DEFAULT_RULE) -> dict[str, dict]:
    """`operating_point` and `rule_operating_point` at each target, keyed like the report (`"95tpr"`)."""
    check_rule(rule)
    return {f"{round(t * 100):d}tpr": {**operating_point(val_scores, val_labels, test_scores, test_labels, t),
                                       **rule_operating_point(val_scores, val_labels, test_scores,
                                                              test_labels, t, delta, rule)}
            for t in tprs}
