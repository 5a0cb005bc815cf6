"""What the site shows, read with `hightpr.tables`: coverage per table and scale, and each table's
rows as the renderer produced them (its tidy CSV and markdown), never numbers typed in here.

A table's rows come from `results/tables/<scale>/<name>.{csv,md}` (what `make tables` wrote)
when those name the same runs as the pool holds now; otherwise the renderer runs in memory
on the saved runs (nothing is written under results/). The CSV is read generically: whatever
columns, metrics and rows the renderer emits are shown.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hightpr.tables.cells import Cell, paper_cells
from hightpr.tables.claims import metric_name
from hightpr.tables.paper import KEYS, as_float, decimals
from hightpr.tables.publish import render_table
from hightpr.tables.render import TableView, not_run_reasons, render_markdown, tables_dir, tidy
from hightpr.tables.runner import Context
from hightpr.tables.specs import TableSpec, get_scale

SECTION_KEYS = ("dataset", "classes", "ratio")
# per printed number: the renderer's value columns, shown under each metric
VALUE_COLUMNS = ("ours", "ours_ci_low", "ours_ci_high", "paper", "paper_note", "ours_note")
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
    """A table at one scale as the renderer produced it, and where it came from."""

    spec: TableSpec
    scale: str
    csv: pd.DataFrame
    md: str
    source: str            # `results/tables/cpu/x.csv` or `rendered now from the saved runs`
    stale: bool = False    # the saved files name other runs than the pool holds now


def _run_keys(view: TableView) -> set[str]:
    return {o.key for c in view.visible if (o := view.outcome(c)) is not None}


def _renderer_digest(view: TableView) -> str:
    """What an in-memory render depends on: the runs it reads and the renderer's own code."""
    import hashlib

    import hightpr.tables

    h = hashlib.sha1(f"{view.spec.name} {view.ctx.scale.name} {sorted(_run_keys(view))}".encode())
    for src in sorted(Path(hightpr.tables.__file__).parent.glob("*.*")):
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def rendered(view: TableView, force: bool = False, cache: Path | None = None) -> Rendered:
    """The renderer's CSV and markdown of a table: the saved ones when current, else made now
    (kept in `cache`, keyed by the runs and the renderer's code, for the next build)."""
    spec, ctx = view.spec, view.ctx
    base = tables_dir(ctx) / spec.name
    csv_path, md_path = base.with_suffix(".csv"), base.with_suffix(".md")
    stale = False
    if not force and csv_path.is_file() and md_path.is_file():
        csv = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        saved = set(csv["run"]) - {""} if "run" in csv else set()
        if saved == _run_keys(view):
            return Rendered(spec, ctx.scale.name, csv, md_path.read_text(), _rel(csv_path, ctx.results_dir))
        stale = True
    source = "rendered now from the saved runs"
    digest = _renderer_digest(view) if cache is not None and _run_keys(view) else None
    hit = Path(cache) / ctx.scale.name / f"{spec.name}-{digest}" if digest else None
    if hit is not None and hit.with_suffix(".csv").is_file() and hit.with_suffix(".md").is_file():
        csv = pd.read_csv(hit.with_suffix(".csv"), dtype=str, keep_default_na=False)
        return Rendered(spec, ctx.scale.name, csv, hit.with_suffix(".md").read_text(), source, stale)
    if spec.is_figure:
        md, frame = render_table(spec, ctx, write=False)
    else:
        md, frame = render_markdown(view), tidy(view)
    text = frame.to_csv(index=False, lineterminator="\n")
    if hit is not None:
        hit.parent.mkdir(parents=True, exist_ok=True)
        for old in hit.parent.glob(f"{spec.name}-*"):
            old.unlink()
        hit.with_suffix(".csv").write_text(text)
        hit.with_suffix(".md").write_text(md)
    csv = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return Rendered(spec, ctx.scale.name, csv, md, source, stale)


def _rel(path: Path, results_dir: Path) -> str:
    try:
        return str(Path("results") / Path(path).relative_to(results_dir))
    except ValueError:
        return str(path)


def scale_context(scale: str, results_dir: Path, paper_dir: Path | None) -> Context:
    return Context(get_scale(scale), results_dir=Path(results_dir), paper_root=paper_dir)


# -- the CSV as a page table -------------------------------------------------------------------
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


def delta(ours: str, paper: str) -> str:
    """ours − paper with the paper's decimals; '' unless both are numbers."""
    o, p = as_float(ours), as_float(paper)
    if o is None or p is None:
        return ""
    return f"{o - p:+.{decimals(paper)}f}"


