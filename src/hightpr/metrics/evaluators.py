"""Evaluators: turn one evaluation pass (logits, labels) into the task's report.

The LightningModule holds one evaluator and never branches on the task; `monitor` names the
report key that selects the best checkpoint and drives schedules (binary: validation AUC).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hightpr.metrics.operating_point import OPERATING_TPRS, operating_points
from hightpr.metrics.roc import binary_report
from hightpr.metrics.thresholds import DEFAULT_RULE, check_rule
from hightpr.task import Task

EVAL_TPRS = (0.90, 0.92, 0.95, 0.96, 0.98, 0.99, 1.00)  # ALM Table 6 adds 96 and 99
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
                 operating_tprs: tuple[float, ...] = OPERATING_TPRS, task: Task | None = None,
                 delta: float = 0.05, threshold_rule: str = DEFAULT_RULE) -> None:
        self.tprs, self.fns, self.operating_tprs = tuple(tprs), tuple(fns), tuple(operating_tprs)
        self.task = task or Task()
        self.delta = float(delta)  # P(TPR < target) allowed at the guaranteed (np_*, ltt_*) operating points
        self.threshold_rule = check_rule(threshold_rule).name  # the deployed rule (np, ltt, crc, quantile)

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """The task's one scoring rule (`Task.score`) on numpy logits."""
        return self.task.scores(logits)

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return binary_report(self.scores(logits), labels, self.tprs, self.fns)

    def operating_points(self, val: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict:
        """Validation-quantile and the rule's thresholds per target TPR, and the TPR/FPR they give on test."""
        return operating_points(val["scores"], val["labels"], test["scores"], test["labels"],
                                self.operating_tprs, self.delta, self.threshold_rule)
