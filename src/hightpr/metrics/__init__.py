"""Metrics of the papers (ROC-based; numpy arrays or tensors in, floats out)."""

from hightpr.metrics.delong import DeLongResult, delong_covariance, delong_test
from hightpr.metrics.multiclass import (
    MulticlassEvaluator,
    critical_threshold,
    error_at_tpr,
    multiclass_report,
)
from hightpr.metrics.neyman_pearson import np_min_positives, np_threshold, np_violation_probability
from hightpr.metrics.roc import (
    binary_report,
    fpr_at_fn,
    fpr_at_tpr,
    partial_auc,
    roc_auc,
    roc_points,
)
from hightpr.metrics.thresholds import RULES, ThresholdRule, check_rule, rule_threshold

__all__ = [
    "DeLongResult", "delong_covariance", "delong_test",
    "MulticlassEvaluator", "critical_threshold", "error_at_tpr", "multiclass_report",
    "np_min_positives", "np_threshold", "np_violation_probability",
    "RULES", "ThresholdRule", "check_rule", "rule_threshold",
    "binary_report", "fpr_at_fn", "fpr_at_tpr", "partial_auc", "roc_auc", "roc_points",
]
