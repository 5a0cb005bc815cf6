"""What a batched member leaves in its run dir: the files of a sequential run, in the same formats.

`metrics.json`, `logits_{val,test}.npz`, `config_resolved.yaml`, `csv/metrics.csv` and its
`runs.csv` row come from the same functions as a sequential run's. The checkpoints are
Lightning-format dicts (`state_dict`, `epoch`, `global_step`, `pytorch-lightning_version`) that
`trainer.test(ckpt_path=...)`, `init_from` and `torch.load` read as they read a sequential run's;
they carry no Lightning loop or callback state (a `last.ckpt` written during training carries the
batched loop's own under `hightpr.resume`, `hightpr.stacked.resume`), and `hightpr.batched` marks them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch

from hightpr.callbacks import AtomicCheckpointIO
from hightpr.stacked.selection import f32


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's state dict (member tensors are views of the stacked storage)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, state: Mapping[str, torch.Tensor], epoch: int, global_step: int,
                    optimizer=None, schedulers=(), resume: Mapping | None = None) -> Path:
    """A Lightning-format checkpoint of one member (optimizer and schedules only in `last.ckpt`;
    `resume`: the batched loop's state, `hightpr.stacked.resume`)."""
    ckpt = {"epoch": int(epoch), "global_step": int(global_step),
            "pytorch-lightning_version": pl.__version__, "state_dict": dict(state),
            "hightpr": {"batched": True, **({"resume": dict(resume)} if resume is not None else {})}}
    if optimizer is not None:
        ckpt["optimizer_states"] = [optimizer.state_dict()]
        ckpt["lr_schedulers"] = [s["scheduler"].state_dict() for s in schedulers]
    path.parent.mkdir(parents=True, exist_ok=True)
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    return path


def log_row(epoch: int, step: int, values: Mapping[str, float]) -> dict[str, float]:
    """One row of `csv/metrics.csv`, values as the sequential run's float32 logs hold them."""
    return {"epoch": epoch, "step": step, **{k: f32(v) for k, v in values.items()}}


def write_csv_log(path: Path, rows: list[dict]) -> None:
    """`csv/metrics.csv` as Lightning's CSVLogger writes it: the union of the keys, sorted."""
    keys = sorted({k for row in rows for k in row})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
