"""ALM (Sangalli et al., NeurIPS 2021): an AUC constraint per critical sample, solved with an
augmented Lagrangian.

Binary (Eq. 4-5). For every positive j of the batch, over the batch's negatives k,

    q_j = sum_k max(0, delta - (s_j - s_k))

and the term added to the base loss is

    mu * sum_j q_j^2 / (2 |P| |N|)  +  sum_j lambda_j q_j / (|P| |N|).

One multiplier lambda_j per *training-sample id*, updated lambda_j <- lambda_j + mu q_j after the
step that used it (Algorithm 1); mu grows by rho when the validation metric gets worse.

Multi-class (Eq. 6-7, appendix A.4 for several critical classes): the constraint of a critical
sample j of class c compares the critical logit f^c of j with f^c of every non-critical sample
(`alm_m1`); `alm_m2` adds, for every non-critical sample k of class i, a hinge pushing f^i of j
below f^i of k.

Everything is one masked [B, B] pairwise matrix per batch: no Python loop over samples and no
host synchronisation inside a step (masks instead of boolean indexing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from hightpr.errors import HightprError
from hightpr.regularizers.base import Regularizer

SCORES = ("logit", "prob")
MU_COMPARE = ("previous", "best")
MU_SCHEDULES = ("paper", "official")
DEFAULT_MU_MARGIN = {"paper": 0.0, "official": 0.05}  # the official code needs a drop > 0.05
VARIANTS = ("m1", "m2")


def _augmented_term(
    q: torch.Tensor, lambdas: torch.Tensor, mu: torch.Tensor | float, n_pairs: torch.Tensor | float
) -> torch.Tensor:
    """Eq. 5 from the per-constraint violations q (rows owning no constraint have q = 0)."""
    if isinstance(mu, torch.Tensor):
        mu = mu.to(q.dtype)  # the schedule keeps mu in float64, the term stays in q's precision
    return (0.5 * mu * q.square().sum() + (lambdas.to(q.dtype) * q).sum()) / n_pairs


def alm_penalty(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    lambdas: torch.Tensor,
    mu: torch.Tensor | float,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ALM term of Eq. 5 and the per-positive violations.

    pos_scores [P], neg_scores [N]: scores of the batch's positives and negatives; lambdas [P]: the
    multipliers of those positives; mu: penalty coefficient; delta: margin. Returns (loss, q) with
    q_j = sum_k max(0, delta - (s_j - s_k)) [P] and loss = mu sum q^2 / (2PN) + sum lambda q / (PN),
    which is 0 (still in the autograd graph) when P or N is 0.
    """
    margins = delta - (pos_scores[:, None] - neg_scores[None, :])  # [P, N]
    q = margins.clamp_min(0).sum(dim=1)
    n_pairs = max(pos_scores.numel() * neg_scores.numel(), 1)
    return _augmented_term(q, lambdas, mu, n_pairs), q


def default_mu_cap(mu0: float, rho: float) -> float:
    """The official code's ceiling on mu: mu0 rho^5 when mu0 < 1e-3, else mu0 rho^3."""
    return mu0 * rho**5 if mu0 < 1e-3 else mu0 * rho**3


def paper_mu_step(mu: float, ref: float, val: float, rho: float, cap: float, margin: float) -> float:
    """Algorithm 1: min(rho mu, cap) when `val` is below the reference by more than `margin`.

    A NaN reference (the first validation with the constraint on) never counts as a drop.
    """
    return min(mu * rho, cap) if val < ref - margin else mu


def official_mu_step(mu: float, ref: float, val: float, k: int, rho: float, cap: float, margin: float,
                     from_scratch: bool = True) -> tuple[float, float, bool]:
    """The official code's rule for the k-th validation with the constraint on (0-based).

    Returns (mu, reference, frozen). From scratch: validation 0 is ignored, validation 1 sets the
    reference, validation 2 grows mu unconditionally, later ones only on a drop larger than
    `margin` below the previous validation. After a warm-up (the official continue-training
    branch) validation 0 sets the reference and every later one follows the drop rule. From the
    second validation on, the metric reaching 1.0 freezes mu; so does rho mu exceeding the cap
    (mu is set to the cap, drop or not: the official order checks the cap first).
    """
    first = 1 if from_scratch else 0  # the validation that only sets the reference
    if k < first:
        return mu, ref, False
    if k == first:
        return mu, val, False
    if val >= 1.0:
        return mu, ref, True
    if mu * rho > cap:
        return cap, ref, True
    grows = (from_scratch and k == first + 1) or val < ref - margin
    return (mu * rho if grows else mu), val, False


