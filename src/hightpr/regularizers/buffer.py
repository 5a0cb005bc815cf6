"""RankReg's buffer of positive samples (RankReg §3.5): a fixed-capacity memory on the device.

It holds positive *inputs* (as they arrived in a training batch: augmented and normalised),
their labels, their sample ids and their last scores. The whole buffer is appended to every
batch, so its samples are re-scored by the current network at each step.

Update rule (`push`, once per step, vectorised, no gradient):

* candidates are the step's positives whose id is neither in the buffer nor earlier in the batch
  (the buffer never holds a sample id twice, nor a negative);
* every candidate enters while there is room (empty slots are filled in slot order, entering
  samples in batch order, so the occupied slots are always the prefix ``[0, fill)``);
* when full, the k candidates replace k occupants chosen by the strategy, using the scores the
  occupants got in this very step: ``dequeue_max`` evicts the highest scores (the paper's
  default: keep the hard positives), ``dequeue_min`` the lowest, ``fifo`` the oldest;
* new samples always enter (they are preferred over every occupant); only if a single step brings
  more candidates than the capacity does the strategy also choose among them (``dequeue_max``
  keeps the lowest-scored ones, ``dequeue_min`` the highest, ``fifo`` the last in batch order).

Ties (equal scores or ages) are broken by slot index, then batch order: deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

STRATEGIES = ("dequeue_max", "fifo", "dequeue_min")


@dataclass(frozen=True)
class BufferConfig:
    """RankReg's buffer settings (`reg.buffer`): one typed set, the paper's defaults (§3.5, §4.3).

    strategy: dequeue_max | fifo | dequeue_min, or none (no buffer; so does size 0).
    in_base_loss: the buffered samples also enter the base loss (CIFAR protocols yes, Melanoma no).
    """

    strategy: str = "dequeue_max"
    size: int = 32
    in_base_loss: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in (*STRATEGIES, "none"):
            raise ValueError(f"reg.buffer.strategy must be one of {(*STRATEGIES, 'none')}, "
                             f"got {self.strategy!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"reg.buffer.size must be an integer >= 0, got {self.size!r}")

    @property
    def enabled(self) -> bool:
        return self.strategy != "none" and self.size > 0

    def build(self) -> PositiveBuffer | None:
        """The buffer module, or None when disabled."""
        return PositiveBuffer(self.size, self.strategy) if self.enabled else None


class PositiveBuffer(nn.Module):
    """Up to `size` positive samples; state in registered buffers (on the device, checkpointed)."""

    def __init__(self, size: int = 32, strategy: str = "dequeue_max") -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"buffer strategy must be one of {STRATEGIES}, got {strategy!r}")
        if size < 1:
            raise ValueError(f"buffer size must be >= 1, got {size}")
        self.size, self.strategy = int(size), strategy
        # x, y take the shape/dtype of the first batch pushed (empty until then).
        self.register_buffer("x", torch.empty(0))
        self.register_buffer("y", torch.empty(0))
        self.register_buffer("ids", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("scores", torch.zeros(self.size))
        self.register_buffer("stamps", torch.zeros(self.size, dtype=torch.long))  # insertion time
        self.register_buffer("clock", torch.zeros((), dtype=torch.long))
        self._fill: int | None = 0  # host copy of the fill level; None = recount from `ids`

    @property
    def fill(self) -> int:
        """Number of buffered samples (a host int: it only changes while the buffer fills up)."""
        if self._fill is None:
            self._fill = int((self.ids >= 0).sum())
        return self._fill

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, ids) of the buffered samples, in slot order."""
        n = self.fill
        return self.x[:n], self.y[:n], self.ids[:n]

    @torch.no_grad()
    def refresh_scores(self, scores: torch.Tensor) -> None:
        """Store the occupants' current scores ([fill], slot order) for the eviction rule."""
        self.scores[: self.fill] = scores.detach().to(self.scores.dtype)

    def _materialise(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.x.ndim == 1 and self.x.numel() == 0:
            self.x = torch.zeros((self.size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.zeros(self.size, dtype=y.dtype, device=y.device)

    @torch.no_grad()
    def push(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        ids: torch.Tensor,
        scores: torch.Tensor,
        positive: torch.Tensor,
    ) -> None:
        """Offer a batch; its positives (mask `positive`) enter by the rule in the module docstring.

        x: [B, ...] inputs; y: [B] labels; ids: [B] sample ids (>= 0); scores: [B] current scores.
        """
        b = len(ids)
        if b == 0:
            return
        self._materialise(x, y)
        dev = self.ids.device
        ids, positive = ids.to(dev), positive.to(dev)
        scores = scores.detach().to(self.scores.dtype)
        pos_in_batch = torch.arange(b, device=dev)

        # candidates: positives not buffered and not a repeat of an earlier batch sample
        in_buffer = (ids[:, None] == self.ids[None, :]).any(1)
        earlier = torch.ones(b, b, dtype=torch.bool, device=dev).tril(-1)
        repeat = ((ids[:, None] == ids[None, :]) & earlier).any(1)
        cand = positive & ~in_buffer & ~repeat
        n_new = cand.sum().clamp(max=self.size)

        # eviction order of the slots: empty slots first (in slot order), then by strategy
        occupied = self.ids >= 0
        if self.strategy == "fifo":
            slot_key = torch.where(occupied, self.stamps, -1)  # stamps are >= 0
        else:
            key = torch.nan_to_num(-self.scores if self.strategy == "dequeue_max" else self.scores)
            slot_key = torch.where(occupied, key, float("-inf"))
        slot_rank = torch.empty_like(self.ids)
        slot_rank[torch.sort(slot_key, stable=True).indices] = torch.arange(self.size, device=dev)

        # keep order of the batch: candidates first; among them, what the strategy evicts last
        if self.strategy == "fifo":
            cand_key = torch.where(cand, -pos_in_batch, b)
        else:
            key = torch.nan_to_num(scores if self.strategy == "dequeue_max" else -scores)
            cand_key = torch.where(cand, key, float("inf"))
        keep_rank = torch.empty_like(pos_in_batch)
        keep_rank[torch.sort(cand_key, stable=True).indices] = pos_in_batch
        entering = keep_rank < n_new
        # entering_at[i] = the i-th entering sample in batch order (the others go past b: unique
        # targets keep the scatter deterministic)
        entering_at = torch.zeros(2 * b, dtype=torch.long, device=dev)
        entering_at[torch.where(entering, entering.cumsum(0) - 1, b + pos_in_batch)] = pos_in_batch

        # the i-th slot to evict receives the i-th entering sample, for i < n_new
        take = slot_rank < n_new
        src = entering_at[slot_rank.clamp(max=b)].clamp(max=b - 1)
        shape = (self.size,) + (1,) * (self.x.ndim - 1)
        self.x.copy_(torch.where(take.view(shape), x[src].to(self.x.dtype), self.x))
        self.y.copy_(torch.where(take, y[src].to(self.y.dtype), self.y))
        self.ids.copy_(torch.where(take, ids[src], self.ids))
        self.scores.copy_(torch.where(take, scores[src], self.scores))
        self.stamps.copy_(torch.where(take, self.clock + src, self.stamps))
        self.clock += b
        if self._fill is not None and self._fill < self.size:  # host sync only while filling
            self._fill = min(self.size, self._fill + int(n_new))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # x / y are sized on first use: take the checkpoint's shapes before copying into them
        for name in ("x", "y"):
            value = state_dict.get(prefix + name)
            if value is not None:
                current = getattr(self, name)
                setattr(self, name, torch.empty(value.shape, dtype=value.dtype, device=current.device))
        self._fill = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"size={self.size}, strategy={self.strategy}"
