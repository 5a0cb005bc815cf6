"""Multi-class metrics of ALM (Tables 4, 7, 8, 9): error on the non-critical classes at a TPR.

Pure functions on numpy: `logits` [N, C] (any monotone per-class score: logits or
probabilities), `labels` [N] integer classes, `critical` one class index or several.

Error@β TPR (ALM §5, Table 4): pick the threshold on the critical class's logit that reaches
TPR >= β on that class (the highest such threshold, as `fpr_at_tpr` does); every sample whose
critical logit is >= the threshold is assigned the critical class, every other sample the
arg-max of the remaining logits; report the error rate over the non-critical samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hightpr.metrics.roc import roc_auc
from hightpr.task import Task


def _as_arrays(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {z.shape}")
    if z.shape[0] != y.size:
        raise ValueError(f"logits ({z.shape[0]} rows) and labels ({y.size}) must have the same length")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or inf: the model diverged or the input is corrupt")
    if y.size and (not np.all(y == np.round(y)) or y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must be integer classes in [0, {z.shape[1] - 1}]")
    return z, y.astype(np.int64)


def _critical_list(critical: int | Sequence[int], num_classes: int) -> list[int]:
    classes = [int(critical)] if np.ndim(critical) == 0 else [int(c) for c in critical]
    if not classes:
        raise ValueError("give at least one critical class")
    if len(set(classes)) != len(classes):
        raise ValueError(f"critical classes must be distinct, got {classes}")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"critical class {bad[0]} is not in [0, {num_classes - 1}]")
    if len(classes) >= num_classes:
        raise ValueError("at least one class must be non-critical")
    return classes


def accuracy(logits, labels) -> float:
    """Overall arg-max accuracy."""
    z, y = _as_arrays(logits, labels)
    return float((z.argmax(1) == y).mean())


def class_accuracy(logits, labels, classes: Sequence[int]) -> float:
    """Arg-max accuracy over the samples whose label is in `classes` (ALM Table 9 columns)."""
    z, y = _as_arrays(logits, labels)
    mask = np.isin(y, list(classes))
    if not mask.any():
        raise ValueError(f"no sample of classes {list(classes)}")
    return float((z.argmax(1)[mask] == y[mask]).mean())


def critical_threshold(logits, labels, critical: int, tpr: float) -> float:
    """Highest threshold t on the critical logit with TPR >= `tpr` on the critical class.

    That is the k-th largest critical logit among the critical samples, k = ceil(tpr * P).
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr} (write 0.9, not 90)")
    z, y = _as_arrays(logits, labels)
    (c,) = _critical_list(critical, z.shape[1])
    pos = np.sort(z[y == c, c])[::-1]
    if pos.size == 0:
        raise ValueError(f"no sample of the critical class {c}: cannot set a TPR threshold")
    k = math.ceil(round(tpr * pos.size, 9))
    return float(pos[k - 1])


def predict_with_threshold(logits, critical: int, threshold: float) -> np.ndarray:
    """Critical class where its logit >= `threshold`, else the arg-max of the other logits."""
    z = np.asarray(logits, dtype=np.float64)
    others = z.copy()
    others[:, critical] = -np.inf
    pred = others.argmax(1)
    pred[z[:, critical] >= threshold] = critical
    return pred


def error_at_tpr(logits, labels, critical: int, tpr: float,
                 non_critical: Sequence[int] | None = None) -> float:
    """Error rate over the non-critical samples when the critical class runs at TPR `tpr`.

    `non_critical`: the classes the error is measured on (default: every class but `critical`;
    with several critical classes pass the non-critical set so the others are left out).
    """
    z, y = _as_arrays(logits, labels)
    (c,) = _critical_list(critical, z.shape[1])
    pred = predict_with_threshold(z, c, critical_threshold(z, y, c, tpr))
    others = [k for k in range(z.shape[1]) if k != c] if non_critical is None else list(non_critical)
    mask = np.isin(y, others)
    if not mask.any():
        raise ValueError("no non-critical sample to measure the error on")
    return float((pred[mask] != y[mask]).mean())


def multiclass_report(logits, labels, critical_classes: int | Sequence[int],
                      tprs: Sequence[float] = (0.8, 0.9)) -> dict[str, float]:
    """ALM's multi-class metrics at once.

    One critical class c: `accuracy`, `acc_other` (non-critical samples), `acc_critical`,
    `auc_critical` (c's logit, c vs rest), `error@80tpr`, `error@90tpr`, ...
    Several critical classes: the same per class with a `_c{c}` suffix (`acc_c3`, `auc_c3`,
    `error@80tpr_c3`); the error is always measured on the non-critical samples.
    """
    z, y = _as_arrays(logits, labels)
    crit = _critical_list(critical_classes, z.shape[1])
    others = [k for k in range(z.shape[1]) if k not in crit]
    out: dict[str, float] = {"accuracy": accuracy(z, y), "acc_other": class_accuracy(z, y, others)}
    for c in crit:
        suffix = "_critical" if len(crit) == 1 else f"_c{c}"
        out[f"acc{suffix}"] = class_accuracy(z, y, [c])
        out[f"auc{suffix}"] = roc_auc(z[:, c], y == c)
        for t in tprs:
            key = f"error@{round(t * 100):d}tpr" + ("" if len(crit) == 1 else f"_c{c}")
            out[key] = error_at_tpr(z, y, c, t, non_critical=others)
    return out


class MulticlassEvaluator:
    """Evaluator for a multi-class task with critical classes (see `hightpr.metrics.evaluators`).

    The ranked score is the (first) critical class's logit; the best checkpoint is the one with
    the best validation accuracy (ALM §5.2: multi-class models are selected on accuracy).
    """

    monitor = "accuracy"

    def __init__(self, critical_classes: int | Sequence[int], tprs: Sequence[float] = (0.8, 0.9),
                 task: Task | None = None) -> None:
        self.critical = [int(critical_classes)] if np.ndim(critical_classes) == 0 else \
            [int(c) for c in critical_classes]
        self.tprs = tuple(tprs)
        self.task = task  # None: built on first use, when the number of classes is known

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The task's one scoring rule (`Task.score`): the first critical class's logit."""
        task = self.task or Task(np.asarray(logits).shape[1], tuple(self.critical))
        return task.scores(logits)

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return multiclass_report(logits, labels, self.critical, self.tprs)
