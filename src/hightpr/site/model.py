"""What the site shows, read with `hightpr.tables`: coverage per table and scale, and each table's
results as the renderer wrote them (its JSON: rows with Δ, section notes, claims as values), never
numbers typed in here and never the renderer's markdown re-read.

A table's results come from `results/tables/<scale>/<name>.json` (what `make tables` wrote)
when it names the same runs as the pool holds now; otherwise the renderer runs in memory on the
saved runs (nothing is written under results/), and a missing or older JSON is named in one line
with the command that writes it. The rows are read generically: whatever columns, metrics and
rows the renderer emits are shown.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hightpr.tables.cells import Cell, paper_cells
from hightpr.tables.claims import intro_text, metric_name, sentence
from hightpr.tables.output import json_text, read_data, write_atomic
from hightpr.tables.paper import KEYS
from hightpr.tables.publish import render_output
from hightpr.tables.render import TableView, not_run_reasons, run_keys, tables_dir
from hightpr.tables.runner import Context
from hightpr.tables.specs import TableSpec, get_scale

SECTION_KEYS = ("dataset", "classes", "ratio")
# per printed number: the renderer's value columns, shown under each metric
VALUE_COLUMNS = ("ours", "ours_ci_low", "ours_ci_high", "paper", "paper_note", "ours_note", "delta", "mark")
HIDDEN_COLUMNS = ("scale",)            # said once in the page header


@dataclass
class Coverage:
    """How much of one table a scale has: cells with a finished run of ours, of the cells."""

    table: str
    scale: str
    cells: int
    done: int
    private: int
    reasons: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> int:
        return self.cells - self.private

    @property
    def state(self) -> str:
        if self.done == 0:
            return "not run"
        return "complete" if self.done >= self.runnable else "partial"

    @property
    def label(self) -> str:
        if self.state == "not run":
            return "not run" if self.runnable else "private data"
        return f"{self.done}/{self.runnable}" if self.state == "partial" else f"complete ({self.done})"


def coverage(view: TableView) -> Coverage:
    """Cells printed in the table (paper rows and rows ours only) and those with our numbers."""
    visible = view.visible
    done = sum(1 for c in visible if view.outcome(c) is not None)
    private = sum(1 for c in visible if view.plans[c].private)
    plans = [view.plans[c] for c in visible]
    return Coverage(view.spec.name, view.ctx.scale.name, len(visible), done, private,
                    not_run_reasons(view, plans))


def empty_coverage(spec: TableSpec, ctx: Context, cells: list[Cell] | None = None) -> Coverage:
    """A scale without a pool: nothing run; no plans needed (`cells`: the table's, when known)."""
    cells = cells if cells is not None else paper_cells(spec, ctx.paper_dir)
    return Coverage(spec.name, ctx.scale.name, sum(1 for c in cells if not c.hidden), 0, 0)


# -- a rendered table --------------------------------------------------------------------------
@dataclass
class Rendered:
    """A table at one scale as the renderer produced it (its JSON data and markdown), and where
    it came from."""

    spec: TableSpec
    scale: str
    data: dict
    md: str
    source: str            # `results/tables/cpu/x.json` or `rendered now from the saved runs`
    stale: bool = False    # the saved files name other runs than the pool holds now
    note: str = ""         # the saved JSON is missing or older: which command writes it

    def csv_text(self) -> str:
        """The tidy CSV, as `make tables` writes it (the JSON's rows in its columns)."""
        frame = pd.DataFrame(self.data["rows"], columns=self.data["columns"])
        return frame.to_csv(index=False, lineterminator="\n")


def _renderer_digest(view: TableView) -> str:
    """What an in-memory render depends on: the runs it reads and the renderer's own code."""
    import hightpr.tables

    h = hashlib.sha1(f"{view.spec.name} {view.ctx.scale.name} {run_keys(view)}".encode())
    for src in sorted(Path(hightpr.tables.__file__).parent.glob("*.*")):
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def rendered(view: TableView, force: bool = False, cache: Path | None = None) -> Rendered:
    """The renderer's results of a table: the saved JSON when current, else made now (kept in
    `cache`, keyed by the runs and the renderer's code, for the next build)."""
    spec, ctx = view.spec, view.ctx
    base = tables_dir(ctx) / spec.name
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    stale, note = False, ""
    if not force:
        data, problem = read_data(json_path)
        if data is not None and data["runs"] == run_keys(view):
            md = md_path.read_text() if md_path.is_file() else ""
            return Rendered(spec, ctx.scale.name, data, md, _rel(json_path, ctx.results_dir))
        stale = data is not None
        if data is None and md_path.is_file():      # a table rendered before its JSON existed
            note = problem.replace(str(json_path), _rel(json_path, ctx.results_dir))
    source = "rendered now from the saved runs"
    digest = _renderer_digest(view) if cache is not None and run_keys(view) else None
    hit = Path(cache) / ctx.scale.name / f"{spec.name}-{digest}" if digest else None
    if hit is not None and hit.with_suffix(".json").is_file() and hit.with_suffix(".md").is_file():
        data = json.loads(hit.with_suffix(".json").read_text())
        return Rendered(spec, ctx.scale.name, data, hit.with_suffix(".md").read_text(), source, stale, note)
    out = render_output(spec, ctx, write=False)
    text = json_text(out.data)
    if hit is not None:
        hit.parent.mkdir(parents=True, exist_ok=True)
        for old in hit.parent.glob(f"{spec.name}-*"):
            old.unlink()
        write_atomic(hit.with_suffix(".json"), text)
        write_atomic(hit.with_suffix(".md"), out.md)
    return Rendered(spec, ctx.scale.name, json.loads(text), out.md, source, stale, note)


def _rel(path: Path, results_dir: Path) -> str:
    try:
        return str(Path("results") / Path(path).relative_to(results_dir))
    except ValueError:
        return str(path)


def scale_context(scale: str, results_dir: Path, paper_dir: Path | None) -> Context:
    return Context(get_scale(scale), results_dir=Path(results_dir), paper_root=paper_dir)


# -- the rows as a page table -----------------------------------------------------------------
@dataclass
class Group:
    """One metric's columns in the page table: sub-columns shown (`ours_ci_low` and `spread:x`
    are printed inside the ours cell), attached metrics (deployed) in one column after them."""

    metric: str
    title: str
    fields: list[str]
    attached: list[tuple[str, str]] = field(default_factory=list)   # (metric, title)

    @property
    def columns(self) -> list[str]:
        """The fields with a column of their own (the interval and spreads sit under ours)."""
        return [f for f in self.fields if f != "ours_ci_low" and not f.startswith("spread:")]

    @property
    def spreads(self) -> list[str]:
        return [f for f in self.fields if f.startswith("spread:")]


@dataclass
class Row:
    label: str
    keys: dict
    run: str
    attrs: dict                       # row-level columns (members, selected, ...)
    values: dict                      # metric -> {field: text}
    ours_only: bool = False

    def attached(self, group: Group) -> list[dict]:
        """The values of a group's attached metrics (deployed FPR, TPR) in this row."""
        return [self.values.get(m, {}) for m, _ in group.attached]


@dataclass
class Section:
    name: str
    groups: list[Group]
    row_columns: list[str]
    rows: list[Row]
    summary: list[dict]               # rows of the section itself (Avg.Δ): metric, paper, ours, Δ
    notes: str = ""                   # the markdown's text under this section (selected, notes)


def section_of(keys: dict) -> str:
    return Cell(keys.get("dataset", ""), keys.get("classes", ""), keys.get("ratio", ""), "", "").section


def _label(keys: dict, ours_only: str) -> str:
    from hightpr.tables.specs import recipes

    extra = ours_only if ours_only in (recipes().get("extras") or {}) else ""
    try:
        return Cell(*(keys.get(k, "") for k in KEYS), extra=extra).label
    except (KeyError, TypeError):
        return " ".join(v for v in keys.values() if v)


def _attach_to(metric: str, metrics: list[str]) -> str | None:
    """`deployed_fpr@95tpr` -> `fpr@95tpr` when that metric is a column: shown under it."""
    head, _, target = metric.partition("@")
    if not target or "_" not in head:
        return None
    kind = head.split("_", 1)[1]
    for m in metrics:
        if m == f"fpr@{target}" and kind in ("fpr", "tpr"):
            return m
    return None


def sections(rendered_: Rendered) -> list[Section]:
    """The table's rows as one page table per section: a row per cell, per metric its values (ours,
    interval, paper, Δ as the renderer computed it, ...).

    Columns are read from the data: any column the renderer adds shows up, per metric when it
    varies between a cell's metrics, once per row when it does not.
    """
    data = rendered_.data
    rows = data["rows"]
    if not rows:
        return []
    columns = data["columns"]
    keys = [k for k in KEYS if k in columns]
    extra_cols = [c for c in columns if c not in (*keys, "metric", *VALUE_COLUMNS, *HIDDEN_COLUMNS)]
    body = [r for r in rows if r.get("base_loss", "x") != ""]
    summary = [r for r in rows if r.get("base_loss", "x") == ""]
    metrics = list(dict.fromkeys(r["metric"] for r in body))
    attach = {m: a for m in metrics if (a := _attach_to(m, metrics))}
    primary = [m for m in metrics if m not in attach]

    def row_key(r: dict) -> tuple:
        return tuple(r[c] for c in keys)

    # a column is row-level when it is the same for every primary metric of every cell
    per_row = []
    for col in extra_cols:
        seen: dict[tuple, set] = {}
        for r in body:
            if r["metric"] in primary:
                seen.setdefault(row_key(r), set()).add(r.get(col, ""))
        if all(len(v) <= 1 for v in seen.values()):
            per_row.append(col)
    per_metric = [c for c in extra_cols if c not in per_row]

    out: dict[str, Section] = {}
    by_key: dict[tuple, Row] = {}
    used_fields: dict[str, set[str]] = {m: set() for m in metrics}
    for r in body:
        kd = {c: r[c] for c in keys}
        name = section_of(kd)
        sec = out.setdefault(name, Section(name, [], [], [], []))
        rk = row_key(r)
        row = by_key.get(rk)
        if row is None:
            row = Row(_label(kd, r.get("ours_only", "")), kd, "", {}, {},
                      ours_only=bool(r.get("ours_only", "")) and r.get("ours_only") != "deployed")
            by_key[rk] = row
            sec.rows.append(row)
        metric = r["metric"]
        vals = {f: r[f] for f in VALUE_COLUMNS if r.get(f, "") != ""}
        vals.update({c: r[c] for c in per_metric if r.get(c, "") != ""})
        for name in [c for c in vals if c.endswith("_mean")]:     # x_mean + x_sd -> "x: mean ± sd"
            stem = name.removesuffix("_mean")
            sd = next((f"{stem}_{s}" for s in ("sd", "std") if f"{stem}_{s}" in vals), None)
            if sd is not None:
                vals[f"spread:{stem}"] = f"{vals.pop(name)} ± {vals.pop(sd)}"
        row.values[metric] = vals
        used_fields[metric].update(vals)
        if metric in primary:
            for c in per_row:
                if r.get(c, "") != "":
                    row.attrs[c] = r[c]
            row.run = row.run or r.get("run", "")
    spreads = sorted({f for fs in used_fields.values() for f in fs if f.startswith("spread:")})
    order = ["ours", "ours_ci_low", *spreads, "paper", "delta", *per_metric, "paper_note", "ours_note"]
    for sec in out.values():
        present = {m for row in sec.rows for m in row.values}
        groups = []
        for m in primary:
            if m not in present:
                continue
            fields = [f for f in order if f in used_fields[m] and f not in ("paper_note",)]
            if "ours_ci_low" in fields and "ours" not in fields:
                fields.remove("ours_ci_low")
            att = [(a, _attached_title(a)) for a in metrics if attach.get(a) == m and a in present]
            groups.append(Group(m, metric_name(m), [f for f in fields if f != "ours_note"], att))
        for a in metrics:            # attached metrics whose parent is absent: their own group
            if a in attach and a in present and attach[a] not in present:
                groups.append(Group(a, a, ["ours"]))
        sec.groups = groups
        sec.row_columns = [c for c in per_row if c not in ("run",) and any(c in r.attrs for r in sec.rows)]
    for r in summary:
        kd = {c: r[c] for c in keys}
        sec = out.setdefault(section_of(kd), Section(section_of(kd), [], [], [], []))
        note = f" ({r['ours_note']})" if r.get("ours_note") else ""
        sec.summary.append({"metric": r["metric"], "label": metric_name(r["metric"]) + note,
                            "paper": r.get("paper", ""), "ours": r.get("ours", ""),
                            "delta": r.get("delta", "")})
    notes = {s["name"]: s["notes"] for s in data.get("sections", [])}
    for sec in out.values():
        sec.notes = notes.get(sec.name, "")
    return list(out.values())


def _attached_title(metric: str) -> str:
    head = metric.split("@", 1)[0]
    return head.replace("_", " ").replace("fpr", "FPR").replace("tpr", "TPR")


# -- the claims ----------------------------------------------------------------------------------
# A verdict's CSS class (the page's colour) by its outcome code (`hightpr.tables.claims.OUTCOMES`):
# supported; not supported; the same direction or tied but not significant (weak); nothing to
# judge (none: not run, an inactive regulariser, a count rather than a test); neutral otherwise.
VERDICT_CLASS = {"supported": "supported", "not_supported": "not-supported", "other_way": "not-supported",
                 "equivalent": "not-supported", "not_best": "not-supported", "not_distinguishable": "weak",
                 "tied": "weak", "not_significant": "weak", "undecided": "weak",
                 "control_better": "not-supported", "inactive": "none", "not_run": "none",
                 "no_verdict": "none"}


def verdict_class(line: dict) -> str:
    """A CSS class for an evidence line, from its outcome (never from its wording)."""
    return VERDICT_CLASS.get(line["outcome"], "neutral")


@dataclass
class Line:
    """One evidence line of a claim: its sentence, CSS class, nesting level and outcome code."""

    text: str
    cls: str
    level: int
    outcome: str


@dataclass
class Claim:
    text: str
    lines: list[Line]


def claims(data: dict) -> tuple[str, list[Claim]]:
    """(intro, claims) of a table's data: each claim's evidence lines worded from their values."""
    got = data.get("claims")
    if not got:
        return "", []
    return intro_text(got["intro"]), [
        Claim(c["text"], [Line(sentence(v), verdict_class(v), v.get("level", 0), v["outcome"])
                          for v in c["lines"]]) for c in got["claims"]]


def relpath(target: Path, start: Path) -> str:
    """A relative link from a page's folder (URL slashes)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()
