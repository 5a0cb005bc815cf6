"""Hyper-parameter checks and the class-count-derived quantities (CB weights, LDAM margins).

Class counts always come from the DataModule (`class_counts=`), never from a config; every
check raises a `HightprError` that names the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hightpr.errors import HightprError


def check_range(name: str, value: float, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float, or a HightprError naming the allowed interval and the override to fix."""
    value = float(value)
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise HightprError(f"loss.{name}={value:g} is out of range: it must lie in {lo}, {hi}; "
                           f"set e.g. loss.{name}=<value in range> on the command line")
    return value


def check_counts(loss_name: str, class_counts: Sequence[int] | None,
                 num_classes: int | None = None) -> list[int]:
    """The training class counts as ints, all positive; a clear error when they are missing/wrong."""
    if class_counts is None:
        raise HightprError(
            f"loss {loss_name} needs the training class counts: build it with "
            f"class_counts=datamodule.class_counts (train.py does), never type them in a config")
    counts = [int(c) for c in class_counts]
    if num_classes is not None and len(counts) != num_classes:
        raise HightprError(f"loss {loss_name} needs {num_classes} class counts [negatives, positives], "
                           f"got {counts}: use a binary dataset or a multi-class loss (ce fl cbce ldam)")
    if len(counts) < 2 or min(counts) < 1:
        raise HightprError(f"loss {loss_name} needs at least one training sample in every class, got "
                           f"class counts {counts}: check the dataset's ratio/split settings")
    return counts


def rare_classes_of(loss_name: str, class_counts: Sequence[int] | None,
                 rare: Sequence[int] | int | None = None) -> list[int] | None:
    """The classes an asymmetric loss (A-ML, A-FL) favours on a multi-class head.

    `rare` as given (e.g. the dataset's critical classes), else the class(es) with the fewest
    training samples (ALM's long-tailed setup: the critical class is the smallest one). None on
    two-class data without `rare`: the binary form always favours y = 1.
    """
    if rare is not None:
        classes = [int(c) for c in ([rare] if isinstance(rare, int) else rare)]
        n = len(class_counts) if class_counts is not None else None
        if not classes or min(classes) < 0 or (n is not None and max(classes) >= n):
            raise HightprError(f"loss.rare_classes={classes} is invalid: give class indices in [0, "
                               f"{'C' if n is None else n}), or null for the smallest training class")
        return classes
    if class_counts is None or len(class_counts) <= 2:
        return None
    counts = check_counts(loss_name, class_counts)
    return [c for c, n in enumerate(counts) if n == min(counts)]


def class_balanced_weights(counts: Sequence[int], beta: float, normalize: bool = True) -> torch.Tensor:
    """Cui et al. weights (1 - beta) / (1 - beta^n_c); with `normalize`, rescaled to sum to the
    number of classes (Cui et al.), else raw (the official ALM code's CB-BCE)."""
    # 1 - beta^n computed as -expm1(n log beta): exact for beta close to 1 and large n.
    w = torch.tensor([(1.0 - beta) / -math.expm1(n * math.log(beta)) for n in counts],
                     dtype=torch.float64)
    if normalize:
        w = w * len(counts) / w.sum()
    return w.float()


def ldam_margins(counts: Sequence[int], max_m: float) -> torch.Tensor:
    """Cao et al. margins m_c proportional to n_c^(-1/4), scaled so the largest equals max_m."""
    m = torch.tensor([float(n) ** -0.25 for n in counts], dtype=torch.float64)
    return (m * (max_m / m.max())).float()
