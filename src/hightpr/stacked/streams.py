"""Each ensemble member's random streams, as its sequential run would have them.

A member trained alone draws its batch order (the sampler's seed, the DataLoader's base seed) from
the global CPU stream and its augmentation from the global stream of the training device, both
seeded by `pl.seed_everything(seed)` and advanced by building the model. `MemberStreams` keeps
each member's copy of those global states and swaps it in around the member's draws, so every
member draws exactly the numbers its own sequential run draws, whatever the other members do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _cuda(device: torch.device) -> bool:
    return device.type == "cuda"


class MemberStreams:
    """Per-member copies of the global CPU (and CUDA device) random states."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.states: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def _now(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if _cuda(self.device) else None
        return torch.get_rng_state(), cuda

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    def capture(self) -> int:
        """Record the current global states as the next member's streams; returns its index."""
        self.states.append(self._now())
        return len(self.states) - 1

    @contextmanager
    def of(self, i: int) -> Iterator[None]:
        """Inside: the global streams are member i's; its advanced state is kept on exit."""
        outer = self._now()
        self._set(self.states[i])
        try:
            yield
        finally:
            self.states[i] = self._now()
            self._set(outer)


def dataloader_iter_draw() -> None:
    """The one number `iter(DataLoader)` draws from the global CPU stream (its workers' base seed).

    A sequential run creates a training iterator at every epoch start and a validation iterator
    at every validation; each takes this draw, single-process loading included.
    """
    torch.empty((), dtype=torch.int64).random_()
