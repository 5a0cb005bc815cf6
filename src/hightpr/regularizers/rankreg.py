"""RankReg (Mohammadi et al., CVPR 2023): penalise positives by how low they rank.

Over the list batch + buffer of positives, r = rk(scores) / n (normalised ranks in (0, 1],
rank 1 = highest score) and

    l_reg = 1/|P| * sum_{i in P} g(r_i),     g(r) = r (linear), r^2 (squared, the paper's),
                                                    r^3 (cubed) or exp(r)   (Table 4),

added to the base loss with weight lambda = 1. The rank is differentiated by blackbox
differentiation (`hightpr.regularizers.ranking.rank`). The buffer (`PositiveBuffer`) holds
positive inputs that are re-scored at every step because they are appended to the batch.

Multi-class (RankReg §4.5): for each critical class c, every sample in the list is ranked by its
softmax probability of c, and the samples of class c are the positives; the term is the mean
over the critical classes present in the list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from hightpr.regularizers.base import Regularizer
from hightpr.regularizers.buffer import BufferConfig
from hightpr.regularizers.ranking import rank

SCORES = ("logit", "prob")  # binary lists rank the module's score, or its sigmoid (the paper's probability)

PENALTIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda r: r,
    "squared": lambda r: r * r,
    "cubed": lambda r: r * r * r,
    "exp": torch.exp,
}


def _penalty_fn(penalty: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {sorted(PENALTIES)}, got {penalty!r}")
    return PENALTIES[penalty]


def _penalty_and_ranks(
    scores: torch.Tensor, is_positive: torch.Tensor, penalty: str, normalize: bool, interpolation: float
) -> tuple[torch.Tensor, torch.Tensor]:
    g = _penalty_fn(penalty)
    r = rank(scores, interpolation, normalize=normalize)
    pos = is_positive.to(r.dtype)
    # sum over positives / |P|; with no positive the numerator is 0 and dL/dr = 0: no NaN
    loss = (g(r) * pos).sum(-1) / pos.sum(-1).clamp_min(1.0)
    return loss, r


def penalty_floor(is_positive: torch.Tensor, penalty: str = "squared", normalize: bool = True
                  ) -> torch.Tensor:
    """The least l_reg a list can have: its P positives on ranks 1..P (no ties), so
    1/P * sum_{i<=P} g(i / n). What the term cannot go below whatever the model learns; 0 for a
    list without positives. is_positive: [n] or [..., n] bool; returns one value per list."""
    g = _penalty_fn(penalty)
    n = is_positive.shape[-1]
    if n == 0:
        return torch.zeros(is_positive.shape[:-1])
    steps = torch.arange(1, n + 1, dtype=torch.float32, device=is_positive.device)
    cums = torch.cumsum(g(steps / n if normalize else steps), 0)
    p = is_positive.sum(-1)
    at = cums[(p - 1).clamp_min(0)]
    return torch.where(p > 0, at / p.clamp_min(1), torch.zeros_like(at))


def rank_penalty(
    scores: torch.Tensor,
    is_positive: torch.Tensor,
    penalty: str = "squared",
    normalize: bool = True,
    interpolation: float = 2.0,
) -> torch.Tensor:
    """RankReg's l_reg over one list (Eq. 4): mean over positives of g(rank), differentiable.

    scores: [n] (or [..., n], one list per row); is_positive: bool mask of the same shape.
    normalize: ranks divided by n (in (0, 1]); False gives raw integer ranks (the paper's figures).
    Returns a scalar (or one value per row); 0 for a list without positives.
    """
    return _penalty_and_ranks(scores, is_positive, penalty, normalize, interpolation)[0]


class RankReg(Regularizer):
    """`reg=rankreg`: ranking regulariser over the batch plus a buffer of positives.

    buffer: a `BufferConfig` (or a mapping of its fields); None: no buffer.
    critical_classes: None for binary tasks (the ranked score is the module's score, positives
    are y = 1); class indices for multi-class tasks (ranked by softmax probability).
    score: what a binary list ranks, "logit" (the module's score) or "prob" (its sigmoid, the
    paper's probability: the same order, but the blackbox backward's gamma acts on the ranked
    values, so a gamma tuned for one does not transfer). Multi-class lists always rank softmax
    probabilities (RankReg §4.5).
    """

    def __init__(
        self,
        num_sample_ids: int = 0,
        weight: float = 1.0,
        penalty: str = "squared",
        interpolation: float = 2.0,
        normalize: bool = True,
        buffer: BufferConfig | Mapping | None = None,
        critical_classes: Sequence[int] | int | None = None,
        score: str = "logit",
    ) -> None:
        super().__init__(num_sample_ids)
        _penalty_fn(penalty)
        if interpolation <= 0:
            raise ValueError(f"reg.interpolation (gamma) must be > 0, got {interpolation}")
        if score not in SCORES:
            raise ValueError(f"reg.score must be one of {SCORES}, got {score!r}")
        self.weight, self.penalty, self.score = float(weight), penalty, score
        self.interpolation, self.normalize = float(interpolation), bool(normalize)
        if buffer is None:
            buffer = BufferConfig(strategy="none", size=0, in_base_loss=False)
        elif not isinstance(buffer, BufferConfig):
            buffer = BufferConfig(**buffer)  # a plain mapping (Python use): the same typed checks
        self.in_base_loss = buffer.in_base_loss and buffer.enabled
        self.buffer = buffer.build()
        if isinstance(critical_classes, int):
            critical_classes = [critical_classes]
        self.multiclass = critical_classes is not None
        crit = torch.tensor(list(critical_classes) if self.multiclass else [], dtype=torch.long)
        if self.multiclass and len(crit) == 0:
            raise ValueError("reg.critical_classes is empty: give class indices, or null for binary")
        self.register_buffer("critical", crit, persistent=False)
        # epoch sums [l_reg, steps, ranks of positives, positives, lowest ranks, lists with positives,
        # l_reg's floor]
        self.register_buffer("_sums", torch.zeros(7), persistent=False)

    # -- lists and positives -----------------------------------------------------------------
    def _is_critical(self, y: torch.Tensor) -> torch.Tensor:
        if not self.multiclass:
            return y.reshape(-1) > 0.5
        return torch.isin(y.long(), self.critical)

    def _lists(
        self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores to rank, [C, n] (one list per critical class), and the positives, [C, n]."""
        if not self.multiclass:
            full = scores.to(torch.promote_types(scores.dtype, torch.float32))  # no half-precision ties
            ranked = torch.sigmoid(full) if self.score == "prob" else scores
            return ranked.reshape(1, -1), self._is_critical(y).reshape(1, -1)
        probs = logits.float().softmax(-1)[:, self.critical].T
        return probs, y.long()[None, :] == self.critical[:, None]

    def _buffer_scores(self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The response the eviction rule compares: the score, or the own critical class's probability."""
        if not self.multiclass:
            return scores.reshape(-1)
        idx = y.long().clamp(0, logits.shape[-1] - 1)
        return logits.float().softmax(-1).gather(1, idx[:, None])[:, 0]

    # -- Regularizer interface ---------------------------------------------------------------
    def handles(self, task) -> bool:
        """Binary RankReg ranks y = 1; multi-class data needs `critical_classes` (set from the data)."""
        return task.binary or self.multiclass

    def extend_batch(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
        """Append the buffered positives (x, y, id) at the end of the batch."""
        n = len(batch["y"])
        if self.buffer is None or self.buffer.fill == 0:
            return batch, n
        bx, by, bid = self.buffer.contents()
        out = dict(batch)
        out["x"] = torch.cat([batch["x"], bx.to(batch["x"].dtype)])
        out["y"] = torch.cat([batch["y"], by.to(batch["y"].dtype)])
        out["id"] = torch.cat([batch["id"], bid.to(batch["id"].dtype)])
        return out, (n + len(bid) if self.in_base_loss else n)

    def forward(
        self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        lists, positive = self._lists(logits, scores, y)
        per_list, r = _penalty_and_ranks(lists, positive, self.penalty, self.normalize, self.interpolation)
        present = positive.any(-1)
        loss = per_list.sum() / present.sum().clamp_min(1)
        floor = penalty_floor(positive, self.penalty, self.normalize).to(loss).sum()
        floor = floor / present.sum().clamp_min(1)
        self._accumulate(loss.detach(), r.detach(), positive, present, floor)
        return self.weight * loss

    @torch.no_grad()
    def _accumulate(
        self, loss: torch.Tensor, r: torch.Tensor, positive: torch.Tensor, present: torch.Tensor,
        floor: torch.Tensor,
    ) -> None:
        r = r if self.normalize else r / max(r.shape[-1], 1)
        rp = r * positive.to(r.dtype)  # ranks of positives, 0 elsewhere
        worst = rp.amax(-1).sum() if r.numel() else rp.sum()
        one = torch.ones((), device=r.device)
        sums = [loss, one, rp.sum(), positive.sum(), worst, present.sum(), floor]
        self._sums += torch.stack(sums).to(self._sums)

    @torch.no_grad()
    def after_step(self, batch: dict[str, torch.Tensor], logits: torch.Tensor, scores: torch.Tensor) -> None:
        """Re-store the occupants' fresh scores, then offer the batch's positives to the buffer."""
        if self.buffer is None:
            return
        n_buffered = self.buffer.fill
        n = len(batch["y"]) - n_buffered
        response = self._buffer_scores(logits, scores, batch["y"])
        if n_buffered:
            self.buffer.refresh_scores(response[n:])
        y = batch["y"][:n]
        self.buffer.push(batch["x"][:n], y, batch["id"][:n], response[:n], self._is_critical(y))

    def on_train_epoch_start(self, epoch: int) -> None:
        self._sums.zero_()

    def epoch_log(self) -> dict[str, torch.Tensor]:
        """Epoch means: l_reg, the weighted term's floor (`penalty_floor`), normalised rank of
        positives, lowest positive's rank; buffer fill."""

        def mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))

        fill = 0 if self.buffer is None else self.buffer.fill
        loss, steps, rank_sum, n_pos, worst_sum, n_worst, floor = self._sums
        return {
            "loss": mean(loss, steps),
            "term_floor": self.weight * mean(floor, steps),   # train/reg_term cannot go below it
            "pos_rank_mean": mean(rank_sum, n_pos),
            "pos_rank_worst": mean(worst_sum, n_worst),
            "buffer_fill": torch.tensor(float(fill), device=self._sums.device),
        }

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, penalty={self.penalty}, interpolation={self.interpolation}, "
            f"normalize={self.normalize}, score={self.score}, in_base_loss={self.in_base_loss}, "
            f"critical_classes={self.critical.tolist() if self.multiclass else None}"
        )
