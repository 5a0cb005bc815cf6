"""Evaluators: turn one evaluation pass (logits, labels) into the task's report.

The LightningModule holds one evaluator and never branches on the task; `monitor` names the
report key that selects the best checkpoint and drives schedules (binary: validation AUC).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hightpr.metrics.roc import binary_report

EVAL_TPRS = (0.90, 0.92, 0.95, 0.98, 1.00)


class Evaluator(Protocol):
    monitor: str

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The ranked scalar per sample (what `logits_*.npz` stores as `scores`)."""

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The metrics of one split."""


class BinaryEvaluator:
    """AUC and FPR at the papers' TPRs (and optionally at k false negatives) on the binary score."""

    monitor = "auc"

    def __init__(self, tprs: tuple[float, ...] = EVAL_TPRS, fns: tuple[int, ...] = ()) -> None:
        self.tprs, self.fns = tuple(tprs), tuple(fns)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits)
        if logits.ndim == 1 or logits.shape[1] == 1:
            return logits.reshape(-1)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        raise ValueError(f"binary evaluation needs 1 or 2 logits, got {logits.shape[1]}")

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return binary_report(self.scores(logits), labels, self.tprs, self.fns)
