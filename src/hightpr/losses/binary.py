"""Binary base losses on the score s (the positive logit, or z1 - z0 for 2-logit heads).

Every loss is written with log-sigmoids (log p = logsigmoid(s), log(1 - p) = logsigmoid(-s)) so
it stays finite for any logit, and reduces with masked sums so that a batch without positives
or without negatives (or an empty batch) gives a finite value and never syncs with the host.
Labels are 0/1 (float or int); a sample is positive when y > 0.5.

S-ML, A-ML, S-FL and A-FL also have a multi-class form (more than two logits, labels class
indices) for long-tailed data; `BinaryOrMultiClassLoss.logits_for` tells the wiring which head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from hightpr.errors import HightprError
from hightpr.losses.base import BaseLoss, full_precision, mean_or_zero
from hightpr.losses.multiclass import logits_and_targets, true_class_log_probs, true_class_margin_ce
from hightpr.losses.weights import check_counts, check_range, class_balanced_weights, rare_classes_of
from hightpr.models.heads import binary_score


def score_and_labels(logits: torch.Tensor, y: torch.Tensor, loss_name: str) -> tuple[torch.Tensor, ...]:
    """(score s, positive mask) for a binary loss; a clear error on a multi-class head."""
    if logits.ndim == 2 and logits.shape[1] > 2:
        raise HightprError(f"loss {loss_name} is binary but the head has {logits.shape[1]} logits: "
                           f"use a multi-class loss (loss=ce, fl, cbce, ldam, s_ml, a_ml, s_fl or a_fl)")
    return full_precision(binary_score(logits)), y > 0.5


def signed_logsigmoid(s: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """log p for positives and log(1 - p) for negatives, p = sigmoid(s): the BCE log-likelihood."""
    return F.logsigmoid(torch.where(pos, s, -s))


class BCE(BaseLoss):
    """Binary cross-entropy, -y log s(s) - (1 - y) log(1 - s(s)), in log-sigmoid form."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, _ = score_and_labels(logits, y, "bce")
        return mean_or_zero(F.binary_cross_entropy_with_logits(s, y.to(s.dtype), reduction="none"), s)


class BinaryOrMultiClassLoss(BaseLoss):
    """A loss with a binary form (1 logit, or z1 - z0 on 2) and a multi-class form (one logit per class).

    The binary form is the papers' (official ALM code); the multi-class form is the softmax
    loss it reduces to on a 2-logit head, used for long-tailed data (ALM appendix A.2, Table 7).
    """

    loss_name: ClassVar[str] = ""

    @classmethod
    def logits_for(cls, num_classes: int) -> int:
        """One logit on two-class data (the binary head of the papers), one per class otherwise."""
        return 1 if num_classes <= 2 else num_classes


def is_multiclass_head(logits: torch.Tensor) -> bool:
    """More than two logits: the multi-class form applies."""
    return logits.ndim == 2 and logits.shape[1] > 2


class RareClasses:
    """Mixin of A-ML and A-FL: the rare classes (a list, and a device buffer) and each sample's flag."""

    def set_rare(self, loss_name: str, class_counts: Sequence[int] | None,
                 rare_classes: Sequence[int] | int | None) -> None:
        """Resolve the rare classes once (given, or the smallest training class) and store them."""
        self.rare = rare_classes_of(loss_name, class_counts, rare_classes)
        self.register_buffer("rare_index", torch.tensor(self.rare or [], dtype=torch.long), persistent=False)

    def rare_samples(self, target: torch.Tensor, num_logits: int) -> torch.Tensor:
        """[B] bool: the samples of a rare class; a clear error when the rare classes are unknown."""
        if self.rare is None:
            raise HightprError(f"loss {self.loss_name} on a multi-class head needs its rare classes: build "
                               "it with class_counts=datamodule.class_counts (train.py does) or set "
                               "loss.rare_classes")
        if max(self.rare) >= num_logits:
            raise HightprError(f"loss.rare_classes={self.rare} does not fit a head of {num_logits} logits")
        return torch.isin(target, self.rare_index)


class SymmetricMarginBCE(BinaryOrMultiClassLoss):
    """S-ML (Liu et al. 2016, in the ALM papers' binary form): BCE with a margin m on both classes.

    Positives pay -log s(s - m), negatives -log(1 - s(s + m)): the score must clear 0 by m on
    either side. The L-Softmax angular margin has no meaning on a 1-logit head, so the margin is
    additive on the logit, as in the official ALM code. Multi-class (K > 2 logits, labels class
    indices): CE(z - m e_y, y), every sample's true logit must win by m; on 2 logits this is
    exactly the binary form with s = z1 - z0.
    """

    loss_name: ClassVar[str] = "s_ml"

    def __init__(self, m: float = 0.5, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.m = check_range("m", m, low=0.0)

    def shifts(self) -> tuple[float, float]:
        """(margin on positives, margin on negatives)."""
        return self.m, self.m

    def class_margins(self, target: torch.Tensor, num_logits: int) -> torch.Tensor:
        """Multi-class: the margin of each sample's true logit (m for every sample)."""
        return torch.full(target.shape, self.m, device=target.device)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if is_multiclass_head(logits):
            z, target = logits_and_targets(logits, y, self.loss_name)
            return mean_or_zero(true_class_margin_ce(z, target, self.class_margins(target, z.shape[1])), z)
        s, pos = score_and_labels(logits, y, self.loss_name)
        m_pos, m_neg = self.shifts()
        shifted = torch.where(pos, s - m_pos, s + m_neg)
        return mean_or_zero(-signed_logsigmoid(shifted, pos), s)


class AsymmetricMarginBCE(RareClasses, SymmetricMarginBCE):
    """A-ML (Li et al. 2019): the margin m on the rare positive class only; negatives pay plain BCE.

    Multi-class: CE(z - m e_y, y) for samples of a rare class, plain CE for the others (Li et
    al.'s margin on the under-represented class's logit). Rare classes: `rare_classes`, else the
    smallest training class(es) (`rare_classes_of` in weights.py).
    """

    loss_name: ClassVar[str] = "a_ml"

    def __init__(self, m: float = 0.5, rare_classes: Sequence[int] | int | None = None,
                 class_counts: Sequence[int] | None = None) -> None:
        super().__init__(m, class_counts)
        self.set_rare(self.loss_name, class_counts, rare_classes)

    def shifts(self) -> tuple[float, float]:
        return self.m, 0.0

    def class_margins(self, target: torch.Tensor, num_logits: int) -> torch.Tensor:
        """Multi-class: m on the true logit of rare-class samples, 0 for the others."""
        return self.m * self.rare_samples(target, num_logits).float()


class SymmetricFocalBCE(BinaryOrMultiClassLoss):
    """S-FL (Lin et al. 2017): BCE times (1 - p)^gamma on positives and p^gamma on negatives.

    The focusing factor is exp(gamma * log-sigmoid), finite with a finite gradient for any
    gamma >= 0 (gamma = 0 is BCE). Multi-class: -(1 - p_y)^gamma log p_y (the same as loss=fl).
    """

    loss_name: ClassVar[str] = "s_fl"
    focus_positives = True

    def __init__(self, gamma: float = 2.0, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.gamma = check_range("gamma", gamma, low=0.0)

    def unfocused(self, target: torch.Tensor, num_logits: int) -> torch.Tensor:
        """Multi-class: the samples that pay plain CE (none for S-FL)."""
        return torch.zeros_like(target, dtype=torch.bool)

    def multiclass_forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-(1 - p_y)^gamma log p_y, with the factor dropped for the `unfocused` samples."""
        z, target = logits_and_targets(logits, y, self.loss_name)
        log_p_true, log_p_rest = true_class_log_probs(z, target)
        focus = torch.exp(self.gamma * log_p_rest)
        focus = torch.where(self.unfocused(target, z.shape[1]), torch.ones_like(focus), focus)
        return mean_or_zero(-focus * log_p_true, z)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if is_multiclass_head(logits):
            return self.multiclass_forward(logits, y)
        s, pos = score_and_labels(logits, y, self.loss_name)
        log_p_true = signed_logsigmoid(s, pos)  # log of the probability given to the true class
        log_p_wrong = signed_logsigmoid(-s, pos)  # log of 1 - that probability
        focus = torch.exp(self.gamma * log_p_wrong)
        if not self.focus_positives:
            focus = torch.where(pos, torch.ones_like(focus), focus)
        return mean_or_zero(-focus * log_p_true, s)


class AsymmetricFocalBCE(RareClasses, SymmetricFocalBCE):
    """A-FL (Li et al. 2019): the focal factor p^gamma on negatives only; positives pay plain BCE.

    Easy negatives are down-weighted while every positive keeps its full BCE gradient.
    Multi-class: samples of a rare class pay plain CE, the others -(1 - p_y)^gamma log p_y (Li et
    al.'s focal factor on the frequent classes only). Rare classes as for A-ML.
    """

    loss_name: ClassVar[str] = "a_fl"
    focus_positives = False

    def __init__(self, gamma: float = 2.0, rare_classes: Sequence[int] | int | None = None,
                 class_counts: Sequence[int] | None = None) -> None:
        super().__init__(gamma, class_counts)
        self.set_rare(self.loss_name, class_counts, rare_classes)

    def unfocused(self, target: torch.Tensor, num_logits: int) -> torch.Tensor:
        """Multi-class: the rare-class samples pay plain CE."""
        return self.rare_samples(target, num_logits)


class WeightedBCE(BaseLoss):
    """W-BCE (Zadrozny et al. 2003): positives' BCE weighted by c * N, N = n_neg / n_pos (train).

    Reduced by the plain batch mean of the weighted terms (the official ALM code), not by the sum
    of weights. N comes from the DataModule's class counts (the real ratio of this member's data).
    """

    def __init__(self, c: float = 1.0, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.c = check_range("c", c, low=0.0, low_open=True)
        n_neg, n_pos = check_counts("wbce", class_counts, 2)
        self.pos_weight = self.c * n_neg / n_pos

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, pos = score_and_labels(logits, y, "wbce")
        w = 1.0 + (self.pos_weight - 1.0) * pos.to(s.dtype)  # c N on positives, 1 on negatives
        return mean_or_zero(-w * signed_logsigmoid(s, pos), s)


class ClassBalancedBCE(BaseLoss):
    """CB-BCE (Cui et al. 2019): BCE weighted per class by (1 - beta) / (1 - beta^n_c).

    Raw weights by default, as the official ALM code uses them; `normalize=true` rescales them to
    sum to 2 (Cui et al.'s convention). Reduced by the plain batch mean of the weighted terms, so
    the choice scales the loss (and its balance against a regulariser), not only its direction.
    """

    def __init__(self, beta: float = 0.99, normalize: bool = False,
                 class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.beta = check_range("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)
        counts = check_counts("cbbce", class_counts, 2)
        self.register_buffer("class_weight", class_balanced_weights(counts, self.beta, normalize),
                             persistent=False)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, pos = score_and_labels(logits, y, "cbbce")
        w = self.class_weight.to(s.dtype)[pos.long()]
        return mean_or_zero(-w * signed_logsigmoid(s, pos), s)


class MSFE(BaseLoss):
    """MSFE (Wang et al. 2016): FPE^2 + FNE^2 on p = sigmoid(s), one error per class.

    FPE = mean over negatives of p^2 / 2, FNE = mean over positives of (1 - p)^2 / 2 (Wang et
    al.'s 1/2 per output). Squaring the per-class errors favours reducing the larger one.
    `squared=false` gives their MFE = FPE + FNE, i.e. the mean of the two per-class mean
    squared errors. A class absent from the batch contributes 0.
    """

    def __init__(self, squared: bool = True, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.squared = bool(squared)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, pos = score_and_labels(logits, y, "msfe")
        p = torch.sigmoid(s)
        posf = pos.to(p.dtype)
        negf = 1.0 - posf
        fne = (posf * 0.5 * (1.0 - p) ** 2).sum() / posf.sum().clamp_min(1.0)
        fpe = (negf * 0.5 * p**2).sum() / negf.sum().clamp_min(1.0)
        return fpe**2 + fne**2 if self.squared else fpe + fne


class MiniBatchAUC(BaseLoss):
    """MBAUC (Gultekin et al. 2020): mean over the batch's positive-negative pairs of (1 - (q_j - q_k))^2.

    q = sigmoid(s) by default (the official ALM code), or the raw score with `score=logit`.
    A batch without a positive-negative pair gives 0 (still in the graph).
    """

    def __init__(self, score: str = "prob", class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        if score not in ("prob", "logit"):
            raise HightprError(f"loss.score={score!r}: mbauc takes loss.score=prob or loss.score=logit")
        self.score = score

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, pos = score_and_labels(logits, y, "mbauc")
        q = torch.sigmoid(s) if self.score == "prob" else s
        pairs = (pos[:, None] & ~pos[None, :]).to(q.dtype)  # [j positive, k negative]
        sq = (1.0 - (q[:, None] - q[None, :])) ** 2
        return (pairs * sq).sum() / pairs.sum().clamp_min(1.0)
