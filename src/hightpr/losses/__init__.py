"""Base losses of the papers; each config in `conf/loss/` names its class with `_target_`.

`LOSSES` maps every config name (`loss=<name>`) to its class.
"""

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

LOSSES: dict[str, type[BaseLoss]] = {
    "bce": BCE,
    "s_ml": SymmetricMarginBCE,
    "a_ml": AsymmetricMarginBCE,
    "s_fl": SymmetricFocalBCE,
    "a_fl": AsymmetricFocalBCE,
    "wbce": WeightedBCE,
    "cbbce": ClassBalancedBCE,
    "ldam": LDAM,
    "msfe": MSFE,
    "mbauc": MiniBatchAUC,
    "ce": CE,
    "fl": FocalCE,
    "cbce": ClassBalancedCE,
    "libauc_pauc_dro_hightpr": LibAUCPartialAUCDRO,
    "libauc_aucm": LibAUCAUCM,
}

__all__ = [
    "BCE", "CE", "LDAM", "LOSSES", "MSFE", "AsymmetricFocalBCE", "AsymmetricMarginBCE", "BaseLoss",
    "ClassBalancedBCE", "ClassBalancedCE", "FocalCE", "LibAUCAUCM", "LibAUCPartialAUCDRO", "MiniBatchAUC",
    "SymmetricFocalBCE", "SymmetricMarginBCE", "WeightedBCE",
]
