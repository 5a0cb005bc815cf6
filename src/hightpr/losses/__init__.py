"""Base losses of the papers; each config in `conf/loss/` names its class with `_target_`."""

from hightpr.losses.base import BaseLoss
from hightpr.losses.binary import (
    BCE,
    MSFE,
    AsymmetricFocalBCE,
    AsymmetricMarginBCE,
    ClassBalancedBCE,
    MiniBatchAUC,
    SymmetricFocalBCE,
    SymmetricMarginBCE,
    WeightedBCE,
)
from hightpr.losses.ldam import LDAM
from hightpr.losses.libauc import LibAUCAUCM, LibAUCPartialAUCDRO
from hightpr.losses.multiclass import CE, ClassBalancedCE, FocalCE

__all__ = [
    "BCE", "CE", "LDAM", "MSFE", "AsymmetricFocalBCE", "AsymmetricMarginBCE", "BaseLoss",
    "ClassBalancedBCE", "ClassBalancedCE", "FocalCE", "LibAUCAUCM", "LibAUCPartialAUCDRO", "MiniBatchAUC",
    "SymmetricFocalBCE", "SymmetricMarginBCE", "WeightedBCE",
]
