"""Evaluators: turn one evaluation pass (logits, labels) into the task's report.

The LightningModule holds one evaluator and never branches on the task; `monitor` names the
report key that selects the best checkpoint and drives schedules (binary: validation AUC;
multi-class: validation accuracy, ALM §5.2). `evaluator_for` builds a task's evaluator.

The evaluators' monitors are also the one selection rule for everything chosen on validation:
the best epoch, a grid's configuration (`hightpr-select`), a table's grid step. `monitor_value`
reads the monitor of a report, `selection_key` / `improves` order candidates: the higher
monitor wins, an exact tie goes to the lower validation loss (`TIE_BREAK`), then to the earlier
candidate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np

from hightpr.metrics.multiclass import MulticlassEvaluator
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


MONITORS: tuple[str, ...] = (BinaryEvaluator.monitor, MulticlassEvaluator.monitor)  # ("auc", "accuracy")
TIE_BREAK = "loss"  # the report key of the validation loss (the base loss) that breaks a tie of monitors


def evaluator_for(task: Task, **settings) -> Evaluator:
    """The task's evaluator: the binary ROC report (with the `evaluation` settings), or ALM's multi-class
    report on the task's critical classes (which takes no settings)."""
    if task.binary:
        return BinaryEvaluator(task=task, **settings)
    return MulticlassEvaluator(task.critical_classes, task=task)


def monitor_name(keys: Iterable[str], prefix: str = "") -> str | None:
    """The first of `MONITORS` among `keys` (each written with `prefix`, e.g. `val_auc`); None if none."""
    keys = set(keys)
    return next((name for name in MONITORS if f"{prefix}{name}" in keys), None)


def monitor_value(report: Mapping | None, prefix: str = "") -> tuple[str, float] | None:
    """(monitor, value) of a report (`metrics["val"]`; `prefix="val_"` for flat rows such as the
    members' mean): validation AUC, else accuracy. None if the report has neither."""
    report = report or {}
    name = monitor_name(report, prefix)
    return None if name is None else (name, float(report[f"{prefix}{name}"]))


def _finite_or(value: float | None, fallback: float) -> float:
    """`value` as a float, `fallback` where it is missing or NaN."""
    return fallback if value is None or math.isnan(value) else float(value)


def selection_key(value: float | None, loss: float | None = None) -> tuple[float, float]:
    """Sort key of a candidate, best first: the higher monitor, then the lower validation loss.

    A missing or NaN monitor ranks after every number, a missing or NaN loss after every loss;
    a stable sort (or `min`) keeps the earlier of equal candidates.
    """
    return -_finite_or(value, -math.inf), _finite_or(loss, math.inf)


def improves(value: float, loss: float | None, best_value: float, best_loss: float | None) -> bool:
    """Whether a new candidate beats the kept best (epoch after epoch): a higher monitor, or the same
    monitor and a lower validation loss. A NaN monitor never improves; a NaN or missing loss never
    wins a tie, so the earlier candidate stays (Lightning's `ModelCheckpoint` with `BestEpoch`)."""
    if value == best_value:
        return _finite_or(loss, math.inf) < _finite_or(best_loss, math.inf)
    return value > best_value
