"""Base losses of the papers; each config in `conf/loss/` names its class with `_target_`."""

from hightpr.losses.base import BaseLoss
from hightpr.losses.binary import BCE

__all__ = ["BCE", "BaseLoss"]
