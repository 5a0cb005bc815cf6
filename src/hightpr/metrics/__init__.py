"""Metrics of the papers (ROC-based; numpy arrays or tensors in, floats out)."""

from hightpr.metrics.roc import (
    binary_report,
    fpr_at_fn,
    fpr_at_tpr,
    partial_auc,
    roc_auc,
    roc_points,
)

__all__ = ["binary_report", "fpr_at_fn", "fpr_at_tpr", "partial_auc", "roc_auc", "roc_points"]
