"""The site's figures, as SVG with alt text: ROC curves from saved test logits (zoom on TPR >= 0.9),
FPR@TPR bars ours against the paper's with 95% intervals (from the rendered rows), and FPR
against label noise (RankReg Fig. 4). Drawn on bare matplotlib Figures (no pyplot state).
"""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hightpr.metrics import fpr_at_tpr, roc_auc
from hightpr.plots import roc_curve
from hightpr.site.model import Section
from hightpr.tables.claims import metric_name
from hightpr.tables.paper import as_float

SVG_RC = {"svg.hashsalt": "hightpr-site", "svg.fonttype": "none", "font.size": 8}


def save_svg(fig: Figure, path: Path) -> None:
    """The same figure gives the same bytes (no date, fixed ids); text stays text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(SVG_RC):
        fig.savefig(path, format="svg", metadata={"Date": None})


def cached(cache: Path, inputs: tuple, path: Path, draw: Callable[[Path], str | None]) -> str | None:
    """Draw `path` (returning its alt text), or copy it from `cache` when the same inputs and the
    same drawing code made it before: the figures of unchanged runs are not drawn again."""
    h = hashlib.sha1(repr(inputs).encode())
    h.update(Path(__file__).read_bytes())
    entry = Path(cache) / h.hexdigest()[:20]
    svg, alt_file = entry.with_suffix(".svg"), entry.with_suffix(".txt")
    if alt_file.is_file():
        alt = alt_file.read_text()
        if not alt:
            return None
        if svg.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(svg, path)
            return alt
    alt = draw(path)
    entry.parent.mkdir(parents=True, exist_ok=True)
    if alt:
        shutil.copyfile(path, svg)
    alt_file.write_text(alt or "")
    return alt


def corners(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC staircase without its collinear points: the same curve, far fewer SVG vertices."""
    if fpr.size <= 2:
        return fpr, tpr
    d1 = np.diff(fpr)[:-1] * np.diff(tpr)[1:] - np.diff(tpr)[:-1] * np.diff(fpr)[1:]
    keep = np.r_[True, d1 != 0, True]
    return fpr[keep], tpr[keep]


def roc_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path, title: str,
               zoom_tpr: float = 0.9) -> str:
    """ROC curves of ensembles (label, test scores, labels) with an inset magnifying TPR >= zoom_tpr
    (as `hightpr-plot roc` draws them); returns the alt text."""
    fig = Figure(figsize=(6.0, 5.6 + 0.16 * len(curves)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    inset = ax.inset_axes([0.45, 0.08, 0.52, 0.52])
    low = 1.0
    alt = []
    for label, scores, labels in curves:
        fpr, tpr = corners(*roc_curve(scores, labels))
        auc, at95 = roc_auc(scores, labels), fpr_at_tpr(scores, labels, 0.95)
        line, = ax.plot(fpr, tpr, lw=1.3, label=f"{label} (AUC {auc:.4f})")
        inset.plot(fpr, tpr, lw=1.3, color=line.get_color())
        low = min(low, fpr_at_tpr(scores, labels, zoom_tpr))
        alt.append(f"{label}: AUC {auc:.3f}, FPR at 95% TPR {at95:.3f}")
    ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="grey")
    ax.set(xlim=(0, 1), ylim=(0, 1.005), xlabel="False positive rate", ylabel="True positive rate")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=7, frameon=False, ncols=1)
    ax.set_title(title, fontsize=9)
    x0 = max(0.0, low - 0.05)
    inset.set(xlim=(x0, 1.0), ylim=(zoom_tpr, 1.002))
    inset.set_title(f"magnified: TPR ≥ {zoom_tpr:g}", fontsize=7)
    inset.tick_params(labelsize=6)
    inset.grid(alpha=0.3)
    ax.add_patch(Rectangle((x0, zoom_tpr), 1.0 - x0, 1.002 - zoom_tpr, fill=False, ls="--", lw=0.8,
                           edgecolor="black", alpha=0.6))
    fig.tight_layout(pad=0.6)
    save_svg(fig, path)
    return (f"ROC curves (true against false positive rate) of {len(curves)} ensembles on the test set, "
            f"with an inset magnifying TPR ≥ {zoom_tpr:g}. " + "; ".join(alt) + ".")


def _num(values: dict, name: str) -> float | None:
    return as_float(values.get(name, ""))


