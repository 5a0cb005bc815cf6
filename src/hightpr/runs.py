"""What a finished run leaves behind: metrics.json, logits_*.npz, and a row in runs.csv."""

from __future__ import annotations

import fcntl
import json
import math
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hightpr.errors import HightprError


def save_logits(run_dir: Path, stage: str, outputs: Mapping[str, np.ndarray]) -> Path:
    """`logits_{stage}.npz`: scores (the ranked scalar), labels, sample ids, raw logits [N, K]."""
    path = Path(run_dir) / f"logits_{stage}.npz"
    np.savez_compressed(path, **{k: outputs[k] for k in ("scores", "labels", "ids", "logits")})
    return path


def load_logits(path: Path) -> dict[str, np.ndarray]:
    """Read a `logits_*.npz`; a missing or corrupt file is one clear error."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as err:
        raise HightprError(f"{path}: missing or corrupt logits file ({err}); re-run that run") from err


def save_metrics(run_dir: Path, metrics: Mapping) -> Path:
    path = Path(run_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    return path


def flatten(prefix: str, cfg: Mapping, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Scalar leaves of a (nested) mapping as `prefix.key` columns; `_target_` is dropped."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        if key.startswith("_") or key in skip:
            continue
        if isinstance(value, Mapping):
            out.update(flatten(f"{prefix}.{key}", value, skip))
        elif isinstance(value, str | int | float | bool) or value is None:
            out[f"{prefix}.{key}"] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            out[f"{prefix}.{key}"] = ",".join(str(v) for v in value)  # e.g. class groups "72,4,95"
    return out


@contextmanager
def _locked(path: Path):
    lock = path.with_suffix(path.suffix + ".lock")
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_run(csv_path: Path, row: Mapping[str, object]) -> None:
    """Append one row to a tidy runs table (columns are the union; safe for parallel runs)."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    row = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), **row}
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    with _locked(csv_path):
        new = pd.DataFrame([row])
        if csv_path.is_file() and csv_path.stat().st_size > 0:
            old = pd.read_csv(csv_path)
            if list(old.columns) == list(new.columns):
                new.to_csv(csv_path, mode="a", header=False, index=False)
                return
            new = pd.concat([old, new], ignore_index=True)
        new.to_csv(csv_path, index=False)


ROW_GROUPS = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler")


def runs_row(cfg: DictConfig, run_dir: Path, reports: Mapping[str, Mapping], choices: Mapping[str, str]
             ) -> dict[str, object]:
    """One tidy row: config choices, every hyper-parameter, seed, every val/test metric."""
    row = {"run_dir": str(run_dir), "name": cfg.name, "seed": cfg.seed, **choices}
    member = (cfg.get("ensemble") or {}).get("member")
    row.update({"kind": "single"} if member is None else
               {"kind": "member", "ensemble_key": cfg.ensemble.get("key"), "member": member})
    for group in ROW_GROUPS:
        node = cfg.get(group)
        if node is not None:
            row.update(flatten(group, OmegaConf.to_container(node, resolve=True), skip=("root",)))
    for stage, report in reports.items():
        row.update({f"{stage}_{k}": v for k, v in report.items()})
    return row
