"""A threshold whose sensitivity is guaranteed: the Neyman-Pearson umbrella order-statistic rule.

Tong, Feng & Li, "Neyman-Pearson classification algorithms and NP receiver operating
characteristics" (Science Advances, 2018), applied to the miss rate of the positive class.

A score >= t is predicted positive. Sort the n validation positives' scores ascending,
s_(1) <= ... <= s_(n). With t = s_(k), the population miss rate F(s_(k)) (F: the CDF of the
positive scores) is Beta(k, n - k + 1) distributed for continuous scores, so

    P(population TPR < tpr) = P(F(s_(k)) > 1 - tpr) = P(Binomial(n, 1 - tpr) <= k - 1).

The rule takes the largest k (the highest threshold, the fewest false positives) whose violation
probability is at most `delta`. It needs tpr^n <= delta (k = 1: the lowest positive score), i.e.
at least ceil(log(delta) / log(tpr)) validation positives: 59 for (0.95, 0.05).

Ties and discrete scores: tied positives at s_(k) all count as detected, so the threshold misses
fewer than k - 1 sample positives, and P(population TPR < tpr) stays <= delta (the bound becomes
conservative, not exact). The guarantee assumes validation and test positives come from the same
distribution.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from hightpr.metrics.roc import validated_arrays


def _check_unit(name: str, value: float, example: str) -> None:
    """Refuse a rate outside (0, 1): no finite sample guarantees a TPR of 1 or an error level of 0."""
    if not 0.0 < value < 1.0:
        hint = f" (write {example}, not {float(example) * 100:g})" if value > 1 else ""
        raise ValueError(f"{name} must be in (0, 1), got {value}{hint}")


def _check_rates(tpr: float, delta: float) -> None:
    """Validate a target TPR and the probability `delta` of falling short of it."""
    _check_unit("tpr", tpr, "0.95")
    _check_unit("delta", delta, "0.05")


def np_violation_probability(n: int, k: int, tpr: float) -> float:
    """P(population TPR < tpr) at the k-th lowest of n positive scores: P(Binomial(n, 1 - tpr) <= k - 1)."""
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n, got k={k}, n={n}")
    _check_unit("tpr", tpr, "0.95")
    return float(binom.cdf(k - 1, n, 1.0 - tpr))


def np_min_positives(tpr: float, delta: float) -> int:
    """Fewest validation positives for which the rule exists: smallest n with tpr^n <= delta."""
    _check_rates(tpr, delta)
    n = max(1, math.ceil(math.log(delta) / math.log(tpr)))
    while n > 1 and np_violation_probability(n - 1, 1, tpr) <= delta:  # guard against log rounding
        n -= 1
    while np_violation_probability(n, 1, tpr) > delta:
        n += 1
    return n


def np_order(n: int, tpr: float = 0.95, delta: float = 0.05) -> int:
    """Largest k in 1..n with P(Binomial(n, 1 - tpr) <= k - 1) <= delta (the threshold is s_(k))."""
    _check_rates(tpr, delta)
    need = np_min_positives(tpr, delta)
    if n < need:
        raise ValueError(f"a threshold with P(TPR < {tpr:g}) <= {delta:g} needs at least {need} "
                         f"validation positives, got {n}")
    violation = binom.cdf(np.arange(n), n, 1.0 - tpr)  # index k - 1, increasing in k
    return int(np.flatnonzero(violation <= delta)[-1]) + 1


def positive_scores(scores, labels) -> np.ndarray:
    """Validated scores of the positives, ascending (numpy arrays, lists or tensors in)."""
    s, y = validated_arrays(scores, labels)
    return np.sort(s[y])


def np_threshold(scores, labels, tpr: float = 0.95, delta: float = 0.05) -> float:
    """Highest validation positive score t = s_(k) with P(population TPR < tpr) <= delta (positive: >= t)."""
    _check_rates(tpr, delta)
    pos = positive_scores(scores, labels)
    return float(pos[np_order(pos.size, tpr, delta) - 1])
