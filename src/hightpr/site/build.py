"""Build the static results site: `build_site(out_dir, results_dir)` -> index, one page per table
and figure, status, figures (SVG), CSV/JSON downloads. Plain HTML + CSS; works from `file://`.

Everything shown is read through `hightpr.tables` (specs, plans, saved runs, the renderer's
JSON: rows with Δ, notes, verdicts as values): the site types in no number, re-reads no
markdown and trains nothing.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import markdown as md_lib
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from hightpr import runs
from hightpr.ensemble import finished_members
from hightpr.site import figures as figs
from hightpr.site.model import (
    Coverage,
    Rendered,
    Section,
    claims,
    coverage,
    empty_coverage,
    relpath,
    rendered,
    scale_context,
    sections,
)
from hightpr.site.status import STATES, PoolReader, RunState, counts, table_status
from hightpr.tables.claims import metric_name
from hightpr.tables.output import json_text
from hightpr.tables.render import TableView
from hightpr.tables.results import Run
from hightpr.tables.runner import Context
from hightpr.tables.specs import SCALES, TableSpec, all_specs, get_scale

SCALE_ORDER = ("smoke", "cpu", "paper")     # columns of the coverage matrix, small to large
TRADEOFF = Path("docs") / "figures" / "threshold_tradeoff.png"


@dataclass
class BuildReport:
    """What a build wrote and how long it took."""

    out_dir: Path
    pages: list[Path]
    seconds: float
    rendered_now: list[str] = field(default_factory=list)   # table@scale rendered in memory
    stale: list[str] = field(default_factory=list)          # saved tables that name other runs
    notes: list[str] = field(default_factory=list)          # saved JSON missing or older: what renews it

    def line(self) -> str:
        extra = f"; rendered now (no current results/tables file): {', '.join(self.rendered_now)}" \
            if self.rendered_now else ""
        return f"site: {len(self.pages)} pages in {self.out_dir} ({self.seconds:.1f} s){extra}"

    def lines(self) -> list[str]:
        """The summary line, then one line per saved table whose JSON is missing or older."""
        return [self.line(), *dict.fromkeys(self.notes)]


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def markdown(text: str) -> Markup:
    """The renderer's markdown as HTML (its images dropped: the site draws its own figures)."""
    lines: list[str] = []
    for ln in text.splitlines():
        if ln.lstrip().startswith("!["):
            continue
        starts = re.match(r"\s*([-*] |\|)", ln)
        if starts and lines and lines[-1].strip() and not re.match(r"\s*([-*] |\|)", lines[-1]):
            lines.append("")     # Markdown needs a blank line before a list or table
        lines.append(ln)
    text = "\n".join(lines)
    return Markup(md_lib.markdown(text, extensions=["tables"]))  # noqa: S704 - our own renderer's text


def _env() -> Environment:
    env = Environment(loader=PackageLoader("hightpr.site", "templates"), autoescape=select_autoescape(),
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = markdown
    env.globals["metric_name"] = metric_name
    return env


def _machine_path(text: str, root: Path) -> str:
    """An override with an absolute path under the working directory, written relative to it."""
    key, sep, value = text.partition("=")
    if sep and value.startswith("/"):
        try:
            return f"{key}={Path(value).relative_to(root)}"
        except ValueError:
            return text
    return text


def _quote(arg: str) -> str:
    return f"'{arg}'" if re.search(r"[\[\]\s*?$'\"(){}<>|&;]", arg) else arg


@dataclass
class Provenance:
    """How one of our numbers was made: the run, its folder, the commands."""

    label: str
    key: str
    folder: str            # relative link to the ensemble folder
    config: str | None     # relative link to a member's config_resolved.yaml
    make: str
    train: str
    overrides: list[str]
    members: str


@dataclass
class ScaleBlock:
    """A table at one scale on its page."""

    scale: str
    coverage: Coverage
    rendered: Rendered | None
    header: str = ""
    sections: list[Section] = field(default_factory=list)
    figures: dict = field(default_factory=dict)       # section -> [(src, alt, caption)]
    claims_intro: str = ""
    claims: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)    # section -> [Provenance]
    status: list[RunState] = field(default_factory=list)
    status_counts: dict = field(default_factory=dict)
    downloads: dict = field(default_factory=dict)     # csv/json -> relative link
    md: str = ""


