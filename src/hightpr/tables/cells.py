"""A table's cells and how each becomes runs at a scale (recipes.yaml, scales.yaml).

A `Cell` is one row of a paper table without its metric (or a row ours only). `plan` turns it
into a `Plan`: its overrides, where its hyper-parameters come from (a paper source, or grid
steps selected on validation) and whether the data to run it truthfully exists here.
Every run is an ensemble whose folder key is a digest of its overrides, so a run shared by two
tables (RankReg Table 1's BCE rows and ALM Table 1's) is trained once.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from hightpr.errors import HightprError
from hightpr.identity import overrides_key
from hightpr.tables.paper import KEYS, almv1_hparams, load_paper, official_hparams
from hightpr.tables.specs import Scale, TableSpec, grid_preset, recipes

LOSS_LABELS = {"bce": "BCE", "s_ml": "S-ML", "a_ml": "A-ML", "s_fl": "S-FL", "a_fl": "A-FL", "wbce": "W-BCE",
               "cbbce": "CB-BCE", "ldam": "LDAM", "msfe": "MSFE", "mbauc": "MBAUC", "ce": "CE", "fl": "FL",
               "cbce": "CB-CE", "libauc_pauc_dro_hightpr": "LibAUC pAUC-DRO"}
REG_LABELS = {"alm": "ALM", "alm_m1": "ALM_m1", "alm_m2": "ALM_m2", "rankreg": "RankReg"}


@dataclass(frozen=True)
class Cell:
    """One row of a table: the paper CSV's key columns; `extra` names a row ours only."""

    dataset: str
    classes: str
    ratio: str
    base_loss: str
    reg: str
    variant: str = ""
    extra: str = ""          # recipes.yaml extras key (a row the paper lacks)
    hidden: bool = False     # a reference run (DeLong) that is not printed

    @property
    def section(self) -> str:
        """`cifar10_binary.main@100`: the dataset x classes x ratio part of a table."""
        return f"{self.dataset}{'.' + self.classes if self.classes else ''}@{self.ratio}"

    @property
    def row(self) -> str:
        """`bce`, `bce+alm`, `bce+rankreg:penalty=cubed`, `bce:sampler=dual` (what ROWS matches)."""
        reg = f"+{self.reg}" if self.reg != "none" else ""
        return f"{self.base_loss}{reg}{':' + self.variant if self.variant else ''}"

    @property
    def id(self) -> str:
        return f"{self.section}/{self.row}"

    @property
    def label(self) -> str:
        if self.extra:
            return recipes()["extras"][self.extra]["label"] + " †"
        loss = LOSS_LABELS.get(self.base_loss, self.base_loss)
        reg = f" + {REG_LABELS.get(self.reg, self.reg)}" if self.reg != "none" else ""
        return f"{loss}{reg}{' [' + self.variant + ']' if self.variant else ''}"


def paper_cells(spec: TableSpec, paper_dir: Path) -> list[Cell]:
    """The cells of a table in the paper's row order, then extras per section, then hidden references."""
    if spec.is_figure:
        return figure_cells(spec)
    table = load_paper(paper_dir, spec.paper)
    seen: dict[Cell, None] = {}
    for _, r in table.iterrows():
        if r.base_loss == "":              # the Avg.Δ row: computed, not run
            continue
        variant = "" if r.metric == "hparam" else r.variant
        seen.setdefault(Cell(*(r[k] for k in KEYS[:5]), variant), None)
    cells = list(seen)
    sections = list(dict.fromkeys((c.dataset, c.classes, c.ratio) for c in cells))
    for section in sections:
        for key in spec.extras:
            e = recipes()["extras"][key]
            cells.append(Cell(*section, e["base_loss"], e["reg"], e["variant"], extra=key))
    if spec.reference:
        for c in list(cells):
            ref = Cell(c.dataset, c.classes, c.ratio, c.base_loss, spec.reference, hidden=True)
            if c.reg != spec.reference and not c.extra and ref not in seen and ref not in cells:
                cells.append(ref)
    return cells


def matches(cell: Cell, pattern: str) -> bool:
    """A ROWS pattern: a glob on the cell's row (`bce*`, `bce:sampler=dual`), or on its full id
    when the pattern has a '/' (`cifar10_binary.main@100/*`)."""
    return fnmatch.fnmatchcase(cell.id if "/" in pattern else cell.row, pattern)


