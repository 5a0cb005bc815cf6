"""Ensemble members trained together: one stacked network, each member otherwise its own run.

`train_batched(member_configs, member_dirs)` is what `ensemble.batched=true` runs
(`hightpr.cli.ensemble.train_members`); `StackedModel` is the stacked network. docs/speed.md.
"""

from hightpr.stacked.layers import NotStackable
from hightpr.stacked.model import StackedModel
from hightpr.stacked.trainer import train_batched

__all__ = ["NotStackable", "StackedModel", "train_batched"]
