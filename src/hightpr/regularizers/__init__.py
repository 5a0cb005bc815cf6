"""Regularisers behind one interface (`Regularizer`): none, ALM, RankReg."""

from hightpr.regularizers.alm import ALMRegularizer, MultiClassALMRegularizer, alm_penalty
from hightpr.regularizers.base import NoRegularizer, Regularizer

__all__ = ["ALMRegularizer", "MultiClassALMRegularizer", "NoRegularizer", "Regularizer", "alm_penalty"]
