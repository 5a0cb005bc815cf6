"""The declared tables, recipes and scales (`tables.yaml`, `recipes.yaml`, `scales.yaml` beside this file).

Names: `rankreg-t1` is `results/paper/rankreg-cvpr2023__t1.csv`, `alm-t16` is
`alm-neurips2021__t16`, `almv1-t8` is `alm-arxiv-v1__t8`; figures are `rankreg-f3`, `rankreg-f4`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from hightpr.errors import HightprError
from hightpr.identity import execution_only

HERE = Path(__file__).parent
PAPER_PREFIX = {"rankreg-cvpr2023__": "rankreg-", "alm-neurips2021__": "alm-", "alm-arxiv-v1__": "almv1-"}
SCALES = ("paper", "cpu", "smoke")
@functools.cache
def _load(name: str) -> dict:
    return yaml.safe_load((HERE / name).read_text())


def recipes() -> dict:
    return _load("recipes.yaml")


def short_name(paper_stem: str) -> str:
    """`rankreg-cvpr2023__t1` -> `rankreg-t1`."""
    for prefix, short in PAPER_PREFIX.items():
        if paper_stem.startswith(prefix):
            return short + paper_stem.removeprefix(prefix)
    raise HightprError(f"{paper_stem}: not a paper table name")


@dataclass(frozen=True)
class TableSpec:
    """One paper table (or figure) as declared in tables.yaml."""

    name: str
    title: str
    protocol: str
    paper: str | None = None                 # results/paper/<paper>.csv; None for figures
    kind: str = "table"                      # table | roc | noise
    extras: tuple[str, ...] = ()
    bold: str | None = None                  # base_loss | section | None
    avg_delta: bool = False
    delong: bool = False
    reference: str | None = None             # hidden rows with this reg (the DeLong reference)
    critical_classes: tuple[int, ...] | None = None
    blocks: dict = field(default_factory=dict, hash=False)
    members: dict = field(default_factory=dict, hash=False)   # {scale: {block: N}}: rows given N members
    claims: tuple = ()
    cells: tuple = ()                        # figures: their cells
    eta: tuple[float, ...] = ()
    metrics: tuple[str, ...] = ()

    @property
    def is_figure(self) -> bool:
        return self.kind != "table"


def _spec(name: str, entry: dict, kind: str) -> TableSpec:
    return TableSpec(
        name=name, title=entry["title"], protocol=entry.get("protocol", "alm"), paper=entry.get("paper"),
        kind=entry.get("kind", kind), extras=tuple(entry.get("extras", ())), bold=entry.get("bold"),
        avg_delta=bool(entry.get("avg_delta")), delong=bool(entry.get("delong")),
        reference=entry.get("reference"),
        critical_classes=tuple(entry["critical_classes"]) if entry.get("critical_classes") else None,
        blocks=dict(entry.get("blocks") or {}), members=dict(entry.get("members") or {}),
        claims=tuple(entry.get("claims") or ()),
        cells=tuple(entry.get("cells") or ()), eta=tuple(entry.get("eta") or ()),
        metrics=tuple(entry.get("metrics") or ()),
    )


@functools.cache
def all_specs() -> dict[str, TableSpec]:
    """Every table and figure by its short name, tables first in paper order."""
    data = _load("tables.yaml")
    out = {name: _spec(name, entry, "table") for name, entry in data["tables"].items()}
    for name, entry in data["figures"].items():
        out[name] = _spec(name, entry, "figure")
    for name, spec in out.items():
        if spec.paper and short_name(spec.paper) != name:
            raise HightprError(f"tables.yaml: {name} declares paper {spec.paper} ({short_name(spec.paper)})")
    return out


def table_names(figures: bool = False) -> list[str]:
    return [n for n, s in all_specs().items() if s.is_figure == figures]


def get_spec(name: str) -> TableSpec:
    specs = all_specs()
    if name not in specs:
        from difflib import get_close_matches

        near = get_close_matches(name, list(specs), n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise HightprError(f"no table or figure named {name!r}; {hint}known: {', '.join(specs)}")
    return specs[name]


@dataclass(frozen=True)
class Scale:
    """A budget (scales.yaml): members, grids and overrides per dataset family."""

    name: str
    description: str
    budget: str
    members: int
    bootstrap: int
    common: tuple[str, ...]
    families: dict = field(hash=False)
    stand_ins: dict = field(default_factory=dict, hash=False)
    grids: dict = field(default_factory=dict, hash=False)
    grid_limit: int | None = None
    standins: bool = False
    execution: tuple[str, ...] = ()     # --override settings of how runs execute (not in their keys)

    def with_overrides(self, extra) -> Scale:
        """This scale plus overrides for every run: those that change what is learnt become part of
        each run's key and of the printed budget; execution-only ones (`ensemble.batched=false`,
        `trainer.num_threads=2`) are only passed to the runs."""
        extra = tuple(extra)
        learnt = tuple(o for o in extra if not execution_only(o))
        execution = tuple(o for o in extra if execution_only(o))
        out = replace(self, execution=(*self.execution, *execution))
        if learnt:
            out = replace(out, common=(*self.common, *learnt),
                          budget=f"{self.budget}; extra overrides: {' '.join(learnt)}")
        return out

    def family(self, family: str) -> dict:
        return self.families.get(family) or {}

    def budget_of(self, families) -> str:
        """The budget as a table holding these dataset families prints it: what every family
        shares, then each family's own (in the order given)."""
        own = [" ".join(str(self.family(f)["budget"]).split()) for f in dict.fromkeys(families)
               if self.family(f).get("budget")]
        return "; ".join([*own, self.budget]) if own else self.budget

    def members_for(self, family: str) -> int:
        return int(self.family(family).get("members", self.members))


def get_scale(name: str) -> Scale:
    data = _load("scales.yaml")
    if name not in data:
        raise HightprError(f"SCALE={name}: unknown scale; use one of {', '.join(data)}")
    entry = data[name]
    return Scale(
        name=name, description=entry["description"], budget=" ".join(entry["budget"].split()),
        members=int(entry["members"]), bootstrap=int(entry["bootstrap"]),
        common=tuple(entry.get("common", ())), families=entry.get("families") or {},
        stand_ins=entry.get("stand_ins") or {}, grids=entry.get("grids") or {},
        grid_limit=entry.get("grid_limit"), standins=bool(entry.get("standins")),
    )


@functools.cache
def grid_preset(name: str) -> dict[str, list]:
    """The values of a `hparams_search=<name>` preset (its `hydra.sweeper.params`), parsed."""
    path = HERE.parent / "conf" / "hparams_search" / f"{name}.yaml"
    if not path.is_file():
        raise HightprError(f"hparams_search={name}: no preset {path}")
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    return {key: [yaml.safe_load(v) for v in str(values).split(",")] for key, values in params.items()}
