"""Regularisers behind one interface (`Regularizer`): none, ALM, RankReg."""

from hightpr.regularizers.base import NoRegularizer, Regularizer

__all__ = ["NoRegularizer", "Regularizer"]