def bars_figure(section: Section, path: Path, title: str) -> str | None:
    """FPR@TPR of every row with a number of ours: ours (95% interval) beside the paper's; alt text.
    None when the section has no FPR@TPR number of ours."""
    metrics = [g.metric for g in section.groups if g.metric.startswith("fpr@")]
    rows = [r for r in section.rows if any(_num(r.values.get(m, {}), "ours") is not None for m in metrics)]
    if not rows or not metrics:
        return None
    fig = Figure(figsize=(min(2.6 + 0.55 * len(rows), 9.5) * 1.0, 2.3 * len(metrics) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    x = np.arange(len(rows))
    alt = []
    for ax, m in zip(axes, metrics, strict=True):
        ours = [_num(r.values.get(m, {}), "ours") for r in rows]
        paper = [_num(r.values.get(m, {}), "paper") for r in rows]
        lo = [_num(r.values.get(m, {}), "ours_ci_low") for r in rows]
        hi = [_num(r.values.get(m, {}), "ours_ci_high") for r in rows]
        o = np.array([np.nan if v is None else v for v in ours])
        err = np.array([[0 if (v is None or a is None) else v - a for v, a in zip(ours, lo, strict=True)],
                        [0 if (v is None or b is None) else b - v for v, b in zip(ours, hi, strict=True)]])
        ax.bar(x - 0.2, o, 0.4, yerr=err, capsize=2, color="#3b6ea8", label="ours (95% interval)")
        p = np.array([np.nan if v is None else v for v in paper])
        ax.bar(x + 0.2, p, 0.4, color="#c8c8c8", edgecolor="#666", label="paper")
        ax.set_ylabel(f"{metric_name(m)} (%)")
        ax.grid(axis="y", alpha=0.3)
        names = [textwrap.fill(r.label.replace(" †", "†"), 16) for r in rows]
        ax.set_xticks(x, names if ax is axes[-1] else [""] * len(rows), fontsize=7)
        for r, v, a, b, q in zip(rows, ours, lo, hi, paper, strict=True):
            if v is None:
                continue
            ci = f" [{a:g}, {b:g}]" if a is not None and b is not None else ""
            paper_text = f", paper {q:g}" if q is not None else ""
            alt.append(f"{r.label} {metric_name(m)}: ours {v:g}{ci}{paper_text}")
    axes[0].legend(fontsize=7, frameon=False, ncols=2, loc="lower left", bbox_to_anchor=(0, 1.0))
    axes[0].set_title(title, fontsize=9, pad=18)
    fig.tight_layout(pad=0.6)
    save_svg(fig, path)
    return ("Bar chart, lower is better: FPR at high TPR, in percent, ours with 95% intervals over members "
            "and test samples beside the paper's. " + "; ".join(alt) + ".")


def noise_figure(section: Section, path: Path, title: str) -> str | None:
    """Metric against label noise η (rows with a `label_noise=` variant), one line per method."""
    def eta(row) -> float | None:
        variant = row.keys.get("variant", "")
        if not variant:
            return 0.0
        return as_float(variant.removeprefix("label_noise=")) if variant.startswith("label_noise=") else None

    metrics = [g.metric for g in section.groups]
    methods: dict[str, dict] = {}
    for r in section.rows:
        e = eta(r)
        if e is None:
            continue
        name = f"{r.keys.get('base_loss', '')}+{r.keys.get('reg', '')}"
        label = r.label.split(" [")[0]
        methods.setdefault(name, {"label": label, "points": []})["points"].append((e, r))
    if not metrics or not any(_num(r.values.get(m, {}), "ours") is not None
                              for v in methods.values() for _, r in v["points"] for m in metrics):
        return None
    fig = Figure(figsize=(3.4 * len(metrics), 3.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    alt = []
    for ax, m in zip(axes, metrics, strict=True):
        for method in methods.values():
            pts = sorted((e, v) for e, r in method["points"]
                         if (v := _num(r.values.get(m, {}), "ours")) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.3, label=method["label"])
                points = ", ".join(f"η={e:g}: {v:g}" for e, v in pts)
                alt.append(f"{method['label']} {metric_name(m)}: {points}")
        ax.set(xlabel="label noise η", ylabel=f"{metric_name(m)} (%)", xlim=(-0.02, 0.52))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.6)
    save_svg(fig, path)
    return "Line chart of our numbers against label noise η. " + "; ".join(alt) + "."
