"""RankReg's figures from saved runs: Fig. 3 (ROC curves) and Fig. 4 (FPR against label noise).

`results/tables/<scale>/rankreg-f3.{png,md,csv,json}` and `rankreg-f4.{png,md,csv,json}`. The paper's
figures are plots, not numbers, so there is no paper column; the markdown lists our points with
their 95% intervals (members and test samples) and checks the figure's claim.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hightpr.plots import plot_roc
from hightpr.tables import claims as claims_mod
from hightpr.tables.cells import Cell
from hightpr.tables.output import TableOutput
from hightpr.tables.render import CSV_COLUMNS, TableView, not_run_reasons, table_data, tables_dir
from hightpr.tables.runner import Context
from hightpr.tables.specs import TableSpec

ROC_METRICS = ("auc", "fpr@98tpr", "fpr@95tpr", "fpr@92tpr")
PNG_META = {"Software": None}   # no version string: the same runs give the same bytes


def _eta(variant: str) -> float:
    return float(variant.removeprefix("label_noise=")) if variant else 0.0


def _rows(view: TableView, metrics) -> list[dict]:
    out = []
    for cell in view.visible:
        o = view.outcome(cell)
        ci = view_ci(view, cell, metrics)
        for m in metrics:
            v = view.ours(cell, m)
            lo_hi = ci.get(m)
            out.append({"dataset": cell.dataset, "classes": cell.classes, "ratio": cell.ratio,
                        "base_loss": cell.base_loss, "reg": cell.reg, "variant": cell.variant, "metric": m,
                        "paper": "", "ours": "" if v is None else f"{v:.2f}",
                        "ours_ci_low": f"{lo_hi[0]:.2f}" if lo_hi else "",
                        "ours_ci_high": f"{lo_hi[1]:.2f}" if lo_hi else "",
                        "members": str(o.members) if o else "", "scale": view.ctx.scale.name,
                        "paper_note": "", "ours_note": "",
                        "ours_only": "", "selected": view.selected(cell), "run": o.key if o else "",
                        "delta": "", "mark": ""})
    return out


def view_ci(view: TableView, cell, metrics) -> dict:
    from hightpr.tables.results import bootstrap

    o = view.outcome(cell)
    return bootstrap(o, tuple(metrics), view.n_boot) if o else {}


def _header(view: TableView) -> list[str]:
    spec, scale = view.spec, view.ctx.scale
    plans = list(view.plans.values())
    lines = [f"# {spec.title}", "",
             f"**Scale: {scale.name}** ({scale.description}). Budget: "
             f"{scale.budget_of(p.family for p in view.plans.values())}.", "",
             "The paper's figure is a plot (no printed numbers): ours only, in percent, 95% intervals "
             f"over members and test samples ({view.n_boot} test-sample replicates).", "",
             f"Data: {'; '.join(dict.fromkeys(p.data_note for p in plans))}. Hyper-parameters: "
             f"{', '.join(dict.fromkeys(p.source for p in plans if p.source)) or 'none published'}"
             + "".join(f"; grid {g}" for g in dict.fromkeys(s.preset for p in plans for s in p.stages)) + "."]
    reasons = not_run_reasons(view, plans)
    lines += [f"**Not run: {r}.**" for r in reasons]
    return [*lines, ""]


def _png(fig: Figure, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata=PNG_META)


def render_figure(spec: TableSpec, ctx: Context, write: bool = True) -> TableOutput:
    """A figure's PNG, markdown (our points, the claim), tidy CSV and JSON under results/tables/<scale>/."""
    view = TableView(spec, ctx)
    metrics = ROC_METRICS if spec.kind == "roc" else spec.metrics
    view.columns = list(metrics)
    rows = _rows(view, metrics)
    csv = pd.DataFrame(rows, columns=CSV_COLUMNS)
    claims = claims_mod.evaluate(view) if spec.claims else None
    header = _header(view)
    lines = header + [f"![{spec.title}]({spec.name}.png)", ""]
    head = ["run", *(claims_mod.metric_name(m) for m in metrics), "selected"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for cell in view.visible:
        vals = []
        ci = view_ci(view, cell, metrics)
        for m in metrics:
            v = view.ours(cell, m)
            interval = f" [{ci[m][0]:.1f}, {ci[m][1]:.1f}]" if m in ci else ""
            vals.append("" if v is None else f"{v:.1f}{interval}")
        label = cell.label
        if spec.kind == "noise":
            label = Cell(cell.dataset, cell.classes, cell.ratio, cell.base_loss, cell.reg).label \
                + f", η = {_eta(cell.variant):g}"
        lines.append("| " + " | ".join([label, *vals, view.selected(cell)]) + " |")
    if claims is not None:
        lines += ["", "## Claims", "", *claims_mod.markdown(claims)]
    md = "\n".join(lines).rstrip() + "\n"
    result = TableOutput(md, csv, table_data(view, header, rows, claims))
    if write:
        out = tables_dir(ctx)
        out.mkdir(parents=True, exist_ok=True)
        fig = _roc(view) if spec.kind == "roc" else _noise(view, metrics)
        if fig is not None:
            _png(fig, out / f"{spec.name}.png")
        result.write(out, spec.name)
    return result


def _roc(view: TableView) -> Figure | None:
    curves = []
    for cell in view.visible:
        o = view.outcome(cell)
        if o is not None:
            curves.append((cell.label, o.test["scores"], o.test["labels"].astype(bool)))
    if not curves:
        return None
    return plot_roc(curves, None, zoom_tpr=0.9, title=f"{view.spec.name} [{view.ctx.scale.name}]")


def _noise(view: TableView, metrics) -> Figure | None:
    fig = Figure(figsize=(4.0 * len(metrics), 3.4), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    drawn = False
    methods = list(dict.fromkeys((c.base_loss, c.reg) for c in view.visible))
    for ax, m in zip(axes, metrics, strict=True):
        for loss, reg in methods:
            pts = sorted((_eta(c.variant), v) for c in view.visible if (c.base_loss, c.reg) == (loss, reg)
                         and (v := view.ours(c, m)) is not None)
            if pts:
                drawn = True
                label = Cell(view.visible[0].dataset, "", "", loss, reg).label
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1.4, label=label)
        ax.set(xlabel="label noise η", ylabel=f"{claims_mod.metric_name(m)} (%)", xlim=(-0.02, 0.52))
        ax.grid(alpha=0.3)
    if not drawn:
        return None
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{view.spec.name} [{view.ctx.scale.name}]", fontsize=9)
    fig.tight_layout()
    return fig
