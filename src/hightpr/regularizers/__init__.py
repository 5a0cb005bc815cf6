"""Regularisers behind one interface (`Regularizer`): none, ALM, RankReg."""

from hightpr.regularizers.alm import ALMRegularizer, MultiClassALMRegularizer, alm_penalty
from hightpr.regularizers.base import NoRegularizer, Regularizer
from hightpr.regularizers.buffer import BufferConfig, PositiveBuffer
from hightpr.regularizers.rankreg import RankReg, rank_penalty

__all__ = [
    "ALMRegularizer", "BufferConfig", "MultiClassALMRegularizer", "NoRegularizer", "PositiveBuffer",
    "RankReg", "Regularizer", "alm_penalty", "rank_penalty",
]
