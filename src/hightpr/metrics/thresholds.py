"""Threshold rules: which validation threshold to deploy for a target TPR, and what it promises.

A score >= t is predicted positive, so tied samples always fall on the same side. Every rule here
picks an order statistic of the n validation positives' scores, s_(1) <= ... <= s_(n): they differ
only in which one, i.e. in how many validation positives k - 1 they may leave below the threshold.

| rule | picks | promise (validation and test positives exchangeable) |
|---|---|---|
| `np` | largest k with P(Binomial(n, 1 - tpr) <= k - 1) <= delta | P(population TPR < tpr) <= delta |
| `ltt` | learn-then-test, binomial-tail p-values, fixed sequence | P(population TPR < tpr) <= delta |
| `crc` | largest k with (k - 1 + 1) / (n + 1) <= 1 - tpr | E[population FNR] <= 1 - tpr |
| `quantile` | k-th largest positive, k = ceil(tpr * n) | none: falls short about half of the time |

With continuous scores the population miss rate at s_(k) is Beta(k, n - k + 1), so whatever the
rule, P(TPR < tpr) = P(Binomial(n, 1 - tpr) <= k - 1) and E[FNR] = k / (n + 1) (`rule_level`).
Ties only lower the miss count at a threshold, so every promise stays (conservatively) true.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from hightpr.metrics.neyman_pearson import (
    _check_rates,
    _check_unit,
    np_min_positives,
    np_order,
    np_violation_probability,
    positive_scores,
)

DEFAULT_RULE = "np"


def quantile_order(n: int, tpr: float) -> int:
    """k (from the lowest) of the plain validation quantile: the ceil(tpr * n)-th largest positive."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr} (write 0.95, not 95)")
    if n < 1:
        raise ValueError("the validation set has no positives")
    return n - math.ceil(round(tpr * n, 9)) + 1


def crc_min_positives(tpr: float) -> int:
    """Fewest positives for which conformal risk control has a finite threshold: (n + 1)(1 - tpr) >= 1."""
    _check_unit("tpr", tpr, "0.95")
    return max(1, math.ceil(round(1.0 / (1.0 - tpr), 9)) - 1)


def crc_order(n: int, tpr: float) -> int:
    """Conformal risk control (Angelopoulos et al. 2022) for the FNR, loss 1[positive < t], B = 1.

    The highest t with (n * FNR_val(t) + 1) / (n + 1) <= 1 - tpr: at t = s_(k) (no ties) the
    validation misses are k - 1, so k = floor((1 - tpr)(n + 1)).
    """
    _check_unit("tpr", tpr, "0.95")
    need = crc_min_positives(tpr)
    if n < need:
        raise ValueError(f"conformal risk control at TPR {tpr:g} needs at least {need} validation "
                         f"positives, got {n}")
    return math.floor(round((1.0 - tpr) * (n + 1), 9))


def ltt_p_values(misses: np.ndarray, n: int, tpr: float) -> np.ndarray:
    """Binomial-tail p-values of H0 "population FNR > 1 - tpr": P(Binomial(n, 1 - tpr) <= misses)."""
    return binom.cdf(np.asarray(misses), n, 1.0 - tpr)


def ltt_index(misses: np.ndarray, n: int, tpr: float, delta: float) -> int | None:
    """Fixed-sequence testing over candidates ordered from the most conservative (fewest misses).

    Rejects H0 at each candidate while its p-value is <= delta and stops at the first that is not
    (Angelopoulos, Bates, Candes, Jordan & Lei, "Learn then test", 2021); returns the index of the
    last rejected candidate (the least conservative threshold certified), None if none is.
    """
    accepted = ltt_p_values(misses, n, tpr) > delta
    if accepted[0]:
        return None
    return int(np.argmax(accepted)) - 1 if accepted.any() else len(accepted) - 1


def ltt_order(n: int, tpr: float, delta: float) -> int:
    """k of learn-then-test on tie-free scores, where the threshold s_(k) misses k - 1 positives."""
    _check_rates(tpr, delta)
    i = ltt_index(np.arange(n), n, tpr, delta)
    if i is None:
        need = np_min_positives(tpr, delta)  # the first candidate s_(1) misses none: tpr^n <= delta
        raise ValueError(f"a threshold with P(TPR < {tpr:g}) <= {delta:g} needs at least {need} "
                         f"validation positives, got {n}")
    return i + 1


