"""`hightpr-select`: the best configuration per cell of a finished grid, chosen on validation.

    python train.py -m hparams_search=alm_mu reg=alm loss=bce,a_fl name=grid
    hightpr-select outputs/grid/runs.csv --out my_configs
    python train.py --config-dir my_configs experiment=selected/<cell>

A cell is everything that was not searched (dataset, loss, regulariser, their other settings);
within a cell the run (or ensemble) with the best validation AUC wins (validation accuracy for
multi-class runs), never the test set. Ties go to the lower validation loss, then to the first
row. Each cell's choice is written as an `experiment=` preset that records where it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.metrics.evaluators import TIE_BREAK, monitor_name, selection_key

GROUPS = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler")
NOT_CELL = re.compile(r"(val|test)_|op\.|member_(mean|std)_|run_dir$|finished_at$|(.*\.)?seed$|member$|"
                      r"members$|ensemble_key$|kind$|epochs_trained$|global_step$|best_checkpoint$|name$")


def swept_from_multirun(runs_csv: Path) -> list[str]:
    """The searched keys of the last multirun next to `runs_csv` (its `runs/multirun.yaml`)."""
    path = Path(runs_csv).parent / "runs" / "multirun.yaml"
    if not path.is_file():
        return []
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
    overrides = OmegaConf.select(OmegaConf.load(path), "hydra.overrides.task") or []
    keys = list(params) + [o.split("=", 1)[0].lstrip("+~") for o in overrides if "," in o.split("=", 1)[-1]]
    return sorted({k for k in keys if k not in ("seed", "ensemble.member")})


def monitor_of(rows: pd.DataFrame) -> str:
    """`val_auc` for binary runs, `val_accuracy` for multi-class ones (the evaluators' monitors)."""
    name = monitor_name((c for c in rows.columns if rows[c].notna().any()), prefix="val_")
    if name is None:
        raise HightprError("runs.csv has no validation AUC or accuracy: were the runs finished?")
    return f"val_{name}"


def select(rows: pd.DataFrame, swept: list[str]) -> pd.DataFrame:
    """One row per cell: the candidate with the best validation monitor."""
    missing = [k for k in swept if k not in rows]
    if missing:
        raise HightprError(f"runs.csv has no column {missing[0]!r}: searched keys are config keys such as "
                           f"reg.mu0 (available: {', '.join(c for c in rows.columns if '.' in c)[:300]})")
    if "kind" in rows:  # ensembles stand for their members; single runs stand alone
        ensembles = rows["kind"] == "ensemble"
        rows = rows[ensembles | (rows["kind"] == "single")]
    monitor = monitor_of(rows)
    cell_keys = [c for c in rows.columns if c not in swept and not NOT_CELL.match(c)]
    losses = rows[f"val_{TIE_BREAK}"] if f"val_{TIE_BREAK}" in rows else pd.Series(math.nan, index=rows.index)
    keys = [selection_key(v, loss) for v, loss in zip(rows[monitor], losses, strict=True)]
    ranked = rows.iloc[sorted(range(len(rows)), key=keys.__getitem__)]  # stable: ties keep the row order
    best = ranked.groupby(cell_keys, dropna=False, sort=True).head(1)
    counts = ranked.groupby(cell_keys, dropna=False, sort=True).size().rename("candidates").reset_index()
    best = best.merge(counts, on=cell_keys, how="left").assign(_monitor=monitor)
    best.attrs["cell_keys"] = cell_keys
    return best


def cell_name(row: pd.Series, cell_keys: list[str]) -> str:
    """`<dataset>-<loss>-<reg>-<digest of the cell's settings>`: stable across runs of the command."""
    parts = [str(row[g]) for g in ("dataset", "loss", "reg") if g in row and isinstance(row[g], str)]
    digest = hashlib.sha1(repr([(k, str(row[k])) for k in cell_keys]).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join([*parts, digest]))


def preset(row: pd.Series, swept: list[str], source: Path) -> str:
    """The `experiment=` preset of one cell's choice."""
    monitor = row["_monitor"]
    lines = ["# @package _global_",
             f"# Selected by hightpr-select from {source}: {monitor} = {row[monitor]:.6g}, "
             f"the best of {int(row['candidates'])} candidate(s) of this cell",
             f"# (run {row.get('run_dir', '?')}).",
             "defaults:"]
    lines += [f"  - override /{g}: {row[g]}" for g in GROUPS if isinstance(row.get(g), str)]
    values: dict = {}
    for key in swept:
        value = row[key]
        value = value.item() if hasattr(value, "item") else value
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if isinstance(value, float) and math.isnan(value) else value
    body = OmegaConf.to_yaml(OmegaConf.create(values)) if values else ""
    return "\n".join(lines) + "\n" + body


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-select`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(prog="hightpr-select", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("runs_csv", type=Path, help="outputs/<name>/runs.csv of a finished grid")
    parser.add_argument("--params", default=None,
                        help="searched keys, comma separated (default: from the grid's multirun.yaml)")
    parser.add_argument("--out", type=Path, default=Path("selected_configs"),
                        help="folder for experiment/selected/<cell>.yaml (use it with --config-dir)")
    args = parser.parse_args(argv)
    if not args.runs_csv.is_file():
        raise HightprError(f"{args.runs_csv}: no such runs table (outputs/<name>/runs.csv)")
    swept = args.params.split(",") if args.params else swept_from_multirun(args.runs_csv)
    if not swept:
        raise HightprError("which keys were searched? pass --params reg.mu0,reg.rho "
                           "(no multirun.yaml found)")
    chosen = select(pd.read_csv(args.runs_csv), swept)
    folder = args.out / "experiment" / "selected"
    folder.mkdir(parents=True, exist_ok=True)
    for _, row in chosen.iterrows():
        name = cell_name(row, chosen.attrs["cell_keys"])
        (folder / f"{name}.yaml").write_text(preset(row, swept, args.runs_csv))
        shown = ", ".join(f"{k}={row[k]}" for k in swept)
        print(f"{name}: {shown} ({row['_monitor']} {row[row['_monitor']]:.4f}, {int(row['candidates'])} "
              f"candidates) -> --config-dir {args.out} experiment=selected/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
