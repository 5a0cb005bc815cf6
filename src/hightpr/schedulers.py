"""Learning-rate schedules, built per run from `conf/scheduler/` (`_partial_`: the optimizer comes last)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hightpr.errors import HightprError


def warmup_step_factor(epoch: int, warmup_epochs: int, milestones: Sequence[int], gamma: float) -> float:
    """lr multiplier at 0-based `epoch`: linear warm-up (epoch+1)/warmup_epochs, then x gamma at
    each milestone reached (the epoch index where the decayed rate starts)."""
    factor = min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs > 0 else 1.0
    return factor * gamma ** sum(epoch >= m for m in milestones)


def warmup_multistep(
    optimizer: torch.optim.Optimizer,
    warmup_epochs: int = 5,
    milestones: Sequence[int] = (160, 180),
    gamma: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch warm-up + step decay; defaults are the long-tailed CIFAR recipe of LDAM (Cao et al.)
    that ALM appendix D follows: base lr over epochs 1-5 rising linearly (lr * epoch / 5), x0.01
    from the 161st epoch and x0.01 again from the 181st (lr 0.1 -> 1e-3 -> 1e-5)."""
    if warmup_epochs < 0 or gamma <= 0 or any(m < 0 for m in milestones):
        raise HightprError("scheduler: warmup_epochs and milestones must be >= 0 and gamma > 0, got "
                           f"{warmup_epochs}, {list(milestones)}, {gamma}")
    steps = sorted(int(m) for m in milestones)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: warmup_step_factor(epoch, warmup_epochs, steps, gamma)
    )


def on_plateau(
    optimizer: torch.optim.Optimizer,
    monitor: str = "val/auc",
    factor: float = 0.5,
    patience: int = 10,
) -> dict:
    """ReduceLROnPlateau on a validation metric that should rise (the official ALM code with
    `--lr_decrease 1`: mode max on validation AUC, factor 0.5, patience 10), stepped per epoch.

    Returned as Lightning's scheduler config, so the module stays ignorant of the schedule's kind.
    """
    if not 0.0 < factor < 1.0 or patience < 0:
        raise HightprError(f"scheduler: factor must be in (0, 1) and patience >= 0, got {factor}, "
                           f"{patience}")
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor,
                                                         patience=patience)
    return {"scheduler": plateau, "monitor": monitor, "interval": "epoch", "frequency": 1}
