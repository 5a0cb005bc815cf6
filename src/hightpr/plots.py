"""Figures: ROC curves of several runs on one axis with a zoom on high TPR (RankReg Fig. 3).

Drawn on a bare `matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display,
the process's matplotlib backend is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hightpr.metrics.roc import fpr_at_tpr, roc_auc, roc_points

FORMATS = (".png", ".pdf", ".svg")


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold from the highest down, starting at (0, 0)."""
    tp, fp, _ = roc_points(scores, labels)
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def plot_roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], out: Path | None = None,
             zoom_tpr: float | None = 0.9, title: str | None = None) -> Figure:
    """ROC curves (label, scores, labels) on one axis, AUC in the legend, an inset on TPR >= zoom_tpr.

    Saves to `out` (.png, .pdf or .svg) when given; returns the figure.
    """
    if not curves:
        raise ValueError("give at least one run to plot")
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise ValueError(f"{out}: the figure format is taken from the extension, one of {', '.join(FORMATS)}")
    if zoom_tpr is not None and not 0.0 < zoom_tpr < 1.0:
        raise ValueError(f"the zoom TPR must be in (0, 1), got {zoom_tpr} (write 0.9, not 90)")
    fig = Figure(figsize=(6.0, 5.5), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    inset = ax.inset_axes([0.42, 0.1, 0.54, 0.5]) if zoom_tpr else None
    low = 1.0
    for label, scores, labels in curves:
        fpr, tpr = roc_curve(scores, labels)
        line, = ax.plot(fpr, tpr, lw=1.4, label=f"{label} (AUC {roc_auc(scores, labels):.4f})")
        if inset is not None:
            inset.plot(fpr, tpr, lw=1.4, color=line.get_color())
            low = min(low, fpr_at_tpr(scores, labels, zoom_tpr))
    ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.005), xlabel="False positive rate", ylabel="True positive rate")
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 1.0), fontsize=7, frameon=False)
    if title:
        ax.set_title(title)
    if inset is not None:
        inset.set(xlim=(max(0.0, low - 0.05), 1.0), ylim=(zoom_tpr, 1.002))
        inset.set_title(f"TPR ≥ {zoom_tpr:g}", fontsize=7)
        inset.tick_params(labelsize=6)
        inset.grid(alpha=0.3)
        ax.indicate_inset_zoom(inset, edgecolor="black", alpha=0.5)
    fig.tight_layout()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, bbox_inches="tight")
    return fig
