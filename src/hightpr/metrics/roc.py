"""Binary ROC metrics of the papers: AUC, FPR at a TPR, FPR at k false negatives.

Every function takes numpy arrays or tensors (scores: higher = more positive; labels: 0/1) and
returns a float. Ties are exact: a threshold t predicts positive for every score >= t, so tied
samples always move together, and AUC counts a tied positive-negative pair as 1/2.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

ArrayLike = "np.ndarray | torch.Tensor | list[float]"


def validated_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Scores and binary labels (arrays, lists or tensors) as float64 and bool, checked."""
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) must have the same length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf: the model diverged or the input is corrupt")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be binary (0 = negative, 1 = positive)")
    return s, y.astype(bool)


def _as_numpy(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert inputs to float64 scores and bool labels (both classes present)."""
    s, y = validated_arrays(scores, labels)
    if y.all() or not y.any():
        raise ValueError(
            "ROC metrics need at least one positive and one negative sample "
            f"(got {int(y.sum())} positives, {int((~y).sum())} negatives)"
        )
    return s, y


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic, ties counted 1/2."""
    s, y = _as_numpy(scores, labels)
    ranks = rankdata(s)  # average ranks: a tie contributes 1/2 per pair
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))

def roc_points(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, thresholds) at every distinct threshold, from the highest score down."""
    s, y = _as_numpy(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    return tp[last_of_tie], fp[last_of_tie], s_sorted[last_of_tie]

def _min_fpr_with_tp(scores, labels, min_tp: int) -> float:
    tp, fp, _ = roc_points(scores, labels)
    n_pos, n_neg = tp[-1], fp[-1]
    if min_tp > n_pos:
        raise ValueError(f"cannot reach {min_tp} true positives with {n_pos} positives")
    reachable = tp >= min_tp
    return float(fp[reachable].min() / n_neg)

def fpr_at_tpr(scores, labels, tpr: float) -> float:
    """Smallest FPR over all thresholds whose TPR >= `tpr` (in [0, 1])."""
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be in [0, 1], got {tpr} (write 0.95, not 95)")
    _, y = _as_numpy(scores, labels)
    n_pos = int(y.sum())
    # Integer target: TPR >= tpr  <=>  tp >= ceil(tpr * P), guarded against 0.95 * 100 = 95.0000001.
    min_tp = math.ceil(round(tpr * n_pos, 9))
    return _min_fpr_with_tp(scores, labels, min_tp)

def fpr_at_fn(scores, labels, k: int) -> float:
    """Smallest FPR over thresholds that miss at most `k` positives (TPR >= (P - k) / P)."""
    if k < 0:
        raise ValueError(f"k (false negatives) must be >= 0, got {k}")
    _, y = _as_numpy(scores, labels)
    return _min_fpr_with_tp(scores, labels, max(int(y.sum()) - int(k), 0))

def binary_report(
    scores, labels, tprs=(0.90, 0.92, 0.95, 0.98, 1.00), fns=(), pauc_min_tprs=(0.90,)
) -> dict:
    """All the papers' binary metrics at once, keyed like the paper tables (`fpr@95tpr`),
    plus the partial AUC over TPR >= t (`pauc@90tpr`)."""
    s, y = _as_numpy(scores, labels)
    out = {"auc": roc_auc(s, y), "n_pos": int(y.sum()), "n_neg": int((~y).sum())}
    for t in tprs:
        out[f"fpr@{round(t * 100):d}tpr"] = fpr_at_tpr(s, y, t)
    for k in fns:
        out[f"fpr@{k}fn"] = fpr_at_fn(s, y, k)
    for t in pauc_min_tprs:
        out[f"pauc@{round(t * 100):d}tpr"] = partial_auc(s, y, min_tpr=t)
    return out


def partial_auc(scores, labels, min_tpr: float = 0.0, max_fpr: float = 1.0) -> float:
    """Normalised area under the ROC curve inside TPR >= `min_tpr` and FPR <= `max_fpr`.

    The area between the curve and the line TPR = min_tpr for FPR in [0, max_fpr], divided by
    its maximum (1 - min_tpr) * max_fpr, so a perfect ranking scores 1. min_tpr=0 and
    max_fpr=1 give the AUC; min_tpr=0.9 measures the high-TPR region this project targets.
    The curve is exact with ties (a tie block is a straight segment).
    """
    if not (0.0 <= min_tpr < 1.0 and 0.0 < max_fpr <= 1.0):
        raise ValueError(f"need 0 <= min_tpr < 1 and 0 < max_fpr <= 1, got {min_tpr}, {max_fpr}")
    tp, fp, _ = roc_points(scores, labels)
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    f0, f1, t0, t1 = fpr[:-1], fpr[1:], tpr[:-1], tpr[1:]
    keep = (f1 > f0) & (f0 < max_fpr)
    f0, f1, t0, t1 = f0[keep], f1[keep], t0[keep], t1[keep]
    b = np.minimum(f1, max_fpr)  # clip each segment at max_fpr, interpolating its TPR there
    tb = t0 + (t1 - t0) * (b - f0) / (f1 - f0)
    g0, g1 = t0 - min_tpr, tb - min_tpr  # height above the min_tpr line at both ends
    width = b - f0
    both = (g0 >= 0) & (g1 >= 0)
    cross = (g0 < 0) & (g1 > 0)
    area = np.where(both, width * (g0 + g1) / 2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        area = area + np.where(cross, width * g1 / (g1 - g0) * g1 / 2, 0.0)
    return float(area.sum() / ((1.0 - min_tpr) * max_fpr))
