"""A two-level bootstrap over members and test samples, for comparing ensembles of trained models.

An ensemble's number carries two kinds of noise: which test samples were drawn, and which
members training happened to produce (seeds). A bootstrap over test samples alone sees only the
first, so a gain that one lucky member explains can look significant. Here every replicate
resamples, for each arm, its members with replacement (the ensemble of the drawn members, in
the members' mean logit space, as `hightpr.ensemble.average_logits` forms it), then the test
samples (stratified: positives and negatives apart, the same draw for every arm, so arms stay
paired). With few members the resampled mean under-spreads by (M - 1) / M in variance; the
members' deviation from the arm's mean is scaled by sqrt(M / (M - 1)) to undo it.

Metrics are vectorised over replicates (AUC and FPR at a TPR, exactly as `hightpr.metrics.roc`
defines them, ties included), so a thousand replicates of a table's tests take seconds.
`holm` adjusts a family of p-values for multiplicity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from hightpr.metrics.bootstrap import resample_indices

BatchMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of every row: `pos` [R, P] and `neg` [R, N] scores (Mann-Whitney, ties 1/2)."""
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    p, n = pos.shape[1], neg.shape[1]
    return (ranks[:, :p].sum(axis=1) - p * (p + 1) / 2.0) / (p * n)


def fpr_at_tpr_rows(pos: np.ndarray, neg: np.ndarray, tpr: float) -> np.ndarray:
    """Smallest FPR with TPR >= `tpr` in every row (`roc.fpr_at_tpr`'s rule: the threshold is the
    ceil(tpr * P)-th highest positive score, and every score >= it is called positive)."""
    k = math.ceil(round(tpr * pos.shape[1], 9))
    if k == 0:
        return np.zeros(pos.shape[0])
    tau = -np.partition(-pos, k - 1, axis=1)[:, k - 1]
    return (neg >= tau[:, None]).mean(axis=1)


def batch_metric(name: str) -> BatchMetric:
    """`auc` or `fpr@95tpr` as a function of (pos [R, P], neg [R, N]) -> [R]."""
    if name == "auc":
        return auc_rows
    if name.startswith("fpr@") and name.endswith("tpr"):
        tpr = int(name[4:-3]) / 100
        return lambda pos, neg: fpr_at_tpr_rows(pos, neg, tpr)
    raise ValueError(f"no batched form of the metric {name!r} (auc, fpr@NNtpr)")


def member_draws(rng: np.random.Generator, members: int, n: int) -> np.ndarray:
    """[n, M] member weights: counts of each member in a draw of M with replacement, / M."""
    picks = rng.integers(0, members, size=(n, members))
    counts = np.stack([(picks == m).sum(axis=1) for m in range(members)], axis=1)
    return counts / members


def ensemble_replicates(members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[n, N] ensemble scores of `members` [M, N] under member draws `weights` [n, M], with the
    small-M variance correction (see the module docstring). M = 1 keeps the one member."""
    m = members.shape[0]
    mean = members.mean(axis=0)
    if m == 1:
        return np.broadcast_to(mean, (weights.shape[0], mean.size))
    drawn = weights @ members
    return mean + math.sqrt(m / (m - 1)) * (drawn - mean)


def two_level_replicates(arms: Sequence[np.ndarray], labels: np.ndarray, n: int, seed: int = 0,
                         members: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per arm, the replicates' (positive scores [n, P], negative scores [n, N]).

    `arms`: each an [M, N] array of its members' scores on the same N test samples (same order);
    `members=False` resamples test samples only (the ensemble of all members every time).
    """
    y = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    out = []
    drawn = []
    for arm in arms:
        arm = np.asarray(arm, dtype=np.float64)
        if arm.ndim != 2 or arm.shape[1] != y.size:
            raise ValueError(f"an arm must be [members, {y.size}] scores, got {arm.shape}")
        weights = member_draws(rng, arm.shape[0], n) if members else np.full((n, arm.shape[0]),
                                                                              1 / arm.shape[0])
        drawn.append(ensemble_replicates(arm, weights) if members else np.broadcast_to(
            arm.mean(axis=0), (n, y.size)))
    draws = resample_indices(y, n, rng)  # after the member draws, from the same generator
    n_pos = int(y.sum())
    ip, ineg = draws[:, :n_pos], draws[:, n_pos:]
    rows = np.arange(n)[:, None]
    for scores in drawn:
        out.append((scores[rows, ip], scores[rows, ineg]))
    return out


def point(arm: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """The metric of the arm's ensemble (all members) on all test samples."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(arm, dtype=np.float64).mean(axis=0)
    return float(batch_metric(metric)(s[y][None], s[~y][None])[0])


def p_two_sided(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p of 'the statistic is 0': twice the smaller tail mass at 0, at most 1."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan")
    return float(min(1.0, 2 * min((r <= 0).mean(), (r >= 0).mean())))


def evidence(value: float, replicates: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """A statistic's value with its percentile interval and two-sided p of 0 over its bootstrap
    replicates (non-finite replicates, where a resample lacked a class, left out)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2]) if r.size else (np.nan, np.nan)
    return {"diff": float(value), "lo": float(lo), "hi": float(hi), "p": p_two_sided(r), "n": int(r.size)}


def compare(a: np.ndarray, b: np.ndarray, labels: np.ndarray, metric: str, n: int = 1000,
            seed: int = 0, level: float = 0.95, members: bool = True) -> dict[str, float]:
    """a - b on one metric: the difference of the two ensembles, its percentile interval and p
    over the two-level bootstrap (members x test samples; `members=False`: test samples only)."""
    fn = batch_metric(metric)
    (pa, na), (pb, nb) = two_level_replicates([a, b], labels, n, seed, members)
    return evidence(point(a, labels, metric) - point(b, labels, metric), fn(pa, na) - fn(pb, nb), level)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error <= alpha when adjusted p <= alpha).

    NaN p-values are left out of the family and stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out.tolist()
