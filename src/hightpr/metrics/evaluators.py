"""Evaluators: turn one evaluation pass (logits, labels) into the task's report.

The LightningModule holds one evaluator and never branches on the task; `monitor` names the
report key that selects the best checkpoint and drives schedules (binary: validation AUC).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hightpr.metrics.operating_point import OPERATING_TPRS, operating_points
from hightpr.metrics.roc import binary_report

EVAL_TPRS = (0.90, 0.92, 0.95, 0.98, 1.00)
EVAL_FNS = (0, 1, 2, 5)  # FPR at k false negatives (ALM Tables 3, 15: MRI-style small test sets)


class Evaluator(Protocol):
    monitor: str

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The ranked scalar per sample (what `logits_*.npz` stores as `scores`)."""

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The metrics of one split."""


class BinaryEvaluator:
    """AUC and FPR at the papers' TPRs and at k false negatives on the binary score."""

    monitor = "auc"

    def __init__(self, tprs: tuple[float, ...] = EVAL_TPRS, fns: tuple[int, ...] = EVAL_FNS,
                 operating_tprs: tuple[float, ...] = OPERATING_TPRS) -> None:
        self.tprs, self.fns, self.operating_tprs = tuple(tprs), tuple(fns), tuple(operating_tprs)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits)
        if logits.ndim == 1 or logits.shape[1] == 1:
            return logits.reshape(-1)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        raise ValueError(f"binary evaluation needs 1 or 2 logits, got {logits.shape[1]}")

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return binary_report(self.scores(logits), labels, self.tprs, self.fns)

    def operating_points(self, val: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict:
        """Threshold reaching each target TPR on validation, and the TPR/FPR it gives on test."""
        return operating_points(val["scores"], val["labels"], test["scores"], test["labels"],
                                self.operating_tprs)