def members_of(spec: TableSpec, cell: Cell, scale: Scale, family: str) -> int:
    """The cell's ensemble size at `scale`: the table's `members` for a block the cell is in
    (the largest where several are), else the scale's for its family."""
    counts = [int(n) for block, n in (spec.members.get(scale.name) or {}).items()
              if any(matches(cell, p) for p in spec.blocks.get(block, ()))]
    return max(counts, default=scale.members_for(family))


def figure_cells(spec: TableSpec) -> list[Cell]:
    cells = [Cell(**c) for c in spec.cells]
    if spec.kind != "noise":
        return cells
    return [Cell(c.dataset, c.classes, c.ratio, c.base_loss, c.reg, f"label_noise={eta:g}" if eta else "")
            for eta in spec.eta for c in cells]


# -- overrides ----------------------------------------------------------------------------------
def merge(overrides) -> tuple[str, ...]:
    """Later overrides of the same key win (`experiment=rankreg/melanoma` replaces `experiment=melanoma`)."""
    out: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0]
        out.pop(key, None)
        out[key] = o
    return tuple(out.values())


def fmt_value(value) -> str:
    """A value as a Hydra override writes it (1e-07, 0.25, 2)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return f"{value:.1f}"
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Stage:
    """One grid step: a hparams_search preset's values, selected on validation; `on_base` steps
    run without the regulariser (a base loss's own parameter is chosen on the base loss alone)."""

    preset: str
    params: dict = field(hash=False)
    on_base: bool = False

    def candidates(self, limit: int | None) -> list[dict]:
        keys = list(self.params)
        points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.params.values())]
        return points[:limit] if limit else points


@dataclass
class Plan:
    """How one cell runs at one scale."""

    cell: Cell
    family: str
    data: tuple[str, ...]          # dataset overrides
    method: tuple[str, ...]        # loss, regulariser, variant
    base: tuple[str, ...]          # the base loss alone (on_base grid steps)
    fixed: dict                    # hyper-parameters from a paper source {config key: value}
    stages: list[Stage]
    budget: tuple[str, ...]        # the scale's overrides
    base_budget: tuple[str, ...]
    members: int
    data_note: str
    source: str                    # the paper source of `fixed` ('' = none: grids or defaults)
    unavailable: str | None = None  # why it cannot be trained here (private data, or none under the data dir)
    private: str | None = None      # the data exists nowhere public: never run (but at SCALE=smoke)
    needs: str | None = None        # what running it needs (recipes `missing`), whatever this machine has

    def overrides(self, values: dict | None = None, on_base: bool = False) -> tuple[str, ...]:
        """Semantic overrides of one run: data, method (or base), the hyper-parameters, the budget."""
        params = {**self.fixed, **(values or {})}
        if on_base:
            params = {k: v for k, v in params.items() if k.startswith("loss.")}
        stated = {o.split("=", 1)[0] for o in self.method}   # a row's own value beats the source's
        params = {k: v for k, v in params.items() if on_base or k not in stated}
        hp = [f"{k}={fmt_value(v)}" for k, v in params.items()]
        return merge([*self.data, *(self.base if on_base else self.method), *hp,
                      *(self.base_budget if on_base else self.budget)])

    def key(self, overrides: tuple[str, ...], on_base: bool = False) -> str:
        """Ensemble folder name: readable prefix + digest of the (order-free) overrides that change
        what is learnt (execution-only ones such as `trainer.num_threads` are left out)."""
        reg = "none" if on_base else self.cell.reg
        return overrides_key(f"{self.cell.dataset}-{self.cell.base_loss}-{reg}", overrides)


def _variant_overrides(variant: str) -> list[str]:
    if not variant:
        return []
    name, _, value = variant.partition("=")
    table = recipes()["variants"].get(name)
    if table is None:
        raise HightprError(f"variant {variant!r}: no mapping in hightpr/tables/recipes.yaml (variants)")
    if isinstance(table, str):
        return [table.format(value)]
    if value not in table:
        raise HightprError(f"variant {variant!r}: value {value!r} not in recipes.yaml ({', '.join(table)})")
    return list(table[value])


def _loss_overrides(loss: str) -> list[str]:
    return list(recipes()["losses"].get(loss, [f"loss={loss}"]))