def _ltt_threshold(pos: np.ndarray, tpr: float, delta: float) -> float:
    """Learn-then-test on the data: candidates are the distinct positive scores, lowest first."""
    candidates = np.unique(pos)
    misses = np.searchsorted(pos, candidates, side="left")  # positives strictly below each candidate
    i = ltt_index(misses, pos.size, tpr, delta)
    if i is None:
        ltt_order(pos.size, tpr, delta)  # raises with the minimum number of positives
    return float(candidates[i])


@dataclass(frozen=True)
class ThresholdRule:
    """One way to pick the deployed threshold; `order` gives k for n tie-free positives."""

    name: str
    title: str                      # for reports and table headers
    promise: str                    # what it guarantees, in words
    uses_delta: bool
    order: Callable[[int, float, float], int]
    min_positives: Callable[[float, float], int]

    def threshold(self, scores, labels, tpr: float, delta: float = 0.05) -> float:
        """The rule's threshold from validation scores and labels (positive: score >= t)."""
        check_target(tpr, delta)
        pos = positive_scores(scores, labels)
        if self.name == "ltt":
            return _ltt_threshold(pos, tpr, delta)
        return float(pos[self.order(pos.size, tpr, delta) - 1])


RULES: dict[str, ThresholdRule] = {
    "np": ThresholdRule(
        "np", "Neyman-Pearson", "P(population TPR < target) <= delta", True,
        lambda n, tpr, delta: np_order(n, tpr, delta), np_min_positives),
    "ltt": ThresholdRule(
        "ltt", "learn-then-test", "P(population TPR < target) <= delta", True,
        ltt_order, np_min_positives),
    "crc": ThresholdRule(
        "crc", "conformal risk control", "E[population TPR] >= target", False,
        lambda n, tpr, delta: crc_order(n, tpr), lambda tpr, delta: crc_min_positives(tpr)),
    "quantile": ThresholdRule(
        "quantile", "validation quantile", "none (the test TPR falls short about half of the time)", False,
        lambda n, tpr, delta: quantile_order(n, tpr), lambda tpr, delta: 1),
}


def check_rule(name: str) -> ThresholdRule:
    """The rule called `name`; a ValueError naming the options otherwise."""
    rule = RULES.get(str(name))
    if rule is None:
        raise ValueError(f"threshold rule must be one of {', '.join(RULES)}; got {name!r}")
    return rule


def check_target(tpr: float, delta: float) -> None:
    """A target TPR and delta in (0, 1), with the project's hint for percentages."""
    _check_rates(tpr, delta)


def rule_threshold(scores, labels, tpr: float, delta: float = 0.05, rule: str = DEFAULT_RULE) -> float:
    """The threshold of `rule` (np, ltt, crc, quantile) on validation scores and labels."""
    return check_rule(rule).threshold(scores, labels, tpr, delta)


def rule_level(n: int, k: int, tpr: float) -> dict[str, float]:
    """What the k-th lowest of n positives gives, exactly for continuous scores (any rule).

    `violation_probability`: P(population TPR < tpr) = P(Binomial(n, 1 - tpr) <= k - 1);
    `expected_fnr`: E[population FNR] = k / (n + 1).
    """
    return {"violation_probability": np_violation_probability(n, k, tpr), "expected_fnr": k / (n + 1)}


def describe(rule: str, scores, labels, tpr: float, delta: float = 0.05) -> dict:
    """Threshold of `rule` with its order statistic k of n positives and its exact levels."""
    r = check_rule(rule)
    t = r.threshold(scores, labels, tpr, delta)
    pos = positive_scores(scores, labels)
    k = int(np.searchsorted(pos, t, side="left")) + 1  # the lowest positive tied at t
    return {"rule": r.name, "threshold": t, "k": k, "n": int(pos.size), **rule_level(pos.size, k, tpr)}
