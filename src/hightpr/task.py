"""The task of a run: binary (y = 1 is critical) or multi-class with critical classes.

One place decides it (from the data), and one scoring rule follows from it: training
(regularisers rank and constrain it), evaluation (ROC metrics, saved `scores`) and ensembles
(averaged logits re-scored) all call `Task.score`, so the three can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hightpr.errors import HightprError
from hightpr.models.heads import binary_score, critical_score


@dataclass(frozen=True)
class Task:
    """`num_classes` of the labels; `critical_classes` empty for a binary task."""

    num_classes: int = 2
    critical_classes: tuple[int, ...] = field(default_factory=tuple)

    @property
    def binary(self) -> bool:
        return not self.critical_classes

    @property
    def kind(self) -> str:
        return "binary" if self.binary else "multiclass"

    @classmethod
    def of(cls, datamodule) -> Task:
        """The task a DataModule poses: multi-class when it names `critical_classes`."""
        counts = list(datamodule.class_counts)
        critical = getattr(datamodule, "critical_classes", None)
        if not critical:
            return cls(len(counts))
        return cls(len(counts), tuple(int(c) for c in critical))

    @classmethod
    def from_dict(cls, data: Mapping | None) -> Task:
        data = data or {}
        return cls(int(data.get("num_classes", 2)), tuple(int(c) for c in data.get("critical_classes") or ()))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "num_classes": self.num_classes,
                "critical_classes": list(self.critical_classes)}

    def check_logits(self, num_logits: int, loss_name: str = "the loss") -> None:
        """A head that cannot express the task is refused before training."""
        if self.binary and num_logits > 2:
            raise HightprError(f"the data is binary but {loss_name} asks for {num_logits} logits: use a "
                               "binary loss (bce, s_ml, a_fl, ...) or a multi-class dataset")
        if not self.binary and num_logits != self.num_classes:
            raise HightprError(
                f"the dataset has {self.num_classes} classes but the model {num_logits} logits: use a "
                "multi-class loss (loss=ce, fl, cbce, ldam, s_ml, a_ml or a_fl) and leave "
                "model.num_logits unset")

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """The ranked scalar: binary score (logit, or z1 - z0), or the first critical class's logit."""
        if self.binary:
            return binary_score(logits)
        return critical_score(logits, self.critical_classes[0])

    def scores(self, logits: np.ndarray | Sequence) -> np.ndarray:
        """`score` on saved numpy logits (the same rule, run by torch)."""
        with torch.inference_mode():
            out = self.score(torch.as_tensor(np.asarray(logits)))
        return out.numpy()