def _source_values(protocol: dict, cell: Cell, paper_dir: Path) -> dict | None:
    names = recipes()["hparam_keys"]
    source = protocol["source"]
    if source == "alm-official":
        found = official_hparams(paper_dir, cell.dataset, cell.ratio, cell.base_loss, cell.reg)
    elif source == "almv1-appendix-e":
        found = almv1_hparams(paper_dir, cell.dataset, cell.ratio, cell.base_loss, cell.reg)
    else:
        raise HightprError(f"recipes.yaml: unknown hyper-parameter source {source!r}")
    if found is None:
        return None
    return {names[k]: v for k, v in found.items()}


def _loss_param_keys(loss: str, protocol: dict) -> set[str]:
    preset = protocol["loss_grids"].get(loss)
    return set(grid_preset(preset)) if preset else set()


def plan(spec: TableSpec, cell: Cell, scale: Scale, paper_dir: Path, data_dir: Path) -> Plan:
    """The runs of `cell` at `scale`: overrides, hyper-parameter source and grid steps, availability."""
    rec = recipes()
    entry = rec["datasets"][cell.dataset]
    family = entry["family"]
    protocol = rec["protocols"][spec.protocol]
    stand_in = scale.stand_ins.get(cell.dataset)

    data = list(stand_in["config"] if stand_in else entry["config"])
    classes = entry.get("classes") or {}
    if cell.classes and cell.classes in classes:
        data += classes[cell.classes]
    if not stand_in:
        ratio = entry["ratio"]
        data += ratio.get(cell.ratio, []) if isinstance(ratio, dict) else [f"{ratio}={cell.ratio}"]
    if spec.critical_classes:
        data.append(f"dataset.critical_classes=[{','.join(map(str, spec.critical_classes))}]")

    regs = rec["regs"][family]
    if cell.reg not in regs:
        raise HightprError(f"recipes.yaml: no {cell.reg} setup for the {family} family")
    loss = _loss_overrides(cell.base_loss)
    method = [*loss, *regs[cell.reg], *_variant_overrides(cell.variant)]

    fam = scale.family(family)
    budget = [*scale.common, *fam.get("overrides", [])]
    base_budget = list(budget)
    warmup = fam.get("two_step_warmup")
    if protocol.get("two_step") and cell.reg == "alm" and warmup:
        budget.append(f"reg.warmup_epochs={warmup}")

    source_values = _source_values(protocol, cell, paper_dir)
    fixed = dict(source_values or {})
    stages: list[Stage] = []
    loss_keys = _loss_param_keys(cell.base_loss, protocol)
    if loss_keys and not loss_keys <= set(fixed):
        stages.append(_stage(protocol["loss_grids"][cell.base_loss], scale, on_base=cell.reg != "none"
                             or bool(cell.variant)))
    chosen = [o.split("=", 1)[1] for o in regs[cell.reg] if o.startswith("reg=")]
    reg_presets = protocol["reg_grids"].get(chosen[0] if chosen else cell.reg, [])
    stated = {o.split("=", 1)[0] for o in method}     # a row that sets a grid's keys itself skips it
    for preset in reg_presets:
        if not set(grid_preset(preset)) <= set(fixed) | stated:
            stages.append(_stage(preset, scale))
    source = protocol["source"] if source_values is not None else ""

    unavailable = private = needs = None
    if entry.get("private") and not scale.standins:
        unavailable = private = entry["private"]
    elif entry.get("requires") and not scale.standins:
        needs = entry.get("missing")
        if not (Path(data_dir) / entry["requires"]).exists():
            unavailable = needs or f"no {entry['requires']} under {data_dir}"
    note = stand_in["data"] if stand_in else entry["data"]
    if cell.classes in rec.get("class_notes", {}):
        note += ", " + rec["class_notes"][cell.classes]
    return Plan(cell, family, tuple(data), tuple(method), tuple(loss), fixed, stages, tuple(budget),
                tuple(base_budget), members_of(spec, cell, scale, family), note, source, unavailable,
                private, needs)


def _stage(preset: str, scale: Scale, on_base: bool = False) -> Stage:
    params = dict(grid_preset(preset))
    params.update(scale.grids.get(preset) or {})
    return Stage(preset, params, on_base)
