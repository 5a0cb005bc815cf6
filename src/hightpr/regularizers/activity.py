"""How much a regulariser did in a run: its term against the base loss, epoch by epoch.

A regulariser whose term stays a tiny fraction of the base loss barely moves the gradient, so a
table row "+ALM" trained that way says nothing about ALM. What counts is the term above its
floor, the least it can be whatever the model learns: RankReg's penalty never goes below that of
positives ranked on top (`reg/term_floor`, logged since it was added; older runs lack it and are
measured by their whole term, which `above_floor` tells apart), ALM's floor is 0.
Every run logs, per epoch, the mean base loss (`train/base_loss`), the mean regulariser term
(`train/reg_term`) and the regulariser's own state (`reg/*`: ALM's mu and multipliers, RankReg's
penalty and buffer fill) in `csv/metrics.csv`; `activity` reads them back, with the ratio
|term - floor| / base per epoch, and `summarise` merges the members of an ensemble. A run is
*inactive* when that ratio stayed below `ACTIVE_RATIO` in every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

ACTIVE_RATIO = 0.01
STATE_KEYS = ("mu", "lambda_mean", "lambda_max", "loss", "buffer_fill")   # reg/* kept in the summary


def reg_ratio(term, base):
    """|term| / |base| of one epoch's means (floats or tensors): the one definition of the ratio
    both training paths log as `train/reg_ratio` and `activity` reads back."""
    if not isinstance(base, float | int):
        return abs(term) / abs(base)
    return abs(term) / abs(base) if base else (0.0 if term == 0 else math.inf)


def epoch_table(csv_log: Path) -> pd.DataFrame | None:
    """Per training epoch: base, term, ratio = |term| / base and the logged `reg/*` state.

    None when the log has no regulariser term, or the term was exactly 0 throughout (`reg=none`).
    """
    path = Path(csv_log)
    if not path.is_file():
        return None
    log = pd.read_csv(path)
    if "train/reg_term" not in log or "train/base_loss" not in log:
        return None
    train = log.dropna(subset=["train/reg_term", "train/base_loss"])
    if train.empty or (train["train/reg_term"] == 0).all():
        return None
    out = pd.DataFrame({"epoch": train["epoch"].astype(int), "base": train["train/base_loss"],
                        "term": train["train/reg_term"]})
    floor = log.dropna(subset=["reg/term_floor"]).groupby("epoch")["reg/term_floor"].last() \
        if "reg/term_floor" in log else None
    if floor is not None and out["epoch"].isin(floor.index).all():
        out["floor"] = out["epoch"].map(floor)
        out["ratio"] = reg_ratio(out["term"] - out["floor"], out["base"])   # what the term does
    else:
        out["ratio"] = reg_ratio(out["term"], out["base"])
    for key in STATE_KEYS:
        if f"reg/{key}" in log:
            state = log.dropna(subset=[f"reg/{key}"]).groupby("epoch")[f"reg/{key}"].last()
            out[key] = out["epoch"].map(state)
    return out.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def activity(csv_log: Path) -> dict | None:
    """A run's summary: mean base and term, the ratio's max / mean / last, `active`, and the last
    epoch's regulariser state. None where the run had no regulariser term (see `epoch_table`)."""
    table = epoch_table(csv_log)
    if table is None:
        return None
    last = table.iloc[-1]
    out = {"epochs": int(len(table)), "above_floor": "floor" in table,
           "base_mean": float(table["base"].mean()),
           "term_mean": float(table["term"].mean()), "ratio_max": float(table["ratio"].max()),
           "ratio_mean": float(table["ratio"].mean()), "ratio_last": float(last["ratio"]),
           "active": bool(table["ratio"].max() >= ACTIVE_RATIO)}
    out.update({f"{k}_last": float(last[k]) for k in STATE_KEYS if k in table and not math.isnan(last[k])})
    return out


def summarise(members: Sequence[Mapping]) -> dict | None:
    """An ensemble's activity from its members': the largest ratio any member reached, the mean of
    their mean ratios, and `active` when any member's term reached `ACTIVE_RATIO`. Where some
    members logged their term's floor, only those are summarised (`above_floor`)."""
    members = [m for m in members if m]
    if not members:
        return None
    measured = [m for m in members if m.get("above_floor")]
    if measured:            # members that logged the floor say what the term did; the others cannot
        members = measured
    return {"members": len(members), "above_floor": bool(measured),
            "ratio_max": max(m["ratio_max"] for m in members),
            "ratio_mean": sum(m["ratio_mean"] for m in members) / len(members),
            "active": any(m["active"] for m in members)}
