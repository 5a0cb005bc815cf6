"""Best epoch and early stopping of one member, as the sequential run's callbacks decide them.

The sequential run logs the validation metrics as float32 tensors and its callbacks compare
those (`hightpr.callbacks.BestEpoch`, Lightning's `EarlyStopping`), so the values are rounded to
float32 here before every comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hightpr.metrics.evaluators import improves


def f32(value: float) -> float:
    """A value as the sequential run's logged float32 tensor holds it."""
    return float(np.float32(value))


@dataclass
class BestSoFar:
    """The epoch with the best monitor; an exact tie goes to the lower tie-break value (validation loss).

    A NaN monitor counts as -inf once kept, a NaN tie-break never wins a tie (the earlier epoch stays).
    """

    value: float = -math.inf
    tie: float = math.inf
    epoch: int | None = None
    global_step: int = 0
    state: dict = field(default_factory=dict, repr=False)

    def improves(self, value: float, tie: float | None) -> bool:
        value, tie = f32(value), math.nan if tie is None else f32(tie)
        return self.epoch is None or improves(value, tie, self.value, self.tie)

    def keep(self, value: float, tie: float | None, epoch: int, global_step: int, state: dict) -> None:
        value, tie = f32(value), math.nan if tie is None else f32(tie)
        self.value = -math.inf if math.isnan(value) else value
        self.tie = math.inf if math.isnan(tie) else tie
        self.epoch, self.global_step, self.state = epoch, global_step, state


@dataclass
class Patience:
    """Lightning's EarlyStopping(mode="max", min_delta=0, check_finite=True) on the float32 monitor."""

    patience: int
    best: float = -math.inf
    wait: int = 0

    def should_stop(self, value: float) -> bool:
        value = f32(value)
        if not math.isfinite(value):
            return True
        if value > self.best:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience
