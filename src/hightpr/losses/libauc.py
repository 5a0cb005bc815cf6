"""LibAUC's AUC losses as base losses, through the library itself (the peer of ALM and RankReg).

Both need a batch with both classes (`sampler=dual`, as LibAUC prescribes with its
DualSampler) and work on probabilities p = sigmoid(s) of the binary score s.

Why the pAUC loss is applied to the class-flipped problem: LibAUC's one-way pAUC (KL-DRO)
optimises the ROC region FPR <= beta, by weighting, for each positive, its hardest (highest
scored) negatives. This project cares about the region TPR >= 1 - beta, where the hardest
*positives* (the lowest scored) decide the false positives. Swapping the classes and negating
the score (p' = 1 - p, y' = 1 - y) maps one region onto the other: the flipped problem's
FPR <= beta is the original TPR >= 1 - beta, and its per-"positive" DRO weights then sit on the
original negatives, each weighting the original positives that rank below it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hightpr.errors import HightprError
from hightpr.losses.base import BaseLoss
from hightpr.losses.binary import score_and_labels

INSTALL = "pip install --no-deps 'libauc==2.0.1' (or make setup)"

DUAL_SAMPLER = "hightpr.data.samplers.DualBatchSampler"  # both classes in every batch (sampler=dual)


def _libauc():
    try:
        import libauc.losses
        import libauc.optimizers  # noqa: F401 - the PESG optimizer config resolves it
    except ImportError as err:
        raise HightprError(f"LibAUC losses need the libauc package: {INSTALL}") from err
    return libauc.losses


def _check_both_classes(pos: torch.Tensor, name: str) -> None:
    if not bool(pos.any()) or bool(pos.all()):
        raise HightprError(f"loss={name} got a batch without positives or without negatives: "
                           "train it with sampler=dual")


class LibAUCPartialAUCDRO(BaseLoss):
    """`libauc_pauc_dro_hightpr`: one-way pAUC (KL-DRO, Zhu et al. 2022) on the class-flipped problem.

    Keeps LibAUC's moving average u per flipped positive (our negatives), indexed by sample id.
    """

    data_facts = ("class_counts", "num_sample_ids")
    stateful = True  # forward updates the per-sample moving averages
    required_sampler = DUAL_SAMPLER

    def __init__(self, num_sample_ids: int | None = None, gamma: float = 0.9, margin: float = 1.0,
                 Lambda: float = 1.0, surr_loss: str = "squared_hinge",
                 class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.kwargs = dict(data_len=num_sample_ids, gamma=gamma, margin=margin, Lambda=Lambda,
                           surr_loss=surr_loss)
        self.inner = None
        _libauc()

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, pos = score_and_labels(logits, y, "libauc_pauc_dro_hightpr")
        if ids is None or self.kwargs["data_len"] is None:
            raise HightprError("loss=libauc_pauc_dro_hightpr needs sample ids and num_sample_ids "
                               "(the training CLI hands both over from the DataModule)")
        _check_both_classes(pos, "libauc_pauc_dro_hightpr")
        if self.inner is None:  # created on the training device, where the batch is
            self.inner = _libauc().pAUC_DRO_Loss(device=s.device, **self.kwargs)
        flipped_prob = torch.sigmoid(-s)  # 1 - p: the negatives become the ranked-high class
        return self.inner(flipped_prob, (~pos).long(), ids)


class LibAUCAUCM(BaseLoss):
    """`libauc_aucm`: AUC-margin min-max loss (Yuan et al. 2021), trained with LibAUC's PESG."""

    required_sampler = DUAL_SAMPLER
    required_optimizer = "libauc.optimizers.PESG"

    def __init__(self, margin: float = 1.0, version: str = "v1",
                 class_counts: Sequence[int] | None = None) -> None:
        super().__init__(class_counts)
        self.inner = _libauc().AUCMLoss(margin=margin, version=version, device=torch.device("cpu"))

    def forward(self, logits: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        s, pos = score_and_labels(logits, y, "libauc_aucm")
        _check_both_classes(pos, "libauc_aucm")
        return self.inner(torch.sigmoid(s), pos.long())

    def optimizer_kwargs(self) -> dict:
        """PESG updates the loss's own a, b (descent) and alpha (ascent)."""
        return {"loss_fn": self.inner}
