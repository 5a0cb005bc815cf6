"""hightpr: deep classifiers for a high true-positive rate on a rare, critical class."""

from hightpr.errors import HightprError

__all__ = ["HightprError"]
__version__ = "0.1.0"
