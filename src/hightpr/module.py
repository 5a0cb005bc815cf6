"""The LightningModule: model + base loss + regulariser, one training step for every method.

It never branches on which loss or regulariser it holds: the regulariser extends the batch,
adds its term and updates its own state through the `Regularizer` interface.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from hightpr.metrics.evaluators import TIE_BREAK, BinaryEvaluator, Evaluator
from hightpr.models import binary_score
from hightpr.regularizers import NoRegularizer, Regularizer
from hightpr.regularizers.activity import reg_ratio


class HighTPRModule(pl.LightningModule):
    """Trains `model` with `loss` (+ `reg`) and evaluates the papers' ROC metrics per epoch."""

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        reg: Regularizer | None = None,
        scheduler: Callable | None = None,
        score_fn: Callable[[torch.Tensor], torch.Tensor] = binary_score,
        evaluator: Evaluator | None = None,
    ) -> None:
        super().__init__()
        self.model, self.loss, self.reg = model, loss, reg or NoRegularizer()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.score_fn, self.evaluator = score_fn, evaluator or BinaryEvaluator()
        self._gather: dict[str, list[tuple[torch.Tensor, ...]]] = {}
        self.outputs: dict[str, dict[str, np.ndarray]] = {}  # last evaluation per stage
        self.reports: dict[str, dict[str, float]] = {}
        self.evaluated_at: dict[str, int] = {}  # the epoch each stage's outputs were computed at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- training --------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.reg.on_train_epoch_start(self.current_epoch)
        self.loss.on_train_epoch_start(self.current_epoch)
        # loss, base loss, term, each x batch size: Lightning's float32 sums of an epoch-mean log
        self._epoch_sums = torch.zeros(3, device=self.device)
        self._epoch_count = 0

    def objective(self, batch: dict[str, torch.Tensor], n_base: int, logits: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, base, term) of one extended batch and its logits; updates the regulariser after.

        The one definition of a training step's objective: Lightning's step and the batched
        ensemble trainer (`hightpr.stacked`) both call it.
        """
        scores = self.score_fn(logits)
        base = self.loss(logits[:n_base], batch["y"][:n_base], batch["id"][:n_base])
        term = self.reg(logits, scores, batch["y"], batch["id"])
        self.reg.after_step(batch, logits.detach(), scores.detach())
        return base + term, base, term

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        batch, n_base = self.reg.extend_batch(batch)
        loss, base, term = self.objective(batch, n_base, self.model(batch["x"]))
        n = len(batch["y"])
        # summed here and logged once an epoch: what self.log(on_epoch=True, batch_size=n) computes,
        # without its per-step bookkeeping (LibAUC's loss has shape [1])
        sums = torch.stack([loss.detach().mean(), base.detach().mean(), term.detach().mean()])
        self._epoch_sums = self._epoch_sums + sums.to(self._epoch_sums.dtype) * n
        self._epoch_count += n
        return loss

    def on_train_epoch_end(self) -> None:
        if self._epoch_count:  # as Lightning: no training batch, no epoch mean
            means = (self._epoch_sums / torch.tensor(self._epoch_count)).unbind()
            for key, value in zip(("loss", "base_loss", "reg_term"), means, strict=True):
                self.log(f"train/{key}", value, prog_bar=key == "loss")
        for key, value in self.reg.epoch_log().items():
            self.log(f"reg/{key}", value)
        _, base, term = self._epoch_sums.unbind()
        self.log("train/reg_ratio", reg_ratio(term, base))   # how much the regulariser weighs

    # -- evaluation ------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        logits = self.model(batch["x"])
        self._gather.setdefault(stage, []).append((logits, batch["y"], batch["id"]))

    def _eval_epoch_end(self, stage: str) -> dict[str, float]:
        """Metrics once per epoch on the gathered outputs (one host transfer per epoch)."""
        parts = self._gather.pop(stage, [])
        if not parts:
            return {}
        logits, labels, ids = self._whole_split(*(torch.cat(t) for t in zip(*parts, strict=True)))
        report, self.outputs[stage] = split_report(self.evaluator, self.loss, logits, labels, ids)
        self.reports[stage], self.evaluated_at[stage] = report, self.current_epoch
        for key, value in report.items():
            self.log(f"{stage}/{key}", float(value), prog_bar=key == self.evaluator.monitor)
        return report

    def _whole_split(self, logits: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every process's share of the split (data-parallel runs), each sample once, by sample id.

        Distributed samplers pad the shares to equal length with repeated samples: duplicates go.
        The order (ascending id) is the same for one process and many.
        """
        if self.trainer is not None and self.trainer.world_size > 1:
            logits, labels, ids = (self.all_gather(t).flatten(0, 1) for t in (logits, labels, ids))
        order = torch.argsort(ids, stable=True)
        sorted_ids = ids[order]
        first = torch.ones_like(sorted_ids, dtype=torch.bool)
        first[1:] = sorted_ids[1:] != sorted_ids[:-1]
        keep = order[first]
        return logits[keep], labels[keep], ids[keep]

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        report = self._eval_epoch_end("val")
        fitting = self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking
        if report and fitting:
            self.reg.on_validation_end(report[self.evaluator.monitor])

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        # The model's weights; a loss with its own variables hands them over (LibAUC PESG).
        optimizer = self.optimizer_factory(self.model.parameters(), **self.loss.optimizer_kwargs())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


@torch.no_grad()
def split_report(evaluator: Evaluator, loss: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
                 ids: torch.Tensor) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """A whole evaluation split's report and outputs (rows by ascending sample id), as both training
    paths log and save them: the evaluator's metrics plus the base loss over the split (`loss`, the
    best epoch's tie-break; none for a stateful loss, whose value depends on its training state)."""
    order = torch.argsort(ids, stable=True)
    logits, labels, ids = logits[order], labels[order], ids[order]
    value = None if loss.stateful or len(labels) == 0 else float(loss(logits.float(), labels, ids))
    z, y = logits.float().cpu().numpy(), labels.cpu().numpy()
    outputs = {"scores": evaluator.scores(z), "labels": y, "ids": ids.cpu().numpy().astype(np.int64),
               "logits": z}
    report = evaluator(z, y)
    if value is not None:
        report[TIE_BREAK] = value
    return report, outputs
