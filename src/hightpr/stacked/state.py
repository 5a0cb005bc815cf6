"""One member of batched training: its own components (built as its one-by-one run builds them)
and its training state (epochs, best epoch, patience, epoch logs), which `hightpr.stacked.resume`
saves and restores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from hightpr.build import DataFacts
from hightpr.module import HighTPRModule
from hightpr.stacked.selection import BestSoFar, Patience


@dataclass(eq=False)
class MemberState:
    """One member's own components and its training state."""

    index: int
    cfg: DictConfig
    run_dir: Path
    datamodule: Any
    facts: DataFacts
    module: HighTPRModule
    optimizer: torch.optim.Optimizer | None = None
    schedulers: list[dict] = field(default_factory=list)
    best: BestSoFar = field(default_factory=BestSoFar)
    stopping: Patience | None = None
    epochs: int = 0
    global_step: int = 0
    running: bool = True
    rows: list[dict] = field(default_factory=list)
    sums: torch.Tensor | None = None  # epoch sums of loss, base loss, term (each x batch size)
    count: int = 0  # samples behind `sums`
    saved: int = -1  # `epochs` when its resume state was last written

    @property
    def number(self) -> int:
        return int(self.cfg.ensemble.member)