class SiteBuilder:
    def __init__(self, out_dir: Path, results_dir: Path, paper_dir: Path | None, scales, force_render: bool,
                 pages: list[str] | None = None):
        self.out = Path(out_dir)
        self.results = Path(results_dir)
        self.paper_dir = paper_dir
        self.scales = [s for s in SCALE_ORDER if s in scales]
        self.force = force_render
        self.env = _env()
        self.specs = all_specs()
        self.pages = list(pages) if pages else list(self.specs)
        self.root = Path.cwd().resolve()
        self.report = BuildReport(self.out, [], 0.0)
        self.blocks: dict[tuple[str, str], ScaleBlock] = {}

    # -- data ----------------------------------------------------------------------------------
    def context(self, scale: str) -> Context:
        return scale_context(scale, self.results, self.paper_dir)

    def load(self) -> None:
        self.views: dict[str, dict[str, TableView]] = {}
        self.cov: dict[str, dict[str, Coverage]] = {name: {} for name in self.specs}
        self.status: dict[str, dict[str, list[RunState]]] = {name: {} for name in self.specs}
        self.pools = {s: self.context(s).pool.is_dir() for s in self.scales}
        cells: dict[str, list] = {}
        for scale in sorted(self.scales, key=lambda s: not self.pools[s]):   # pools first
            ctx = self.context(scale)
            if not self.pools[scale]:
                for name, spec in self.specs.items():
                    self.cov[name][scale] = empty_coverage(spec, ctx, cells.get(name))
                continue
            reader = PoolReader(ctx.pool)
            self.views[scale] = {}
            for name, spec in self.specs.items():
                view = TableView(spec, ctx)
                self.views[scale][name] = view
                cells[name] = view.all_cells
                self.cov[name][scale] = coverage(view)
                self.status[name][scale] = table_status(spec, ctx, reader,
                                                        [view.plans[c] for c in view.all_cells])

    # -- a table page --------------------------------------------------------------------------
    def block(self, spec: TableSpec, scale: str, view: TableView) -> ScaleBlock:
        cov = self.cov[spec.name][scale]
        got = rendered(view, self.force, self.out / ".cache")
        if got.source.startswith("rendered now") and cov.done:
            self.report.rendered_now.append(f"{spec.name}@{scale}")
        if got.stale:
            self.report.stale.append(f"{spec.name}@{scale}")
        if got.note:
            self.report.notes.append(got.note)
        intro, claim_list = claims(got.data)
        block = ScaleBlock(scale, cov, got, header=got.data["header"], sections=sections(got),
                           claims_intro=intro, claims=claim_list, md=got.md)
        page_dir = self.out / "tables"
        if cov.done:
            block.status = self.status[spec.name].get(scale, [])
            block.status_counts = counts(block.status)
            by_key = {s.key: s for s in block.status if s.key}
            outcomes = {o.key: (c, o) for c in view.visible if (o := view.outcome(c)) is not None}
            for sec in block.sections:
                block.figures[sec.name] = self.section_figures(spec, scale, sec, view, outcomes)
                block.provenance[sec.name] = [p for r in sec.rows if r.run and r.run in outcomes
                                              if (p := self.provenance(spec, scale, r, by_key.get(r.run),
                                                                       outcomes[r.run][1], page_dir))]
        data_dir = self.out / "data" / scale
        data_dir.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = data_dir / f"{spec.name}.csv", data_dir / f"{spec.name}.json"
        csv_path.write_text(got.csv_text())
        json_path.write_text(json_text(got.data))
        block.downloads = {"CSV": relpath(csv_path, page_dir), "JSON": relpath(json_path, page_dir)}
        return block

    def section_figures(self, spec, scale, sec: Section, view: TableView, outcomes) -> list:
        out = []
        folder = self.out / "figures" / scale / spec.name
        title = f"{spec.name} [{scale}] {sec.name}"
        runs, seen = [], set()
        for row in sec.rows:
            if row.run in outcomes and row.run not in seen and outcomes[row.run][1].binary:
                seen.add(row.run)
                runs.append((row.label, row.run))

        def roc(path: Path) -> str:
            curves = [(label, outcomes[k][1].test["scores"], outcomes[k][1].test["labels"].astype(bool))
                      for label, k in runs]
            return figs.roc_figure(curves, path, title)

        todo = []
        if spec.kind == "noise":
            todo.append(("noise", lambda p: figs.noise_figure(sec, p, title), (sec,),
                         "Our numbers against label noise η (RankReg Fig. 4's axes)."))
        if runs:
            keyed = [(label, k, outcomes[k][1].metrics.get("test")) for label, k in runs]
            todo.append(("roc", roc, (keyed,), "ROC curves of each row's ensemble on the test set (saved "
                         "logits); the inset magnifies TPR ≥ 0.9."))
        todo.append(("fpr", lambda p: figs.bars_figure(sec, p, title), (sec,),
                     "FPR at high TPR: ours with 95% intervals (members and test samples) beside the "
                     "paper's."))
        for kind, draw, inputs, caption in todo:
            path = folder / f"{_slug(sec.name)}-{kind}.svg"
            alt = figs.cached(self.out / ".cache" / "figures", (title, kind, repr(inputs)), path, draw)
            if alt:
                out.append((relpath(path, self.out / "tables"), alt, caption))
        return out

    def provenance(self, spec, scale, row, state: RunState | None, outcome,
                   page_dir: Path) -> Provenance | None:
        if state is None or state.plan is None:
            return None
        ctx = self.context(scale)
        machine = ctx.machine_overrides(state.plan, Run(state.overrides, state.key))
        args = [*state.overrides, *(_machine_path(m, self.root) for m in machine)]
        members = finished_members(outcome.path)
        config = next((runs.config_path(m) for m in members.values() if runs.config_path(m).is_file()), None)
        return Provenance(
            label=row.label, key=state.key, folder=relpath(outcome.path, page_dir) + "/",
            config=relpath(config, page_dir) if config else None,
            make=f"make table-{spec.name} SCALE={scale} ROWS='{state.cell.id}'",
            train="python train.py " + " ".join(_quote(a) for a in args),
            overrides=list(state.overrides), members=f"{outcome.members}")

    def table_page(self, spec: TableSpec) -> Path:
        blocks = []
        for scale in self.scales:
            if self.cov[spec.name][scale].done:
                blocks.append(self.block(spec, scale, self.views[scale][spec.name]))
                self.blocks[(spec.name, scale)] = blocks[-1]
        paper_only = None
        if not blocks:
            scale = "cpu" if "cpu" in self.views else next(iter(self.views), None)
            view = self.views[scale][spec.name] if scale else TableView(spec, self.context("paper"))
            paper_only = self.block(spec, view.ctx.scale.name, view)
        status = {s: self.status[spec.name][s] for s in self.scales if self.status[spec.name].get(s)}
        return self.write(f"tables/{spec.name}.html", "table.html", spec=spec, blocks=blocks,
                          paper_only=paper_only, coverage=self.cov[spec.name], scales=self.scales,
                          status=status, status_counts={s: counts(v) for s, v in status.items()},
                          pools=self.pools, title=spec.title)

    # -- index and status ----------------------------------------------------------------------
    def index_page(self, blocks: dict) -> Path:
        scales = [get_scale(s) for s in self.scales]
        names = list(self.specs)
        tally = {}
        for s in self.scales:
            covs = [self.cov[n][s] for n in names]
            tally[s] = {"complete": sum(c.state == "complete" for c in covs),
                        "complete_names": [c.table for c in covs if c.state == "complete"],
                        "partial": sum(c.state == "partial" for c in covs),
                        "cells": sum(c.done for c in covs), "of": sum(c.runnable for c in covs)}
        never = [n for n in names if all(self.cov[n][s].done == 0 for s in self.scales)]
        private = [n for n in names if all(self.cov[n][s].runnable == 0 for s in self.scales
                                           if self.cov[n][s].cells and self.pools.get(s))]
        reasons = sorted({r for n in names for s in self.scales for r in self.cov[n][s].reasons})
        checked = []
        verdicts = {"supported": 0, "weak": 0, "not-supported": 0}
        for (name, scale), block in blocks.items():
            for claim in block.claims:
                lines = [line for line in claim.lines if line.cls != "none"]
                if lines:
                    checked.append((name, scale, claim.text, lines))
                    for line in lines:
                        if line.cls in verdicts:
                            verdicts[line.cls] += 1
        tradeoff = self.results.resolve().parent / TRADEOFF
        tradeoff_link = None
        if tradeoff.is_file():
            dest = self.out / "assets" / tradeoff.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tradeoff, dest)
            tradeoff_link = f"assets/{tradeoff.name}"
        return self.write("index.html", "index.html", specs=self.specs, cov=self.cov, scales=scales,
                          tally=tally, never=never, private=private, reasons=reasons, checked=checked,
                          verdicts=verdicts, pools=self.pools, tradeoff=tradeoff_link, title="Results",
                          results=self.results)

    def status_page(self) -> Path:
        rows, live = [], []
        for name, spec in self.specs.items():
            rows.append((spec, {s: counts(v) for s, v in self.status[name].items()}))
            for scale, states in self.status[name].items():
                live += [(name, scale, s) for s in states if s.state in ("running", "failed")]
        seen, uniq = set(), []
        for name, scale, s in live:
            if (scale, s.key) not in seen:
                seen.add((scale, s.key))
                uniq.append((name, scale, s))
        return self.write("status.html", "status.html", rows=rows, live=uniq, scales=self.scales,
                          pools=self.pools, states=STATES, title="Status",
                          link=lambda p: relpath(p, self.out) if p else None)

    def write(self, rel: str, template: str, **context) -> Path:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        depth = rel.count("/")
        context.setdefault("root", "../" * depth)
        context.setdefault("built", self.built)
        context["link"] = context.get("link") or (lambda p, d=path.parent: relpath(p, d) if p else None)
        path.write_text(self.env.get_template(template).render(**context))
        self.report.pages.append(path)
        return path

    def build(self) -> BuildReport:
        start = time.perf_counter()
        self.built = _built_from(self.results)
        self.out.mkdir(parents=True, exist_ok=True)
        for sub in ("tables", "figures", "data", "assets"):
            shutil.rmtree(self.out / sub, ignore_errors=True)
        css = files("hightpr.site").joinpath("templates", "style.css").read_text()
        (self.out / "style.css").write_text(css)
        self.load()
        for name in self.pages:
            self.table_page(self.specs[name])
        self.index_page(self.blocks)
        self.status_page()
        self.report.seconds = time.perf_counter() - start
        return self.report


def _built_from(results: Path) -> str:
    """`results/` and, when it is a git checkout, its commit: what the site was built from."""
    import subprocess

    try:
        commit = subprocess.run(["git", "-C", str(results), "log", "-1", "--format=%h %cs"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{results}" + (f" at commit {commit}" if commit else "")


def build_site(out_dir: Path, results_dir: Path = Path("results"), paper_dir: Path | None = None,
               scales=SCALES, force_render: bool = False, pages: list[str] | None = None) -> BuildReport:
    """Write the site under `out_dir` from `results_dir` (its runs, rendered tables and paper CSVs).

    `force_render` renders every table in memory from the saved runs instead of reading
    `results/tables/` (slower: the bootstrap intervals are recomputed); `pages` limits the table
    pages written to these names (the index and status still cover every table).
    """
    from hightpr.tables.specs import get_spec

    for name in pages or ():
        get_spec(name)     # an unknown name is one clear error
    if paper_dir is None and not (Path(results_dir) / "paper").is_dir():
        paper_dir = Path("results") / "paper"
    return SiteBuilder(out_dir, results_dir, paper_dir, scales, force_render, pages).build()
