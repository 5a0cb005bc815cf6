"""The papers' numbers and selections, read from `results/paper/` (never typed into code).

`load_paper` reads one transcribed table (`results/paper/<paper>__<table>.csv`, one row per
printed number, values kept as printed strings); `official_hparams` and `almv1_hparams` read the
selected hyper-parameters of a cell (the official ALM code's, and ALM-v1 appendix E).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from hightpr.errors import HightprError

KEYS = ("dataset", "classes", "ratio", "base_loss", "reg", "variant")
COLUMNS = ("paper", "table", *KEYS, "metric", "value", "note")
OFFICIAL_CSV = Path("hparams") / "alm-official-cifar.csv"
OFFICIAL_PARAMS = ("m", "gamma", "c", "beta", "mu0", "rho", "delta")
ALMV1_HPARAMS = {"mri": "alm-arxiv-v1__t7", "cifar10_small": "alm-arxiv-v1__t8"}


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV with every column as a string and empty cells as '' (printed strings stay as printed)."""
    if not Path(path).is_file():
        raise HightprError(f"{path}: not found (run from the repository root, or pass --results / --paper)")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@functools.cache
def load_paper(paper_dir: Path, stem: str) -> pd.DataFrame:
    """One paper table, tidy: the columns of results/paper/INDEX.md, strings as printed."""
    table = read_csv(Path(paper_dir) / f"{stem}.csv")
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise HightprError(f"{paper_dir}/{stem}.csv lacks the columns {missing}")
    return table


def decimals(printed: str) -> int:
    """Decimal places of a printed number ('57.0' -> 1, '93.50' -> 2, '4' -> 0)."""
    return len(printed.split(".", 1)[1]) if "." in printed else 0


def as_float(printed: str) -> float | None:
    try:
        return float(printed)
    except (TypeError, ValueError):
        return None


@functools.cache
def _official(paper_dir: Path) -> pd.DataFrame:
    return read_csv(Path(paper_dir) / OFFICIAL_CSV)


def official_hparams(paper_dir: Path, dataset: str, ratio: str, base_loss: str, reg: str) -> dict | None:
    """The official ALM selection of a binary CIFAR cell (see `_official_hparams`), a fresh dict."""
    found = _official_hparams(Path(paper_dir), dataset, ratio, base_loss, reg)
    return None if found is None else dict(found)


@functools.cache  # every table's plans ask for it per cell: filter the CSV once per cell
def _official_hparams(paper_dir: Path, dataset: str, ratio: str, base_loss: str, reg: str
                      ) -> tuple | None:
    """The official ALM selection of a binary CIFAR cell ({'m': 0.5, 'mu0': 1e-7, ...}), or None.

    RankReg rows take their base loss's row (RankReg §4.3 reuses the base-loss settings); ALM
    rows carry mu0, rho and delta as selected, even outside the paper's printed grid.
    """
    table = _official(Path(paper_dir))
    want = "alm" if reg == "alm" else "none"
    hit = table[(table.dataset == dataset) & (table.ratio == ratio) & (table.base_loss == base_loss)
                & (table.reg == want)]
    if hit.empty:
        return None
    row = hit.iloc[0]
    return tuple((k, float(row[k])) for k in OFFICIAL_PARAMS if k in row and row[k] != "")


def almv1_hparams(paper_dir: Path, dataset: str, ratio: str, base_loss: str, reg: str) -> dict | None:
    """ALM-v1 appendix E for a cell (see `_almv1_hparams`), a fresh dict."""
    found = _almv1_hparams(Path(paper_dir), dataset, ratio, base_loss, reg)
    return None if found is None else dict(found)


@functools.cache
def _almv1_hparams(paper_dir: Path, dataset: str, ratio: str, base_loss: str, reg: str) -> tuple | None:
    """ALM-v1 appendix E (its Tables 7 and 8) for a cell: base loss values from the baseline row,
    mu0 / rho / delta from the 'ALM with' row. W-BCE's printed c = N/3, 2N/3, N is c in units of
    the class ratio N, the unit of `loss.c`. None when the appendix has no such row."""
    stem = ALMV1_HPARAMS.get(dataset)
    if stem is None:
        return None
    table = load_paper(Path(paper_dir), stem)
    rows = table[(table.ratio == ratio) & (table.base_loss == base_loss)]
    if rows.empty:
        return None
    out: dict = {}
    for reg_rows in (rows[rows.reg == "none"], rows[rows.reg == "alm"] if reg == "alm" else rows[:0]):
        for _, r in reg_rows.iterrows():
            name = r.variant.removeprefix("hparam=")
            if name == "none":
                continue
            value = as_float(r.value) if r.value != "" else _in_units_of_n(r.note)
            if value is not None:
                out[name] = value
    return tuple(out.items())


def _in_units_of_n(note: str) -> float | None:
    return {"N/3": 1 / 3, "2N/3": 2 / 3, "N": 1.0}.get(note.strip())
