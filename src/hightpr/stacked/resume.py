"""Batched training that survives being killed: every member's whole training state at epoch ends.

Each member's `checkpoints/last.ckpt` is a Lightning-format checkpoint (weights, optimizer and
schedules) that also carries what the batched loop needs to go on exactly as if uninterrupted:
the best epoch and its weights, early stopping, the epoch logs and the member's random streams.
`checkpoints/batched.json` beside it (`hightpr.runs.resume_mark`; written after it, and again at
every later write of the ensemble's states) says at which epoch the loop goes on, so the same
command finds and resumes every member together without loading weights. States are written at most every
`ensemble.checkpoint_every_s` seconds (0: every epoch); a kill loses at most that."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from hightpr.runs import last_checkpoint, resume_mark, resume_mark_path, write_json
from hightpr.stacked.outputs import clone_state, save_checkpoint
from hightpr.stacked.selection import BestSoFar, Patience
from hightpr.stacked.state import MemberState
from hightpr.stacked.streams import MemberStreams


def _paths(run_dir: Path) -> tuple[Path, Path]:
    return last_checkpoint(run_dir), resume_mark_path(run_dir)


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # json has no inf


def save_state(mb: MemberState, next_epoch: int, streams: MemberStreams, checkpoint: bool = True) -> None:
    """Write member `mb`'s training state after `next_epoch` epochs of the loop: its checkpoint (unless
    unchanged since the last write: a member that stopped), then the mark naming the loop's epoch."""
    last, mark = _paths(mb.run_dir)
    if checkpoint:
        cpu, cuda = streams.states[mb.index]
        state = {"epochs": mb.epochs, "global_step": mb.global_step, "running": mb.running, "rows": mb.rows,
                 "best": {"value": mb.best.value, "tie": mb.best.tie, "epoch": mb.best.epoch,
                          "global_step": mb.best.global_step, "state": mb.best.state},
                 "stopping": {"best": mb.stopping.best, "wait": mb.stopping.wait},
                 "streams": {"cpu": cpu, "cuda": cuda}}
        save_checkpoint(last, clone_state(mb.module), max(mb.epochs - 1, 0), mb.global_step, mb.optimizer,
                        mb.schedulers, resume=state)
    write_json(mark, {"next_epoch": next_epoch, "running": mb.running, "epochs": mb.epochs,
                      "best_epoch": mb.best.epoch, "best_value": _finite(mb.best.value)})


def restore(mb: MemberState, streams: MemberStreams) -> int | None:
    """Load member `mb`'s saved state into it; the loop's next epoch, or None when the checkpoint is
    unreadable or not the one its mark names (killed while writing: the caller starts over)."""
    last, _ = _paths(mb.run_dir)
    mark = resume_mark(mb.run_dir)
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        state = ckpt["hightpr"]["resume"]
    except Exception:  # noqa: BLE001 - truncated, corrupt or not a batched state
        return None
    if mark is None or state.get("epochs") != mark["epochs"]:
        return None
    device = next(mb.module.parameters()).device
    mb.module.load_state_dict(ckpt["state_dict"])
    mb.optimizer.load_state_dict(ckpt["optimizer_states"][0])
    for sched, saved in zip(mb.schedulers, ckpt.get("lr_schedulers", []), strict=True):
        sched["scheduler"].load_state_dict(saved)
    best = state["best"]
    mb.best = BestSoFar(best["value"], best["tie"], best["epoch"], best["global_step"],
                        {k: v.to(device) for k, v in best["state"].items()})
    mb.stopping = Patience(mb.stopping.patience, state["stopping"]["best"], state["stopping"]["wait"])
    mb.epochs, mb.global_step, mb.running = state["epochs"], state["global_step"], state["running"]
    mb.rows = list(state["rows"])
    streams.states[mb.index] = (state["streams"]["cpu"], state["streams"]["cuda"])
    return mark["next_epoch"]


def clear_state(run_dir: Path) -> None:
    """Remove the resume state once the member's own outputs are written (its last.ckpt stays)."""
    _paths(run_dir)[1].unlink(missing_ok=True)