def sections(rendered_: Rendered) -> list[Section]:
    """The tidy CSV as one table per section: a row per cell, per metric its value columns.

    Columns are read from the CSV: any column the renderer adds shows up, per metric when it
    varies between a cell's metrics, once per row when it does not.
    """
    csv = rendered_.csv
    if csv.empty:
        return []
    keys = [k for k in KEYS if k in csv]
    extra_cols = [c for c in csv.columns if c not in (*keys, "metric", *VALUE_COLUMNS, *HIDDEN_COLUMNS)]
    summary_mask = csv["base_loss"].eq("") if "base_loss" in csv else pd.Series(False, index=csv.index)
    body = csv[~summary_mask]
    metrics = list(dict.fromkeys(body["metric"])) if "metric" in body else []
    attach = {m: a for m in metrics if (a := _attach_to(m, metrics))}
    primary = [m for m in metrics if m not in attach]

    def row_key(r) -> tuple:
        return tuple(r[c] for c in keys)

    # a column is row-level when it is the same for every primary metric of every cell
    per_row = []
    for col in extra_cols:
        prim = body[body["metric"].isin(primary)]
        if prim.groupby([prim[k] for k in keys], sort=False)[col].nunique().le(1).all():
            per_row.append(col)
    per_metric = [c for c in extra_cols if c not in per_row]

    out: dict[str, Section] = {}
    rows: dict[tuple, Row] = {}
    used_fields: dict[str, set[str]] = {m: set() for m in metrics}
    for r in body.to_dict(orient="records"):
        kd = {c: r[c] for c in keys}
        name = section_of(kd)
        sec = out.setdefault(name, Section(name, [], [], [], []))
        rk = row_key(r)
        row = rows.get(rk)
        if row is None:
            row = Row(_label(kd, r.get("ours_only", "")), kd, "", {}, {},
                      ours_only=bool(r.get("ours_only", "")) and r.get("ours_only") != "deployed")
            rows[rk] = row
            sec.rows.append(row)
        metric = r["metric"]
        vals = {f: r[f] for f in VALUE_COLUMNS if f in r and r[f] != ""}
        vals.update({c: r[c] for c in per_metric if r[c] != ""})
        if "ours" in vals and "paper" in vals:
            d = delta(vals["ours"], vals["paper"])
            if d:
                vals["delta"] = d
        for name in [c for c in vals if c.endswith("_mean")]:     # x_mean + x_sd -> "x: mean ± sd"
            stem = name.removesuffix("_mean")
            sd = next((f"{stem}_{s}" for s in ("sd", "std") if f"{stem}_{s}" in vals), None)
            if sd is not None:
                vals[f"spread:{stem}"] = f"{vals.pop(name)} ± {vals.pop(sd)}"
        row.values[metric] = vals
        used_fields[metric].update(vals)
        if metric in primary:
            for c in per_row:
                if r[c] != "":
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
    for r in csv[summary_mask].to_dict(orient="records"):
        kd = {c: r[c] for c in keys}
        sec = out.setdefault(section_of(kd), Section(section_of(kd), [], [], [], []))
        note = f" ({r['ours_note']})" if r.get("ours_note") else ""
        sec.summary.append({"metric": r["metric"], "label": metric_name(r["metric"]) + note,
                            "paper": r.get("paper", ""), "ours": r.get("ours", ""),
                            "delta": delta(r.get("ours", ""), r.get("paper", ""))})
    notes = section_notes(rendered_.md)
    for sec in out.values():
        sec.notes = notes.get(sec.name, "")
    return list(out.values())


def _attached_title(metric: str) -> str:
    head = metric.split("@", 1)[0]
    return head.replace("_", " ").replace("fpr", "FPR").replace("tpr", "TPR")


# -- the markdown ------------------------------------------------------------------------------
def split_markdown(md: str) -> tuple[str, dict[str, str], str]:
    """(header, {section: its markdown}, claims) of a rendered table's markdown."""
    header, chunks, current = [], {}, None
    for line in md.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            chunks[current] = []
            continue
        (chunks[current] if current is not None else header).append(line)
    claims = "\n".join(chunks.pop("Claims", []))
    # a figure's markdown holds its table in the header: the page draws it from the CSV
    body = [ln for ln in header if not ln.startswith("# ") and not ln.lstrip().startswith("|")]
    return "\n".join(body).strip(), {k: "\n".join(v).strip() for k, v in chunks.items()}, claims.strip()


def section_notes(md: str) -> dict[str, str]:
    """Each section's markdown without its main table (the first one; the page draws it from the
    CSV): the renderer's notes, further tables, selected values, D1."""
    _, chunks, _ = split_markdown(md)
    out = {}
    for name, text in chunks.items():
        lines, state = [], "before"
        for ln in text.splitlines():
            is_table = ln.lstrip().startswith("|")
            if state == "before" and is_table:
                state = "in"
                continue
            if state == "in":
                if is_table:
                    continue
                state = "after"
            lines.append(ln)
        out[name] = "\n".join(lines).strip()
    return out


VERDICTS = (("none", re.compile(r"not run|no rows|not informative|no verdict|^\W*not in the table|^\W*0/0\b",
                                re.I)),
            ("not-supported", re.compile(r"\bNOT\b")),
            ("weak", re.compile(r"not significant|tied|not distinguishable|not decided", re.I)),
            ("supported", re.compile(r"\bsupported\b|\bagrees\b|\bbest\b", re.I)))


def verdict_class(text: str) -> str:
    """A CSS class for a claim's evidence line from its wording about ours (the text after
    `ours`): supported / weak / not-supported / none (not run, not informative) / neutral."""
    ours = re.split(r"\bours\b", text, maxsplit=1)[-1]
    for name, pattern in VERDICTS:
        if pattern.search(ours):
            return name
    return "neutral"


@dataclass
class Claim:
    text: str
    lines: list[tuple[str, str]]      # (markdown line, verdict class)


def claims(md_claims: str) -> tuple[str, list[Claim]]:
    """(intro, claims) of the markdown's claims block: `- **text**` then `  - evidence` lines."""
    intro, out = [], []
    for line in md_claims.splitlines():
        if line.startswith("- "):
            out.append(Claim(line[2:].strip().strip("*"), []))
        elif line.startswith("  - ") and out:
            text = line[4:].strip()
            out[-1].lines.append((text, verdict_class(text)))
        elif line.strip() and not out:
            intro.append(line)
    return "\n".join(intro).strip(), out


def relpath(target: Path, start: Path) -> str:
    """A relative link from a page's folder (URL slashes)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()