def distributed() -> bool:
    """Whether several processes train together (DDP): state shared across them must be synced."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


class ALMRegularizer(Regularizer):
    """`reg=alm`: the binary constraint of Eq. 4, one multiplier per training-sample id.

    Positives are the samples with label 1 (float or int labels), negatives the others; the
    constrained score is the module's binary score (a logit by default; `score="prob"` applies a
    sigmoid, the paper text's variant).

    State, all registered buffers (so on the training device and in checkpoints): `lambdas`
    [num_sample_ids], `seen` (which ids have owned a constraint), `mu`, `ref_metric` (the
    validation metric the next one is compared with: AUC, or accuracy for a multi-class run),
    `mu_validations` (validations with the constraint on so far) and `mu_frozen` (the official
    schedule has stopped changing mu).

    Order within a step (Algorithm 1): the loss uses the multipliers lambda^(t); `after_step`
    then adds mu q^(t), with q^(t) the violations of that same forward pass (detached), so the
    update is the classical multiplier step at the point where the constraint was evaluated.

    mu schedule (`on_validation_end`), `mu_schedule="paper"` (Algorithm 1): mu <- min(rho mu,
    mu_cap) when the metric is below the reference by more than `mu_margin` (default 0); the
    reference is the previous validation (`mu_compare="previous"`) or the best so far (`"best"`);
    the first validation with the constraint on only sets the reference. `mu_schedule="official"`:
    the official code's rule (`official_mu_step`), margin 0.05 by default.

    ALM-v1 (two-step) mode: with `warmup_epochs=K` the term is 0 and nothing is updated during
    epochs 0..K-1.
    """

    binary_only = True

    def __init__(
        self,
        num_sample_ids: int = 0,
        mu0: float = 1e-7,
        rho: float = 2.0,
        delta: float = 0.25,
        lambda0: float = 0.0,
        mu_cap: float | None = None,
        warmup_epochs: int = 0,
        score: str = "logit",
        mu_margin: float | None = None,
        mu_compare: str = "previous",
        mu_schedule: str = "paper",
    ) -> None:
        super().__init__(num_sample_ids)
        if num_sample_ids < 1:
            raise HightprError("ALM needs num_sample_ids > 0: one multiplier per training-sample id")
        if mu0 <= 0 or rho < 1:
            raise HightprError(f"ALM needs mu0 > 0 and rho >= 1, got mu0={mu0}, rho={rho}")
        if score not in SCORES:
            raise HightprError(f"reg.score must be one of {SCORES}, got {score!r}")
        if mu_compare not in MU_COMPARE:
            raise HightprError(f"reg.mu_compare must be one of {MU_COMPARE}, got {mu_compare!r}")
        if mu_schedule not in MU_SCHEDULES:
            raise HightprError(f"reg.mu_schedule must be one of {MU_SCHEDULES}, got {mu_schedule!r}")
        if mu_schedule == "official" and mu_compare != "previous":
            raise HightprError("reg.mu_schedule=official compares with the previous validation: "
                               "drop reg.mu_compare=best, or use reg.mu_schedule=paper")
        cap = default_mu_cap(mu0, rho) if mu_cap is None else float(mu_cap)
        if cap < mu0:
            raise HightprError(f"reg.mu_cap ({cap}) is below reg.mu0 ({mu0})")
        self.mu0, self.rho, self.mu_cap = float(mu0), float(rho), cap
        self.delta, self.lambda0 = float(delta), float(lambda0)
        self.warmup_epochs, self.score = int(warmup_epochs), score
        self.mu_schedule, self.mu_compare = mu_schedule, mu_compare
        self.mu_margin = DEFAULT_MU_MARGIN[mu_schedule] if mu_margin is None else float(mu_margin)
        self.active = self.warmup_epochs == 0

        self.register_buffer("lambdas", torch.full((num_sample_ids,), self.lambda0))
        self.register_buffer("seen", torch.zeros(num_sample_ids, dtype=torch.bool))
        # float64, so that the schedule's products and comparisons are those of the official code
        self.register_buffer("mu", torch.tensor(self.mu0, dtype=torch.float64))
        self.register_buffer("ref_metric", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("mu_validations", torch.tensor(0))
        self.register_buffer("mu_frozen", torch.tensor(False))
        # Epoch accumulators (sum of q, constraints evaluated, constraints satisfied): logs only.
        self.register_buffer("epoch_stats", torch.zeros(3), persistent=False)
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Checkpoints written before `ref_metric` had its name call it `ref_auc`: still resumable."""
        if prefix + "ref_auc" in state_dict and prefix + "ref_metric" not in state_dict:
            state_dict[prefix + "ref_metric"] = state_dict.pop(prefix + "ref_auc")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the constraint ----------------------------------------------------------------------
    def pair_violations(
        self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hinge matrix [B, B] (row j: constraint owner, column k: compared sample; 0 outside
        owner x negative pairs), owner mask [B], and the number of pairs |P||N| (a tensor)."""
        s = scores.float()
        if self.score == "prob":
            s = torch.sigmoid(s)
        owner = y > 0.5
        negative = ~owner
        pairs = owner[:, None] & negative[None, :]
        hinge = (self.delta - (s[:, None] - s[None, :])).clamp_min(0)
        return torch.where(pairs, hinge, 0.0), owner, owner.sum() * negative.sum()

    def forward(
        self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 5 on the batch with the current multipliers; 0 (in graph) when inactive or when the
        batch lacks positives or negatives."""
        if not self.active:
            self._pending = None
            return scores.sum() * 0.0
        hinge, owner, n_pairs = self.pair_violations(logits, scores, y)
        q = hinge.sum(dim=1)
        term = _augmented_term(q, self.lambdas[ids], self.mu, n_pairs.clamp_min(1))
        self._pending = (ids, q.detach(), owner, n_pairs > 0)
        return term

    @torch.no_grad()
    def after_step(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor, scores: torch.Tensor
    ) -> None:
        """lambda_j += mu q_j for the constraints of the last forward pass (q kept from it)."""
        if self._pending is None:
            return
        ids, q, owner, has_pairs = self._pending
        self._pending = None
        if distributed():
            self._update_all_processes(ids, q, owner)
        else:
            self.lambdas.index_put_((ids,), (self.mu * q).to(self.lambdas.dtype), accumulate=True)
            self.seen[ids] = self.seen[ids] | owner
        counted = owner & has_pairs
        satisfied = counted & (q <= 0)
        stats = (q.sum(), counted.sum(), satisfied.sum())
        self.epoch_stats += torch.stack([v.to(self.epoch_stats.dtype) for v in stats])

    def _update_all_processes(self, ids: torch.Tensor, q: torch.Tensor, owner: torch.Tensor) -> None:
        """Data-parallel training: every process applies the multiplier updates of all processes,
        so lambda stays one vector (a sample id may be on any process in any epoch)."""
        delta = torch.zeros_like(self.lambdas).index_put_((ids,), (self.mu * q).to(self.lambdas.dtype),
                                                           accumulate=True)
        seen = torch.zeros(self.seen.shape, dtype=torch.int32, device=self.seen.device)
        seen.index_put_((ids,), owner.to(torch.int32), accumulate=True)
        torch.distributed.all_reduce(delta)
        torch.distributed.all_reduce(seen)
        self.lambdas += delta
        self.seen |= seen > 0

    # -- schedule ----------------------------------------------------------------------------
    def on_train_epoch_start(self, epoch: int) -> None:
        """Switch the constraint on after the warm-up epochs; reset the epoch statistics."""
        self.active = epoch >= self.warmup_epochs
        self.epoch_stats.zero_()

    @torch.no_grad()
    def on_validation_end(self, monitored: float) -> None:
        """Update mu from the epoch's validation metric by `mu_schedule` (once per epoch: one host read)."""
        if not self.active or bool(self.mu_frozen):
            return
        val, mu, ref = float(monitored), float(self.mu), float(self.ref_metric)
        frozen = False
        if self.mu_schedule == "official":
            mu, ref, frozen = official_mu_step(mu, ref, val, int(self.mu_validations), self.rho, self.mu_cap,
                                               self.mu_margin, from_scratch=self.warmup_epochs == 0)
        else:
            mu = paper_mu_step(mu, ref, val, self.rho, self.mu_cap, self.mu_margin)
            ref = val if self.mu_compare == "previous" or math.isnan(ref) else max(ref, val)
        self.mu.fill_(mu)
        self.ref_metric.fill_(ref)
        self.mu_frozen.fill_(frozen)
        self.mu_validations += 1

    def epoch_log(self) -> dict[str, torch.Tensor]:
        """mu, mean/max multiplier over the ids that own a constraint, mean violation q_j and the
        fraction of satisfied constraints (q_j = 0) this epoch; computed on device."""
        n_seen = self.seen.sum()
        lam_sum = torch.where(self.seen, self.lambdas, 0.0).sum()
        lam_max = torch.where(self.seen, self.lambdas, -math.inf).max()
        q_sum, n_con, n_sat = self.epoch_stats.unbind()
        return {
            "mu": self.mu.float(),
            "lambda_mean": lam_sum / n_seen.clamp_min(1),
            "lambda_max": torch.where(n_seen > 0, lam_max, 0.0),
            "violation_mean": q_sum / n_con.clamp_min(1),
            "satisfied_frac": n_sat / n_con.clamp_min(1),
            "active": torch.full_like(q_sum, float(self.active)),
        }

    def extra_repr(self) -> str:
        return (f"mu0={self.mu0}, rho={self.rho}, delta={self.delta}, mu_cap={self.mu_cap}, "
                f"warmup_epochs={self.warmup_epochs}, score={self.score}, mu_schedule={self.mu_schedule}, "
                f"mu_margin={self.mu_margin}")


class MultiClassALMRegularizer(ALMRegularizer):
    """`reg=alm_m1` / `reg=alm_m2`: Eq. 6 / Eq. 7 for one or several critical classes.

    Labels are int64 class indices. The owners are the samples of a critical class (one
    multiplier each, by sample id), compared with every sample of a non-critical class. The
    loss is normalised like Eq. 5 with |P| the batch's critical samples (all critical classes
    together) and |N| its non-critical samples, so one critical class gives exactly Eq. 5.
    `score="prob"` uses softmax probabilities instead of logits.
    """

    binary_only = False

    def __init__(
        self,
        num_sample_ids: int = 0,
        critical_classes: Sequence[int] = (1,),
        variant: str = "m1",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_sample_ids, **kwargs)
        if variant not in VARIANTS:
            raise HightprError(f"multi-class ALM variant must be one of {VARIANTS}, got {variant!r}")
        classes = [int(c) for c in critical_classes]
        if not classes or len(set(classes)) != len(classes):
            raise HightprError(f"reg.critical_classes must be distinct class ids, got {classes}")
        self.variant = variant
        self.register_buffer("critical", torch.tensor(classes, dtype=torch.long), persistent=False)

    def pair_violations(
        self, logits: torch.Tensor, scores: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = logits.float()
        if self.score == "prob":
            out = F.softmax(out, dim=1)
        y = y.long()
        match = y[:, None] == self.critical[None, :]  # [B, C_crit]
        owner = match.any(dim=1)
        negative = ~owner
        pairs = owner[:, None] & negative[None, :]
        crit = self.critical[match.to(out.dtype).argmax(dim=1)]  # each row's critical class
        own = out.gather(1, crit[:, None])  # [B, 1]: f^{c_j}(x_j)
        other = out.index_select(1, crit).T  # [j, k]: f^{c_j}(x_k)
        hinge = (self.delta - (own - other)).clamp_min(0)
        if self.variant == "m2":
            cross = out.index_select(1, y)  # [j, k]: f^{y_k}(x_j)
            own_k = out.gather(1, y[:, None]).T  # [1, k]: f^{y_k}(x_k)
            hinge = hinge + (cross - own_k + self.delta).clamp_min(0)
        return torch.where(pairs, hinge, 0.0), owner, owner.sum() * negative.sum()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant}, critical={self.critical.tolist()}"
