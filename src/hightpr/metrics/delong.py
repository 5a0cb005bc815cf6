"""DeLong test for two correlated AUCs (two models scored on one test set; ALM appendix F).

Fast DeLong (Sun & Xu, IEEE SPL 2014): the structural components of DeLong et al. (1988) come
from three mid-rankings (positives alone, negatives alone, all together), O(n log n) per model
instead of the O(m n) pairwise comparisons. Ties count 1/2, as in `roc_auc`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.stats import norm, rankdata

from hightpr.metrics.roc import _as_numpy


class DeLongResult(NamedTuple):
    auc_a: float
    auc_b: float
    z: float
    p: float


def structural_components(scores, labels) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, V10 per positive, V01 per negative) by mid-ranks.

    V10_i = P(score_i > negative) + 1/2 P(tie) for positive i; V01_j = P(positive > score_j) + 1/2
    P(tie) for negative j; AUC = mean(V10) = mean(V01).
    """
    s, y = _as_numpy(scores, labels)
    pos, neg = s[y], s[~y]
    m, n = pos.size, neg.size
    t_all = rankdata(np.concatenate([pos, neg]))
    t_pos, t_neg = rankdata(pos), rankdata(neg)
    v10 = (t_all[:m] - t_pos) / n
    v01 = 1.0 - (t_all[m:] - t_neg) / m
    auc = float((t_all[:m].sum() - m * (m + 1) / 2.0) / (m * n))
    return auc, v10, v01


def delong_covariance(scores: list, labels) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several score vectors on one test set and DeLong's covariance matrix of them."""
    parts = [structural_components(s, labels) for s in scores]
    aucs = np.array([p[0] for p in parts])
    v10 = np.stack([p[1] for p in parts])
    v01 = np.stack([p[2] for p in parts])
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"the DeLong test needs at least 2 positives and 2 negatives (got {m} and {n})")
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(scores_a, scores_b, labels) -> DeLongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b) for two models scored on the same samples.

    Returns (auc_a, auc_b, z, p). Identical rankings give z = 0 and p = 1; a difference with
    zero variance (e.g. a perfect model against a constant one) gives z = +-inf and p = 0.
    """
    _as_numpy(scores_a, labels)
    if np.size(scores_a) != np.size(scores_b):
        raise ValueError(f"the two score vectors differ in length ({np.size(scores_a)} vs "
                         f"{np.size(scores_b)}): both models must be scored on the same test set")
    aucs, cov = delong_covariance([scores_a, scores_b], labels)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15 * max(1.0, abs(cov[0, 0]) + abs(cov[1, 1])):
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p = 1.0 if z == 0.0 else float(2.0 * norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), float(z), p)
