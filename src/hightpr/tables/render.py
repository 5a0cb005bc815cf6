"""Render a table from saved runs beside the paper's: `results/tables/<scale>/<name>.{md,csv,json}`.

Reads only (results/paper/ and the scale's pool results/runs/<scale>/); trains nothing. The
markdown shows ours | paper | Δ per metric with the paper's bold/underline marks and our best
per block in bold, the Avg.Δ row recomputed by definition D1, DeLong p where the paper has a
significance table, the rows ours only, the selected hyper-parameters and the claims block.
The CSV is tidy: the paper CSV's key columns, `paper` (the printed string), `ours` (percent),
its 95% interval (members and test samples), members, scale. The JSON (`table_data`) holds the
same rows with Δ and our best-of-block mark, each section's notes, the header and the claims'
verdicts as values (`claims.evaluate`): Δ and the verdicts are computed here once, and the markdown
and the site are views of them. The output depends on nothing but the saved runs, so rendering
twice gives the same bytes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from hightpr import runs
from hightpr.ensemble import finished_members
from hightpr.metrics.thresholds import DEFAULT_RULE, RULES
from hightpr.regularizers.activity import ACTIVE_RATIO
from hightpr.tables import claims as claims_mod
from hightpr.tables.cells import Cell, paper_cells, plan
from hightpr.tables.claims import compared_metric, d1
from hightpr.tables.output import FORMAT, TableOutput
from hightpr.tables.paper import KEYS, as_float, decimals, load_paper
from hightpr.tables.results import (
    Outcome,
    deployed,
    deployed_target,
    evidence,
    member_spread,
    outcome,
    paired,
    value,
)
from hightpr.tables.results import bootstrap as bootstrap_ci
from hightpr.tables.runner import Context
from hightpr.tables.specs import TableSpec

CSV_COLUMNS = [*KEYS, "metric", "paper", "ours", "ours_ci_low", "ours_ci_high", "members", "scale",
               "paper_note", "ours_only", "selected", "run", "ours_note", "members_mean", "members_sd",
               "reg_ratio_max", "reg_active"]
# Names of hyper-parameters as the papers write them (config key in brackets where printed).
PARAM_NAMES = {"reg.interpolation": "γ", "reg.mu0": "μ0", "reg.rho": "ρ", "reg.delta": "δ"}
NOT_RANKED = ("auc_std", "delong_significant", "hparam")
# Families whose paper numbers are means of single models (ALM §F: multi-class runs are averaged
# over 10 seeds; only binary models are ensembled).
SINGLE_MODEL_FAMILIES = ("long_tailed",)


def tables_dir(ctx: Context) -> Path:
    return ctx.results_dir / "tables" / ctx.scale.name


class TableView:
    """A table's cells with the paper's numbers and ours, as the markdown, CSV and claims read them."""

    def __init__(self, spec: TableSpec, ctx: Context) -> None:
        self.spec, self.ctx = spec, ctx
        self.n_boot = ctx.scale.bootstrap
        self.all_cells = paper_cells(spec, ctx.paper_dir)
        self.cell_set = set(self.all_cells)
        self.plans = {c: plan(spec, c, ctx.scale, ctx.paper_dir, ctx.data_dir) for c in self.all_cells}
        self.outcomes: dict[Cell, Outcome | None] = {
            c: None if p.private else outcome(p, ctx.pool, ctx.scale.grid_limit,  # saved runs, not data
                                              least=min(p.members, ctx.scale.members_for(p.family)))
            for c, p in self.plans.items()}
        self.cells = [c for c in self.all_cells if not c.hidden and not c.extra]
        self.visible = [c for c in self.all_cells if not c.hidden]
        self.sections = list(dict.fromkeys(c.section for c in self.visible))
        self.paper_rows = load_paper(ctx.paper_dir, spec.paper) if spec.paper else None
        self.hparam = self.paper_rows is not None and (self.paper_rows.metric == "hparam").all()
        self.printed: dict[tuple[Cell, str], tuple[str, str]] = {}
        self.avg_printed: dict[tuple[str, str], tuple[str, str]] = {}
        columns: list[str] = list(spec.metrics)
        for _, r in (self.paper_rows.iterrows() if self.paper_rows is not None else ()):
            if r.base_loss == "":
                section = Cell(r.dataset, r.classes, r.ratio, "", "").section
                self.avg_printed[(section, r.metric)] = (r.value, r.note)
                continue
            column = r.variant.removeprefix("hparam=") if self.hparam else r.metric
            cell = Cell(*(r[k] for k in KEYS[:5]), "" if self.hparam else r.variant)
            self.printed[(cell, column)] = (r.value, r.note)
            if column not in columns:
                columns.append(column)
        self.columns = [c for c in columns if c != "none"]
        self.comparable = [c for c in self.columns if c not in NOT_RANKED and not self.hparam
                           and c not in ("auc_avg",)]

    # -- values --------------------------------------------------------------------------------
    def outcome(self, cell: Cell) -> Outcome | None:
        return self.outcomes.get(cell)

    def paper(self, cell: Cell, column: str) -> float | None:
        printed = self.printed.get((cell, column))
        return as_float(printed[0]) if printed else None

    def ours(self, cell: Cell, column: str) -> float | None:
        out = self.outcomes.get(cell)
        if out is None:
            return None
        if column == "delong_significant":
            ev = self.delong(cell)
            return None if ev is None else float(ev["p"] <= claims_mod.ALPHA and ev["diff"] > 0)
        if self.hparam:
            return self.used_hparam(out, column)
        return value(out, column)

    def has_delta(self, column: str) -> bool:
        """Whether a column prints Δ = ours − paper (not hyper-parameters, not DeLong's flag)."""
        return not self.hparam and column != "delong_significant"

    def delta(self, cell: Cell, column: str) -> str:
        """Δ = ours − paper of a printed number, at the paper's decimals ('' unless both exist)."""
        ours, paper = self.ours(cell, column), self.paper(cell, column)
        if not self.has_delta(column) or ours is None or paper is None:
            return ""
        return _num(ours - paper, _dp(self, cell, column), sign=True)

    def deployed(self, cell: Cell, column: str) -> dict | None:
        """The guaranteed operating point of an FPR@TPR column (see `results.deployed`)."""
        out = self.outcomes.get(cell)
        return None if out is None or self.hparam else deployed(out, column)

    def has_deployed(self, column: str) -> bool:
        """Whether a column gets a deployed column: an FPR@TPR metric of a binary table."""
        return not self.hparam and deployed_target(column) is not None

    def reference(self, cell: Cell) -> Cell:
        return Cell(cell.dataset, cell.classes, cell.ratio, cell.base_loss, self.spec.reference or "none",
                    hidden=bool(self.spec.reference))

    @functools.cache  # noqa: B019 - one view per render
    def delong(self, cell: Cell) -> dict | None:
        ref = self.reference(cell)
        a, b = self.outcomes.get(cell), self.outcomes.get(ref) or self.outcomes.get(
            Cell(*(getattr(ref, k) for k in KEYS[:5])))
        if a is None or b is None or cell.reg == ref.reg or not a.binary:
            return None
        return paired(a, b, "auc", self.n_boot)

    def used_hparam(self, out: Outcome, name: str) -> float | None:
        """The value of a paper hyper-parameter in the run's resolved config (ALM-v1 Tables 7-8)."""
        from hightpr.tables.specs import recipes

        key = recipes()["hparam_keys"].get(name)
        members = finished_members(out.path)
        if key is None or not members:
            return None
        cfg = OmegaConf.load(runs.config_path(next(iter(members.values()))))
        found = OmegaConf.select(cfg, key)
        return None if found is None else float(found)

    def ci(self, cell: Cell, column: str) -> tuple[float, float] | None:
        out = self.outcomes.get(cell)
        if out is None or self.hparam:
            return None
        return bootstrap_ci(out, tuple(self.columns), self.n_boot).get(column)

    @functools.cached_property
    def avg_deltas(self) -> dict[str, dict[str, tuple[float | None, float | None, int, float | None]]]:
        """{section: {avg metric: (paper printed, ours D1, losses, the paper's D1 over the same
        losses as ours)}} for tables with an Avg.Δ row: ours is compared like for like."""
        out: dict = {}
        for (section, avg_metric), (printed, _) in self.avg_printed.items():
            metric = compared_metric(avg_metric)
            ours = {(c.base_loss, c.reg): self.ours(c, metric) for c in self.cells if c.section == section
                    and not c.variant}
            ours = {k: v for k, v in ours.items() if v is not None}
            got = d1(ours, metric)
            ev, _ = claims_mod.d1_evidence(self, section, avg_metric)
            if got and ev is not None:        # like with like: the rows at a common ensemble size
                got = (ev["diff"], got[1])
            ran = {loss for loss, reg in ours if all((loss, r) in ours for r in ("none", "alm", "rankreg"))}
            same = self.paper_d1(section, avg_metric, ran) if got else None
            out.setdefault(section, {})[avg_metric] = (as_float(printed), *(got or (None, 0)), same)
        return out

    def paper_d1(self, section: str, avg_metric: str, losses: set[str] | None = None) -> float | None:
        """D1 on the paper's own rows of the section (only `losses`, where given)."""
        metric = compared_metric(avg_metric)
        vals = {(c.base_loss, c.reg): self.paper(c, metric) for c in self.cells if c.section == section
                and (losses is None or c.base_loss in losses)}
        got = d1({k: v for k, v in vals.items() if v is not None}, metric)
        return got[0] if got else None

    def best(self, cell: Cell, column: str) -> str:
        """"bold" where the cell is our best of its block (`bold`: per base loss or per section; rows
        ours only included) and significantly better than the runner-up (the comparison test,
        p <= 0.05, not adjusted: a mark, not a claim), "tied" where it is best but not
        distinguishable from the runner-up at this budget, else ""."""
        if not self.spec.bold or column in NOT_RANKED or self.hparam:
            return ""
        block = [c for c in self.visible if c.section == cell.section
                 and (self.spec.bold == "section" or c.base_loss == cell.base_loss)]
        vals = {c: v for c in block if (v := self.ours(c, column)) is not None}
        mine = self.ours(cell, column)
        if mine is None or len(vals) < 2:
            return ""
        up = claims_mod.higher_is_better(column)
        if mine != (max(vals.values()) if up else min(vals.values())):
            return ""
        others = {c: v for c, v in vals.items() if c != cell}
        runner = max(others, key=others.get) if up else min(others, key=others.get)
        ev = evidence([self.outcomes.get(cell), self.outcomes.get(runner)], column, self.n_boot)
        return "bold" if ev is not None and ev["p"] <= claims_mod.ALPHA else "tied"

    def selected(self, cell: Cell) -> str:
        """Every grid value the cell's run used, `key=value; ...` (the CSV's `selected`)."""
        out = self.outcomes.get(cell)
        return "; ".join(f"{k}={_hp_value(v)}" for k, v in (out.chosen.items() if out else ()))

    def grid_values(self, cell: Cell) -> tuple[list[str], list[str]]:
        """The cell's grid values as printed: (chosen on validation among several, fixed by the
        scale's one-point grid), each `γ (reg.interpolation) = 2`."""
        out = self.outcomes.get(cell)
        if out is None:
            return [], []
        points = {k: len(s.candidates(self.ctx.scale.grid_limit)) for s in self.plans[cell].stages
                  for k in s.params}              # the points its grid step had at this scale
        chosen, fixed = [], []
        for k, v in out.chosen.items():
            name = f"{PARAM_NAMES[k]} ({k})" if k in PARAM_NAMES else k
            (chosen if points.get(k, 1) > 1 else fixed).append(f"{name} = {_hp_value(v)}")
        return chosen, fixed

    def inactive(self, cell: Cell) -> bool:
        return claims_mod.inactive(self, cell)


# -- formatting ----------------------------------------------------------------------------------
def _dp(view: TableView, cell: Cell, column: str) -> int:
    printed = view.printed.get((cell, column))
    if printed and printed[0]:
        return decimals(printed[0])
    counts = [decimals(v) for (_, col), (v, _) in view.printed.items() if col == column and v]
    return max(set(counts), key=counts.count) if counts else 1


def _num(v: float | None, dp: int, sign: bool = False) -> str:
    if v is None:
        return ""
    return f"{v:+.{dp}f}" if sign else f"{v:.{dp}f}"


def _hp(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def _hp_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _marked(printed: str, note: str) -> str:
    if not printed:
        return note
    return {"bold": f"**{printed}**", "underline": f"<u>{printed}</u>"}.get(note, printed)


def deployed_legend(rules) -> str:
    """What the deployed column shows, naming the threshold rule(s) the runs were configured with."""
    named = "; ".join(f"{RULES[r].title} (`evaluation.threshold_rule={r}`), which promises "
                      f"{RULES[r].promise.replace('<=', '≤').replace('delta', 'δ')}"
                      for r in sorted(set(rules) or {DEFAULT_RULE}))
    return (
        "FPR@TPR (ours, paper) is the oracle number: its threshold is picked on the test set itself. "
        f"*deployed* is ours at a threshold fixed beforehand on validation by the rule {named}: the "
        "FPR it gives on test, ✓ when test TPR held the target, ✗ when it fell short; – when "
        "validation has too few positives for the rule (notes under the section). The guarantee "
        "assumes validation samples the model never depended on; the same validation set also chose "
        "each member's best epoch (and any grid value), so here it is approximate.")


def _deployed_text(got: dict | None, dp: int) -> str:
    if got is None:
        return ""
    if "note" in got:
        return "–"
    return f"{got['fpr']:.{dp}f} {'✓' if got['held'] else '✗'}"


def not_run_reasons(view: TableView, plans: list) -> list[str]:
    """Why rows have no number of ours: private data, or data the runs need (only where a row lacks
    ours). From the specs and the saved runs alone, so a fresh clone renders the same bytes."""
    return sorted({p.private for p in plans if p.private}
                  | {p.needs for p in plans if p.needs and view.outcomes.get(p.cell) is None})


def _header(view: TableView) -> list[str]:
    spec, scale = view.spec, view.ctx.scale
    members = sorted({p.members for p in view.plans.values()})
    runs = f"ensembles of {'/'.join(map(str, members))} members from `results/runs/{scale.name}/`"
    if view.hparam:
        ours = f"Ours: the values the runs used (their resolved configs; {runs})."
    else:
        bold = (f" Bold ours: our best per {spec.bold.replace('_', ' ')} block where it is significantly "
                "better than the block's runner-up (the comparison test, p ≤ 0.05 unadjusted); ≈: our best, "
                "but not distinguishable from the runner-up at this budget (tied)." if spec.bold else "")
        ours = (f"Ours: {runs}, in percent; Δ = ours − paper; 95% intervals of each number (over its members "
                f"and its test samples, {view.n_boot} test-sample replicates, centred on the number: "
                "docs/evaluation.md) and its members' mean ± sd (training seeds) in the CSV; the members "
                f"under each section.{bold} † rows are ours only (controls and peers); bold counts them.")
    lines = [f"# {spec.title}", "",
             f"**Scale: {scale.name}** ({scale.description}). Budget: "
             f"{scale.budget_of(p.family for p in view.plans.values())}.", "",
             f"Paper numbers: `results/paper/{spec.paper}.csv` (as printed). {ours}", ""]
    if any(view.has_deployed(c) for c in view.columns):
        rules = [o.threshold_rule for o in view.outcomes.values() if o is not None]
        lines += [deployed_legend(rules), ""]
    lines += ["Data and hyper-parameters per section:"]
    for section in view.sections:
        plans = [view.plans[c] for c in view.visible if c.section == section]
        reasons = not_run_reasons(view, plans)
        sources = ", ".join(dict.fromkeys(p.source for p in plans if p.source)) or "none published"
        ran = [p for p in plans if view.outcomes.get(p.cell) is not None] or plans   # what ran, else the plan
        grids = ", ".join(dict.fromkeys(s.preset for p in ran for s in p.stages
                                        if len(s.candidates(scale.grid_limit)) > 1))
        sources += f"; grids selected on validation: {grids}" if grids else ""
        if any(p.family in SINGLE_MODEL_FAMILIES for p in plans) and not view.hparam:
            sources += (". The paper reports the mean of 10 single models here, not an ensemble: compare "
                        "its numbers with our members' mean (under the section)")
        data = "; ".join(dict.fromkeys(p.data_note for p in plans))
        lines.append(f"- `{section}`: {data}. Hyper-parameters: {sources}."
                     + "".join(f" **Not run: {r}.**" for r in reasons))
    return [*lines, ""]


def _section_table(view: TableView, section: str) -> list[str]:
    cols = view.columns
    with_delta = view.has_delta
    head = ["row"]
    for col in cols:
        name = col if view.hparam else claims_mod.metric_name(col)
        head += [f"{name} ours", "paper"] + (["Δ"] if with_delta(col) else [])
        head += ["deployed"] if view.has_deployed(col) else []
    if view.spec.delong:
        head.append("DeLong p vs base (ours)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    rows = [c for c in view.visible if c.section == section]
    extras = [c for c in rows if c.extra]
    for cell in [c for c in rows if not c.extra] + extras:
        if cell.extra and cell is extras[0]:
            lines.append("| *ours only (not in the paper)* |" + " |" * (len(head) - 1))
        cells = [cell.label + (f" {claims_mod.INACTIVE}" if view.inactive(cell) else "")]
        for col in cols:
            dp = _dp(view, cell, col)
            printed, note = view.printed.get((cell, col), ("", ""))
            ours = view.ours(cell, col)
            text = _hp(ours) if view.hparam else _num(ours, dp)
            mark = view.best(cell, col) if text else ""
            text = f"**{text}**" if mark == "bold" else f"{text} ≈" if mark == "tied" else text
            cells += [text, _marked(printed, note)]
            if with_delta(col):
                cells.append(view.delta(cell, col))
            if view.has_deployed(col):
                cells.append(_deployed_text(view.deployed(cell, col), dp))
        if view.spec.delong:
            ev = view.delong(cell)
            cells.append("" if ev is None else f"{ev['p']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    avg = view.avg_deltas.get(section)
    if avg:
        losses = len({c.base_loss for c in view.cells if c.section == section and not c.extra})
        used = max((n for _, _, n, _ in avg.values()), default=0)
        tail = " |" if not view.spec.delong else " | |"
        same = used != losses
        label = "Avg.Δ (D1: RankReg vs the better of base, +ALM)"
        if same:
            label = label[:-1] + f"; over the {used} of {losses} losses we ran, the paper's D1 over the same)"
        sizes = {o.members for c in view.cells if c.section == section and not c.variant
                 and (o := view.outcome(c)) is not None}
        if len(sizes) > 1:
            label = label[:-1] + f"; each row at {min(sizes)} members, like with like)"
        cells, printed_cells = [label], [f"Avg.Δ as printed (the paper's mean over its {losses} losses)"]
        for col in cols:
            got = [(k, v) for k, v in avg.items() if compared_metric(k) == col]
            blank = [""] if view.has_deployed(col) else []
            if not got:
                cells += ["", "", "", *blank]
                printed_cells += ["", "", "", *blank]
                continue
            avg_metric, (paper, ours, _, paper_same) = got[0]
            printed = view.avg_printed[(section, avg_metric)][0]
            dp = decimals(printed)
            ref = paper_same if same else paper
            cells += [_num(ours, dp), _num(ref, dp) if ref is not None else "",
                      _avg_delta_text(ours, ref, dp), *blank]
            printed_cells += ["", printed, "", *blank]
        lines.append("| " + " | ".join(cells) + tail)
        if same:
            lines.append("| " + " | ".join(printed_cells) + tail)
    return lines


def _avg_delta_text(ours: float | None, ref: float | None, dp: int) -> str:
    """Δ of an Avg.Δ row: ours − the paper's (the printed mean, or its D1 over the same losses)."""
    return _num(ours - ref, dp, sign=True) if ours is not None and ref is not None else ""


def _members_table(view: TableView, section: str) -> list[str]:
    """Each ensemble's members, mean ± sd (n - 1): the training-seed noise behind its number."""
    rows = [c for c in view.visible if c.section == section and view.outcome(c) is not None]
    cols = [c for c in view.comparable if any(member_spread(view.outcome(r), c) for r in rows)]
    if not rows or not cols:
        return []
    lines = ["Members of each ensemble, mean ± sd over its members (training seeds), in percent:", "",
             "| row | members | " + " | ".join(claims_mod.metric_name(c) for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for cell in rows:
        out = view.outcome(cell)
        vals = []
        for col in cols:
            got = member_spread(out, col)
            vals.append("" if got is None else f"{got[0]:.1f} ± {got[1]:.1f}")
        planned = view.plans[cell].members
        size = f"{out.members} of {planned} planned" if out.members < planned else str(out.members)
        lines.append(f"| {cell.label} | {size} | " + " | ".join(vals) + " |")
    return [*lines, ""]


def _activity_lines(view: TableView, section: str) -> list[str]:
    """How active each row's regulariser was: the largest (term - floor) / base loss of any epoch and
    member (`regularizers.activity`)."""
    got = [(c, view.outcome(c).activity) for c in view.visible if c.section == section
           and c.reg != "none" and view.outcome(c) is not None and view.outcome(c).activity]
    if not got:
        return []
    parts = [f"{c.label} {a['ratio_max'] * 100:.3g}%"
             + (f" (term above its floor, {a['members']} members)" if a.get("above_floor") else "")
             + (f" {claims_mod.INACTIVE} inactive" if not a["active"] else "") for c, a in got]
    mark = claims_mod.INACTIVE
    return [f"Regulariser activity (largest |term| / base loss over epochs and members; the term above its "
            f"floor where the members logged it (RankReg: the penalty of positives ranked on top), else the "
            f"whole term; {mark} inactive = below {ACTIVE_RATIO:.0%} in every epoch of every member, so the "
            f"row measures the base loss, not the method): {'; '.join(parts)}.", ""]


def _deployed_notes(view: TableView, section: str) -> str:
    """Why a section's deployed cells are empty, once per target (e.g. too few validation positives)."""
    notes: dict[str, str] = {}
    for cell in (c for c in view.visible if c.section == section):
        for col in filter(view.has_deployed, view.columns):
            got = view.deployed(cell, col)
            if got and "note" in got:
                notes.setdefault(col, f"{claims_mod.metric_name(col)} at δ={got['delta']:g}: {got['note']}")
    return "; ".join(notes.values())


def render_markdown(view: TableView, claims: dict | None = None) -> str:
    """The table's markdown; `claims`: its evaluated claims (`claims.evaluate`), evaluated here if not
    given."""
    lines = _header(view)
    for section in view.sections:
        lines += [f"## {section}", "", *_section_table(view, section), "", *_section_notes(view, section)]
    if view.spec.claims:
        claims = claims_mod.evaluate(view) if claims is None else claims
        lines += ["## Claims", "", *claims_mod.markdown(claims), ""]
    return "\n".join(lines).rstrip() + "\n"


def _section_notes(view: TableView, section: str) -> list[str]:
    """What the markdown prints under a section's table: deployed notes, the members, the
    regulariser's activity, the values selected or fixed, D1 on the paper's rows."""
    lines: list[str] = []
    notes = _deployed_notes(view, section)
    if notes:
        lines += [f"Deployed (–): {notes}.", ""]
    lines += _members_table(view, section)
    lines += _activity_lines(view, section)
    picked = [(c, *view.grid_values(c)) for c in view.visible if c.section == section]
    if any(chosen for _, chosen, _ in picked):
        lines.append("Selected on validation (grid steps; the test set chooses nothing):")
        lines += [f"- {c.label}: {'; '.join(chosen)}" for c, chosen, _ in picked if chosen]
        lines.append("")
    if any(fixed for _, _, fixed in picked):
        lines.append(f"Fixed by the {view.ctx.scale.name} scale (a one-point grid, nothing selected):")
        lines += [f"- {c.label}: {'; '.join(fixed)}" for c, _, fixed in picked if fixed]
        lines.append("")
    avg = view.avg_deltas.get(section)
    if avg:
        recomputed = ", ".join(f"{k}: {view.paper_d1(section, k):.3f} (printed {v[0]:.1f})"
                               for k, v in avg.items() if view.paper_d1(section, k) is not None)
        lines += [f"D1 on the paper's own rows: {recomputed}.", ""]
    return lines


def tidy(view: TableView) -> pd.DataFrame:
    """One row per printed number (and per number of a row ours only), ours beside it."""
    return pd.DataFrame(records(view), columns=CSV_COLUMNS)


def records(view: TableView) -> list[dict]:
    """The tidy rows as dicts: the CSV's columns, and for the JSON `delta` (Δ = ours − paper as the
    markdown prints it) and `mark` (bold / tied: our best of its block, as in the markdown)."""
    rows = []
    scale = view.ctx.scale.name

    def row(cell: Cell, metric: str, variant: str, printed: str, note: str, ours: float | None,
            ci: tuple | None, dp: int = 2, ours_note: str = "", ours_only: str = "", delta: str = "",
            mark: str = "") -> dict:
        out = view.outcomes.get(cell)
        spread = member_spread(out, metric) if out is not None and not view.hparam else None
        act = out.activity if out is not None and cell.reg != "none" else None
        return {"dataset": cell.dataset, "classes": cell.classes, "ratio": cell.ratio,
                "base_loss": cell.base_loss, "reg": cell.reg, "variant": variant, "metric": metric,
                "paper": printed,
                "ours": _hp(ours) if view.hparam else _num(ours, dp),
                "ours_ci_low": _num(ci[0], dp) if ci else "", "ours_ci_high": _num(ci[1], dp) if ci else "",
                "members": str(out.members) if out else "", "scale": scale, "paper_note": note,
                "ours_only": ours_only or cell.extra, "selected": view.selected(cell),
                "run": out.key if out else "", "ours_note": ours_note,
                "members_mean": _num(spread[0], dp) if spread else "",
                "members_sd": _num(spread[1], dp) if spread else "",
                "reg_ratio_max": f"{act['ratio_max']:.4g}" if act else "",
                "reg_active": str(act["active"]).lower() if act else "", "delta": delta, "mark": mark}

    for _, r in (view.paper_rows.iterrows() if view.paper_rows is not None else ()):
        if r.base_loss == "":
            section = Cell(r.dataset, r.classes, r.ratio, "", "").section
            got = view.avg_deltas.get(section, {}).get(r.metric)
            avg_cell = Cell(r.dataset, r.classes, r.ratio, "", r.reg)
            losses = len({c.base_loss for c in view.cells if c.section == section and not c.extra})
            if got and got[1] is not None and got[2] != losses and got[3] is not None:
                # like for like first: ours against the paper's D1 over the same losses, then the
                # printed mean over all of the paper's losses on its own
                same = f"the paper's D1 over the same {got[2]} of {losses} losses"
                rows.append(row(avg_cell, r.metric, f"losses={got[2]}", _num(got[3], decimals(r.value)), "",
                                got[1], None, ours_note=same, ours_only="same_losses",
                                delta=_avg_delta_text(got[1], got[3], decimals(r.value))))
                rows.append(row(avg_cell, r.metric, r.variant, r.value, r.note, None, None,
                                ours_note=f"as printed: the paper's mean over its {losses} losses"))
                continue
            delta = _avg_delta_text(got[1], as_float(r.value), decimals(r.value)) \
                if got and got[2] == losses else ""
            rows.append(row(avg_cell, r.metric, r.variant, r.value, r.note, got[1] if got else None, None,
                            delta=delta))
            continue
        column = r.variant.removeprefix("hparam=") if view.hparam else r.metric
        cell = Cell(*(r[k] for k in KEYS[:5]), "" if view.hparam else r.variant)
        ours = None if column == "none" else view.ours(cell, column)
        rows.append(row(cell, r.metric, r.variant, r.value, r.note, ours, view.ci(cell, column),
                        0 if r.metric == "delong_significant" else 2,
                        delta="" if column == "none" else view.delta(cell, column),
                        mark="" if ours is None else view.best(cell, column)))
    for cell in (c for c in view.visible if c.extra):
        for col in view.columns:
            metric, variant = ("hparam", f"hparam={col}") if view.hparam else (col, cell.variant)
            ours = view.ours(cell, col)
            rows.append(row(cell, metric, variant, "", "", ours, view.ci(cell, col),
                            mark="" if ours is None else view.best(cell, col)))
    for cell in view.visible:  # ours only: the deployed (guaranteed-threshold) rates on test
        for col in filter(view.has_deployed, view.columns):
            got = view.deployed(cell, col)
            if got is None:
                continue
            for rate in ("fpr", "tpr"):
                rows.append(row(cell, f"deployed_{rate}@{col.removeprefix('fpr@')}", cell.variant, "", "",
                                got.get(rate), None, ours_note=got.get("note", f"delta={got['delta']:g}"),
                                ours_only=cell.extra or "deployed"))
    return rows


def run_keys(view: TableView) -> list[str]:
    """The runs a table's numbers come from (a reader checks its JSON against the pool with them)."""
    return sorted({o.key for c in view.visible if (o := view.outcome(c)) is not None})


def table_data(view: TableView, header: list[str], rows: list[dict], claims: dict | None,
               sections: list[dict] | None = None) -> dict:
    """The table's JSON: its facts, the header (markdown, below the title), the tidy rows with Δ,
    each section's notes (markdown), the claims as values."""
    spec, scale = view.spec, view.ctx.scale
    return {"format": FORMAT, "table": spec.name, "title": spec.title, "kind": "figure" if spec.is_figure
            else "table", "scale": scale.name, "paper": spec.paper or "", "runs": run_keys(view),
            "facts": {"scale_description": scale.description, "bootstrap": view.n_boot,
                      "members": sorted({p.members for p in view.plans.values()}),
                      "budget": scale.budget_of(p.family for p in view.plans.values())},
            "header": "\n".join(header[2:]).strip(), "columns": CSV_COLUMNS, "rows": rows,
            "sections": sections or [], "claims": claims}


def render_output(view: TableView) -> TableOutput:
    """A table's markdown, tidy CSV and JSON, from one evaluation of its claims."""
    claims = claims_mod.evaluate(view) if view.spec.claims else None
    rows = records(view)
    sections = [{"name": s, "notes": "\n".join(_section_notes(view, s)).strip()} for s in view.sections]
    data = table_data(view, _header(view), rows, claims, sections)
    return TableOutput(render_markdown(view, claims), pd.DataFrame(rows, columns=CSV_COLUMNS), data)


def render_paper_table(spec: TableSpec, ctx: Context, write: bool = True) -> TableOutput:
    """A table's markdown, tidy CSV and JSON (written to results/tables/<scale>/<name>.{md,csv,json})."""
    out = render_output(TableView(spec, ctx))
    if write:
        out.write(tables_dir(ctx), spec.name)
    return out


def has_ours(spec: TableSpec, ctx: Context) -> bool:
    """Whether any cell of the table has a finished run at this scale (else `tables` skips it)."""
    view_cells = paper_cells(spec, ctx.paper_dir)
    for c in view_cells:
        p = plan(spec, c, ctx.scale, ctx.paper_dir, ctx.data_dir)
        least = min(p.members, ctx.scale.members_for(p.family))
        if not p.private and outcome(p, ctx.pool, ctx.scale.grid_limit, least) is not None:
            return True
    return False
