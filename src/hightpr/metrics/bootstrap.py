"""Bootstrap confidence intervals for AUC and FPR@TPR, alone or paired (two models, one test set).

Resampling is stratified: positives and negatives are drawn with replacement separately, so
every replicate keeps the test set's class counts (FPR@TPR stays defined and comparable).
Intervals are percentile intervals. `resample_indices` is the one draw of test samples: these
intervals and the test-sample component of the tables' comparison test
(`hightpr.metrics.comparison`) all resample through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np

from hightpr.metrics.roc import _as_numpy, fpr_at_tpr, roc_auc

Metric = Callable[[np.ndarray, np.ndarray], float]


def default_metrics(tprs: Sequence[float] = (0.90, 0.95, 0.98)) -> dict[str, Metric]:
    """AUC and FPR at each TPR, keyed like the reports (`auc`, `fpr@95tpr`)."""
    out: dict[str, Metric] = {"auc": roc_auc}
    out.update({f"fpr@{round(t * 100):d}tpr": partial(_fpr_at, tpr=t) for t in tprs})
    return out


def _fpr_at(scores: np.ndarray, labels: np.ndarray, tpr: float) -> float:
    return fpr_at_tpr(scores, labels, tpr)


def resample_indices(labels: np.ndarray, n: int, seed: int | np.random.Generator = 0,
                     stratified: bool = True) -> np.ndarray:
    """[n, N] index arrays of `n` bootstrap replicates of the N samples, drawn with replacement.

    Stratified (binary `labels`): the P positives first, then the N - P negatives, each drawn
    from its own class, so every replicate keeps the class counts. Otherwise N draws from all
    samples (multi-class). `seed` is a seed or a generator already in use (its draws continue).
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    if not stratified:
        return rng.integers(0, y.size, size=(n, y.size))
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y.astype(bool))
    return np.concatenate([rng.choice(pos, size=(n, pos.size)), rng.choice(neg, size=(n, neg.size))], axis=1)


def _resamples(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """[n, N] stratified index arrays; at least one replicate, as a percentile interval needs."""
    if n < 1:
        raise ValueError(f"the number of bootstrap replicates must be >= 1, got {n}")
    return resample_indices(labels, n, seed)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(scores, labels, metrics: Mapping[str, Metric] | None = None, n: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """{metric: {"value", "lo", "hi"}}: the metric on the full set and its percentile interval."""
    s, y = _as_numpy(scores, labels)
    metrics = default_metrics() if metrics is None else metrics
    draws = _resamples(y, n, seed)
    out = {}
    for name, fn in metrics.items():
        reps = np.array([fn(s[i], y[i]) for i in draws])
        lo, hi = _interval(reps, level)
        out[name] = {"value": float(fn(s, y)), "lo": lo, "hi": hi}
    return out


def paired_bootstrap(scores_a, scores_b, labels, metrics: Mapping[str, Metric] | None = None,
                     n: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Both models on the same replicates: intervals for a, b and the difference a - b.

    {metric: {"a", "a_lo", "a_hi", "b", "b_lo", "b_hi", "diff", "diff_lo", "diff_hi"}}.
    """
    a, y = _as_numpy(scores_a, labels)
    b, _ = _as_numpy(scores_b, labels)
    metrics = default_metrics() if metrics is None else metrics
    draws = _resamples(y, n, seed)
    out = {}
    for name, fn in metrics.items():
        ra = np.array([fn(a[i], y[i]) for i in draws])
        rb = np.array([fn(b[i], y[i]) for i in draws])
        va, vb = float(fn(a, y)), float(fn(b, y))
        row = {"a": va, "b": vb, "diff": va - vb}
        for key, reps in (("a", ra), ("b", rb), ("diff", ra - rb)):
            row[f"{key}_lo"], row[f"{key}_hi"] = _interval(reps, level)
        out[name] = row
    return out
